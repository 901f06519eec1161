package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/store"
)

// nextPoll reads whether device id of fleet "f" has a readiness poll scheduled.
func nextPoll(t *testing.T, e *provisiontest.Env, id string) bool {
	t.Helper()
	var due bool
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `
		SELECT next_poll_at IS NOT NULL FROM devices d JOIN fleets f ON f.id = d.fleet_id
		WHERE f.name = 'f' AND d.device_id = $1`, id).Scan(&due))
	return due
}

// A create's result is recorded in one statement that also decides what the device
// owes next; a manifest that changed the device while the create was in flight is
// not lost, and only a device awaiting readiness has a poll scheduled.
func TestCreateResultSchedulesWhatChangedWhileInFlight(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	key := e.Ingest("f", provisiontest.Header+"plain,connect,g1,,,\nregrouped,connect,g1,,,\ngone,connect,g1,,,\n")
	items, err := e.Store.ClaimWork(e.Ctx, key, 10, time.Minute, 0)
	require.NoError(t, err)
	require.Len(t, items, 3)
	results := make([]store.Result, len(items))
	for i, it := range items {
		results[i] = e.Perform(it)
	}
	// While the creates are in flight, a new manifest changes one device and marks
	// another absent. Their claims keep the upload from rescheduling them.
	e.Ingest("f", provisiontest.Header+"regrouped,connect,g2,,,\ngone,connect,g1,,,absent\n")
	e.Finish(results...)

	plain := e.Device("f", "plain")
	require.Equal(t, "awaiting_ready", plain.Status)
	require.Empty(t, plain.Op)
	require.True(t, nextPoll(t, e, "plain"))

	regrouped := e.Device("f", "regrouped")
	require.Equal(t, "updating", regrouped.Status)
	require.Equal(t, store.OpUpdate, regrouped.Op)
	require.False(t, nextPoll(t, e, "regrouped"), "no poll while an update is owed")

	gone := e.Device("f", "gone")
	require.Equal(t, "deleting", gone.Status)
	require.Equal(t, store.OpDelete, gone.Op)
	require.False(t, nextPoll(t, e, "gone"))

	e.Drain(key)
	require.Equal(t, "ready", e.Device("f", "regrouped").Status)
	require.Equal(t, []string{"g2"}, e.Addresses()[e.Device("f", "regrouped").Address].Groups)
	require.Equal(t, "deleted", e.Device("f", "gone").Status)
	require.Len(t, e.Addresses(), 2)
	for _, id := range []string{"plain", "regrouped", "gone"} {
		require.False(t, nextPoll(t, e, id), "%s: settled devices have no poll scheduled", id)
	}
}

// A device awaiting readiness that a manifest then changes drops its scheduled poll
// until the change is applied: polls are claimed from the rows with one scheduled.
func TestRescheduledDeviceDropsItsPoll(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,g1,,,\n")
	require.Equal(t, 1, e.Step(key, 10, provisiontest.RetryNow))
	require.True(t, nextPoll(t, e, "v1"))

	e.Ingest("f", provisiontest.Header+"v1,connect,g1,,,absent\n")
	require.Equal(t, "deleting", e.Device("f", "v1").Status)
	require.False(t, nextPoll(t, e, "v1"))
	polls, err := e.Store.ClaimPolls(e.Ctx, 10, time.Minute, 0)
	require.NoError(t, err)
	require.Empty(t, polls)
}

// A manifest that changes a device while a readiness poll holds it is applied once
// the poll has recorded the device ready.
func TestChangeDuringAPollIsScheduledWhenThePollEnds(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,g1,,,\n")
	require.Equal(t, 1, e.Step(key, 10, provisiontest.RetryNow))
	_, err := e.Pool.Exec(e.Ctx, `UPDATE devices SET next_poll_at = now()`)
	require.NoError(t, err)
	polls, err := e.Store.ClaimPolls(e.Ctx, 10, time.Minute, 0)
	require.NoError(t, err)
	require.Len(t, polls, 1)

	e.Ingest("f", provisiontest.Header+"v1,connect,g2,,,\n")
	require.Equal(t, "awaiting_ready", e.Device("f", "v1").Status, "the upload leaves a claimed device alone")

	require.NoError(t, e.Store.FinishPolls(e.Ctx, []store.PollResult{{Item: polls[0], MayWait: true,
		Report: cloudop.Report{Outcome: fleet.Ready, Calls: []cloudop.Call{{Operation: "ready"}}}}}, nil))
	v1 := e.Device("f", "v1")
	require.Equal(t, store.OpUpdate, v1.Op)
	require.Equal(t, "updating", v1.Status)
	e.Drain(v1.WorkKey)
	require.Equal(t, []string{"g2"}, e.Addresses()[e.Device("f", "v1").Address].Groups)
	require.Equal(t, "ready", e.Device("f", "v1").Status)
}

// The advisory lock is held by one session at a time and released with it.
func TestTryLock(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	release, ok, err := e.Store.TryLock(e.Ctx, 42)
	require.NoError(t, err)
	require.True(t, ok)
	_, ok, err = e.Store.TryLock(e.Ctx, 42)
	require.NoError(t, err)
	require.False(t, ok, "held by the first session")
	release()
	again, ok, err := e.Store.TryLock(e.Ctx, 42)
	require.NoError(t, err)
	require.True(t, ok, "released")
	again()

	// A session that ends (its process died) gives the lock up without a release.
	conn, err := e.Pool.Acquire(e.Ctx)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(e.Ctx, `SELECT pg_try_advisory_lock(42)`).Scan(&ok))
	require.True(t, ok)
	_, ok, err = e.Store.TryLock(e.Ctx, 42)
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, conn.Conn().Close(e.Ctx))
	conn.Release()
	require.Eventually(t, func() bool {
		rel, ok, err := e.Store.TryLock(e.Ctx, 42)
		if err == nil && ok {
			rel()
		}
		return ok
	}, 5*time.Second, 20*time.Millisecond, "the server drops a closed session's locks")
}

// A claim's end is reported on the local clock (before the claim + the lease), not as
// the database's claim_until: the two clocks may disagree.
func TestClaimLeaseEndsOnTheLocalClock(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,g1,,,\n")
	before := time.Now()
	items, err := e.Store.ClaimWork(e.Ctx, key, 10, time.Minute, 0)
	after := time.Now()
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.False(t, items[0].LeaseEnds.Before(before.Add(time.Minute)))
	require.False(t, items[0].LeaseEnds.After(after.Add(time.Minute)), "never later than the local clock allows")
}

// A claimed create's attempt is recorded as in flight until exactly the end of the
// claim: reconciliation must not take an address it made for an orphan any sooner.
func TestAttemptIsInFlightUntilTheClaimEnds(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	key := e.Ingest("f", provisiontest.Header+"a,connect,g1,,,\nb,listen,,g1,,\n")
	items, err := e.Store.ClaimWork(e.Ctx, key, 10, 90*time.Second, 0)
	require.NoError(t, err)
	require.Len(t, items, 2)
	for _, it := range items {
		require.NotZero(t, it.AttemptID)
		var same bool
		var left float64
		require.NoError(t, e.Pool.QueryRow(e.Ctx, `
			SELECT a.in_flight_until = d.claim_until, extract(epoch FROM a.in_flight_until - a.sent_at)::float8
			FROM create_attempts a JOIN devices d ON d.id = a.device_pk WHERE a.id = $1`, it.AttemptID).Scan(&same, &left))
		require.True(t, same, "device %s: in flight until another moment than its claim's end", it.DeviceID)
		require.InDelta(t, 90, left, 1)
	}
}

// A claimed poll carries how long ago the device's manifest was uploaded, on the
// database's clock: the upload-to-ready time when the poll finds it ready.
func TestPollClaimCarriesTheTimeSinceUpload(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	key := e.Ingest("f", provisiontest.Header+"a,connect,g1,,,\n")
	_, err := e.Pool.Exec(e.Ctx, `UPDATE manifests SET uploaded_at = now() - interval '42 seconds'`)
	require.NoError(t, err)
	require.Equal(t, 1, e.Step(key, 10, provisiontest.RetryNow))
	items, err := e.Store.ClaimPolls(e.Ctx, 10, time.Minute, 0)
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.InDelta(t, 42, items[0].SinceUpload.Seconds(), 2)
	require.False(t, items[0].Rotation)
}
