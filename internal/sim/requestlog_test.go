package sim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRequestLog: GET /sim/requests lists each API request with its arrival and
// operation, in order, the latest RequestLog of them; ?since keeps the later ones;
// nothing is kept by default.
func TestRequestLog(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	f := newFixture(t, Config{RequestLog: 3, Now: clock.Now})
	start := clock.Now()
	f.do(t, "GET", "/static-address", "")
	clock.Advance(10 * time.Millisecond)
	f.do(t, "POST", "/static-address", `{"allowedActions":["connect"]}`)
	clock.Advance(10 * time.Millisecond)
	f.do(t, "GET", "/static-address/"+missing+"/ready", "")
	clock.Advance(10 * time.Millisecond)
	f.do(t, "PATCH", "/static-address", "", noAuth)

	read := func(query string) RequestLog {
		resp, err := http.Get(f.ts.URL + "/sim/requests" + query)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var l RequestLog
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&l))
		return l
	}
	l := read("")
	require.Equal(t, 3, l.Capacity)
	require.EqualValues(t, 1, l.Dropped, "the list was forgotten to keep the latest three")
	require.Len(t, l.Requests, 3)
	for i, op := range []string{"create", "ready", "other"} {
		require.Equal(t, op, l.Requests[i].Op)
		require.True(t, l.Requests[i].At.Equal(start.Add(time.Duration(i+1)*10*time.Millisecond)), "request %d at %s", i, l.Requests[i].At)
	}
	later := read("?since=" + url.QueryEscape(start.Add(15*time.Millisecond).Format(time.RFC3339Nano)))
	require.Len(t, later.Requests, 2)
	require.Equal(t, "ready", later.Requests[0].Op)

	resp, err := http.Get(f.ts.URL + "/sim/requests?since=yesterday")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	off := newFixture(t, Config{})
	off.do(t, "GET", "/static-address", "")
	reqs, dropped := off.sim.Requests()
	require.Empty(t, reqs)
	require.Zero(t, dropped)
	_, err = New(Config{Accounts: []Account{{keyA, secretA}}, RequestLog: -1})
	require.Error(t, err)
}
