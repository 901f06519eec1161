package readiness_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/readiness"
)

// run feeds the estimator n first polls in batches of batch, each scheduled at the
// current estimate and answered up to 50 ms later, each device's delay drawn by
// delay. It returns the estimate, the share of the last half of the polls that
// found the device pending, and the mean first-poll delay over that half.
func run(c readiness.Config, e readiness.Estimate, n, batch int, delay func() time.Duration) (readiness.Estimate, float64, time.Duration) {
	pendingLate := 0
	var sum float64
	lateness := rand.New(rand.NewPCG(3, 4))
	for done := 0; done < n; done += batch {
		q := c.Current(e)
		if done >= n/2 {
			sum += float64(q) * float64(batch)
		}
		obs := make([]readiness.Observation, batch)
		for i := range obs {
			late := time.Duration(lateness.Float64() * float64(50*time.Millisecond))
			obs[i] = readiness.Observation{Scheduled: q, Late: late, Pending: delay() > q+late, Scout: true}
			if obs[i].Pending && done >= n/2 {
				pendingLate++
			}
		}
		e = c.Update(e, obs)
	}
	return e, float64(pendingLate) / float64(n-n/2), time.Duration(sum / float64(n-n/2))
}

func uniform(r *rand.Rand, lo, hi time.Duration) func() time.Duration {
	return func() time.Duration { return lo + time.Duration(r.Float64()*float64(hi-lo)) }
}

// TestConvergesToThePercentile: the first-poll delay settles at the (1−PendingTarget)
// quantile of the readiness delays (as the polls meet them: less their lateness, up
// to 50 ms here), and about PendingTarget of first polls then find the address
// pending: for delays uniform in 0.5..1.5 s (1 s ± 50%), p99 ≈ 1.485 s with the
// default target and p90 ≈ 1.375 s with a target of 0.1; a fixed 1 s delay is
// learned as 1 s; 5 s ± 50% from a 1 s start, as 7.45 s. (Every poll is a scout's
// here.) Averaged over the last
// half of the run: each pending answer lifts the estimate by a step, which ready
// answers then wear down.
func TestConvergesToThePercentile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		target     float64
		delay      func(r *rand.Rand) func() time.Duration
		want       time.Duration
		within     float64 // relative
		maxPending float64
	}{
		{"±50%, default target p99", 0, func(r *rand.Rand) func() time.Duration {
			return uniform(r, 500*time.Millisecond, 1500*time.Millisecond)
		},
			1485 * time.Millisecond, 0.05, 0.015},
		{"±50%, target p90", 0.1, func(r *rand.Rand) func() time.Duration {
			return uniform(r, 500*time.Millisecond, 1500*time.Millisecond)
		},
			1375 * time.Millisecond, 0.05, 0.13},
		{"fixed 1s", 0, func(*rand.Rand) func() time.Duration { return func() time.Duration { return time.Second } },
			time.Second, 0.06, 0.015},
		{"±50% around 5s, from a 1s start", 0, func(r *rand.Rand) func() time.Duration {
			return uniform(r, 2500*time.Millisecond, 7500*time.Millisecond)
		},
			7450 * time.Millisecond, 0.05, 0.015},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := readiness.Config{PendingTarget: tc.target}
			got, pending, mean := run(c, readiness.Estimate{}, 40_000, 4, tc.delay(rand.New(rand.NewPCG(1, 2))))
			require.InEpsilon(t, tc.want.Seconds(), mean.Seconds(), tc.within, "learned %s on average", mean)
			require.InEpsilon(t, tc.want.Seconds(), got.FirstPoll.Seconds(), 2*tc.within, "learned %s at the end", got.FirstPoll)
			require.LessOrEqual(t, pending, tc.maxPending, "share of first polls pending once learned")
			require.EqualValues(t, 40_000, got.Observations)
		})
	}
}

// TestRespectsBounds: a cloud that is never ready in time drives the delay to the
// ceiling and no further; one that is always ready at once, to the floor. Before
// anything is learned the delay is Initial, within the bounds too.
func TestRespectsBounds(t *testing.T) {
	t.Parallel()
	c := readiness.Config{Floor: 200 * time.Millisecond, Ceiling: 4 * time.Second}
	never := func() time.Duration { return time.Hour }
	got, _, _ := run(c, readiness.Estimate{}, 2_000, 10, never)
	require.Equal(t, 4*time.Second, got.FirstPoll)
	atOnce := func() time.Duration { return 0 }
	got, _, _ = run(c, got, 100_000, 50, atOnce)
	require.Equal(t, 200*time.Millisecond, got.FirstPoll)

	require.Equal(t, time.Second, c.Current(readiness.Estimate{}))
	require.Equal(t, 4*time.Second, readiness.Config{Ceiling: 4 * time.Second, Initial: time.Minute}.Current(readiness.Estimate{}))
	require.Equal(t, 200*time.Millisecond, c.Current(readiness.Estimate{FirstPoll: time.Millisecond}),
		"a stored estimate outside bounds narrowed since is brought within them")
	require.Equal(t, readiness.DefaultCeiling, readiness.Config{}.Current(readiness.Estimate{FirstPoll: time.Hour}))
}

// TestOutliers: one device that took a minute weighs one step, like any pending
// answer; a burst of pending answers moves the delay by MaxUpdateFactor at most in
// one update; answers that do not compare with the current estimate are ignored.
func TestOutliers(t *testing.T) {
	t.Parallel()
	c := readiness.Config{}
	e := readiness.Estimate{FirstPoll: 1500 * time.Millisecond, Observations: 1000}
	q := e.FirstPoll

	one := c.Update(e, []readiness.Observation{{Scheduled: q, Pending: true}})
	require.InDelta(t, math.Exp(readiness.Step*(1-readiness.DefaultPendingTarget)), float64(one.FirstPoll)/float64(q), 1e-6)
	require.EqualValues(t, 1001, one.Observations)
	require.EqualValues(t, 1, one.Pending)

	burst := make([]readiness.Observation, 1000)
	for i := range burst {
		burst[i] = readiness.Observation{Scheduled: q, Pending: true, Scout: true}
	}
	require.InDelta(t, readiness.MaxUpdateFactor, float64(c.Update(e, burst).FirstPoll)/float64(q), 1e-6)
	allReady := make([]readiness.Observation, 100_000)
	for i := range allReady {
		allReady[i] = readiness.Observation{Scheduled: q, Scout: true}
	}
	require.InDelta(t, math.Exp(-readiness.Step*readiness.DefaultPendingTarget*readiness.MaxFallAnswers),
		float64(c.Update(e, allReady).FirstPoll)/float64(q), 1e-6, "a large batch of ready answers weighs MaxFallAnswers")
	require.Equal(t, c.Update(e, allReady[:readiness.MaxFallAnswers]), readiness.Estimate{FirstPoll: c.Update(e, allReady).FirstPoll,
		Observations: e.Observations + readiness.MaxFallAnswers}, "and no more than that many")

	for name, o := range map[string]readiness.Observation{
		"pending, scheduled by an older, shorter estimate": {Scheduled: q / 2, Pending: true},
		"ready, scheduled by an older, longer estimate":    {Scheduled: 2 * q, Scout: true},
		"ready, answered after a backlog":                  {Scheduled: q, Late: 2 * q, Scout: true},
		"scheduled below the floor (retry now)":            {Scheduled: 0, Scout: true},
		"ready, not a scout":                               {Scheduled: q},
		"pending, scheduled below the floor":               {Scheduled: 0, Pending: true},
	} {
		got := c.Update(e, []readiness.Observation{o})
		require.Equal(t, e.FirstPoll, got.FirstPoll, name)
		require.Equal(t, e.Observations, got.Observations, name)
	}
	require.Equal(t, e, c.Update(e, nil))
	// A pending answer counts when it was sent at q or later; a ready one within the
	// tolerance.
	require.Greater(t, c.Update(e, []readiness.Observation{{Scheduled: q * 95 / 100, Late: q / 10, Pending: true}}).FirstPoll, q)
	require.Equal(t, q, c.Update(e, []readiness.Observation{{Scheduled: q * 95 / 100, Late: q / 50, Pending: true}}).FirstPoll)
	require.Less(t, c.Update(e, []readiness.Observation{{Scheduled: q * 105 / 100, Late: 100 * time.Millisecond, Scout: true}}).FirstPoll, q)
	// A poll scheduled by an older, shorter estimate that was sent late enough to
	// compare with this one counts: the delay was longer than about q.
	require.Greater(t, c.Update(e, []readiness.Observation{{Scheduled: q / 2, Late: q / 2, Pending: true}}).FirstPoll, q)
}

// TestColdStart: the first answers of an account move the estimate by larger steps
// than later ones, so that a fleet on a fresh account gets its first polls right
// after a handful of answers; the steps fall to Step as answers accumulate.
func TestColdStart(t *testing.T) {
	t.Parallel()
	c := readiness.Config{}
	probe := []readiness.Observation{{Scheduled: time.Second, Pending: true, Scout: true}, {Scheduled: time.Second, Pending: true, Scout: true},
		{Scheduled: time.Second, Scout: true}, {Scheduled: time.Second, Scout: true}, {Scheduled: time.Second, Scout: true}, {Scheduled: time.Second, Scout: true}}
	fresh := c.Update(readiness.Estimate{}, probe)
	warm := c.Update(readiness.Estimate{FirstPoll: time.Second, Observations: readiness.ColdObservations}, probe)
	eps := readiness.DefaultPendingTarget
	rise, fall := 2*(1-eps), 4*eps
	require.InDelta(t, math.Exp(readiness.Step*((1+readiness.ColdGain)*rise-fall)), fresh.FirstPoll.Seconds(), 1e-6)
	require.InDelta(t, math.Exp(readiness.Step*(rise-fall)), warm.FirstPoll.Seconds(), 1e-6)
	half := c.Update(readiness.Estimate{FirstPoll: time.Second, Observations: readiness.ColdObservations / 2}, probe)
	require.InDelta(t, math.Exp(readiness.Step*((1+readiness.ColdGain/2.0)*rise-fall)), half.FirstPoll.Seconds(), 1e-6)
	// Falls are gentle from the start.
	ready := []readiness.Observation{{Scheduled: time.Second, Scout: true}}
	require.InDelta(t, c.Update(warm, ready).FirstPoll.Seconds()/warm.FirstPoll.Seconds(),
		c.Update(readiness.Estimate{}, ready).FirstPoll.Seconds(), 1e-6)
}

func TestValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, readiness.Config{}.WithDefaults().Validate())
	for name, c := range map[string]readiness.Config{
		"floor above ceiling": {Floor: 2 * time.Second, Ceiling: time.Second},
		"target above half":   {PendingTarget: 0.6},
		"target negative":     {PendingTarget: -0.1},
		"negative floor":      {Floor: -time.Second},
	} {
		require.Error(t, c.WithDefaults().Validate(), name)
	}
}

// TestScouts: one device in ScoutEvery is first polled at the learned delay, the
// others Margin later, and only the scouts' ready answers shorten it.
func TestScouts(t *testing.T) {
	t.Parallel()
	scouts := 0
	for id := int64(1); id <= 16*readiness.ScoutEvery; id++ {
		if readiness.IsScout(id) {
			scouts++
			require.Equal(t, time.Second, readiness.FirstPollFor(time.Second, id))
		} else {
			require.Equal(t, 1050*time.Millisecond, readiness.FirstPollFor(time.Second, id))
		}
	}
	require.Equal(t, 16, scouts)
	c := readiness.Config{}
	e := readiness.Estimate{FirstPoll: time.Second, Observations: readiness.ColdObservations}
	require.Equal(t, e.FirstPoll, c.Update(e, []readiness.Observation{{Scheduled: 1050 * time.Millisecond}}).FirstPoll)
	require.Less(t, c.Update(e, []readiness.Observation{{Scheduled: time.Second, Scout: true}}).FirstPoll, e.FirstPoll)
	require.Greater(t, c.Update(e, []readiness.Observation{{Scheduled: 1050 * time.Millisecond, Pending: true}}).FirstPoll, e.FirstPoll,
		"anyone's pending answer lengthens it")
}

func TestShouldReschedule(t *testing.T) {
	t.Parallel()
	require.True(t, readiness.ShouldReschedule(0, time.Second), "never rescheduled")
	require.True(t, readiness.ShouldReschedule(time.Second, 1060*time.Millisecond), "a rise of 6%")
	require.False(t, readiness.ShouldReschedule(time.Second, 1040*time.Millisecond))
	require.False(t, readiness.ShouldReschedule(time.Second, 900*time.Millisecond), "a fall of 10% waits")
	require.True(t, readiness.ShouldReschedule(time.Second, 790*time.Millisecond), "a fall of 21%")
}
