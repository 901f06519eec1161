package reconcile_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/jobs"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// These tests hold reconciliation's calls to the worker's: each delete is
// cloudop's (GET/ETag/412), and the rate limiter hears of each answer by the rule the
// worker's calls follow (cloudop.Limited).

// cloudThrough is a client of the test's simulator whose requests pass through wrap
// first, over real HTTP.
func (e *env) cloudThrough(wrap func(next http.Handler) http.Handler) *vnccloud.Client {
	e.T.Helper()
	ts := httptest.NewServer(wrap(e.Sim.Handler()))
	e.T.Cleanup(ts.Close)
	c, err := vnccloud.New(vnccloud.Config{BaseURL: ts.URL + sim.APIPrefix, APIKey: provisiontest.APIKey,
		APISecret: provisiontest.APISecret, Timeout: 10 * time.Second})
	require.NoError(e.T, err)
	return c
}

// requestLog records "METHOD" of each request to one address.
type requestLog struct {
	mu   sync.Mutex
	addr string
	seen []string
}

func (l *requestLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/"+l.addr) {
			l.mu.Lock()
			l.seen = append(l.seen, r.Method)
			l.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func (l *requestLog) methods() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.seen...)
}

// An orphan changed by someone else between the run's inspection and its delete (so
// the delete's If-Match meets a 412) is deleted as the worker deletes: a fresh GET
// for the ETag and another try, within the same run.
func TestOrphanDeleteMeeting412IsRetriedWithAFreshETag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	orphan := e.loseCreate(key)
	require.Equal(t, 1, e.Step(key, 1, provisiontest.RetryNow), "the retry makes v1's address")
	spec := e.Addresses()[orphan]

	log := &requestLog{addr: orphan}
	r := e.reconciler(reconcile.Config{})
	r.Cloud = e.cloudThrough(log.wrap)
	// Call 1 lists, 2 inspects the orphan; right after it, its ETag changes.
	r.Call = atCall(2, func() {
		require.NoError(t, e.Sim.ForceSpec(provisiontest.APIKey, orphan, spec.Spec()))
		require.Greater(t, e.Addresses()[orphan].Version, spec.Version, "the ETag changed")
	})
	rep := e.run(r, false)
	require.Empty(t, rep.Errors)
	require.True(t, rep.Converged)
	require.Equal(t, []string{orphan}, rep.DeletedOrphans)
	require.NotContains(t, e.Addresses(), orphan)
	// The inspection, the delete with its ETag (412), a fresh GET, the delete again.
	require.Equal(t, []string{"GET", "DELETE", "GET", "DELETE"}, log.methods())
	require.Equal(t, []attempt{{"discarded", orphan}, {"created", e.Device("f", "v1").Address}}, e.attempts("f", "v1"))
}

// A delete answered 503 with Retry-After pauses the cluster's rate limiter (in
// PostgreSQL, for every process) for that long, exactly as a worker's call does,
// and is retried after it within the run.
func TestReconcileDeleteAnswered503WithRetryAfterPausesTheClusterLimiter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	orphan := e.loseCreate(key)
	require.Equal(t, 1, e.Step(key, 1, provisiontest.RetryNow))

	var refused atomic.Bool
	r := e.reconciler(reconcile.Config{})
	r.Cloud = e.cloudThrough(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.Method == http.MethodDelete && refused.CompareAndSwap(false, true) {
				w.Header().Set("Retry-After", "2")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"errorCode":503,"errorMessage":"try later"}`))
				return
			}
			next.ServeHTTP(w, req)
		})
	})
	limiter, err := ratelimit.NewCluster(e.Pool, ratelimit.Config{Name: "vnccloud", Rate: 100})
	require.NoError(t, err)
	r.Call = cloudop.Limited{Limiter: limiter, Timeout: jobs.DefaultCallTimeout}.Call

	var before time.Time
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT clock_timestamp()`).Scan(&before))
	rep := e.run(r, false)
	require.True(t, refused.Load(), "the delete was answered 503")
	require.Empty(t, rep.Errors)
	require.Equal(t, []string{orphan}, rep.DeletedOrphans)
	require.NotContains(t, e.Addresses(), orphan, "retried after the pause")

	var pausedUntil time.Time
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT paused_until FROM rate_limits WHERE name = 'vnccloud'`).Scan(&pausedUntil))
	require.False(t, pausedUntil.Before(before.Add(2*time.Second)),
		"the cluster was paused for the Retry-After (paused until %v, run started %v)", pausedUntil, before)
}
