package server

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/store"
)

func TestETAIsTheLongerOfBudgetAndPace(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name        string
		left, calls int
		rate, pace  float64
		want        float64
		wantUnknown bool
	}{
		{name: "budget only", left: 100, calls: 200, rate: 10, want: 20},
		{name: "pace slower than budget", left: 100, calls: 200, rate: 10, pace: 2, want: 50},
		{name: "pace only (no rate cap)", left: 100, calls: 200, pace: 50, want: 2},
		{name: "nothing known yet", left: 100, calls: 200, wantUnknown: true},
		{name: "done", left: 0, calls: 0, rate: 10, want: 0},
	} {
		got := eta(c.left, c.calls, c.rate, c.pace)
		if c.wantUnknown {
			require.Nil(t, got, c.name)
			continue
		}
		require.NotNil(t, got, c.name)
		require.InDelta(t, c.want, *got, 1e-9, c.name)
	}
}

func TestCallsOwedCountsWhatEachStatusStillNeeds(t *testing.T) {
	t.Parallel()
	p := &store.Progress{Staged: 5, ByStatus: store.Counts{"pending": 10, "awaiting_ready": 4, "updating": 1, "ready": 100, "failed": 3}}
	require.Equal(t, 2*5+2*10+1*4+3*1, callsOwed(p))
}

func TestPaceMeasuresDevicesPerSecondOverItsWindow(t *testing.T) {
	t.Parallel()
	pc := &pace{rate: 10}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ev := pc.observe(&store.Progress{Total: 100, Settled: 0, ByStatus: store.Counts{"pending": 100}}, t0)
	require.Zero(t, ev.DevicesPerSecond)
	require.InDelta(t, 20.0, *ev.ETASeconds, 1e-9, "200 calls at 10/s")
	ev = pc.observe(&store.Progress{Total: 100, Settled: 20, ByStatus: store.Counts{"pending": 80, "ready": 20}}, t0.Add(10*time.Second))
	require.InDelta(t, 2.0, ev.DevicesPerSecond, 1e-9)
	require.InDelta(t, 40.0, *ev.ETASeconds, 1e-9, "80 left at 2/s is longer than 160 calls at 10/s")
	// A minute later the first reading has left the window.
	ev = pc.observe(&store.Progress{Total: 100, Settled: 80, ByStatus: store.Counts{"pending": 20, "ready": 80}}, t0.Add(70*time.Second))
	require.InDelta(t, 1.0, ev.DevicesPerSecond, 1e-9, "60 devices in the 60 s since the second reading")
}
