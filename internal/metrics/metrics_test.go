package metrics_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/metrics"
	"github.com/vncfleet/vncfleet/internal/promtext"
	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/readiness"
	"github.com/vncfleet/vncfleet/internal/syncbuf"
	"github.com/vncfleet/vncfleet/ratelimit"
)

// scrape is what Prometheus would read from m.
func scrape(t *testing.T, m *metrics.Metrics) promtext.Families {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	families, err := promtext.Parse(rec.Body)
	require.NoError(t, err)
	return families
}

// value is the total of family name's samples whose labels include want, and whether
// there is any.
func value(families promtext.Families, name string, want map[string]string) (float64, bool) {
	return families.Sum(name, "", want)[""], families.Has(name, want)
}

func connects(ids ...string) string {
	var b strings.Builder
	b.WriteString(provisiontest.Header)
	for _, id := range ids {
		b.WriteString(id + ",connect,line-a,,,present\n")
	}
	return b.String()
}

// TestDBGaugesAreExportedByOneProcess: of two processes on one database exactly one
// exports the fleet-wide gauges, with the database's counts, and when it stops the
// other takes over.
func TestDBGaugesAreExportedByOneProcess(t *testing.T) {
	env := provisiontest.New(t)
	env.Provision("alpha", connects("a1", "a2", "a3"))
	env.Ingest("beta", connects("b1", "b2"))

	m1, m2 := metrics.New(), metrics.New()
	g1 := m1.NewDBGauges(metrics.DBConfig{Store: env.Store, Pool: env.Pool})
	g2 := m2.NewDBGauges(metrics.DBConfig{Store: env.Store, Pool: env.Pool})
	t.Cleanup(g2.Close)
	ctx, stop := context.WithCancel(env.Ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); g1.Run(ctx) }()
	require.Eventually(t, func() bool {
		v, _ := value(scrape(t, m1), "vncfleet_metrics_db_leader", nil)
		return v == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, g2.Refresh(env.Ctx))

	leader, follower := scrape(t, m1), scrape(t, m2)
	for labels, want := range map[[2]string]float64{{"alpha", "ready"}: 3, {"beta", "pending"}: 2} {
		got, ok := value(leader, "vncfleet_devices", map[string]string{"fleet": labels[0], "status": labels[1]})
		require.True(t, ok, labels)
		require.Equal(t, want, got, labels)
	}
	overdue, ok := value(leader, "vncfleet_rotation_overdue_devices", map[string]string{"fleet": "alpha"})
	require.True(t, ok)
	require.Zero(t, overdue, "passwords set just now are not overdue")
	newest, ok := value(leader, "vncfleet_rotation_last_success_timestamp_seconds", map[string]string{"fleet": "alpha"})
	require.True(t, ok)
	require.InDelta(t, float64(time.Now().Unix()), newest, 120)
	applied, _ := value(leader, "vncfleet_manifests", map[string]string{"fleet": "beta", "state": "applied"})
	require.Equal(t, 1.0, applied)
	dead, ok := value(leader, "vncfleet_webhook_dead_events", nil)
	require.True(t, ok)
	require.Zero(t, dead)

	v, _ := value(follower, "vncfleet_metrics_db_leader", nil)
	require.Zero(t, v)
	require.NotContains(t, follower, "vncfleet_devices", "only the leader exports fleet-wide gauges")

	stop()
	<-ran
	require.NotContains(t, scrape(t, m1), "vncfleet_devices", "a process that resigned exports none")
	require.NoError(t, g2.Refresh(env.Ctx))
	got, ok := value(scrape(t, m2), "vncfleet_devices", map[string]string{"fleet": "alpha", "status": "ready"})
	require.True(t, ok, "the other process took over")
	require.Equal(t, 3.0, got)
}

// TestManifestSettledIsLoggedOnce: the leader logs one line when the last device of a
// manifest settles, with its counts, and never again.
func TestManifestSettledIsLoggedOnce(t *testing.T) {
	env := provisiontest.New(t)
	logs := &syncbuf.Buffer{}
	m := metrics.New()
	g := m.NewDBGauges(metrics.DBConfig{Store: env.Store, Pool: env.Pool, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	t.Cleanup(g.Close)
	require.NoError(t, g.Refresh(env.Ctx)) // takes the lead; older manifests are not watched
	key := env.Ingest("alpha", connects("a1", "a2"))
	require.NoError(t, g.Refresh(env.Ctx))
	require.NotContains(t, logs.String(), "manifest settled", "its devices still owe their creates")
	env.Drain(key)
	require.NoError(t, g.Refresh(env.Ctx))
	require.NoError(t, g.Refresh(env.Ctx))
	require.Equal(t, 1, strings.Count(logs.String(), "manifest settled"), logs.String())
	require.Contains(t, logs.String(), "fleet=alpha rows=2 ready=2 deleted=0 failed=0")
}

// TestLimiterMetrics: the wrapped limiter times waits, counts pauses and outcomes,
// and shows a pause while it lasts.
func TestLimiterMetrics(t *testing.T) {
	m := metrics.New()
	l := m.InstrumentLimiter(ratelimit.NewLocal(ratelimit.Config{Rate: 1000}), 1000)
	ctx := context.Background()
	for range 3 {
		require.NoError(t, l.Wait(ctx))
	}
	l.Report(ratelimit.Throttled)
	require.NoError(t, l.Pause(ctx, time.Hour))
	f := scrape(t, m)
	waits, _ := value(f, "vncfleet_ratelimit_wait_seconds", nil)
	require.Equal(t, 3.0, waits)
	pauses, _ := value(f, "vncfleet_ratelimit_pauses_total", nil)
	require.Equal(t, 1.0, pauses)
	pausedFor, _ := value(f, "vncfleet_ratelimit_paused_seconds_total", nil)
	require.Equal(t, 3600.0, pausedFor)
	paused, _ := value(f, "vncfleet_ratelimit_paused", nil)
	require.Equal(t, 1.0, paused)
	throttled, _ := value(f, "vncfleet_ratelimit_outcomes_total", map[string]string{"outcome": "throttled"})
	require.Equal(t, 1.0, throttled)
	limit, _ := value(f, "vncfleet_ratelimit_limit_per_second", nil)
	require.Equal(t, 1000.0, limit)
	factor, ok := value(f, "vncfleet_ratelimit_aimd_factor", nil)
	require.True(t, ok)
	require.Equal(t, 1.0, factor, "a local limiter has no AIMD")
}

// TestRotationGaugesWaitForTheirInterval: the rotation gauges are not re-read at each
// reading, except for a fleet that got its first ready devices since the last one.
func TestRotationGaugesWaitForTheirInterval(t *testing.T) {
	env := provisiontest.New(t)
	m := metrics.New()
	g := m.NewDBGauges(metrics.DBConfig{Store: env.Store, Pool: env.Pool, RotationInterval: time.Hour})
	t.Cleanup(g.Close)
	env.Provision("alpha", connects("a1"))
	require.NoError(t, g.Refresh(env.Ctx))
	_, err := env.Pool.Exec(env.Ctx, `UPDATE devices SET password_set_at = now() - interval '365 days'`)
	require.NoError(t, err)
	require.NoError(t, g.Refresh(env.Ctx))
	overdue, _ := value(scrape(t, m), "vncfleet_rotation_overdue_devices", map[string]string{"fleet": "alpha"})
	require.Zero(t, overdue, "read an hour at most after the last time")

	env.Provision("beta", connects("b1"))
	require.NoError(t, g.Refresh(env.Ctx))
	f := scrape(t, m)
	_, ok := value(f, "vncfleet_rotation_overdue_devices", map[string]string{"fleet": "beta"})
	require.True(t, ok, "a fleet with its first ready devices is read at once")
	overdue, _ = value(f, "vncfleet_rotation_overdue_devices", map[string]string{"fleet": "alpha"})
	require.Equal(t, 1.0, overdue, "and the reading covers every fleet")
}

// TestLearnedReadinessGauges: the first-poll delay learned for the account is
// exported with the answers it was learned from, and absent before anything is.
func TestLearnedReadinessGauges(t *testing.T) {
	env := provisiontest.New(t)
	const acct = "sha256:metrics"
	m := metrics.New()
	g := m.NewDBGauges(metrics.DBConfig{Store: env.Store, Pool: env.Pool, ReadinessAccount: acct})
	t.Cleanup(g.Close)
	require.NoError(t, g.Refresh(env.Ctx))
	require.False(t, scrape(t, m).Has("vncfleet_readiness_first_poll_seconds", nil))

	_, err := env.Store.LearnReadiness(env.Ctx, acct, readiness.Config{}, []readiness.Observation{
		{Scheduled: time.Second, Pending: true}, {Scheduled: time.Second, Scout: true}, {Scheduled: time.Second, Scout: true}})
	require.NoError(t, err)
	learned, ok, err := env.Store.ReadinessEstimate(env.Ctx, acct)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, g.Refresh(env.Ctx))
	f := scrape(t, m)
	got, ok := value(f, "vncfleet_readiness_first_poll_seconds", nil)
	require.True(t, ok)
	require.InDelta(t, learned.FirstPoll.Seconds(), got, 1e-9)
	pending, _ := value(f, "vncfleet_readiness_learned_first_polls", map[string]string{"answer": "pending"})
	ready, _ := value(f, "vncfleet_readiness_learned_first_polls", map[string]string{"answer": "ready"})
	require.Equal(t, []float64{1, 2}, []float64{pending, ready})
}
