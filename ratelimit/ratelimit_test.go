package ratelimit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/ratelimit"
)

// grant is one successful Wait: when, and which limiter (process) gave it.
type grant struct {
	at   time.Time
	proc int
}

// peak is the most grants in any sliding window of length w, as the simulator counts
// requests.
func peak(grants []grant, w time.Duration) int {
	times := make([]time.Time, len(grants))
	for i, g := range grants {
		times[i] = g.at
	}
	slices.SortFunc(times, time.Time.Compare)
	best, lo := 0, 0
	for hi := range times {
		for times[hi].Sub(times[lo]) >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// between counts the grants of proc (-1: any) in [from, to).
func between(grants []grant, proc int, from, to time.Time) int {
	n := 0
	for _, g := range grants {
		if (proc < 0 || g.proc == proc) && !g.at.Before(from) && g.at.Before(to) {
			n++
		}
	}
	return n
}

// hammer runs perLimiter goroutines per limiter, each calling Wait until ctx ends and
// recording every grant; report, if set, is fed back after each grant as the caller of
// a real API would.
func hammer(ctx context.Context, limiters []ratelimit.Limiter, perLimiter int, report *ratelimit.Outcome) []grant {
	var mu sync.Mutex
	var grants []grant
	var wg sync.WaitGroup
	for proc, l := range limiters {
		for range perLimiter {
			wg.Go(func() {
				for l.Wait(ctx) == nil {
					now := time.Now()
					mu.Lock()
					grants = append(grants, grant{now, proc})
					mu.Unlock()
					if report != nil {
						l.Report(*report)
					}
				}
			})
		}
	}
	wg.Wait()
	return grants
}

func hammerFor(d time.Duration, limiters []ratelimit.Limiter, perLimiter int) []grant {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return hammer(ctx, limiters, perLimiter, nil)
}

// readMigrations reads the named migrations, one after the other.
func readMigrations(names ...string) ([]byte, error) {
	var all []byte
	for _, name := range names {
		b, err := os.ReadFile("../migrations/sql/" + name)
		if err != nil {
			return nil, err
		}
		all = append(append(all, b...), '\n')
	}
	return all, nil
}

// schema creates a schema of its own for the test with the rate limiter's migration
// applied (twice: it must be idempotent) and returns a function that opens a pool,
// as one more process would, whose search_path points at it.
func schema(t testing.TB) func() *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	migration, err := readMigrations("0002_ratelimit.sql", "0019_ratelimit_onboarding.sql")
	require.NoError(t, err)
	b := make([]byte, 8)
	_, err = rand.Read(b)
	require.NoError(t, err)
	name := "rl_" + hex.EncodeToString(b)

	cfg, err := pgxpool.ParseConfig(dbtest.BaseURL())
	require.NoError(t, err)
	admin, err := pgxpool.NewWithConfig(ctx, cfg.Copy())
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize())
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := admin.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{name}.Sanitize()+" CASCADE")
		require.NoError(t, err)
	})

	cfg.ConnConfig.RuntimeParams["search_path"] = name
	open := func() *pgxpool.Pool {
		pool, err := pgxpool.NewWithConfig(ctx, cfg.Copy())
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		return pool
	}
	pool := open()
	for range 2 {
		_, err = pool.Exec(ctx, string(migration))
		require.NoError(t, err)
	}
	return open
}

// processes builds n cluster limiters, each on a pool of its own as separate
// processes would have.
func processes(t testing.TB, open func() *pgxpool.Pool, n int, cfg ratelimit.Config) []*ratelimit.Cluster {
	t.Helper()
	var out []*ratelimit.Cluster
	for range n {
		l, err := ratelimit.NewCluster(open(), cfg)
		require.NoError(t, err)
		out = append(out, l)
	}
	return out
}

func limiters[L ratelimit.Limiter](ls ...L) []ratelimit.Limiter {
	out := make([]ratelimit.Limiter, len(ls))
	for i, l := range ls {
		out[i] = l
	}
	return out
}

func TestLocalNeverExceedsTheRate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		rate    float64
		callers int
		max     int // the most allowed in a second
	}{
		{"25/s", 25, 8, 25},
		{"fractional rate rounds down", 7.5, 8, 7},
		{"one caller", 40, 1, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const d = 2500 * time.Millisecond
			l := ratelimit.NewLocal(ratelimit.Config{Rate: tc.rate})
			grants := hammerFor(d, limiters(l), tc.callers)
			require.LessOrEqual(t, peak(grants, time.Second), tc.max)
			require.GreaterOrEqual(t, float64(len(grants))/d.Seconds(), 0.75*float64(tc.max),
				"the limiter must not starve callers")
		})
	}
}

func TestLocalPauseVoidsTurnsAlreadyTaken(t *testing.T) {
	t.Parallel()
	// Ten callers at 20/s queue half a second of turns ahead: a pause must stop them too.
	l := ratelimit.NewLocal(ratelimit.Config{Rate: 20})
	const pause = 600 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	paused := make(chan [2]time.Time, 1)
	go func() {
		time.Sleep(time.Second)
		before := time.Now()
		if err := l.Pause(ctx, pause); err != nil {
			t.Errorf("pause: %v", err)
		}
		paused <- [2]time.Time{before, time.Now()}
	}()
	grants := hammer(ctx, limiters(l), 10, nil)
	times := <-paused
	before, after := times[0], times[1]
	require.Zero(t, between(grants, -1, after, before.Add(pause)), "nothing during the pause")
	require.NotZero(t, between(grants, -1, before.Add(pause), before.Add(pause+500*time.Millisecond)), "resumes afterwards")
	require.LessOrEqual(t, peak(grants, time.Second), 20)
}

func TestUnlimited(t *testing.T) {
	t.Parallel()
	// A nil pool proves that an unlimited cluster limiter never asks the database.
	cluster, err := ratelimit.NewCluster(nil, ratelimit.Config{Rate: 0})
	require.NoError(t, err)
	for _, l := range limiters[ratelimit.Limiter](cluster, ratelimit.NewLocal(ratelimit.Config{Rate: -1})) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n := 0
		for ; n < 100_000 && l.Wait(ctx) == nil; n++ {
			l.Report(ratelimit.Throttled)
		}
		cancel()
		require.Equal(t, 100_000, n)
		require.NoError(t, l.Pause(context.Background(), time.Hour), "a pause means nothing without a limit")
		require.NoError(t, l.Wait(context.Background()))

		done, cancel := context.WithCancel(context.Background())
		cancel()
		require.ErrorIs(t, l.Wait(done), context.Canceled)
	}
}

func TestAIMD(t *testing.T) {
	t.Parallel()
	const (
		T = ratelimit.Throttled
		K = ratelimit.OK
		F = ratelimit.Failed
	)
	for _, tc := range []struct {
		name   string
		rounds [][]ratelimit.Outcome // each round is reported at once; rounds are 210ms apart
		want   float64
	}{
		{"isolated 503s do not slow down", [][]ratelimit.Outcome{{T, K, T, K, T, T, K, T, K}}, 1},
		{"a run of three halves", [][]ratelimit.Outcome{{T, T, T}}, 0.5},
		{"other failures do not break a run", [][]ratelimit.Outcome{{T, T, F, T}}, 0.5},
		{"one overload is one signal", [][]ratelimit.Outcome{{T, T, T, T, T, T, T, T, T}}, 0.5},
		{"runs apart halve again", [][]ratelimit.Outcome{{T, T, T}, {T, T, T}}, 0.25},
		{"down to the floor", [][]ratelimit.Outcome{{T, T, T}, {T}, {T}, {T}, {T}, {T}}, 0.1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := ratelimit.NewLocal(ratelimit.Config{Rate: 10})
			for i, round := range tc.rounds {
				if i > 0 {
					time.Sleep(210 * time.Millisecond)
				}
				for _, o := range round {
					l.Report(o)
				}
			}
			require.InDelta(t, tc.want, l.Factor(), 1e-9)
		})
	}
}

func TestAIMDRecoversOverTime(t *testing.T) {
	t.Parallel()
	l := ratelimit.NewLocal(ratelimit.Config{Rate: 10, MinFactor: 0.5, Recovery: time.Second})
	for range 3 {
		l.Report(ratelimit.Throttled)
	}
	require.InDelta(t, 0.5, l.Factor(), 1e-9)
	for range 1000 {
		l.Report(ratelimit.OK)
	}
	require.Less(t, l.Factor(), 0.6, "recovery is paced by time, not by how many answers came back")
	deadline := time.Now().Add(3 * time.Second)
	for l.Factor() < 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		l.Report(ratelimit.OK)
	}
	require.Equal(t, 1.0, l.Factor(), "full speed again after Recovery")
}

func TestCancellationIsPrompt(t *testing.T) {
	t.Parallel()
	open := schema(t)
	cluster := processes(t, open, 1, ratelimit.Config{Rate: 1})[0]
	for _, tc := range []struct {
		name string
		l    ratelimit.Limiter
	}{
		{"cluster", cluster},
		{"local", ratelimit.NewLocal(ratelimit.Config{Rate: 1})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, tc.l.Wait(context.Background()))
			// The next slot is a second away: waiters give up at their deadline, not then.
			var wg sync.WaitGroup
			for range 5 {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					defer cancel()
					start := time.Now()
					require.ErrorIs(t, tc.l.Wait(ctx), context.DeadlineExceeded)
					require.Less(t, time.Since(start), 500*time.Millisecond)
				})
			}
			wg.Wait()
			// Cancelled waiters leave the limiter working.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			require.NoError(t, tc.l.Wait(ctx))
		})
	}
}
