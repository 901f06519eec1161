package reconcile_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
)

// env is one test's world (see provisiontest.Env), with what reconciliation's tests
// add to it.
type env struct{ *provisiontest.Env }

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{provisiontest.New(t)}
}

// reconciler is reconciliation as the product wires it, minus the rate limiter.
func (e *env) reconciler(cfg reconcile.Config) *reconcile.Reconciler {
	return &reconcile.Reconciler{Store: e.Store, Cloud: e.Cloud, Config: cfg, Enqueue: e.Enq.Enqueue}
}

// run reconciles once and fails the test on a run error.
func (e *env) run(r *reconcile.Reconciler, dryRun bool) *reconcile.Report {
	e.T.Helper()
	rep, err := r.Run(e.Ctx, dryRun)
	require.NoError(e.T, err)
	require.Equal(e.T, dryRun, rep.DryRun)
	return rep
}

// attempt is a create_attempts row.
type attempt struct {
	Outcome string
	Address string
}

// attempts lists a device's create attempts, oldest first.
func (e *env) attempts(fleetName, id string) []attempt {
	e.T.Helper()
	rows, err := e.Pool.Query(e.Ctx, `
		SELECT a.outcome, coalesce(a.cloud_address, '') FROM create_attempts a
		JOIN devices d ON d.id = a.device_pk JOIN fleets f ON f.id = d.fleet_id
		WHERE f.name = $1 AND d.device_id = $2 ORDER BY a.id`, fleetName, id)
	require.NoError(e.T, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[attempt])
	require.NoError(e.T, err)
	return out
}

// snapshot is every row of the tables reconciliation may write, as JSON text.
func (e *env) snapshot() string {
	e.T.Helper()
	var s string
	err := e.Pool.QueryRow(e.Ctx, `SELECT concat_ws(E'\n',
		(SELECT string_agg(to_jsonb(d)::text, E'\n' ORDER BY d.id) FROM devices d),
		(SELECT string_agg(to_jsonb(a)::text, E'\n' ORDER BY a.id) FROM create_attempts a))`).Scan(&s)
	require.NoError(e.T, err)
	return s
}

// requireNothingToDo checks a report that found nothing to act on.
func requireNothingToDo(t *testing.T, rep *reconcile.Report) {
	t.Helper()
	require.Empty(t, rep.Vanished, "vanished")
	require.Empty(t, rep.Drifted, "drifted")
	require.Empty(t, rep.Adopted, "adopted")
	require.Empty(t, rep.DeletedOrphans, "deleted orphans")
	require.Empty(t, rep.InFlight, "in flight")
	require.Empty(t, rep.Foreign, "foreign")
	require.Empty(t, rep.DeletedForeign, "deleted foreign")
	require.Empty(t, rep.Errors, "errors")
	require.Zero(t, rep.Rescheduled, "rescheduled")
}
