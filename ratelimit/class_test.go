package ratelimit_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/ratelimit"
)

// TestClassesShareTheBudget: while onboarding and rotation both wait on two
// processes, onboarding gets its share of the grants and rotation the rest; the
// cluster stays under the cap whatever the mix; and once onboarding stops waiting,
// rotation gets every slot (counted, not timed: the share of grants, and grants
// while alone compared with grants before).
func TestClassesShareTheBudget(t *testing.T) {
	t.Parallel()
	for _, share := range []float64{0.9, 1, 0.5} {
		t.Run(fmt.Sprint(share), func(t *testing.T) {
			t.Parallel()
			ls := processes(t, schema(t), 2, ratelimit.Config{Rate: 100, OnboardingShare: share})
			ctx, cancel := context.WithCancel(context.Background())
			onboardingCtx, stopOnboarding := context.WithCancel(ctx)
			var mu sync.Mutex
			var all []grant
			var both, alone [2]int // grants per class while both classes waited, and after
			onboardingDone := false
			mostLate := 0 // the most grants one onboarding waiter got once told to stop
			var wg sync.WaitGroup
			for proc, l := range ls {
				for _, class := range []ratelimit.Class{ratelimit.Onboarding, ratelimit.Rotation} {
					for range 20 {
						wg.Go(func() {
							cctx := ratelimit.WithClass(ctx, class)
							if class == ratelimit.Onboarding {
								cctx = ratelimit.WithClass(onboardingCtx, class)
							}
							late := 0
							for {
								if l.Wait(cctx) != nil {
									mu.Lock()
									mostLate = max(mostLate, late)
									mu.Unlock()
									return
								}
								// A grant seen after the stop may have been made just
								// before it; a second one cannot.
								if class == ratelimit.Onboarding && onboardingCtx.Err() != nil {
									late++
								}
								mu.Lock()
								all = append(all, grant{time.Now(), proc})
								if onboardingDone {
									alone[class]++
								} else {
									both[class]++
								}
								mu.Unlock()
							}
						})
					}
				}
			}
			time.Sleep(2 * time.Second)
			mu.Lock()
			onboardingDone = true
			stopOnboarding() // its waiters leave the queues at once, a slot in hand or not
			mu.Unlock()
			time.Sleep(2 * time.Second)
			cancel()
			wg.Wait()

			require.LessOrEqual(t, peak(all, time.Second), 100, "share %v: the most grants in a sliding second", share)
			got := float64(both[ratelimit.Onboarding]) / float64(both[ratelimit.Onboarding]+both[ratelimit.Rotation])
			t.Logf("share %v: while both waited onboarding got %.3f of %d grants; after, rotation %d and onboarding %d",
				share, got, both[0]+both[1], alone[ratelimit.Rotation], alone[ratelimit.Onboarding])
			require.InDelta(t, share, got, 0.05, "onboarding's share of the grants while both classes waited")
			// A waiter granted a slot as onboarding stopped may record it after the
			// stop, so alone[Onboarding] can be a few; none may be granted twice.
			require.LessOrEqual(t, mostLate, 1, "an onboarding waiter was granted slots after its context ended")
			// Alone, rotation gets the whole rate: at least nine tenths of what both
			// classes got together over as long.
			require.Greater(t, float64(alone[ratelimit.Rotation]), 0.9*float64(both[0]+both[1]),
				"rotation alone takes the slots onboarding left")
		})
	}
}

// TestClassesShareAcrossProcesses: a process with only rotation waiters keeps to
// rotation's share while another process onboards, and takes the whole rate again
// once onboarding stops (counted, not timed: shares of the grants). The rotator
// learns of the onboarder at its next lease, so it may hold one lease of slots
// from before: the share is counted after a warm-up of a few leases.
func TestClassesShareAcrossProcesses(t *testing.T) {
	t.Parallel()
	ls := processes(t, schema(t), 2, ratelimit.Config{Rate: 100})
	onboarder, rotator := ls[0], ls[1]
	ctx, cancel := context.WithCancel(context.Background())
	onboardingCtx, stopOnboarding := context.WithCancel(ctx)
	var mu sync.Mutex
	var all []grant
	var both, alone [2]int
	warm, onboardingDone := false, false
	var wg sync.WaitGroup
	run := func(l *ratelimit.Cluster, ctx context.Context, class ratelimit.Class) {
		ctx = ratelimit.WithClass(ctx, class)
		for range 20 {
			wg.Go(func() {
				for l.Wait(ctx) == nil {
					mu.Lock()
					all = append(all, grant{time.Now(), int(class)})
					switch {
					case onboardingDone:
						alone[class]++
					case warm:
						both[class]++
					}
					mu.Unlock()
				}
			})
		}
	}
	run(onboarder, onboardingCtx, ratelimit.Onboarding)
	run(rotator, ctx, ratelimit.Rotation)
	time.Sleep(time.Second)
	mu.Lock()
	warm = true
	mu.Unlock()
	time.Sleep(3 * time.Second)
	mu.Lock()
	onboardingDone = true
	stopOnboarding()
	mu.Unlock()
	time.Sleep(2 * time.Second)
	cancel()
	wg.Wait()

	require.LessOrEqual(t, peak(all, time.Second), 100)
	got := float64(both[ratelimit.Onboarding]) / float64(both[0]+both[1])
	t.Logf("while both waited onboarding got %.3f of %d grants (%v); after, %v", got, both[0]+both[1], both, alone)
	require.InDelta(t, ratelimit.DefaultOnboardingShare, got, 0.07, "onboarding's share across processes")
	require.Greater(t, float64(alone[ratelimit.Rotation]), 0.75*float64(both[0]+both[1])*2/3,
		"rotation alone takes the whole rate again")
}
