package progress_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/progress"
)

// clock is a fake time source the test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }
func snap(settled, total int) progress.Snapshot {
	return progress.Snapshot{Settled: settled, Total: total, ByStatus: map[string]int{"ready": settled, "creating": total - settled}}
}

var order = []string{"pending", "creating", "ready", "failed"}

func TestTTYRedrawsOneLine(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clk := newClock()
	r := progress.New(progress.Config{Out: &out, TTY: true, Label: "manifest #3", Now: clk.now, Order: order, Width: 10})

	r.Update(snap(0, 100))
	clk.advance(10 * time.Second)
	r.Update(snap(50, 100))
	require.Equal(t, 0, strings.Count(out.String(), "\n"), "a TTY line is redrawn in place, never ended")
	frames := strings.Split(out.String(), "\r")[1:]
	require.Len(t, frames, 2)
	require.Equal(t, "manifest #3 [..........] 0/100 settled (0%) | creating 100 | 0.0/s\x1b[K", frames[0])
	require.Equal(t, "manifest #3 [#####.....] 50/100 settled (50%) | creating 50, ready 50 | 5.0/s ETA 10s\x1b[K", frames[1])

	clk.advance(10 * time.Second)
	r.Finish(snap(100, 100))
	require.True(t, strings.HasSuffix(out.String(), "\rmanifest #3 [##########] 100/100 settled (100%) | ready 100 | 5.0/s ETA 0s\x1b[K\n"), "%q", out.String())
}

func TestTTYLineFitsTheTerminal(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	r := progress.New(progress.Config{Out: &out, TTY: true, Label: "manifest #3", Now: newClock().now, Columns: 30})
	r.Update(snap(1, 3))
	frame := strings.TrimSuffix(strings.TrimPrefix(out.String(), "\r"), "\x1b[K")
	require.Equal(t, 29, len([]rune(frame)), "one cell short of the width, so the cursor never wraps: %q", frame)
}

func TestAbandonEndsTheLine(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	r := progress.New(progress.Config{Out: &out, TTY: true, Now: newClock().now})
	r.Abandon()
	require.Empty(t, out.String(), "nothing drawn, nothing to end")
	r.Update(snap(1, 2))
	r.Abandon()
	require.True(t, strings.HasSuffix(out.String(), "\n"))
	r.Abandon()
	require.Equal(t, 1, strings.Count(out.String(), "\n"), "ended once")
}

func TestPlainLinesAreSparse(t *testing.T) {
	t.Parallel()
	type step struct {
		after   time.Duration
		settled int
		printed bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first update always prints", []step{{0, 0, true}}},
		{"same tenth within 5s is quiet", []step{{0, 0, true}, {time.Second, 3, false}, {time.Second, 5, false}}},
		{"a new tenth prints at once", []step{{0, 0, true}, {time.Second, 10, true}, {time.Second, 25, true}, {time.Second, 29, false}}},
		{"a change after 5s prints", []step{{0, 0, true}, {4 * time.Second, 1, false}, {time.Second, 2, true}}},
		{"no change after 5s is quiet", []step{{0, 5, true}, {6 * time.Second, 5, false}, {20 * time.Second, 5, false}}},
		{"heartbeat after a quiet minute", []step{{0, 5, true}, {30 * time.Second, 5, false}, {30 * time.Second, 5, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			clk := newClock()
			r := progress.New(progress.Config{Out: &out, Now: clk.now, Order: order})
			lines := 0
			for i, s := range tt.steps {
				clk.advance(s.after)
				r.Update(snap(s.settled, 100))
				n := strings.Count(out.String(), "\n")
				require.Equal(t, s.printed, n > lines, "step %d: %q", i, out.String())
				lines = n
			}
			require.NotContains(t, out.String(), "\r", "no cursor tricks in a log")
		})
	}
}

func TestPlainLineContent(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clk := newClock()
	r := progress.New(progress.Config{Out: &out, Label: "work rot-1", Now: clk.now, Order: order})
	r.Update(progress.Snapshot{Settled: 0, Total: 40, ByStatus: map[string]int{"pending": 40}})
	clk.advance(20 * time.Second)
	r.Update(progress.Snapshot{Settled: 20, Total: 40, ByStatus: map[string]int{"pending": 19, "ready": 19, "failed": 1, "zombie": 1}})
	clk.advance(20 * time.Second)
	r.Finish(progress.Snapshot{Settled: 40, Total: 40, ByStatus: map[string]int{"ready": 39, "failed": 1}})
	r.Finish(progress.Snapshot{Settled: 40, Total: 40, ByStatus: map[string]int{"ready": 39, "failed": 1}})
	require.Equal(t, strings.Join([]string{
		"work rot-1 0/40 settled (0%) | pending 40 | 0.0/s | 0s elapsed",
		// 80 calls owed fell to 38 (19 pending, 2 each) in 20 s: 2.1/s, 18 s left.
		"work rot-1 20/40 settled (50%) | pending 19, ready 19, failed 1, zombie 1 | 1.0/s ETA 18s | 20s elapsed",
		"work rot-1 40/40 settled (100%) | ready 39, failed 1 | 1.0/s ETA 0s | 40s elapsed",
	}, "\n")+"\n", out.String(), "Finish prints the last state once")
}

func TestRateFollowsTheWindow(t *testing.T) {
	t.Parallel()
	clk := newClock()
	r := progress.New(progress.Config{Now: clk.now, RateWindow: 30 * time.Second})
	require.Zero(t, r.Rate())
	r.Update(snap(0, 1000))
	for i := 1; i <= 6; i++ { // 10/s for a minute
		clk.advance(10 * time.Second)
		r.Update(snap(i*100, 1000))
	}
	require.InDelta(t, 10.0, r.Rate(), 0.001)
	for i := 1; i <= 6; i++ { // then 1/s: the window forgets the fast start
		clk.advance(10 * time.Second)
		r.Update(snap(600+i*10, 1000))
	}
	require.InDelta(t, 1.0, r.Rate(), 0.001)
}

func TestOrderedAndFormatCounts(t *testing.T) {
	t.Parallel()
	m := map[string]int{"failed": 2, "ready": 5, "zeta": 1, "alpha": 3, "pending": 0}
	require.Equal(t, []string{"ready", "failed", "alpha", "zeta"}, progress.Ordered(m, order))
	require.Equal(t, "ready 5, failed 2, alpha 3, zeta 1", progress.FormatCounts(m, order))
	require.Equal(t, "alpha 3, failed 2, ready 5, zeta 1", progress.FormatCounts(m, nil))
	require.Empty(t, progress.FormatCounts(nil, order))
}

// TestNoETAFromAFewSeconds: a first batch settled in two seconds says nothing of the
// hour ahead; the ETA shows only once a third of the rate window is covered.
func TestNoETAFromAFewSeconds(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clk := newClock()
	r := progress.New(progress.Config{Out: &out, TTY: true, Label: "m", Now: clk.now, Order: order, Width: 10})
	r.Update(snap(0, 1000))
	clk.advance(2 * time.Second)
	r.Update(snap(1, 1000))
	clk.advance(8 * time.Second)
	r.Update(snap(100, 1000))
	frames := strings.Split(out.String(), "\r")[1:]
	require.Len(t, frames, 3)
	require.NotContains(t, frames[1], "ETA", "0.5/s over 2 s would say ETA 33m18s")
	require.Contains(t, frames[2], "10.0/s ETA 1m30s")
}
