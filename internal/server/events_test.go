package server_test

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
)

// Streams are bounded per process (one more is 503 with Retry-After), say they are
// alive with heartbeats, and end when the server shuts down.
func TestEventStreamsAreBoundedAndEndOnShutdown(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	api := server.New(server.Config{
		Store:           store.New(pool, nil),
		Tokens:          []server.Token{{Name: "r", Value: "tok", Roles: []string{server.RoleRead}}},
		MaxStreams:      1,
		StreamHeartbeat: 20 * time.Millisecond, // a heartbeat soon, not in 15 s
	})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	open := func() *http.Response {
		req, err := http.NewRequest("GET", srv.URL+"/v1/status/events", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		return resp
	}
	first := open()
	defer first.Body.Close()
	require.Equal(t, http.StatusOK, first.StatusCode)
	lines := bufio.NewScanner(first.Body)
	var sawStatus, sawHeartbeat bool
	for lines.Scan() && !(sawStatus && sawHeartbeat) {
		sawStatus = sawStatus || lines.Text() == "event: status"
		sawHeartbeat = sawHeartbeat || lines.Text() == ": heartbeat"
	}
	require.True(t, sawStatus && sawHeartbeat)

	second := open()
	second.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, second.StatusCode, "the bound is one stream")
	require.Equal(t, "5", second.Header.Get("Retry-After"))

	api.StopStreams()
	for lines.Scan() {
	}
	require.NoError(t, lines.Err(), "the stream ended cleanly on shutdown")
}

func TestEventStreamOfUnknownManifestIsNotFound(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	api := server.New(server.Config{Store: store.New(pool, nil),
		Tokens: []server.Token{{Name: "r", Value: "tok", Roles: []string{server.RoleRead}}}})
	req := httptest.NewRequest("GET", "/v1/manifests/42/events", nil)
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.True(t, strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json"))
}
