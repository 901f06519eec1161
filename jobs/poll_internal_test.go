package jobs

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/readiness"
	"github.com/vncfleet/vncfleet/internal/store"
)

// Only first polls the cloud answered ready or pending teach the readiness delay,
// each with the moment it was answered.
func TestFirstPollObservations(t *testing.T) {
	t.Parallel()
	poll := func(polls int, o fleet.Outcome, waited time.Duration) store.PollResult {
		return store.PollResult{Item: store.PollItem{Polls: polls, ScheduledAfter: time.Second},
			Report: cloudop.Report{Outcome: o, Err: errors.New("x")}, Waited: waited}
	}
	got := firstPollObservations([]store.PollResult{
		poll(0, fleet.Ready, 1100*time.Millisecond),
		poll(0, fleet.Pending, 1200*time.Millisecond),
		poll(1, fleet.Pending, 3*time.Second),      // a later poll
		poll(0, fleet.Retryable, time.Second),      // a 503 says nothing of readiness
		poll(0, fleet.NotSent, time.Second),        // nor a poll never sent
		poll(0, fleet.Vanished, time.Second),       // nor a 404
		poll(0, fleet.Ready, 500*time.Millisecond), // "retry now" before the due time: no lateness
	})
	require.Equal(t, []readiness.Observation{
		{Scheduled: time.Second, Late: 100 * time.Millisecond, Scout: true}, // row id 0: a scout
		{Scheduled: time.Second, Late: 200 * time.Millisecond, Pending: true, Scout: true},
		{Scheduled: time.Second, Scout: true},
	}, got)
}

// On an account whose delay is not learned yet, polls are claimed a few at a time so
// that the first answers reschedule the rest (but in full batches when the poller is
// behind); then in full batches. Without an
// account nothing is learned and batches are full from the start.
func TestPollLimitWhileCold(t *testing.T) {
	t.Parallel()
	d := &Deps{Config: Config{ReadyAccount: "sha256:x"}}
	d.Config.setDefaults()
	require.Equal(t, coldProbe, d.pollLimit(false))
	require.Equal(t, DefaultPollBatch, d.pollLimit(true), "behind: a full batch")
	d.readySeen.Store(readiness.ColdObservations - 1)
	require.Equal(t, coldProbe, d.pollLimit(false))
	d.readySeen.Store(readiness.ColdObservations)
	require.Equal(t, DefaultPollBatch, d.pollLimit(false))
	d.readySeen.Store(0)
	d.readyOnTime.Store(coldOnTime)
	require.Equal(t, DefaultPollBatch, d.pollLimit(false), "enough polls answered on time")

	none := &Deps{}
	none.Config.setDefaults()
	require.Equal(t, DefaultPollBatch, none.pollLimit(false))
}
