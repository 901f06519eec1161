package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/ratelimit"
)

func TestClusterNeverExceedsTheRateInAnySecond(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		rate      float64
		processes int
		callers   int // per process
	}{
		{"10/s, 3 processes", 10, 3, 8},
		{"20/s, 4 processes", 20, 4, 5},
		{"20/s, 1 caller each", 20, 2, 1},
		{"fractional 12.5/s counts as 12", 12.5, 3, 4},
		{"200/s, 3 busy processes", 200, 3, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const d = 3500 * time.Millisecond
			ls := processes(t, schema(t), tc.processes, ratelimit.Config{Rate: tc.rate})
			grants := hammerFor(d, limiters(ls...), tc.callers)

			allowed := int(tc.rate)
			require.LessOrEqual(t, peak(grants, time.Second), allowed, "the most requests in a sliding second")
			achieved := float64(len(grants)) / d.Seconds()
			require.GreaterOrEqual(t, achieved, 0.75*float64(allowed), "the limiter must not starve callers")
			if tc.callers > 1 {
				// No process starves: each wins a fair part of the rounds, not just the
				// one nearest the database. (Rounds are a lottery: with some 30 grants in
				// all, a quarter of the fair share is far out in the tail.)
				for p := range tc.processes {
					share := float64(between(grants, p, time.Time{}, time.Now())) / float64(len(grants))
					require.Greater(t, share, 0.25/float64(tc.processes), "process %d's share", p)
				}
			}
			var leases int64
			for _, l := range ls {
				leases += l.Stats().Leases
			}
			per := make([]int, tc.processes)
			for _, g := range grants {
				per[g.proc]++
			}
			t.Logf("%d grants (per process %v), %.1f/s, peak %d, %d leases", len(grants), per, achieved, peak(grants, time.Second), leases)
		})
	}
}

func TestPauseStopsEveryProcess(t *testing.T) {
	t.Parallel()
	const (
		rate  = 50
		pause = 700 * time.Millisecond
	)
	// Other processes learn of a pause at their next lease: the slots they hold reach
	// at most MaxLease past it, and are used at most MaxLate late (defaults, plus 10ms
	// for the mapping of clocks).
	const leak = 100*time.Millisecond + 20*time.Millisecond + 10*time.Millisecond
	for _, tc := range []struct {
		name    string
		workers int // processes calling Wait
		pauser  int // the process that pauses; == workers for one that only pauses
	}{
		{"the pausing process stops at once", 1, 0},
		{"the others stop within MaxLease", 2, 2},
		{"all together", 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ls := processes(t, schema(t), max(tc.workers, tc.pauser+1), ratelimit.Config{Rate: rate})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			paused := make(chan [2]time.Time, 1)
			go func() {
				time.Sleep(time.Second)
				before := time.Now()
				if err := ls[tc.pauser].Pause(ctx, pause); err != nil {
					t.Errorf("pause: %v", err)
				}
				paused <- [2]time.Time{before, time.Now()}
			}()
			// More callers than the rate allows, so that every process always holds slots.
			grants := hammer(ctx, limiters(ls[:tc.workers]...), 10, nil)
			times := <-paused
			before, after := times[0], times[1]
			end := before.Add(pause)

			require.Greater(t, between(grants, -1, before.Add(-time.Second), before), rate/2, "busy before the pause")
			for p := range tc.workers {
				from := after.Add(leak)
				if p == tc.pauser {
					from = after
				}
				require.Zero(t, between(grants, p, from, end.Add(-5*time.Millisecond)), "process %d honours the pause", p)
			}
			// A quarter of the rate: the test binaries of other packages share the CPU.
			require.Greater(t, between(grants, -1, end, end.Add(time.Second)), rate/4, "everyone resumes after the pause")
			require.LessOrEqual(t, peak(grants, time.Second), rate)
		})
	}
}

func TestPauseReachesAProcessThatStartsLater(t *testing.T) {
	t.Parallel()
	open := schema(t)
	cfg := ratelimit.Config{Rate: 50}
	first := processes(t, open, 1, cfg)[0]
	start := time.Now()
	require.NoError(t, first.Pause(context.Background(), 500*time.Millisecond))
	second := processes(t, open, 1, cfg)[0]
	for _, l := range []*ratelimit.Cluster{second, first} {
		require.NoError(t, l.Wait(context.Background()))
		require.GreaterOrEqual(t, time.Since(start), 490*time.Millisecond, "no grant before the pause ends")
	}
}

func TestSchemasAreIndependent(t *testing.T) {
	t.Parallel()
	cfg := ratelimit.Config{Rate: 50}
	paused := processes(t, schema(t), 1, cfg)[0]
	other := processes(t, schema(t), 1, cfg)[0]
	require.NoError(t, paused.Pause(context.Background(), time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	require.NoError(t, other.Wait(ctx), "the pool's search_path decides which table, and so which schedule")
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, paused.Wait(short), context.DeadlineExceeded)
}

func TestThrottlingSlowsTheClusterDownAndItRecovers(t *testing.T) {
	t.Parallel()
	const rate = 40
	ls := processes(t, schema(t), 2, ratelimit.Config{Rate: rate, Recovery: 2 * time.Second})
	all := limiters(ls...)
	base := len(hammerFor(time.Second, all, 4))

	// A run of 503s on both processes, in rounds apart, down to the floor (0.1).
	for range 5 {
		for _, l := range ls {
			for range 3 {
				l.Report(ratelimit.Throttled)
			}
		}
		time.Sleep(210 * time.Millisecond)
	}
	for _, l := range ls {
		require.InDelta(t, 0.1, l.Factor(), 1e-9)
	}
	slowed := len(hammerFor(time.Second, all, 4))
	require.Less(t, slowed, base/4, "a run of 503s cuts the rate (%d vs %d)", slowed, base)

	// Callers report each success; within Recovery (2s) the rate is back.
	ok := ratelimit.OK
	ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer cancel()
	start := time.Now()
	grants := hammer(ctx, all, 4, &ok)
	early := between(grants, -1, start, start.Add(500*time.Millisecond))
	late := between(grants, -1, start.Add(2500*time.Millisecond), start.Add(3500*time.Millisecond))
	require.Less(t, early, base/4, "recovery is gradual (%d in the first half second)", early)
	require.GreaterOrEqual(t, late, base*3/4, "successes bring the rate back (%d vs %d)", late, base)
	require.LessOrEqual(t, peak(grants, time.Second), rate)
}

func TestLeasesAreFewAtHighRates(t *testing.T) {
	t.Parallel()
	// 2,000/s across two processes with 20 callers each: a lease per request would be
	// thousands of statements a second; leases sized by demand make it a few tens.
	const rate = 2000
	ls := processes(t, schema(t), 2, ratelimit.Config{Rate: rate})
	const d = 2 * time.Second
	grants := hammerFor(d, limiters(ls...), 20)
	var leases int64
	for _, l := range ls {
		leases += l.Stats().Leases
	}
	require.LessOrEqual(t, peak(grants, time.Second), rate)
	require.GreaterOrEqual(t, float64(len(grants))/d.Seconds(), 0.75*rate)
	require.Less(t, float64(leases)/d.Seconds(), 200.0, "leases per second (%d in all for %d grants)", leases, len(grants))
}
