package store_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/store"
)

// Cancelling a manifest drops the work no call is making, leaves a call in flight to
// finish and be recorded, and keeps what was done; nothing reschedules what it dropped.
func TestCancelManifestStopsOwedWorkButNoCallInFlight(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	key := e.Ingest("f", provisiontest.Header+"a1,connect,a,,,\na2,connect,a,,,\na3,connect,a,,,\na4,connect,a,,,\na5,connect,a,,,\n")
	id, err := strconv.ParseInt(strings.TrimPrefix(key, "manifest:"), 10, 64)
	require.NoError(t, err)

	require.Equal(t, 2, e.Step(key, 2, provisiontest.RetryNow), "two devices created")
	inFlight, err := e.Store.ClaimWork(e.Ctx, key, 1, time.Minute, 0)
	require.NoError(t, err)
	require.Len(t, inFlight, 1)
	result := e.Perform(inFlight[0]) // the call is made; its result not yet recorded

	res, err := e.Store.CancelManifest(e.Ctx, id, "operator")
	require.NoError(t, err)
	require.Equal(t, 2, res.Cancelled)
	require.Equal(t, 1, res.InFlight)
	require.Equal(t, store.Counts{"awaiting_ready": 2, "creating": 1, "cancelled": 2}, res.ByStatus)

	e.Finish(result)
	require.Equal(t, "awaiting_ready", e.Device("f", inFlight[0].DeviceID).Status, "the in-flight call's result is recorded")
	again, err := e.Store.CancelManifest(e.Ctx, id, "someone else")
	require.NoError(t, err)
	require.Zero(t, again.Cancelled)
	require.Zero(t, again.InFlight)
	require.Equal(t, res.CancelledAt, again.CancelledAt, "the first cancel's time stays")

	n, err := e.Store.Reschedule(e.Ctx, "sweep:1")
	require.NoError(t, err)
	require.Zero(t, n, "the backstop does not bring cancelled work back")
	require.Zero(t, e.Step(key, 10, provisiontest.RetryNow))
	for e.Poll() > 0 {
	}
	require.Equal(t, int64(3), e.Counts()["create"], "three creates were sent, no more")
	require.Len(t, e.Addresses(), 3)

	p, err := e.Store.ManifestProgress(e.Ctx, id, &store.GroupQuery{})
	require.NoError(t, err)
	require.True(t, p.Done, "cancelled devices are settled")
	require.Equal(t, store.Counts{"ready": 3, "cancelled": 2}, p.ByStatus)
	require.NotNil(t, p.Manifest.CancelledAt)
	var by string
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT cancelled_by FROM manifests WHERE id = $1`, id).Scan(&by))
	require.Equal(t, "operator", by)
}

func TestCancelUnknownManifestIsNotFound(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	_, err := e.Store.CancelManifest(e.Ctx, 999, "operator")
	require.ErrorIs(t, err, store.ErrNotFound)
}

// Uploading a cancelled manifest again takes up the work the cancel stopped, and only
// that: the plan says how many devices it resumes, an identical file is stored for
// it, and every device ends ready with one address.
func TestUploadAgainResumesCancelledDevices(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	csv := provisiontest.Header + "a1,connect,a,,,\na2,connect,a,,,\na3,connect,a,,,\na4,connect,a,,,\n"
	key := e.Ingest("f", csv)
	id, err := strconv.ParseInt(strings.TrimPrefix(key, "manifest:"), 10, 64)
	require.NoError(t, err)
	require.Equal(t, 1, e.Step(key, 1, provisiontest.RetryNow), "one device created")
	// a1's address vanishes before it is ready: it owes a create again, its spec
	// long applied, when the cancel comes.
	require.NoError(t, e.Sim.ForceDelete(provisiontest.APIKey, e.Device("f", "a1").Address))
	require.Equal(t, 1, e.Poll())
	require.Equal(t, "pending", e.Device("f", "a1").Status)
	res, err := e.Store.CancelManifest(e.Ctx, id, "operator")
	require.NoError(t, err)
	require.Equal(t, 4, res.Cancelled)

	dry, err := e.Store.Ingest(e.Ctx, store.IngestRequest{Fleet: "f", Uploader: "test", DryRun: true, Body: strings.NewReader(csv)})
	require.NoError(t, err)
	require.Equal(t, 4, dry.Plan.Resumes)
	require.Zero(t, dry.Plan.Creates, "the devices exist: they are resumed, not created")

	again, err := e.Store.Ingest(e.Ctx, store.IngestRequest{Fleet: "f", Uploader: "test", Body: strings.NewReader(csv)})
	require.NoError(t, err)
	require.False(t, again.Unchanged, "the same bytes are stored again: they resume work")
	require.NotEqual(t, key, again.WorkKey)
	require.Equal(t, "pending", e.Device("f", "a1").Status)
	require.Equal(t, "pending", e.Device("f", "a2").Status)

	e.Drain(again.WorkKey)
	for e.Poll() > 0 {
	}
	for _, d := range []string{"a1", "a2", "a3", "a4"} {
		require.Equal(t, "ready", e.Device("f", d).Status, d)
	}
	require.Len(t, e.Addresses(), 4, "one address per device")
	require.Equal(t, int64(5), e.Counts()["create"], "a1 twice (its address vanished), the others once")

	unchanged, err := e.Store.Ingest(e.Ctx, store.IngestRequest{Fleet: "f", Uploader: "test", Body: strings.NewReader(csv)})
	require.NoError(t, err)
	require.True(t, unchanged.Unchanged, "with nothing cancelled, the same file changes nothing")
}
