// Package readiness learns when to make a device's first readiness poll. Every poll
// spends a request of the rate budget, so the first one should come just after the
// address is ready: too early and it finds "pending" and a second poll is owed, too
// late and the device waits for nothing.
//
// VNC Cloud's /ready answers "pending" or "none", never since when, so a device's
// pending→ready time is never seen whole: a first poll made t after the device began
// waiting only says whether its delay was shorter than t (ready) or longer (pending).
// Quantile estimators that need the values themselves (a window's p90, a t-digest)
// have nothing to feed on; one that needs only comparisons does. The Estimator is the
// frugal streaming quantile of Ma, Muthukrishnan and Sandler ("Frugal Streaming for
// Estimating Quantiles", 2013), a Robbins–Monro step on the logarithm of the delay:
// each first poll that finds the address pending lengthens the first-poll delay by
// Step·(1−PendingTarget), each scout's (ScoutEvery) that finds it ready shortens it by
// Step·PendingTarget. The delay settles where PendingTarget of the scouts' first
// polls find "pending", which is the (1−PendingTarget) quantile of the readiness
// delays; the other devices are polled Margin later, so what the learning costs is
// about PendingTarget/ScoutEvery second polls a device.
//
// Why this and not a moving percentile of observed times: the only time a poll
// observes is the time it was made, which the schedule chose; a percentile of those
// drifts upwards by the poller's own lateness at every round and never comes down.
// Why logarithmic steps: a multiplicative step learns a 100 ms delay and a 10 s one
// equally fast. Each observation moves the estimate by one bounded step however long
// its device took, so an outlier (an address ready after a minute) weighs what any
// other pending answer weighs, and one update lengthens the estimate by at most a
// factor of MaxUpdateFactor, so a burst of pending answers (a hiccup of the cloud)
// cannot throw it to the ceiling at once, and shortens it by at most what
// MaxFallAnswers ready answers would. The estimate is kept within Floor and Ceiling.
package readiness

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"time"
)

// Config bounds and tunes the learning. Zero fields take the defaults named on each.
type Config struct {
	// Initial is the first-poll delay before anything is learned. Defaults to
	// DefaultInitial (1s, the usual readiness delay of VNC Cloud).
	Initial time.Duration
	// Floor and Ceiling bound the learned delay. Defaults DefaultFloor (100ms: no
	// readiness delay is shorter than a round trip worth polling for) and
	// DefaultCeiling (15s: beyond it a slow cloud is a fault to see, not a delay to
	// wait out silently; later polls back off from there anyway).
	Floor, Ceiling time.Duration
	// PendingTarget is the share of scouts' first polls (see ScoutEvery) allowed to
	// find the address still pending, in (0, 0.5]. Defaults to DefaultPendingTarget
	// (0.01): the scouts are polled at the p99 of the delays, the other devices a
	// margin later, so the learning costs about 0.01/ScoutEvery second polls a
	// device, the price of ever learning that a shorter delay would do.
	PendingTarget float64
}

// The defaults of Config, exported so that the configuration layer fills and shows
// the same values.
const (
	DefaultInitial       = time.Second
	DefaultFloor         = 100 * time.Millisecond
	DefaultCeiling       = 15 * time.Second
	DefaultPendingTarget = 0.01
)

// Step is the change of the logarithm of the delay per unit of evidence: a pending
// first poll lengthens the delay by about 5%, and 1/PendingTarget ready ones shorten
// it by as much. Smaller steps are steadier and slower to follow a change.
const Step = 0.05

// MaxUpdateFactor is the most one Update lengthens the delay by. MaxFallAnswers is
// how many ready answers of one Update count at most: the delay probes downwards
// gently, by what 5 ready answers say (0.25% with the defaults), however large the
// batch and however fresh the account. The first polls that come due together (a
// batch of 250, four at a time) are all sent at one delay, and where the readiness
// delay is nearly fixed, a step down across it would find a whole batch pending
// before any answer could say so; falls much smaller than Margin let the scouts'
// pending answers stop the descent before the other devices reach it. With large
// batches the delay therefore settles a little higher than PendingTarget alone would
// put it.
const (
	MaxUpdateFactor = 1.5
	MaxFallAnswers  = 5
)

// ScoutEvery and Margin split the devices: one in ScoutEvery (by row id) is a scout,
// first polled at the learned delay itself; the others Margin later. Only scouts'
// ready answers shorten the delay, so that the probing below the current estimate,
// without which it would never learn that shorter would do, is done by few devices:
// where the readiness delay is nearly fixed, a probe that crosses it finds the
// scouts of a burst pending, not the burst. Anyone's pending answer lengthens it.
const (
	ScoutEvery = 16
	Margin     = 0.05
)

// IsScout says whether the device with row id id is a scout.
func IsScout(id int64) bool { return id%ScoutEvery == 0 }

// FirstPollFor is the first-poll delay of device id when the learned delay is q.
// The SQL function vncfleet_first_poll_for (migration 0027) says the same.
func FirstPollFor(q time.Duration, id int64) time.Duration {
	if IsScout(id) {
		return q
	}
	return time.Duration(float64(q) * (1 + Margin))
}

// Tolerance and OnTime decide which answers compare with the current estimate q.
// A poll's answer is about the moment it was sent, Scheduled+Late. A pending answer
// at a moment no earlier than q says the delay was longer than q. A ready answer at
// a moment no later than q·(1+Tolerance)+OnTime is counted as saying the delay was no
// longer than q: polls are sent a little after they are due (the claim, the limiter's
// spacing, a round trip: OnTime), and counting those answers as if on time makes the
// estimate settle where the polls, as they are really sent, find "pending" at the
// target rate, which is what the call count depends on. Other answers tell nothing
// of q: a pending answer of a poll scheduled and sent before q (by an older, shorter
// estimate that has already learned from its neighbours), a ready answer of a poll
// that waited long for the rate limiter or in a backlog (by then every device is
// ready; counting those would shorten the delay by a step each).
const (
	Tolerance = 0.1
	OnTime    = 250 * time.Millisecond
)

// ColdObservations and ColdGain make the first pending answers of an account count
// more: the step that lengthens the delay starts at Step·(1+ColdGain) and falls to
// Step over the first
// ColdObservations counted answers (a Robbins–Monro gain that decreases), so that a
// fleet uploaded to a fresh account moves its first polls to the learned delay within
// a few answers, while later the estimate stays steady.
const (
	ColdObservations = 200
	ColdGain         = 3
)

// WithDefaults returns c with every zero field filled.
func (c Config) WithDefaults() Config {
	c.Initial = cmp.Or(c.Initial, DefaultInitial)
	c.Floor = cmp.Or(c.Floor, DefaultFloor)
	c.Ceiling = cmp.Or(c.Ceiling, DefaultCeiling)
	c.PendingTarget = cmp.Or(c.PendingTarget, DefaultPendingTarget)
	return c
}

// Validate reports a configuration that cannot work (after WithDefaults).
func (c Config) Validate() error {
	switch {
	case c.Floor <= 0 || c.Ceiling <= 0 || c.Initial <= 0:
		return errors.New("readiness: floor, ceiling and initial must be positive")
	case c.Floor > c.Ceiling:
		return errors.New("readiness: floor must not be above ceiling")
	case !(c.PendingTarget > 0 && c.PendingTarget <= 0.5):
		return errors.New("readiness: pending target must be within (0, 0.5]")
	}
	return nil
}

// Observation is the answer to one device's first readiness poll.
type Observation struct {
	// Scheduled is how long after the device began waiting its first poll was due.
	Scheduled time.Duration
	// Late is how much later than Scheduled the answer came (claim, rate limiter,
	// round trip).
	Late time.Duration
	// Pending is true when the address was not ready yet.
	Pending bool
	// Scout is true for a scout's poll (IsScout): only those shorten the delay.
	Scout bool
}

// Estimate is what has been learned for one account.
type Estimate struct {
	// FirstPoll is the delay of the first poll; zero before anything was learned.
	FirstPoll time.Duration
	// Observations counts the first polls that moved the estimate; Pending those of
	// them that found the address pending.
	Observations, Pending int64
}

// Current is the first-poll delay the estimate stands for: FirstPoll, or Initial
// before anything was learned, within the bounds.
func (c Config) Current(e Estimate) time.Duration {
	c = c.WithDefaults()
	return c.clamp(cmp.Or(e.FirstPoll, c.Initial))
}

func (c Config) clamp(d time.Duration) time.Duration { return min(max(d, c.Floor), c.Ceiling) }

// Update returns the estimate after the observations.
//
// An observation counts only when it compares its delay with the current estimate
// (see Tolerance), a ready one only from a scout; one scheduled earlier than Floor is not a first poll the schedule
// chose (an operator's "retry now", a failed device polled again) and never counts.
func (c Config) Update(e Estimate, obs []Observation) Estimate {
	c = c.WithDefaults()
	q := c.Current(e)
	var up, down int64
	for _, o := range obs {
		if o.Scheduled < c.Floor {
			continue
		}
		sent := float64(o.Scheduled + o.Late)
		switch {
		case o.Pending && sent >= float64(q):
			up++
		case !o.Pending && o.Scout && sent <= float64(q)*(1+Tolerance)+float64(OnTime):
			down++
		}
	}
	if up+down == 0 {
		return Estimate{FirstPoll: q, Observations: e.Observations, Pending: e.Pending}
	}
	eps := c.PendingTarget
	// The larger steps of a fresh account are for lengthening only: a fall is always
	// gentle.
	gain := Step * (1 + ColdGain*max(0, 1-float64(e.Observations)/ColdObservations))
	rise := gain * float64(up) * (1 - eps)
	fall := Step * eps * float64(min(down, MaxFallAnswers))
	delta := min(rise-fall, math.Log(MaxUpdateFactor))
	next := c.clamp(time.Duration(float64(q) * math.Exp(delta)))
	return Estimate{FirstPoll: next, Observations: e.Observations + up + down, Pending: e.Pending + up}
}

// Account names a VNC Cloud account for the stored estimates: a digest of the API's
// URL and key, so that the sim and the real API, or two accounts, learn apart, and
// the key itself is stored nowhere.
func Account(apiURL, apiKey string) string {
	sum := sha256.Sum256([]byte(apiURL + "\x00" + apiKey))
	return "sha256:" + hex.EncodeToString(sum[:16])
}

// RescheduleRise and RescheduleFall are how far (as shares) the estimate must have
// moved since the first polls already scheduled were last moved before they are
// moved again. A rise moves them soon: the polls waiting at the shorter delay would
// otherwise find "pending" and each cost a second call. A fall only makes devices
// wait a little longer than they need (those created from now on use it at once),
// and falls come in many small steps, so the waiting rows are rewritten only after a
// large one.
const (
	RescheduleRise = 0.05
	RescheduleFall = 0.2
)

// ShouldReschedule reports whether first polls scheduled at the delay last should
// move to next. Polls never moved were scheduled at Config.Initial (the store passes
// it); any delay is a rise from zero.
func ShouldReschedule(last, next time.Duration) bool {
	return float64(next) >= float64(last)*(1+RescheduleRise) || float64(next) <= float64(last)*(1-RescheduleFall)
}
