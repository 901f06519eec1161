package server

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/store"
)

// TestPaceFollowsTheProgressRule: the stream's ETA is progress's rule (calls owed at
// the budget until the rate achieved is measured, then at that rate; a pause adds
// its rest), on the calls owed the progress answer carries, and the budget is the
// cluster limiter's published state when there is one.
func TestPaceFollowsTheProgressRule(t *testing.T) {
	t.Parallel()
	pc := &pace{rate: 10}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ev := pc.observe(&store.Progress{Total: 100, Settled: 0, CallsOwed: 200, ByStatus: store.Counts{"pending": 100}}, t0)
	require.Zero(t, ev.DevicesPerSecond)
	require.InDelta(t, 10.0, ev.Rate, 1e-9)
	require.InDelta(t, 20.0, *ev.ETASeconds, 1e-9, "200 calls at the 10/s budget")

	ev = pc.observe(&store.Progress{Total: 100, Settled: 20, CallsOwed: 160, ByStatus: store.Counts{"pending": 80, "ready": 20}}, t0.Add(10*time.Second))
	require.InDelta(t, 2.0, ev.DevicesPerSecond, 1e-9)
	require.InDelta(t, 40.0, *ev.ETASeconds, 1e-9, "measured: 40 calls paid off in 10 s, 160 left at 4/s")

	// The limiter slowed down and paused: the budget follows, the pause adds its rest.
	slowed := &store.Progress{Total: 100, Settled: 20, CallsOwed: 160, ByStatus: store.Counts{"pending": 80, "ready": 20},
		Cloud: &store.CloudState{Limiter: &store.LimiterState{Rate: 40, Factor: 0.25, Processes: 2, Slowed: 1}}}
	fresh := &pace{rate: 10}
	ev = fresh.observe(slowed, t0)
	require.InDelta(t, 10.0, ev.Rate, 1e-9, "40/s slowed to a quarter")
	require.InDelta(t, 16.0, *ev.ETASeconds, 1e-9)
	until := t0.Add(5 * time.Second)
	slowed.Cloud.PausedUntil = &until
	ev = (&pace{}).observe(slowed, t0)
	require.InDelta(t, 21.0, *ev.ETASeconds, 1e-9, "16 s of calls after a 5 s pause")

	// No budget and nothing measured: no ETA. Done: 0.
	ev = (&pace{}).observe(&store.Progress{Total: 10, CallsOwed: 20, ByStatus: store.Counts{"pending": 10}}, t0)
	require.Nil(t, ev.ETASeconds)
	ev = (&pace{}).observe(&store.Progress{Total: 10, Settled: 10, Done: true, ByStatus: store.Counts{"ready": 10}}, t0)
	require.Zero(t, *ev.ETASeconds)
}
