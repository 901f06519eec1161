package server_test

import (
	"bufio"
	"encoding/json"
	"io"
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
		var st store.FleetStatus
		code := firstEvent(t, srv.URL+"/v1/status/events"+query, "line-a-token", &st)
		return code, st
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

// The fleet status stream takes ?fleet= by the rule of GET /v1/status: a fleet that
// does not exist is 404 "not found", one outside the token's scope 403, with the
// same answer, before any event is sent.
func TestStatusStreamChecksTheFleetAsStatusDoes(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	api := server.New(server.Config{Store: store.New(pool, nil), Tokens: []server.Token{
		{Name: "r", Value: "reader", Roles: []string{server.RoleRead}},
		{Name: "line-a", Value: "line-a", Roles: []string{server.RoleRead}, Fleets: []string{"a"}},
	}})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	// Over real HTTP: a stream that opened anyway answers 200 at once and is closed
	// here, instead of never ending.
	get := func(path, token string) (status int, contentType, body string) {
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return resp.StatusCode, resp.Header.Get("Content-Type"), ""
		}
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	for _, tc := range []struct {
		name, query, token string
		want               int
		says               string
	}{
		{"unknown fleet", "?fleet=ghost", "reader", http.StatusNotFound, `fleet \"ghost\": not found`},
		{"fleet outside the token's scope", "?fleet=b", "line-a", http.StatusForbidden, `token line-a may not use fleet \"b\"`},
	} {
		statusCode, _, statusBody := get("/v1/status"+tc.query, tc.token)
		streamCode, streamType, streamBody := get("/v1/status/events"+tc.query, tc.token)
		require.Equal(t, tc.want, statusCode, "%s: GET /v1/status: %s", tc.name, statusBody)
		require.Equal(t, tc.want, streamCode, "%s: the stream: %s", tc.name, streamBody)
		require.Contains(t, streamBody, tc.says, tc.name)
		require.Equal(t, statusBody, streamBody, tc.name)
		require.True(t, strings.HasPrefix(streamType, "application/json"), tc.name)
	}
}

// firstEvent opens the event stream at url with token and decodes the data of its
// first event into v. It returns the answer's status, leaving v alone when it is not
// 200.
func firstEvent(t *testing.T, url, token string, v any) int {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for lines.Scan() {
		if data, ok := strings.CutPrefix(lines.Text(), "data: "); ok {
			require.NoError(t, json.Unmarshal([]byte(data), v))
			return resp.StatusCode
		}
	}
	t.Fatalf("the stream ended before its first event: %v", lines.Err())
	return 0
}
