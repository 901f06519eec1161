package jobs

import (
	"context"
	"errors"
	"log/slog"
	"sync"
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

// learningStore is a Store whose LearnReadiness records each batch it is given and,
// for the first, waits until told to go on; nothing else of Store is used.
type learningStore struct {
	Store
	entered, proceed chan struct{}
	mu               sync.Mutex
	batches          []int
}

func (s *learningStore) LearnReadiness(_ context.Context, _ string, _ readiness.Config, obs []readiness.Observation) (readiness.Estimate, error) {
	s.mu.Lock()
	s.batches = append(s.batches, len(obs))
	first := len(s.batches) == 1
	total := 0
	for _, n := range s.batches {
		total += n
	}
	s.mu.Unlock()
	if first {
		close(s.entered)
		<-s.proceed
	}
	return readiness.Estimate{FirstPoll: time.Second, Observations: int64(total)}, nil
}

// A poll loop that finds another folding answers into the estimate leaves its own to
// it and goes on polling instead of queueing on the estimate's row; none is lost.
func TestLearningIsOneLoopAtATime(t *testing.T) {
	t.Parallel()
	st := &learningStore{entered: make(chan struct{}), proceed: make(chan struct{})}
	d := &Deps{Store: st, Logger: slog.New(slog.DiscardHandler), Config: Config{ReadyAccount: "acct"}}
	answers := func(n int) []store.PollResult {
		rs := make([]store.PollResult, n)
		for i := range rs {
			rs[i] = store.PollResult{Item: store.PollItem{PK: int64(i + 1), ScheduledAfter: time.Second},
				Report: cloudop.Report{Outcome: fleet.Ready}, Waited: time.Second}
		}
		return rs
	}
	folding := make(chan struct{})
	go func() { d.learnReadiness(t.Context(), answers(3)); close(folding) }()
	<-st.entered
	// While the first loop's batch is in the store, two more loops come and go.
	d.learnReadiness(t.Context(), answers(5))
	d.learnReadiness(t.Context(), answers(2))
	select {
	case <-folding:
		t.Fatal("the folding loop returned while its store call was held")
	default:
	}
	close(st.proceed)
	<-folding
	require.Equal(t, []int{3, 7}, st.batches, "the folding loop took the others' answers in one more call")
	require.EqualValues(t, 10, d.readySeen.Load())
}

// countingLearner is a Store whose LearnReadiness counts its calls and answers; the
// estimate it returns is learned from learned answers before these.
type countingLearner struct {
	Store
	learned        int64
	calls, answers int
}

func (s *countingLearner) LearnReadiness(_ context.Context, _ string, _ readiness.Config, obs []readiness.Observation) (readiness.Estimate, error) {
	s.calls++
	s.answers += len(obs)
	return readiness.Estimate{FirstPoll: time.Second, Observations: s.learned + int64(s.answers)}, nil
}

// Answers are folded at most every learnEveryCold while the estimate is cold, every
// learnEvery once it is warm, the others kept for the next fold, and all of them
// when the poller runs out of due polls.
func TestFoldsAreSpacedInTime(t *testing.T) {
	t.Parallel()
	answers := []store.PollResult{{Item: store.PollItem{PK: 1, ScheduledAfter: time.Second},
		Report: cloudop.Report{Outcome: fleet.Ready}, Waited: time.Second}}
	deps := func(st *countingLearner) *Deps {
		return &Deps{Store: st, Logger: slog.New(slog.DiscardHandler), Config: Config{ReadyAccount: "acct"}}
	}

	cold := &countingLearner{}
	c := deps(cold)
	c.learnReadiness(t.Context(), answers)
	c.learnReadiness(t.Context(), answers)
	require.Equal(t, 1, cold.calls, "cold, folded again at once")
	time.Sleep(learnEveryCold)
	c.learnReadiness(t.Context(), answers)
	require.Equal(t, 2, cold.calls)
	require.Equal(t, 3, cold.answers, "an answer was lost")

	st := &countingLearner{learned: readiness.ColdObservations}
	d := deps(st)
	d.learnReadiness(t.Context(), answers) // the first fold of this process: at once, and now warm
	require.Equal(t, 1, st.calls)
	d.learnReadiness(t.Context(), answers)
	d.learnReadiness(t.Context(), answers)
	require.Equal(t, 1, st.calls, "folded again within a second of the last fold")
	d.foldLearned(t.Context(), true) // no due polls left: fold what waits
	require.Equal(t, 2, st.calls)
	require.Equal(t, 3, st.answers, "an answer was lost")

	d.learning.mu.Lock()
	d.learning.foldedAt = time.Now().Add(-learnEvery)
	d.learning.mu.Unlock()
	d.learnReadiness(t.Context(), answers)
	require.Equal(t, 3, st.calls, "a second after the last fold, answers are folded")
	d.foldLearned(t.Context(), true)
	require.Equal(t, 3, st.calls, "nothing waited: no fold")
}
