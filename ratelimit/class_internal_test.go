package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSharesPick: contended slots follow the weights exactly, a class alone gets
// every slot and banks nothing, weight 0 is strict priority for the other class.
func TestSharesPick(t *testing.T) {
	t.Parallel()
	s := newShares(0.75)
	var got [numClasses]int
	for range 400 {
		got[s.pick([numClasses]int{3, 5})]++
	}
	require.Equal(t, [numClasses]int{300, 100}, got)
	require.Equal(t, Rotation, s.pick([numClasses]int{0, 1}))
	require.Equal(t, [numClasses]float64{}, s.served, "nothing banked while one class waits alone")
	require.Equal(t, Class(-1), s.pick([numClasses]int{}))

	strict := newShares(1)
	for range 10 {
		require.Equal(t, Onboarding, strict.pick([numClasses]int{1, 1}))
	}
	require.Equal(t, Rotation, strict.pick([numClasses]int{0, 1}))

	require.Equal(t, Onboarding, ClassOf(context.Background()))
	require.Equal(t, Rotation, ClassOf(WithClass(context.Background(), Rotation)))
	require.Equal(t, Onboarding, ClassOf(WithClass(context.Background(), Class(7))), "an unknown class counts as onboarding")
}

// TestFinishingFirst: within a class, waiters finishing work (readiness polls) get
// slots before new work, whatever the order they came in.
func TestFinishingFirst(t *testing.T) {
	t.Parallel()
	c := &Cluster{shares: newShares(DefaultOnboardingShare)}
	newWork := &waiter{class: Onboarding, slot: make(chan time.Time, 1)}
	poll := &waiter{class: Onboarding, finishing: true, slot: make(chan time.Time, 1)}
	c.enqueue(newWork)
	c.enqueue(poll)
	now := time.Now()
	c.slots = []time.Time{now.Add(time.Second)}
	c.dispatch(now)
	require.Len(t, poll.slot, 1, "the poll got the one slot")
	require.Empty(t, newWork.slot)
	require.True(t, isFinishing(Finishing(context.Background())))
	require.False(t, isFinishing(context.Background()))
}
