package jobs

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fanOut returns every item's result in the items' order, runs fn once per item and
// never more than n at a time, however n compares with the number of items.
func TestFanOutKeepsOrderAndBound(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ items, n int }{{0, 4}, {1, 4}, {3, 8}, {50, 4}, {50, 1}, {7, 0}} {
		items := make([]int, tc.items)
		for i := range items {
			items[i] = i
		}
		var running, most, calls atomic.Int64
		got := fanOut(items, tc.n, func(i int) int {
			calls.Add(1)
			now := running.Add(1)
			for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
			}
			time.Sleep(time.Millisecond)
			running.Add(-1)
			return i * i
		})
		require.Len(t, got, tc.items)
		for i, r := range got {
			require.Equal(t, i*i, r, "result %d of %+v", i, tc)
		}
		require.EqualValues(t, tc.items, calls.Load(), "%+v", tc)
		require.LessOrEqual(t, most.Load(), int64(max(tc.n, 1)), "%+v", tc)
		if tc.items >= 2*max(tc.n, 1) && tc.n > 1 {
			require.Greater(t, most.Load(), int64(1), "%+v: the items ran one at a time", tc)
		}
	}
}
