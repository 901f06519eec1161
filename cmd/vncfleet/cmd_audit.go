package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/apiclient"
	"github.com/vncfleet/vncfleet/internal/secretbox"
	"github.com/vncfleet/vncfleet/internal/store"
)

func init() { register(newAuditCmd) }

func newAuditCmd() *cobra.Command {
	var since string
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "The audit log (who revealed which secrets, from where, with what outcome)",
		Long: `audit prints the server's audit log, oldest first, one JSON object a line: seq, at,
actor (the token's name), action, remote (the client address), outcome, detail (fleet, device,
devices: how many) and hash. It needs the secrets or the admin role. --since limits it to
entries from that time on (RFC 3339, or a duration back from now such as 24h, or days: 7d).

audit verify checks the log's hash chain in DATABASE_URL directly.`,
		Example: `  vncfleet audit --since 24h
  vncfleet audit --since 7d
  vncfleet audit --since 2026-12-01T00:00:00Z
  vncfleet audit verify`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, err := parseSince(since, time.Now())
			if err != nil {
				return withExit(exitBadInput, err)
			}
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			return apiExit(client.Audit(cmd.Context(), from, func(e apiclient.AuditEntry) error {
				return writeJSONLine(cmd.OutOrStdout(), e)
			}))
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "only entries from this time (RFC 3339) or this long ago (24h, 7d)")
	cmd.AddCommand(newAuditVerifyCmd())
	return cmd
}

// parseSince reads --since: an RFC 3339 time, or a duration before now, Go's (90m,
// 24h) or whole days (7d): a look back over the audit log is often counted in days,
// which Go's durations do not have.
func parseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if days, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.AddDate(0, 0, -n), nil
		}
	} else if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2026-12-01T00:00:00Z) or a duration back from now (24h, 7d)", v)
	}
	return t, nil
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func newAuditVerifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the audit log's hash chain; exit 1 and the first broken entry when it was altered",
		Long: `verify walks the audit log in DATABASE_URL and recomputes each entry's hash from its
content and the hash of the entry before. An altered entry, a removed one, or entries removed
from the end break the chain: verify prints the first broken entry and exits 1. When the chain
holds it prints the number of entries and the last hash, which you may record elsewhere (each
audit log line of serve carries the same seq and hash).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd, func(st *store.Store, _ *secretbox.Keyring) error {
				n, head, brk, err := st.VerifyAudit(cmd.Context())
				if err != nil {
					return withExit(exitUnreachable, err)
				}
				if brk != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "audit log BROKEN: %s %s, then entry %d: %s\n", fleet.PluralOf(n, "entry", "entries"), fleet.Agree(n, "holds", "hold"), brk.Seq, brk.Reason)
					return withExit(exitSomeFailed, brk)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "audit log intact: %s, last hash %s\n", fleet.PluralOf(n, "entry", "entries"), head)
				return nil
			})
		},
	}
}
