package lifecycle_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// Every run is recorded, newest first: scheduled, on request, dry runs, and a run
// that could not complete (its error, without a report); a run that found another
// in progress is no run.
func TestEveryReconcileRunIsRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\nv2,connect,line-a,,,\n")
	e.Provision("g", provisiontest.Header+"w1,connect,line-a,,,\n")
	require.NoError(t, e.Sim.ForceSpec(provisiontest.APIKey, addrs["v2"], vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"intruders"}}))
	l, _ := e.lifecycle(e.Pool, lifecycle.Config{}, nil)

	_, err := l.Reconcile(e.Ctx, true)
	require.NoError(t, err)
	require.NoError(t, l.ScheduledReconcile(e.Ctx))
	e.Sim.SetFaults(sim.Faults{FailRate: 1})
	_, err = l.Reconcile(e.Ctx, false)
	require.Error(t, err)
	e.Sim.SetFaults(sim.Faults{})

	runs, err := e.Store.ReconcileRuns(e.Ctx, 10, true)
	require.NoError(t, err)
	require.Len(t, runs, 3)
	failed, scheduled, dry := runs[0], runs[1], runs[2]

	require.Equal(t, store.ReconcileByRequest, failed.Trigger)
	require.False(t, failed.DryRun)
	require.Nil(t, failed.Report)
	require.Contains(t, failed.Error, "list cloud addresses")

	require.Equal(t, store.ReconcileBySchedule, scheduled.Trigger)
	require.False(t, scheduled.DryRun)
	require.True(t, scheduled.Converged)
	require.Equal(t, map[string]store.FleetFindings{"f": {Drifted: 1}}, scheduled.ByFleet, "only the fleet with findings")
	require.Equal(t, 1, scheduled.Counts["drifted"])
	var rep reconcile.Report
	require.NoError(t, json.Unmarshal(scheduled.Report, &rep))
	require.Equal(t, []string{"f/v2"}, rep.Drifted)
	require.Equal(t, 3, rep.Listed)
	require.False(t, scheduled.FinishedAt.Before(scheduled.StartedAt))

	// No secret in the history: neither a device's password nor the API secret.
	var stored string
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT string_agg(r::text, ' ') FROM reconcile_runs r`).Scan(&stored))
	for _, id := range []string{"v1", "v2"} {
		require.NotContains(t, stored, e.password("f", id))
	}
	require.NotContains(t, stored, e.password("g", "w1"))
	require.NotContains(t, stored, provisiontest.APISecret)

	require.True(t, dry.DryRun)
	require.Equal(t, store.ReconcileByRequest, dry.Trigger)
	require.Equal(t, map[string]store.FleetFindings{"f": {Drifted: 1}}, dry.ByFleet, "a dry run reports the drift it would put back")

	// The history keeps the newest store.ReconcileRunsKept runs.
	for range store.ReconcileRunsKept {
		_, err := l.Reconcile(e.Ctx, true)
		require.NoError(t, err)
	}
	runs, err = e.Store.ReconcileRuns(e.Ctx, store.ReconcileRunsKept+10, false)
	require.NoError(t, err)
	require.Len(t, runs, store.ReconcileRunsKept)
	for _, r := range runs {
		require.True(t, r.DryRun, "the older runs were pruned")
		require.Nil(t, r.Report, "listed without reports")
	}
}

// The rotation rule for one device: due at max age, reset by the first scheduled run
// after that (the next run when overdue), starting within the window.
func TestNextRotation(t *testing.T) {
	t.Parallel()
	daily, err := cron.ParseStandard("0 3 * * *")
	require.NoError(t, err)
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	at := func(s string) *time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return &tm
	}
	cfg := lifecycle.Config{MaxAge: 10 * 24 * time.Hour, Window: 2 * time.Hour}
	for _, tc := range []struct {
		name     string
		cfg      lifecycle.Config
		schedule lifecycle.Schedule
		setAt    *time.Time
		want     lifecycle.Forecast
	}{
		{"due later: the first run after it falls due", cfg, daily, at("2026-11-30T05:00:00Z"), lifecycle.Forecast{
			DueAt: at("2026-12-10T05:00:00Z"), NextRunAt: at("2026-12-11T03:00:00Z"), StartsBy: at("2026-12-11T05:00:00Z")}},
		{"due exactly at a run: the run after", cfg, daily, at("2026-11-30T03:00:00Z"), lifecycle.Forecast{
			DueAt: at("2026-12-10T03:00:00Z"), NextRunAt: at("2026-12-11T03:00:00Z"), StartsBy: at("2026-12-11T05:00:00Z")}},
		{"overdue: the next run", cfg, daily, at("2026-11-01T00:00:00Z"), lifecycle.Forecast{
			DueAt: at("2026-11-11T00:00:00Z"), Overdue: true, NextRunAt: at("2026-12-03T03:00:00Z"), StartsBy: at("2026-12-03T05:00:00Z")}},
		{"never set: due now", cfg, daily, nil, lifecycle.Forecast{
			Overdue: true, NextRunAt: at("2026-12-03T03:00:00Z"), StartsBy: at("2026-12-03T05:00:00Z")}},
		{"not scheduled", cfg, nil, at("2026-11-30T05:00:00Z"), lifecycle.Forecast{DueAt: at("2026-12-10T05:00:00Z")}},
		{"defaults: 30 days, 1 hour", lifecycle.Config{}, daily, at("2026-11-30T05:00:00Z"), lifecycle.Forecast{
			DueAt: at("2026-12-30T05:00:00Z"), NextRunAt: at("2026-12-31T03:00:00Z"), StartsBy: at("2026-12-31T04:00:00Z")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.cfg.NextRotation(tc.schedule, tc.setAt, now))
		})
	}
}
