package console_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
)

// The fleets overview and the reconcile page read the recorded runs: the last one's
// counts, what it found of each fleet, its report rendered with capped lists said to
// be so, and a failed run's error; a fleet-limited token sees no account-wide report.
func TestReconcileRunsOnTheOverviewAndReconcilePage(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	e.Provision("f", provisiontest.Header+"v1,connect,g,,,\n")
	e.Provision("quiet", provisiontest.Header+"q1,connect,g,,,\n")
	scoped := server.Token{Name: "line", Value: "line-token-value", Roles: []string{server.RoleRead}, Fleets: []string{"f"}}
	c := consoleOn(t, e.Pool, opToken, scoped)
	resp, _ := c.do(t, "POST", "/signin", url.Values{"token": {opToken.Value}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)

	_, page := c.do(t, "GET", "/", nil, nil)
	require.Contains(t, page, "No reconcile run has been recorded yet.")
	_, page = c.do(t, "GET", "/reconcile", nil, nil)
	require.Contains(t, page, "No reconcile run has been recorded yet.")

	started := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	rep := &reconcile.Report{StartedAt: started, Listed: 2000, Known: 2, Foreign: []string{"FOREIGN-1"}}
	for range reconcile.RecordedItems + 2 {
		rep.Vanished = append(rep.Vanished, "f/v1")
	}
	run, err := reconcile.RunRecord(rep, nil, false, store.ReconcileBySchedule, started, started.Add(time.Minute))
	require.NoError(t, err)
	_, err = e.Store.RecordReconcileRun(context.Background(), run)
	require.NoError(t, err)

	_, page = c.do(t, "GET", "/", nil, nil)
	require.Contains(t, page, "Last reconcile: <strong>2026-12-01 03:00:00 UTC</strong>")
	require.Contains(t, squashSpace(page), "<strong>not converged</strong>: 1002 vanished, 0 drifted, 0 adopted, 1 foreign, 0 errors.")
	require.Equal(t, []string{"Last reconcile, of this fleet's devices: 1002 vanished, 0 drifted, 0 adopted.",
		"Last reconcile, of this fleet's devices: nothing to put right."}, reconciledLines(page), "fleets f and quiet, in order")

	_, page = c.do(t, "GET", "/reconcile", nil, nil)
	require.Contains(t, page, "Last run: Run of 2026-12-01 03:00:00 UTC")
	require.Contains(t, page, "Started by the schedule")
	require.Contains(t, page, "<h3>Vanished: 1002</h3>")
	require.Contains(t, page, "The first 1000 are listed.")
	require.Equal(t, 1000, strings.Count(page, "<li><code>f/v1</code></li>"))
	require.Contains(t, page, "<h3>Foreign: 1</h3>")
	require.NotContains(t, page, `{"dryRun"`, "rendered, not dumped as JSON")

	failed, err := reconcile.RunRecord(nil, &reconcile.ListingError{Err: context.DeadlineExceeded}, true, store.ReconcileByRequest, started.Add(time.Hour), started.Add(time.Hour))
	require.NoError(t, err)
	_, err = e.Store.RecordReconcileRun(context.Background(), failed)
	require.NoError(t, err)
	_, page = c.do(t, "GET", "/reconcile", nil, nil)
	require.Contains(t, page, "Last run, a dry run of 2026-12-01 04:00:00 UTC: failed")
	require.Contains(t, page, "list cloud addresses: context deadline exceeded")
	require.Equal(t, 2, strings.Count(page, "</tr>")-1, "both runs listed")
	_, page = c.do(t, "GET", "/", nil, nil)
	require.Contains(t, page, "<strong>failed</strong>: list cloud addresses")
	require.Empty(t, reconciledLines(page), "a failed run found nothing per fleet")

	// The API as scripts see it: the last run with its report, the history without.
	resp, body := c.do(t, "GET", "/ui/api/v1/reconcile/runs", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var runs struct{ Runs []store.ReconcileRun }
	require.NoError(t, json.Unmarshal([]byte(body), &runs))
	require.Len(t, runs.Runs, 2)
	require.Nil(t, runs.Runs[1].Report)
	require.Equal(t, 1002, runs.Runs[1].Counts["vanished"])

	// A token limited to one fleet is not shown the account-wide report.
	line := consoleOn(t, e.Pool, opToken, scoped)
	resp, _ = line.do(t, "POST", "/signin", url.Values{"token": {scoped.Value}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, page = line.do(t, "GET", "/", nil, nil)
	require.NotContains(t, page, "last-reconcile")
	require.NotContains(t, page, "FOREIGN-1")
	resp, _ = line.do(t, "GET", "/ui/api/v1/reconcile/runs/last", nil, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
}

func squashSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

// reconciledLines are the fleets' "last reconcile" lines of the overview, in order.
func reconciledLines(page string) []string {
	var out []string
	for _, part := range strings.Split(page, `<p class="reconciled">`)[1:] {
		out = append(out, squashSpace(part[:strings.Index(part, "</p>")]))
	}
	return out
}
