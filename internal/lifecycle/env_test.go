package lifecycle_test

import (
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/internal/syncbuf"
)

// env is one test's world (see provisiontest.Env), with what the lifecycle's tests
// add to it.
type env struct{ *provisiontest.Env }

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{provisiontest.New(t)}
}

// lifecycle is the lifecycle as the product wires it, minus the rate limiter, on
// pool; call, when set, wraps every API call of its reconciliation. It returns the
// lifecycle's log.
func (e *env) lifecycle(pool *pgxpool.Pool, cfg lifecycle.Config,
	call cloudop.Caller) (*lifecycle.Lifecycle, *syncbuf.Buffer) {
	st := store.New(pool, e.Keys)
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	return &lifecycle.Lifecycle{
		Store: st,
		Reconciler: &reconcile.Reconciler{Store: st, Cloud: e.Cloud, Call: call, Logger: logger,
			Enqueue: e.Enq.Enqueue},
		Config:  cfg,
		Logger:  logger,
		Enqueue: e.Enq.Enqueue,
	}, logs
}

// otherProcess is a second connection pool on the test's database, as another
// vncfleet process would have.
func (e *env) otherProcess() *pgxpool.Pool {
	e.T.Helper()
	pool, err := pgxpool.New(e.Ctx, e.DBURL)
	require.NoError(e.T, err)
	e.T.Cleanup(pool.Close)
	return pool
}
