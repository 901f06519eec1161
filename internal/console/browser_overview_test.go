package console_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/store"
)

// Everything on the fleets overview follows what happens without a reload: a new
// fleet and its manifest appear, a manifest's state changes when another takes its
// devices over, failures are counted, the fleet's rotation line and the last
// reconcile come as they happen.
func TestConsoleOverviewIsLive(t *testing.T) {
	st := newStack(t, func(cfg *config.Config) {
		cfg.Workers.MaxAttempts = 2 // a device fails after two 503s instead of ten
	})
	b := newBrowser(t, st.url)
	b.signIn(st.url, adminToken)
	require.Contains(t, b.text("#fleets"), "No manifest has been uploaded yet")
	require.Contains(t, b.text("#last-reconcile"), "No reconcile run has been recorded yet.")
	eval[bool](b, `window.notReloaded = true`)

	const header = "device_id,action,groups,location\n"
	first := strconv.FormatInt(uploadViaAPI(t, st.url, "beta", header+
		"beta-1,connect,line-1,hall\nbeta-2,connect,line-1,hall\nbeta-3,connect,line-1,hall\n"), 10)
	b.waitText(`section.fleet[data-fleet="beta"] h2`, "Fleet beta")
	row := `section.fleet[data-fleet="beta"] tbody tr`
	b.waitText(row, "#"+first)
	b.waitText(row+" .state", "done")
	b.waitText(`section.fleet[data-fleet="beta"] [data-total]`, "3 of 3")
	// The rotation line comes with the fleet's first passwords (read less often).
	b.waitText(`section.fleet[data-fleet="beta"] .rotation`, "Passwords: 3, 0 overdue; last set ")

	// A second manifest moves the devices to another line, and every update fails:
	// the first manifest is superseded, the second is done with its failures.
	st.sim.SetFaults(sim.Faults{FailRate: 1})
	second := strconv.FormatInt(uploadViaAPI(t, st.url, "beta", header+
		"beta-1,connect,line-2,hall\nbeta-2,connect,line-2,hall\nbeta-3,connect,line-2,hall\n"), 10)
	b.waitText(row+":first-child", "#"+second)
	b.waitText(row+":nth-child(2) .state", "superseded")
	require.Contains(t, b.text(row+":nth-child(2)"), "#"+first)
	b.waitText(row+":first-child td:last-child", "3")
	b.waitText(row+":first-child .state", "done")

	// A reconcile run recorded elsewhere (the schedule) shows up, for the fleet too.
	started := time.Now().UTC().Truncate(time.Second)
	run, err := reconcile.RunRecord(&reconcile.Report{StartedAt: started, Listed: 3, Known: 3, Converged: true}, nil, false,
		store.ReconcileBySchedule, started, started.Add(time.Second))
	require.NoError(t, err)
	_, err = store.New(st.pool, nil).RecordReconcileRun(context.Background(), run)
	require.NoError(t, err)
	b.waitText("#last-reconcile", "Last reconcile: "+started.Format("2006-01-02 15:04:05")+" UTC, converged: 0 vanished")
	b.waitText(`section.fleet[data-fleet="beta"] .reconciled`, "Last reconcile, of this fleet's devices: nothing to put right.")
	require.True(t, eval[bool](b, `window.notReloaded === true`), "all of it arrived without a reload")
	require.Contains(t, b.text("#live"), "last update")
	b.screenshot("fleets-live")
}
