package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/internal/apiclient"
)

func init() { register(newReconcileCmd) }

func newReconcileCmd() *cobra.Command {
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Compare the cloud account with the fleet now, act on the differences, and report",
		Long: `reconcile asks the server to run reconciliation now: it lists the cloud account's addresses,
compares them with the stored fleet, repairs what drifted or vanished and handles the
addresses vncfleet does not know. Creates that may still be in flight are waited for first
(at most the claim lease plus a call's timeout), and transient API failures are retried
within the run. It prints the server's report as readable text, or with --json as the
server wrote it. --dry-run only reports what it would do (without waiting).

A run already in progress elsewhere (the schedule's, or another process's) is waited
for, up to 10 minutes, saying so on stderr.

Exit status 0: the account holds exactly one address per present device (once the work
the run started is done). 1: something could not be settled or checked; the report lists
it under errors, inFlight, createsInFlight or ambiguous.`,
		Example: `  vncfleet reconcile --dry-run
  vncfleet reconcile --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			raw, err := reconcileWhenFree(ctx, client, dryRun, cmd.ErrOrStderr())
			if err != nil {
				return apiExit(err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				var buf bytes.Buffer
				if err := json.Indent(&buf, raw, "", "  "); err != nil {
					return fmt.Errorf("reconcile: the server's report is not JSON: %w", err)
				}
				buf.WriteByte('\n')
				if _, err := buf.WriteTo(out); err != nil {
					return err
				}
			} else {
				if dryRun {
					fmt.Fprintln(out, "reconciliation report (dry run: nothing was changed)")
				} else {
					fmt.Fprintln(out, "reconciliation report")
				}
				if err := printReport(out, raw); err != nil {
					return err
				}
			}
			return settled(raw)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what reconciliation would do; change nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as the server's JSON instead of text")
	return cmd
}

// settled is nil when the report says the run converged, and an exit-1 error
// otherwise: something could not be settled or checked (the report lists it).
func settled(raw json.RawMessage) error {
	var verdict struct {
		Converged *bool    `json:"converged"`
		Errors    []string `json:"errors"`
	}
	if err := json.Unmarshal(raw, &verdict); err != nil {
		return fmt.Errorf("reconcile: the server's report is not JSON: %w", err)
	}
	// A server from before "converged" existed says so by its errors alone.
	if (verdict.Converged == nil || *verdict.Converged) && len(verdict.Errors) == 0 {
		return nil
	}
	return withExit(exitSomeFailed, errors.New("reconcile: something could not be settled or checked (listed above)"))
}

// printReport renders a JSON report generically, keeping the server's field order:
// a field per line, lists one item per line, nested objects as indented JSON. The
// report's shape belongs to the server; this knows none of its fields.
func printReport(w io.Writer, raw json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("reconcile: the server's report is not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return printIndented(w, "", raw)
	}
	for dec.More() {
		keyTok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("reconcile: report: %w", err)
		}
		key, _ := keyTok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return fmt.Errorf("reconcile: report field %q: %w", key, err)
		}
		if err := printField(w, humanize(key), val); err != nil {
			return err
		}
	}
	return nil
}

func printField(w io.Writer, name string, val json.RawMessage) error {
	trimmed := bytes.TrimSpace(val)
	switch {
	case len(trimmed) == 0 || string(trimmed) == "null":
		fmt.Fprintf(w, "%s: none\n", name)
	case trimmed[0] == '[':
		var items []json.RawMessage
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return fmt.Errorf("reconcile: report field %q: %w", name, err)
		}
		if len(items) == 0 {
			fmt.Fprintf(w, "%s: none\n", name)
			return nil
		}
		fmt.Fprintf(w, "%s (%d):\n", name, len(items))
		for _, it := range items {
			if s, ok := scalar(it); ok {
				fmt.Fprintf(w, "  %s\n", s)
			} else if err := printIndented(w, "  ", it); err != nil {
				return err
			}
		}
	case trimmed[0] == '{':
		fmt.Fprintf(w, "%s:\n", name)
		return printIndented(w, "  ", trimmed)
	default:
		s, _ := scalar(trimmed)
		fmt.Fprintf(w, "%s: %s\n", name, s)
	}
	return nil
}

// scalar renders a JSON string, number or boolean as text.
func scalar(v json.RawMessage) (string, bool) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || v[0] == '{' || v[0] == '[' {
		return "", false
	}
	var s string
	if v[0] == '"' && json.Unmarshal(v, &s) == nil {
		return oneLine(s), true
	}
	return string(v), true
}

func printIndented(w io.Writer, prefix string, v json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, v, prefix, "  "); err != nil {
		return fmt.Errorf("reconcile: report: %w", err)
	}
	fmt.Fprintf(w, "%s%s\n", prefix, buf.String())
	return nil
}

// humanize turns a JSON field name into words: "deletedOrphans" → "deleted orphans".
func humanize(key string) string {
	var b strings.Builder
	rs := []rune(key)
	for i, r := range rs {
		switch {
		case r == '_' || r == '-':
			b.WriteByte(' ')
		case unicode.IsUpper(r) && i > 0 && (unicode.IsLower(rs[i-1]) || (i+1 < len(rs) && unicode.IsLower(rs[i+1]))):
			b.WriteByte(' ')
			b.WriteRune(unicode.ToLower(r))
		default:
			b.WriteRune(r)
		}
	}
	return oneLine(b.String())
}

// waitForOtherRun bounds how long reconcile waits for a run already in progress
// elsewhere (a scheduled one, say) before it gives up: a run waits at most a claim
// lease and a call's timeout for creates in flight, then lists the account.
const waitForOtherRun = 10 * time.Minute

// reconcileWhenFree asks for a run, waiting (and saying so) while another one holds
// the reconciliation lock: that is not a failure of this command, and the run it
// starts afterwards sees everything the other one did.
func reconcileWhenFree(ctx context.Context, client *apiclient.Client, dryRun bool, status io.Writer) (json.RawMessage, error) {
	deadline := time.Now().Add(waitForOtherRun)
	said := false
	for {
		raw, err := client.Reconcile(ctx, dryRun)
		var apiErr *apiclient.Error
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict || time.Now().After(deadline) {
			return raw, err
		}
		if !said {
			fmt.Fprintln(status, "another reconciliation is running (a scheduled one, or another process's); waiting for it to end")
			said = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
