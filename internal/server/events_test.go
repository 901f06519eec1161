package server_test

import (
	"bufio"
	"encoding/json"
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

// The status stream takes its fleet as GET /v1/status does: a token limited to one
// fleet streams that fleet's status, never another's or every fleet's, and the stream
// shows the page of groups asked for.
func TestStatusStreamKeepsToTheTokensFleets(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	api, _ := newAPI(t, pool, server.Config{})
	upload := func(fleet, csv string) {
		req, err := http.NewRequest("POST", api.URL+"/v1/manifests?fleet="+fleet, strings.NewReader(csv))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "text/csv")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusCreated, resp.StatusCode)
	}
	upload("a", "device_id,action,groups,location\na-1,connect,line-a,hall\n")
	upload("b", "device_id,action,groups,location\nb-1,connect,line-b,hall\nb-2,connect,line-b,hall\n")
	scoped := server.New(server.Config{Store: store.New(pool, nil),
		Tokens: []server.Token{{Name: "line-a", Value: "line-a-token", Roles: []string{server.RoleRead}, Fleets: []string{"a"}}}})
	srv := httptest.NewServer(scoped)
	t.Cleanup(srv.Close)
	t.Cleanup(scoped.StopStreams)

	first := func(query string) (int, store.FleetStatus) {
		t.Helper()
		req, err := http.NewRequest("GET", srv.URL+"/v1/status/events"+query, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer line-a-token")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var st store.FleetStatus
		if resp.StatusCode != http.StatusOK {
			return resp.StatusCode, st
		}
		lines := bufio.NewScanner(resp.Body)
		for lines.Scan() {
			if data, ok := strings.CutPrefix(lines.Text(), "data: "); ok {
				require.NoError(t, json.Unmarshal([]byte(data), &st))
				return resp.StatusCode, st
			}
		}
		t.Fatalf("the stream ended before its first event: %v", lines.Err())
		return 0, st
	}
	code, st := first("")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 1, st.Total, "fleet a only, the token's")
	require.Equal(t, map[string]store.Counts{"line-a": {"pending": 1}}, st.ByGroup)
	code, _ = first("?fleet=b")
	require.Equal(t, http.StatusForbidden, code)
	code, st = first("?groups=0")
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, st.ByGroup)
	require.Equal(t, 1, st.Groups)
}
