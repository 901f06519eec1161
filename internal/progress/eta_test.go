package progress_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/progress"
)

func TestCallsOwedCountsWhatEachStatusStillNeeds(t *testing.T) {
	t.Parallel()
	byStatus := map[string]int{"staged": 5, "pending": 10, "creating": 2, "awaiting_ready": 4, "updating": 1,
		"rotating": 2, "deleting": 3, "ready": 100, "failed": 3, "deleted": 7, "cancelled": 1}
	require.Equal(t, 2*5+2*10+2*2+1*4+3*1+3*2+2*3, progress.CallsOwed(byStatus))
	require.Zero(t, progress.CallsOwed(nil))
	require.Zero(t, progress.CallsOwed(map[string]int{"ready": 10, "zombie": 3}), "settled and unknown statuses owe nothing")
}

func TestETARule(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		owed     int
		achieved float64
		measured bool
		budget   float64
		paused   time.Duration
		want     time.Duration
		unknown  bool
	}{
		{name: "nothing owed", owed: 0, want: 0},
		{name: "budget while too little is measured", owed: 400, achieved: 1, budget: 40, want: 10 * time.Second},
		{name: "the achieved rate once measured", owed: 400, achieved: 8, measured: true, budget: 40, want: 50 * time.Second},
		{name: "measured beats a budget it cannot reach", owed: 400, achieved: 80, measured: true, budget: 40, want: 5 * time.Second},
		{name: "measured and nothing paid off: no ETA", owed: 400, achieved: 0, measured: true, budget: 40, unknown: true},
		{name: "neither measured nor budgeted: no ETA", owed: 400, achieved: 3, unknown: true},
		{name: "a pause adds its rest", owed: 400, budget: 40, paused: 7 * time.Second, want: 17 * time.Second},
		{name: "a pause in the past adds nothing", owed: 400, budget: 40, paused: -3 * time.Second, want: 10 * time.Second},
		{name: "calls owed, under MinETA: no ETA", owed: 39, budget: 40, unknown: true},
		{name: "calls owed, at MinETA: shown", owed: 40, budget: 40, want: progress.MinETA},
		{name: "calls owed, under MinETA at the achieved rate: no ETA", owed: 3, achieved: 8, measured: true, budget: 40, unknown: true},
		{name: "calls owed and a pause that lifts it over MinETA", owed: 4, budget: 40, paused: 2 * time.Second, want: 2100 * time.Millisecond},
	} {
		got, ok := progress.ETA(c.owed, c.achieved, c.measured, c.budget, c.paused)
		require.Equal(t, !c.unknown, ok, c.name)
		if !c.unknown {
			require.Equal(t, c.want, got, c.name)
		}
	}
}

func TestBudgetShare(t *testing.T) {
	t.Parallel()
	require.InDelta(t, 40.0, progress.BudgetShare(40, 1), 1e-9)
	require.InDelta(t, 4.0, progress.BudgetShare(40, 0.1), 1e-9, "a slowed limiter allows a tenth")
	require.InDelta(t, 40.0, progress.BudgetShare(40, 0), 1e-9, "no factor published: full speed")
	require.Zero(t, progress.BudgetShare(0, 1), "unlimited: no budget to divide by")
}

func TestPaceMeasuresCallsPaidOffOverItsWindow(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var p progress.Pace // DefaultWindow: 30 s, measured after 10 s
	_, measured := p.Achieved()
	require.False(t, measured, "no samples")
	p.Observe(t0, 400, 0)
	p.Observe(t0.Add(5*time.Second), 300, 0)
	rate, measured := p.Achieved()
	require.InDelta(t, 20.0, rate, 1e-9)
	require.False(t, measured, "5 s of a 30 s window")
	d, ok := p.ETA(300, 40, 0)
	require.True(t, ok)
	require.Equal(t, 7500*time.Millisecond, d, "the budget until measured: 300 calls at 40/s")

	p.Observe(t0.Add(10*time.Second), 200, 0)
	rate, measured = p.Achieved()
	require.InDelta(t, 20.0, rate, 1e-9)
	require.True(t, measured)
	d, _ = p.ETA(200, 40, 0)
	require.Equal(t, 10*time.Second, d, "200 calls at the 20/s achieved, not the 40/s budget")

	// A stall: a minute later nothing more was paid off, and the window has forgotten the fast start.
	p.Observe(t0.Add(50*time.Second), 200, 0)
	p.Observe(t0.Add(70*time.Second), 200, 0)
	rate, measured = p.Achieved()
	require.Zero(t, rate)
	require.True(t, measured)
	_, ok = p.ETA(200, 40, 0)
	require.False(t, ok, "a stalled run has no ETA, whatever the budget")

	// A retry puts failed devices back: the calls owed rise, which is nothing paid off.
	p.Observe(t0.Add(80*time.Second), 260, 0)
	rate, _ = p.Achieved()
	require.Zero(t, rate)
}

// TestETAEarlyInARun replays the bad case: 200 devices, 40/s, the first
// seconds spent on creates (each pays off one call of two) while no device is ready
// yet. Counting devices, the first lines said the run would take an hour; counting
// calls, the ETA is within a small factor of the truth from the first line on.
func TestETAEarlyInARun(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clk := newClock()
	r := progress.New(progress.Config{Out: &out, TTY: true, Now: clk.now, Order: order, Width: 10})
	const total = 200
	// A run of 20 s: creates at 20/s for 10 s, then readiness polls at 20/s for 10 s.
	at := func(sec int) progress.Snapshot {
		created := min(total, 20*sec)
		ready := max(0, min(total, 20*(sec-10)))
		return progress.Snapshot{Settled: ready, Total: total, Budget: 40,
			ByStatus: map[string]int{"pending": total - created, "awaiting_ready": created - ready, "ready": ready}}
	}
	for sec := 0; sec <= 20; sec++ {
		r.Update(at(sec))
		frames := strings.Split(out.String(), "\r")
		last := frames[len(frames)-1]
		i := strings.Index(last, "ETA ")
		require.GreaterOrEqual(t, i, 0, "second %d: a budget is known, so an ETA is shown: %q", sec, last)
		eta, err := time.ParseDuration(strings.TrimSuffix(strings.Fields(last[i+4:])[0], "\x1b[K"))
		require.NoError(t, err, last)
		left := time.Duration(20-sec) * time.Second
		require.LessOrEqual(t, eta, 2*left+time.Second, "second %d: %q", sec, last)
		require.GreaterOrEqual(t, eta, left/2-time.Second, "second %d: %q", sec, last)
		clk.advance(time.Second)
	}
}

func TestNoteEndsTheLine(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clk := newClock()
	r := progress.New(progress.Config{Out: &out, Now: clk.now, Order: order})
	r.Update(progress.Snapshot{Total: 10, ByStatus: map[string]int{"pending": 10}, Budget: 4, Note: "sending 4/s of 40/s: VNC Cloud asked to slow down"})
	require.Equal(t, "0/10 settled (0%) | pending 10 | 0.0/s ETA 5s | sending 4/s of 40/s: VNC Cloud asked to slow down | 0s elapsed\n", out.String())
	clk.advance(time.Second)
	r.Update(progress.Snapshot{Total: 10, ByStatus: map[string]int{"pending": 10}, Budget: 40})
	require.Equal(t, 1, strings.Count(out.String(), "\n"), "a changed note alone waits for PlainEvery")
	clk.advance(5 * time.Second)
	r.Update(progress.Snapshot{Total: 10, ByStatus: map[string]int{"pending": 10}, Budget: 40, PausedUntil: clk.t.Add(3 * time.Second), Note: "paused"})
	require.Contains(t, out.String(), "0.0/s ETA 4s | paused | 6s elapsed", "20 calls at 40/s after a 3 s pause: 3.5 s, rounded")
}

// TestNoETAUnderMinETAWhileCallsAreOwed: a call still owed at a budget that would pay
// it off in 25 ms shows no ETA rather than "ETA 0s"; once every device is settled
// the line says ETA 0s.
func TestNoETAUnderMinETAWhileCallsAreOwed(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clk := newClock()
	r := progress.New(progress.Config{Out: &out, Now: clk.now, Order: order})
	r.Update(progress.Snapshot{Settled: 9, Total: 10, ByStatus: map[string]int{"awaiting_ready": 1, "ready": 9}, Budget: 40})
	require.Equal(t, "9/10 settled (90%) | ready 9, awaiting_ready 1 | 0.0/s | 0s elapsed\n", out.String())
	r.Finish(progress.Snapshot{Settled: 10, Total: 10, ByStatus: map[string]int{"ready": 10}})
	require.Contains(t, out.String(), " ETA 0s", "done")
}
