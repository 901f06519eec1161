package store_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// clientVia is a VNC Cloud client of e's account that talks to h over real HTTP.
func clientVia(t *testing.T, h http.Handler) *vnccloud.Client {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	c, err := vnccloud.New(vnccloud.Config{BaseURL: ts.URL + sim.APIPrefix, APIKey: provisiontest.APIKey,
		APISecret: provisiontest.APISecret, Timeout: 10 * time.Second})
	require.NoError(t, err)
	return c
}

func isReset(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/static-address/")
}

// cutResets serves e's simulator with every password reset performed but its 200
// answer cut off halfway, and returns a client of it.
func cutResets(t *testing.T, e *provisiontest.Env) *vnccloud.Client {
	t.Helper()
	h := e.Sim.Handler()
	return clientVia(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isReset(r) {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
	}))
}

// requireCloudsPassword checks that the stored password of device id of fleet f is
// the one the simulator holds.
func requireCloudsPassword(t *testing.T, e *provisiontest.Env, id string) {
	t.Helper()
	creds, err := e.Store.GetCredentials(e.Ctx, "f", id)
	require.NoError(t, err)
	require.Equal(t, e.Addresses()[creds.CloudAddress].Password, creds.CloudPassword, "device %s", id)
}

// A reset the cloud performed but whose answer was cut off (the password it made is
// unknown) owes another reset: the device never shows ready with the old password,
// and ends with the cloud's.
func TestCutOffResetEndsWithTheCloudsPassword(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	e.Provision("f", provisiontest.Header+"v1,connect,g1,,,\n")
	requireCloudsPassword(t, e, "v1")
	normal := e.Cloud

	_, err := e.Store.ScheduleRotations(e.Ctx, "f", true, 0, 0, "rotate:1")
	require.NoError(t, err)
	e.Cloud = cutResets(t, e)
	require.Equal(t, 1, e.Step("rotate:1", 10, provisiontest.RetryNow))
	v1 := e.Device("f", "v1")
	require.Equal(t, "rotating", v1.Status)
	require.Equal(t, store.OpRotate, v1.Op, "another reset is owed")
	require.False(t, v1.HasPassword, "the old password is no longer called the cloud's")

	e.Cloud = normal
	e.Drain("rotate:1")
	require.Equal(t, "ready", e.Device("f", "v1").Status)
	requireCloudsPassword(t, e, "v1")
}

// A rotation that runs out of attempts on unknown outcomes fails the device without
// a password to hand out; `retry` rotates again and ends with the cloud's password.
func TestRetryOfAFailedRotationRotatesAgain(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	e.Provision("f", provisiontest.Header+"v1,connect,g1,,,\nv2,connect,g1,,,\n")
	normal := e.Cloud
	_, err := e.Store.ScheduleRotations(e.Ctx, "f", true, 0, 0, "rotate:1")
	require.NoError(t, err)
	e.Cloud = cutResets(t, e)
	once := provisiontest.RetryNow
	once.MaxAttempts = 1
	require.Equal(t, 2, e.Step("rotate:1", 10, once))
	for _, id := range []string{"v1", "v2"} {
		d := e.Device("f", id)
		require.Equal(t, "failed", d.Status, id)
		require.False(t, d.HasPassword, id)
		_, err := e.Store.GetCredentials(e.Ctx, "f", id)
		require.Error(t, err, "no stale password is handed out for %s", id)
	}

	e.Cloud = normal
	n, key, err := e.Store.RetryFailed(e.Ctx, "f", 0, false, nil)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, store.OpRotate, e.Device("f", "v1").Op, "retry rotates again")
	e.Drain(key)
	for _, id := range []string{"v1", "v2"} {
		require.Equal(t, "ready", e.Device("f", id).Status, id)
		requireCloudsPassword(t, e, id)
	}
}

// A rotation refused outright (the cloud did not reset) fails the device with the
// password the cloud still holds; retry rotates again.
func TestRetryOfARefusedRotationRotatesAgain(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	e.Provision("f", provisiontest.Header+"v1,connect,g1,,,\n")
	normal := e.Cloud
	_, err := e.Store.ScheduleRotations(e.Ctx, "f", true, 0, 0, "rotate:1")
	require.NoError(t, err)
	h := e.Sim.Handler()
	e.Cloud = clientVia(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isReset(r) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"errorCode":1001,"errorMessage":"refused"}`))
			return
		}
		h.ServeHTTP(w, r)
	}))
	require.Equal(t, 1, e.Step("rotate:1", 10, provisiontest.RetryNow))
	require.Equal(t, "failed", e.Device("f", "v1").Status)
	requireCloudsPassword(t, e, "v1") // unchanged, and still the cloud's

	e.Cloud = normal
	_, key, err := e.Store.RetryFailed(e.Ctx, "f", 0, false, nil)
	require.NoError(t, err)
	require.Equal(t, store.OpRotate, e.Device("f", "v1").Op)
	e.Drain(key)
	require.Equal(t, "ready", e.Device("f", "v1").Status)
	requireCloudsPassword(t, e, "v1")
}
