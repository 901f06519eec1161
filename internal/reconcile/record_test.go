package reconcile_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/store"
)

// A report's lists are stored capped, their counts in full.
func TestRunRecordCapsListsAndCountsFleets(t *testing.T) {
	t.Parallel()
	rep := &reconcile.Report{StartedAt: time.Now(), Converged: true}
	for i := range reconcile.RecordedItems + 5 {
		rep.Vanished = append(rep.Vanished, "a/dev-"+string(rune('0'+i%10)))
	}
	rep.Adopted = []string{"b/x: ADDR"}
	rep.Foreign = []string{"FOREIGN-ADDR"}
	run, err := reconcile.RunRecord(rep, nil, false, store.ReconcileBySchedule, rep.StartedAt, rep.StartedAt)
	require.NoError(t, err)
	require.Equal(t, reconcile.RecordedItems+5, run.Counts["vanished"])
	require.Equal(t, 1, run.Counts["foreign"])
	require.Equal(t, map[string]store.FleetFindings{"a": {Vanished: reconcile.RecordedItems + 5}, "b": {Adopted: 1}}, run.ByFleet)
	var stored reconcile.Report
	require.NoError(t, json.Unmarshal(run.Report, &stored))
	require.Len(t, stored.Vanished, reconcile.RecordedItems)
	require.Len(t, rep.Vanished, reconcile.RecordedItems+5, "the caller's report is not cut")
}
