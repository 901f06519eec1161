package store_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/provisiontest"
)

// A device whose creates met nothing but 503s until the retry policy gave up says
// so in last_error: the cause an operator can act on, not a readiness timeout.
func TestFailedDeviceSaysWhy(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	e.Cloud = clientVia(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"errorCode":1000,"errorMessage":"Service Unavailable"}`))
	}))
	key := e.Ingest("f", provisiontest.Header+"v1,connect,g1,,,\n")
	policy := provisiontest.RetryNow
	policy.MaxAttempts = 3
	for i := 0; i < policy.MaxAttempts; i++ {
		require.Equal(t, 1, e.Step(key, 10, policy))
	}
	var status, lastError string
	var httpStatus int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT status, last_error, last_error_status FROM devices WHERE device_id = 'v1'`).
		Scan(&status, &lastError, &httpStatus))
	require.Equal(t, "failed", status)
	require.Contains(t, lastError, "gave up after 3 attempts")
	require.Contains(t, lastError, "503")
	require.Equal(t, http.StatusServiceUnavailable, httpStatus)
}
