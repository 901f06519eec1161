package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/apiclient"
	"github.com/vncfleet/vncfleet/internal/progress"
)

func init() { register(newUploadCmd) }

// pollPolicy paces the --wait loops. A variable so that tests can wait faster.
var pollPolicy = struct {
	// First is the first gap between two polls: progress shows up quickly.
	First time.Duration
	// Max is where the gap stops growing: a long wait costs the server one query
	// every two seconds, or every four times the query's duration if longer.
	Max time.Duration
	// Outage is how long polls may fail to reach the server (a restart, a database
	// failover) before the wait gives up with exit 3.
	Outage time.Duration
}{First: 500 * time.Millisecond, Max: 2 * time.Second, Outage: time.Minute}

// maxFailedShown bounds the failed devices listed after a wait; the rest are counted.
const maxFailedShown = 50

// apiClient builds the client of the server at VNCFLEET_URL with VNCFLEET_TOKEN
// (or the file named by VNCFLEET_TOKEN_FILE, or --config): a secret never comes
// from the command line.
func apiClient(cmd *cobra.Command) (*apiclient.Client, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	insecure, _ := cmd.Flags().GetBool("insecure")
	c, err := apiclient.NewWithConfig(apiclient.Config{BaseURL: cfg.URL, Token: cfg.Token, CAFile: cfg.CAFile, Insecure: insecure})
	if err != nil {
		return nil, withExit(exitBadInput, err)
	}
	return c, nil
}

// apiExit maps an API failure to the contract's exit codes: 3 when the server
// cannot be reached or cannot serve (5xx), 2 when it refused the request.
func apiExit(err error) error {
	var apiErr *apiclient.Error
	var notServer *apiclient.NotServerError
	switch {
	case err == nil:
		return nil
	case apiclient.IsUnreachable(err), errors.Is(err, apiclient.ErrIncomplete), errors.As(err, &notServer):
		return withExit(exitUnreachable, err)
	case errors.Is(err, context.DeadlineExceeded):
		return withExit(exitUnreachable, fmt.Errorf("no answer in time: %w", err))
	case errors.Is(err, context.Canceled):
		return withExit(exitUnreachable, fmt.Errorf("interrupted: %w", err))
	case !errors.As(err, &apiErr):
		return err
	case apiErr.Status >= 500:
		return withExit(exitUnreachable, fmt.Errorf("the server failed: %w", err))
	case apiErr.Status == 401:
		return withExit(exitBadInput, fmt.Errorf("%w (set VNCFLEET_TOKEN or VNCFLEET_TOKEN_FILE to a token the server knows)", err))
	case apiErr.Status == 403:
		return withExit(exitBadInput, fmt.Errorf("%w (the token lacks the role this needs)", err))
	case apiErr.Status == 404:
		// "fleet "factroy": not found" says it all; the status code adds nothing.
		return withExit(exitBadInput, errors.New(apiErr.Message))
	}
	return withExit(exitBadInput, err)
}

func newUploadCmd() *cobra.Command {
	var (
		fleetName, mode     string
		separator, encoding string
		dryRun, wait        bool
		maxDeletions        int
		timeout             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "upload FILE",
		Short: "Send a CSV manifest to the server (FILE - reads standard input)",
		Long: `upload streams the CSV manifest FILE ("-": standard input) to the server at VNCFLEET_URL,
authenticated by VNCFLEET_TOKEN (or the file named by VNCFLEET_TOKEN_FILE).

An invalid manifest is rejected whole and nothing is stored: every problem is printed as
"line N, column C (name): reason", and the exit code is 2. A replace upload that would delete
more devices than allowed is refused (exit 2) with its plan, listing every deletion.
--dry-run prints the plan (creates, updates with the fields that change, deletions) and
changes nothing. An upload identical to the fleet's latest manifest stores nothing and
prints "manifest unchanged (same as #ID)".

--wait shows progress on stderr (a bar on a terminal, a line every few seconds otherwise)
until every row is ready, deleted or failed, then prints the counts per status and the
failed devices on stdout. Exit codes: 0 done, 1 some devices failed, 2 invalid input,
3 server unreachable, 4 --timeout passed first (the work goes on on the server).

A file a spreadsheet saved as plain "CSV" may be separated by ';' or tabs, or be in
Windows-1252: the server says so, and --separator and --encoding read it as it is.`,
		Example: `  vncfleet upload --fleet factory --wait devices.csv
  vncfleet upload --fleet factory --mode replace --dry-run devices.csv
  generate-manifest | vncfleet upload --fleet factory -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if mode != "merge" && mode != "replace" {
				return withExit(exitBadInput, fmt.Errorf("--mode must be merge or replace, not %q", mode))
			}
			if cmd.Flags().Changed("max-deletions") && maxDeletions < 0 {
				return withExit(exitBadInput, errors.New("--max-deletions must be ≥ 0"))
			}
			if !cmd.Flags().Changed("max-deletions") {
				maxDeletions = -1 // the server's default share of the fleet
			}
			if timeout < 0 {
				return withExit(exitBadInput, errors.New("--timeout must be ≥ 0"))
			}
			if _, err := fleet.ParseSeparator(separator); err != nil {
				return withExit(exitBadInput, fmt.Errorf("--separator: %w", err))
			}
			if _, err := fleet.ParseEncoding(encoding); err != nil {
				return withExit(exitBadInput, fmt.Errorf("--encoding: %w", err))
			}
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			body, size, closeBody, err := openManifest(cmd, args[0])
			if err != nil {
				return err
			}
			defer closeBody()

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			res, err := client.Upload(ctx, body, apiclient.UploadOptions{
				Fleet: fleetName, Mode: mode, DryRun: dryRun, MaxDeletions: maxDeletions, ContentLength: size,
				Separator: separator, Encoding: encoding,
			})
			if err != nil {
				return uploadError(cmd.ErrOrStderr(), err)
			}
			out := cmd.OutOrStdout()
			switch {
			case res.DryRun:
				fmt.Fprintf(out, "dry run (fleet %s, %s): nothing was changed\n", fleetName, mode)
				printPlan(out, &res.Plan)
				if m, _ := fleet.ParseMode(mode); m == fleet.ModeReplace && res.Plan.Deletes > res.Plan.MaxDeletions {
					// What the upload would meet; a refused one says it as its error instead.
					fmt.Fprintln(out, "note: "+deletionGuard(res.Plan.Deletes, res.Plan.MaxDeletions, ""))
				}
				return nil
			case res.Unchanged:
				fmt.Fprintf(out, "manifest unchanged (same as #%d): nothing to do\n", res.Manifest.ID)
			default:
				m := res.Manifest
				fmt.Fprintf(out, "manifest #%d stored (fleet %s, %s, %s): %s\n", m.ID, m.Fleet, m.Mode, fleet.Plural(m.Rows, "row"), planSummary(&res.Plan))
			}
			printWarnings(out, &res.Plan)
			if !wait {
				return nil
			}
			return waitManifest(ctx, cmd, client, res.Manifest.ID)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fleetName, "fleet", "default", "fleet the manifest describes")
	f.StringVar(&mode, "mode", "merge", "merge (add and change the listed devices), or replace (also delete the fleet's devices the manifest leaves out)")
	f.BoolVar(&dryRun, "dry-run", false, "print the plan (creates, updates, deletions) and change nothing")
	f.BoolVar(&wait, "wait", false, "show progress and return only when every row is ready, deleted or failed (exit 1 if any failed)")
	f.IntVar(&maxDeletions, "max-deletions", 0, "replace mode: allow up to N deletions (default: the server's, 10% of the fleet, at least 1)")
	f.DurationVar(&timeout, "timeout", 0, "give up after this long, upload and wait together, e.g. 30m (0: no limit); exit 4")
	f.StringVar(&separator, "separator", ",", "the file's field separator: ',', ';' or tab (a spreadsheet's \"CSV\" in some locales)")
	f.StringVar(&encoding, "encoding", "utf-8", "the file's encoding: utf-8, or windows-1252 (a spreadsheet's plain \"CSV\" on Windows), converted by the server")
	return cmd
}

// openManifest opens FILE, or standard input for "-". size is the file's length
// when it is a regular file (else -1), so that the server can refuse an oversized
// manifest before it is sent.
func openManifest(cmd *cobra.Command, name string) (io.Reader, int64, func(), error) {
	if name == "-" {
		return cmd.InOrStdin(), -1, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, nil, withExit(exitBadInput, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, withExit(exitBadInput, err)
	}
	if st.IsDir() {
		f.Close()
		return nil, 0, nil, withExit(exitBadInput, fmt.Errorf("%s is a directory, not a CSV manifest", name))
	}
	size := int64(-1)
	if st.Mode().IsRegular() {
		size = st.Size()
	}
	return f, size, func() { f.Close() }, nil
}

// uploadError explains a refused upload on stderr and picks the exit code.
func uploadError(errOut io.Writer, err error) error {
	var apiErr *apiclient.Error
	var notServer *apiclient.NotServerError
	if !errors.As(err, &apiErr) || apiclient.IsUnreachable(err) || errors.As(err, &notServer) {
		if errors.Is(err, context.DeadlineExceeded) {
			return withExit(exitUnreachable, fmt.Errorf("the server did not answer within --timeout; the manifest may or may not be stored (check with vncfleet status): %w", err))
		}
		return apiExit(err)
	}
	switch apiErr.Status {
	case 422:
		for _, p := range apiErr.Problems {
			fmt.Fprintln(errOut, p)
		}
		listed := ""
		if apiErr.Total > len(apiErr.Problems) {
			listed = fmt.Sprintf(", the first %d listed", len(apiErr.Problems))
		}
		return withExit(exitBadInput, fmt.Errorf("manifest rejected: %s%s; nothing was stored", fleet.Plural(apiErr.Total, "problem"), listed))
	case 409:
		fmt.Fprintln(errOut, "refused plan:")
		if apiErr.Plan != nil {
			printPlan(errOut, apiErr.Plan)
		}
		n := 0
		if apiErr.Plan != nil {
			n = apiErr.Plan.Deletes
		}
		return withExit(exitBadInput, errors.New(deletionGuard(n, apiErr.MaxDeletions, ", so nothing was changed")))
	case 413:
		return withExit(exitBadInput, fmt.Errorf("manifest too large for the server (%s); split it into several fleets or raise the server's upload limit", apiErr.Message))
	}
	return apiExit(err)
}

func planSummary(p *apiclient.Plan) string {
	s := fmt.Sprintf("%d to create, %d to update, %d to delete, %d unchanged", p.Creates, p.Updates, p.Deletes, p.Unchanged)
	if p.Resumes > 0 {
		s += fmt.Sprintf(" (%s resumed after a cancel)", fleet.Plural(p.Resumes, "device"))
	}
	return s
}

// printPlan prints the plan: its counts, then one line per create, update (with
// the fields that change) and deletion. The server caps the create and update
// lists; the counts stay exact and the rest is counted here.
func printPlan(w io.Writer, p *apiclient.Plan) {
	fmt.Fprintf(w, "plan: %s\n", planSummary(p))
	for _, id := range p.CreateIDs {
		fmt.Fprintf(w, "  create %s\n", id)
	}
	if n := p.Creates - len(p.CreateIDs); n > 0 {
		fmt.Fprintf(w, "  ... and %d more to create\n", n)
	}
	for _, u := range p.UpdateList {
		fmt.Fprintf(w, "  update %s: %s\n", u.DeviceID, strings.Join(u.Fields, ", "))
	}
	if n := p.Updates - len(p.UpdateList); n > 0 {
		fmt.Fprintf(w, "  ... and %d more to update\n", n)
	}
	for _, id := range p.DeleteIDs {
		fmt.Fprintf(w, "  delete %s\n", id)
	}
	if n := p.Deletes - len(p.DeleteIDs); n > 0 {
		fmt.Fprintf(w, "  ... and %d more to delete\n", n)
	}
	printWarnings(w, p)
}

// deletionGuard is the replace guard in the CLI user's words, one sentence: what the
// replace would delete against the limit, what came of it (outcome: ", so nothing
// was changed" for a refusal), and the flag that allows it.
func deletionGuard(deletes, limit int, outcome string) string {
	return fmt.Sprintf("%s%s; if every deletion listed above is intended, upload again with --max-deletions %d",
		fleet.OverDeletionLimit(deletes, limit), outcome, deletes)
}

// printWarnings prints the plan's warnings, one line each.
func printWarnings(w io.Writer, p *apiclient.Plan) {
	for _, warning := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warning)
	}
}

// newProgress builds the renderer on stderr: a bar redrawn in place when stderr is
// a terminal, plain lines otherwise.
func newProgress(cmd *cobra.Command, label string) *progress.Renderer {
	errOut := cmd.ErrOrStderr()
	cfg := progress.Config{Out: errOut, Label: label, Order: statusOrder()}
	if f, ok := errOut.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		cfg.TTY = true
		if w, _, err := term.GetSize(int(f.Fd())); err == nil {
			cfg.Columns = w
		}
	}
	return progress.New(cfg)
}

func statusOrder() []string {
	order := make([]string, len(fleet.Statuses))
	for i, s := range fleet.Statuses {
		order[i] = string(s)
	}
	return order
}

// pollUntilDone polls fetch until the work is done, drawing progress. Polls back
// off from pollPolicy.First to Max; the server being unreachable for a while (a
// restart) is waited out up to pollPolicy.Outage. seen gathers what the wait saw of
// the cloud, for the final summary.
func pollUntilDone(ctx context.Context, cmd *cobra.Command, label string, seen *cloudSeen, fetch func(context.Context) (*apiclient.Progress, error)) (*apiclient.Progress, error) {
	bar := newProgress(cmd, label)
	delay := pollPolicy.First
	var outageSince time.Time
	var lastCloud string
	for {
		asked := time.Now()
		p, err := fetch(ctx)
		// Counting a large manifest's devices takes the server a while (about a second
		// for a million): polling no more often than every four such times keeps one
		// waiter's share of the database under a quarter.
		wait := max(delay, 4*time.Since(asked))
		switch {
		case err == nil:
			outageSince = time.Time{}
			now := time.Now()
			snap := snapshotOf(p, now)
			seen.observe(p.Cloud, now)
			if p.Done {
				bar.Finish(snap)
				return p, nil
			}
			if line := cloudLine(p.Cloud, now); line != lastCloud {
				// The cloud's trouble gets a line of its own, when it changes.
				lastCloud = line
				if line != "" {
					bar.Abandon()
					fmt.Fprintln(cmd.ErrOrStderr(), line)
				}
			}
			bar.Update(snap)
		case apiclient.IsUnreachable(err) && ctx.Err() == nil:
			if outageSince.IsZero() {
				outageSince = time.Now()
				bar.Abandon()
				fmt.Fprintf(cmd.ErrOrStderr(), "%v; still waiting\n", err)
			} else if time.Since(outageSince) > pollPolicy.Outage {
				bar.Abandon()
				return nil, apiExit(err)
			}
		default:
			bar.Abandon()
			if ctx.Err() != nil {
				return nil, stoppedWaiting(ctx, label)
			}
			return nil, apiExit(err)
		}
		select {
		case <-ctx.Done():
			bar.Abandon()
			return nil, stoppedWaiting(ctx, label)
		case <-time.After(wait):
		}
		delay = min(delay*3/2, pollPolicy.Max)
	}
}

// snapshotOf is what the progress line draws of a progress answer: the counts (the
// ETA's calls owed are counted from them, staged rows included), the budget and
// pause the ETA needs, and the limiter's state at the end of the line.
func snapshotOf(p *apiclient.Progress, now time.Time) progress.Snapshot {
	snap := progress.Snapshot{Settled: p.Settled, Total: p.Total, ByStatus: p.ByStatus}
	if p.Staged > 0 {
		// Rows of a large manifest not yet applied to devices.
		snap.ByStatus = maps.Clone(p.ByStatus)
		if snap.ByStatus == nil {
			snap.ByStatus = map[string]int{}
		}
		snap.ByStatus["staged"] = p.Staged
	}
	if c := p.Cloud; c != nil && !p.Done {
		if c.Limiter != nil {
			snap.Budget = progress.BudgetShare(c.Limiter.Rate, c.Limiter.Factor)
		}
		if c.PausedUntil != nil {
			snap.PausedUntil = *c.PausedUntil
		}
		snap.Note = limiterNote(c, now)
	}
	return snap
}

// limiterNote is the cluster limiter's state for the progress line, "" at full
// speed: "paused until 12:03:04 by Retry-After", "sending 12/s of 40/s: VNC Cloud
// asked to slow down".
func limiterNote(c *apiclient.CloudState, now time.Time) string {
	if c == nil {
		return ""
	}
	var parts []string
	if c.PausedUntil != nil && c.PausedUntil.After(now) {
		parts = append(parts, "paused until "+clockTime(*c.PausedUntil, now)+" by Retry-After")
	}
	if l := c.Limiter; l != nil && l.Slowed > 0 {
		parts = append(parts, fmt.Sprintf("sending %s of %s: VNC Cloud asked to slow down", perSecond(l.Sending), perSecond(l.Rate)))
	}
	return strings.Join(parts, "; ")
}

// clockTime is t on the operator's wall clock (now's zone), to the second.
func clockTime(t, now time.Time) string { return t.In(now.Location()).Format("15:04:05") }

// perSecond renders a rate: "12/s", "0.5/s".
func perSecond(r float64) string {
	if r >= 10 || r == math.Trunc(r) {
		return fmt.Sprintf("%.0f/s", r)
	}
	return fmt.Sprintf("%.1f/s", r)
}

// cloudSeen gathers what a wait saw of VNC Cloud, for its final summary: the worst
// minute of each error status and of unanswered calls, the slowest the cluster's
// limiter sent while slowed down, and the Retry-After pauses. The minutes are the
// progress answers' "last minute" as the polls found it, so the worst is the worst
// the wait saw, not necessarily the worst there was between two polls.
type cloudSeen struct {
	worstErrors     map[string]minuteCalls // by HTTP status
	worstUnanswered minuteCalls

	slowed      bool
	slowest     float64 // requests/s sent at the slowest while slowed
	rate        float64 // the cap
	pauses      int     // pauses seen begin (a poll with one after a poll without)
	pausedUntil time.Time
	inPause     bool
}

// minuteCalls is n of a minute's calls.
type minuteCalls struct{ n, calls int }

// worse reports whether m is a worse minute than o: more such calls, or as many of
// fewer calls. The count ranks first: 1 of 1 call (100%) is less trouble than 412 of
// 1030 (40%).
func (m minuteCalls) worse(o minuteCalls) bool {
	return m.n > o.n || m.n == o.n && m.n > 0 && m.calls < o.calls
}

func (s *cloudSeen) observe(c *apiclient.CloudState, now time.Time) {
	if c == nil {
		s.inPause = false
		return
	}
	for code, n := range c.ErrorsLastMinute {
		if m := (minuteCalls{n, c.Calls}); m.worse(s.worstErrors[code]) {
			if s.worstErrors == nil {
				s.worstErrors = map[string]minuteCalls{}
			}
			s.worstErrors[code] = m
		}
	}
	if m := (minuteCalls{c.Unanswered, c.Calls}); m.worse(s.worstUnanswered) {
		s.worstUnanswered = m
	}
	if l := c.Limiter; l != nil && l.Slowed > 0 {
		if !s.slowed || l.Sending < s.slowest {
			s.slowest = l.Sending
		}
		s.slowed, s.rate = true, l.Rate
	}
	paused := c.PausedUntil != nil && c.PausedUntil.After(now)
	if paused {
		if !s.inPause {
			s.pauses++
		}
		if c.PausedUntil.After(s.pausedUntil) {
			s.pausedUntil = *c.PausedUntil
		}
	}
	s.inPause = paused
}

// summary is the final summary's lines of the cloud, none when it answered every call
// and the limiter ran at full speed throughout: a line per error status at its worst
// minute ("VNC Cloud answered 503 to 412 of 1030 calls in a minute (40%)"), one for
// unanswered calls, and one for the limiter ("VNC Cloud asked to slow down during the
// wait: sending 4/s of 40/s at the slowest; every call paused by Retry-After 2 times,
// the last until 12:03:04").
func (s *cloudSeen) summary(now time.Time) []string {
	var lines []string
	for _, code := range sortedKeys(s.worstErrors) {
		m := s.worstErrors[code]
		lines = append(lines, "VNC Cloud "+answeredTo(code, m.n, m.calls, fleet.Plural(m.calls, "call")+" in a minute"))
	}
	if m := s.worstUnanswered; m.n > 0 {
		lines = append(lines, fmt.Sprintf("VNC Cloud gave no answer to %d of %s in a minute (%d%%): a timeout or a lost connection",
			m.n, fleet.Plural(m.calls, "call"), percentOf(m.n, m.calls)))
	}
	var parts []string
	if s.slowed {
		parts = append(parts, fmt.Sprintf("sending %s of %s at the slowest", perSecond(s.slowest), perSecond(s.rate)))
	}
	if s.pauses > 0 {
		times := "once"
		if s.pauses > 1 {
			times = fmt.Sprintf("%d times", s.pauses)
		}
		parts = append(parts, fmt.Sprintf("every call paused by Retry-After %s, the last until %s", times, clockTime(s.pausedUntil, now)))
	}
	if len(parts) > 0 {
		lines = append(lines, "VNC Cloud asked to slow down during the wait: "+strings.Join(parts, "; "))
	}
	return lines
}

// answeredTo is one error status's share of a minute's calls, in the words of the
// live cloud line and of the final summary alike: "answered 503 to 12 of the 15 calls
// in the last minute (80%)". ofCalls names the calls (all of them, calls).
func answeredTo(code string, n, calls int, ofCalls string) string {
	return fmt.Sprintf("answered %s to %d of %s (%d%%)", code, n, ofCalls, percentOf(n, calls))
}

// percentOf is n of calls as a whole percentage, rounded down (so 100% means every
// call).
func percentOf(n, calls int) int { return 100 * n / max(calls, 1) }

// printSettled is the final summary of a wait: the devices settled by status, and
// what the cloud put it through if anything.
func printSettled(out io.Writer, label string, p *apiclient.Progress, seen *cloudSeen) {
	fmt.Fprintf(out, "%s: %s settled\n", label, fleet.Plural(p.Total, "device"))
	printStatusTable(out, p.ByStatus)
	for _, line := range seen.summary(time.Now()) {
		fmt.Fprintln(out, line)
	}
}

// cloudLine says what the cloud is doing to a wait, or "" when nothing is wrong:
// "VNC Cloud answered 503 to 12 of the 15 calls in the last minute (80%); 5 devices
// in backoff, the next retry in 20s; every call paused by Retry-After; the cluster
// slowed down at VNC Cloud's request". The limiter's figures change every second and
// are the progress line's (limiterNote); this line is printed when it changes, so
// it names the limiter's state only.
func cloudLine(c *apiclient.CloudState, now time.Time) string {
	if c == nil {
		return ""
	}
	var parts []string
	for _, code := range sortedKeys(c.ErrorsLastMinute) {
		n := c.ErrorsLastMinute[code]
		parts = append(parts, answeredTo(code, n, c.Calls, "the "+fleet.Plural(c.Calls, "call")+" in the last minute"))
	}
	if c.Unanswered > 0 {
		parts = append(parts, fmt.Sprintf("%d of the %s in the last minute got no answer (a timeout or a lost connection)",
			c.Unanswered, fleet.Plural(c.Calls, "call")))
	}
	if c.InBackoff > 0 {
		part := fleet.Plural(c.InBackoff, "device") + " in backoff"
		if c.NextRetryAt != nil {
			part += fmt.Sprintf(", the next retry in %s", max(c.NextRetryAt.Sub(now), 0).Round(10*time.Second))
		}
		parts = append(parts, part)
	}
	if c.PausedUntil != nil && c.PausedUntil.After(now) {
		parts = append(parts, "every call paused by Retry-After")
	}
	if l := c.Limiter; l != nil && l.Slowed > 0 {
		parts = append(parts, "the cluster slowed down at VNC Cloud's request")
	}
	if len(parts) == 0 {
		return ""
	}
	line := "VNC Cloud: " + strings.Join(parts, "; ")
	if c.InBackoff > 0 {
		line += " (vncfleet retry --now ends the backoff)"
	}
	return line
}

// stoppedWaiting is the error of a wait cut short: by --timeout (exit 4, its own
// code, so that a script tells it from failed devices) or by an interrupt (exit 1).
func stoppedWaiting(ctx context.Context, label string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return withExit(exitTimeout, fmt.Errorf("stopped waiting for %s: --timeout passed; the work goes on on the server (vncfleet status follows it)", label))
	}
	return withExit(exitSomeFailed, fmt.Errorf("stopped waiting for %s (%v); the work goes on on the server", label, ctx.Err()))
}

// waitManifest waits until every device of manifest id is settled, prints the
// counts per status and the failed devices, and returns exit 1 if any failed.
func waitManifest(ctx context.Context, cmd *cobra.Command, client *apiclient.Client, id int64) error {
	label := fmt.Sprintf("manifest #%d", id)
	var seen cloudSeen
	p, err := pollUntilDone(ctx, cmd, label, &seen, func(ctx context.Context) (*apiclient.Progress, error) { return client.ManifestTotals(ctx, id) })
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	printSettled(out, label, p, &seen)
	failed := failedOf(p)
	if failed == 0 {
		return nil
	}
	fmt.Fprintln(out)
	if err := printFailed(ctx, out, client, id); err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "cannot list the failed devices: %v\n", err)
	}
	return withExit(exitSomeFailed, fmt.Errorf("%s (vncfleet retry --manifest %d schedules %s again)", devicesFailed(failed, p.Total), id, fleet.Agree(failed, "it", "them")))
}

// printFailed lists the failed devices of the manifest's report (device_id, error),
// the first maxFailedShown of them, then how many more there are.
func printFailed(ctx context.Context, w io.Writer, client *apiclient.Client, id int64) error {
	rc, err := client.OpenReport(ctx, id)
	if err != nil {
		return err
	}
	defer rc.Close()
	r := csv.NewReader(rc)
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	col := map[string]int{}
	for i, name := range header {
		col[strings.ToLower(strings.TrimSpace(name))] = i
	}
	idCol, okID := col["device_id"]
	stCol, okSt := col["status"]
	errCol, okErr := col["error"]
	if !okID || !okSt {
		return fmt.Errorf("report: no device_id or status column in %q", header)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAILED DEVICE\tERROR")
	shown, total := 0, 0
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = tw.Flush()
			return fmt.Errorf("report: %w", err)
		}
		if stCol >= len(rec) || rec[stCol] != string(fleet.StatusFailed) {
			continue
		}
		total++
		if shown == maxFailedShown {
			continue
		}
		shown++
		msg := ""
		if okErr && errCol < len(rec) {
			msg = oneLine(rec[errCol])
		}
		fmt.Fprintf(tw, "%s\t%s\n", oneLine(rec[idCol]), msg)
	}
	_ = tw.Flush()
	if total > shown {
		fmt.Fprintf(w, "... %d more\n", total-shown)
	}
	return nil
}

// oneLine keeps a cell on its table row: control characters (newlines, tabs that
// would shift the columns, escapes) become spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
