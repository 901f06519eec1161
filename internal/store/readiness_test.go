package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/readiness"
	"github.com/vncfleet/vncfleet/internal/store"
)

// firstPollAfter reads how long after it began waiting device id of fleet "f" is
// first polled, and its row id.
func firstPollAfter(t *testing.T, e *provisiontest.Env, id string) (time.Duration, int64) {
	t.Helper()
	var secs float64
	var pk int64
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `
		SELECT extract(epoch FROM d.next_poll_at - d.awaiting_since)::float8, d.id FROM devices d JOIN fleets f ON f.id = d.fleet_id
		WHERE f.name = 'f' AND d.device_id = $1`, id).Scan(&secs, &pk))
	return time.Duration(secs * float64(time.Second)).Round(time.Millisecond), pk
}

// requireFirstPoll requires device id's first poll after the learned delay q, as
// readiness.FirstPollFor says for its row (a scout's at q, the others later).
func requireFirstPoll(t *testing.T, e *provisiontest.Env, id string, q time.Duration, msg string) {
	t.Helper()
	got, pk := firstPollAfter(t, e, id)
	require.Equal(t, readiness.FirstPollFor(q, pk).Round(time.Millisecond), got, "%s: %s", id, msg)
}

// The SQL function that schedules first polls and readiness.FirstPollFor agree, for
// scouts and for the others.
func TestFirstPollAgreesWithGo(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	_, err := e.Pool.Exec(e.Ctx, `INSERT INTO readiness_estimates (account, first_poll_seconds) VALUES ('a', 1.25)`)
	require.NoError(t, err)
	for pk := int64(0); pk < 2*readiness.ScoutEvery+1; pk++ {
		var secs float64
		require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT extract(epoch FROM vncfleet_first_poll('a', interval '7s', $1))::float8`, pk).Scan(&secs))
		require.InDelta(t, readiness.FirstPollFor(1250*time.Millisecond, pk).Seconds(), secs, 1e-6, "row %d", pk)
		require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT extract(epoch FROM vncfleet_first_poll('none', interval '7s', $1))::float8`, pk).Scan(&secs))
		require.InDelta(t, 7, secs, 1e-9, "no estimate: the fallback")
	}
}

// The first fold of a fresh account moves the estimate a fraction of a per cent from
// the initial delay the waiting devices were scheduled by: it moves no row (it used
// to rewrite every waiting device's first poll, to almost the same moment).
func TestFirstFoldNearTheInitialDelayMovesNoRow(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	const acct = "sha256:fresh"
	policy := store.RetryPolicy{MaxAttempts: 5, Backoff: func(int) time.Duration { return 0 }, PollAfter: time.Second, ReadinessAccount: acct}
	key := e.Ingest("f", provisiontest.Header+"a,connect,g,,,\nb,connect,g,,,\n")
	require.Equal(t, 2, e.Step(key, 10, policy))

	got, err := e.Store.LearnReadiness(e.Ctx, acct, readiness.Config{Initial: time.Second},
		[]readiness.Observation{{Scheduled: time.Second, Scout: true}})
	require.NoError(t, err)
	require.Less(t, got.FirstPoll, time.Second, "a ready answer shortens the delay")
	require.Greater(t, got.FirstPoll, 990*time.Millisecond, "by a small step")
	for _, id := range []string{"a", "b"} {
		stays, _ := firstPollAfter(t, e, id)
		require.Equal(t, time.Second, stays, "%s keeps the first poll the initial delay gave it", id)
	}
}

// The learned first-poll delay is stored per account, outlives the store that
// learned it, schedules the first poll of every device that starts waiting, and
// moves the first polls already scheduled once it has moved far enough; devices
// claimed, or past their first poll, keep their schedule.
func TestLearnedFirstPollSchedulesAndReschedules(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	const acct = "sha256:test"
	cfg := readiness.Config{}
	policy := store.RetryPolicy{MaxAttempts: 5, Backoff: func(int) time.Duration { return 0 }, PollAfter: time.Second, ReadinessAccount: acct}

	_, ok, err := e.Store.ReadinessEstimate(e.Ctx, acct)
	require.NoError(t, err)
	require.False(t, ok, "nothing learned yet")
	key := e.Ingest("f", provisiontest.Header+"early,connect,g,,,\nclaimed,connect,g,,,\nsecond,connect,g,,,\n")
	require.Equal(t, 3, e.Step(key, 10, policy))
	for _, id := range []string{"early", "claimed", "second"} {
		got, _ := firstPollAfter(t, e, id)
		require.Equal(t, time.Second, got, "%s: before anything is learned, PollAfter", id)
	}
	// "second" is past its first poll; "claimed" is being polled right now.
	_, err = e.Pool.Exec(e.Ctx, `UPDATE devices SET polls = 1 WHERE device_id = 'second'`)
	require.NoError(t, err)
	_, err = e.Pool.Exec(e.Ctx, `UPDATE devices SET claim_until = now() + interval '1 minute' WHERE device_id = 'claimed'`)
	require.NoError(t, err)

	// Every first poll at 1 s found the address pending: the delay grows by the most
	// one update may, and the waiting devices' first polls move with it.
	pending := make([]readiness.Observation, 50)
	for i := range pending {
		pending[i] = readiness.Observation{Scheduled: time.Second, Pending: true}
	}
	got, err := e.Store.LearnReadiness(e.Ctx, acct, cfg, pending)
	require.NoError(t, err)
	require.Equal(t, 1500*time.Millisecond, got.FirstPoll.Round(time.Millisecond))
	require.EqualValues(t, 50, got.Observations)
	requireFirstPoll(t, e, "early", got.FirstPoll, "rescheduled")
	for id, why := range map[string]string{"claimed": "a claimed device is left alone", "second": "later polls back off as before"} {
		stays, _ := firstPollAfter(t, e, id)
		require.Equal(t, time.Second, stays, why)
	}

	// A small move (one ready answer) is stored but moves no row.
	got, err = e.Store.LearnReadiness(e.Ctx, acct, cfg, []readiness.Observation{{Scheduled: 1500 * time.Millisecond, Scout: true}})
	require.NoError(t, err)
	require.Less(t, got.FirstPoll, 1500*time.Millisecond)
	requireFirstPoll(t, e, "early", 1500*time.Millisecond, "a small move moves no row")

	// Another process (a new store on the same database) sees it, and a device that
	// starts waiting now is first polled by it.
	other := store.New(e.Pool, e.Keys)
	seen, ok, err := other.ReadinessEstimate(e.Ctx, acct)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, got, seen)
	key = e.Ingest("f", provisiontest.Header+"late,connect,g,,,\n")
	require.Equal(t, 1, e.Step(key, 10, policy))
	requireFirstPoll(t, e, "late", got.FirstPoll, "a device that starts waiting now")

	// Another account learns apart; no account keeps PollAfter.
	_, ok, err = e.Store.ReadinessEstimate(e.Ctx, "sha256:other")
	require.NoError(t, err)
	require.False(t, ok)
	key = e.Ingest("f", provisiontest.Header+"unlearned,connect,g,,,\n")
	policy.ReadinessAccount = ""
	require.Equal(t, 1, e.Step(key, 10, policy))
	unlearned, _ := firstPollAfter(t, e, "unlearned")
	require.Equal(t, time.Second, unlearned)

	// The claim reports when a first poll was due.
	_, err = e.Pool.Exec(e.Ctx, `UPDATE devices SET awaiting_since = now() - interval '3 seconds', next_poll_at = now() - interval '1 second'
		WHERE device_id = 'late'`)
	require.NoError(t, err)
	polls, err := e.Store.ClaimPolls(e.Ctx, 10, time.Minute, 0)
	require.NoError(t, err)
	require.Len(t, polls, 1)
	require.Equal(t, 2*time.Second, polls[0].ScheduledAfter.Round(time.Millisecond))
	require.Equal(t, 3*time.Second, polls[0].AwaitingFor.Round(100*time.Millisecond))
}
