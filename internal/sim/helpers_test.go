package sim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/vnccloud"
)

const (
	keyA    = "acct-a"
	secretA = "secret-a"
	keyB    = "acct_B-2"
	secretB = "secret-b"
	// missing is well-formed and belongs to nobody.
	missing = "ztgDAEjLLP4yHwHrdz9.ztgPXJMFsk1NiEGpbAx.livEXXxXXSrGS1urBF5.FCRPRHbrZPyfmS6Nt4M"
)

// fixture is a simulator behind a real HTTP server.
type fixture struct {
	sim *Server
	ts  *httptest.Server
}

// newFixture starts a simulator; accounts A and B unless cfg names some.
func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	if cfg.Accounts == nil {
		cfg.Accounts = []Account{{keyA, secretA}, {keyB, secretB}}
	}
	s, err := New(cfg)
	require.NoError(t, err)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return &fixture{sim: s, ts: ts}
}

// reply is a complete answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// opt alters a request before it is sent.
type opt func(*http.Request)

// as sends the request with these credentials.
func as(key, secret string) opt { return func(r *http.Request) { r.SetBasicAuth(key, secret) } }

// noAuth removes the Authorization header.
func noAuth(r *http.Request) { r.Header.Del("Authorization") }

// hdr sets a header; an empty value removes it.
func hdr(name, value string) opt {
	return func(r *http.Request) {
		if value == "" {
			r.Header.Del(name)
			return
		}
		r.Header.Set(name, value)
	}
}

// do sends an API request as account A with Accept: application/json, and
// Content-Type: application/json when there is a body; opts change that. A path
// starting with /cloud/ is used as is, others get the API prefix.
func (f *fixture) do(t *testing.T, method, path, body string, opts ...opt) reply {
	t.Helper()
	r, err := f.try(method, path, body, opts...)
	require.NoError(t, err)
	return r
}

// try is do that returns transport errors (a dropped connection).
func (f *fixture) try(method, path, body string, opts ...opt) (reply, error) {
	url := path
	switch {
	case strings.HasPrefix(path, "http://"): // a Link
	case strings.HasPrefix(path, "/cloud/"), strings.HasPrefix(path, "/sim/"), strings.HasPrefix(path, "/api/"), path == "/healthz":
		url = f.ts.URL + path
	default:
		url = f.ts.URL + APIPrefix + path
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return reply{}, err
	}
	req.SetBasicAuth(keyA, secretA)
	req.Header.Set("Accept", "application/json")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// create makes a connect address through the API and returns address and password.
func (f *fixture) create(t *testing.T, opts ...opt) (string, string) {
	t.Helper()
	r := f.do(t, "POST", "/static-address", `{"allowedActions":["connect"],"groups":["g"]}`, opts...)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	var c struct{ CloudAddress, CloudPassword string }
	require.NoError(t, json.Unmarshal(r.body, &c))
	return c.CloudAddress, c.CloudPassword
}

// requireError checks an error answer: its status, a JSON body with an errorMessage,
// and an errorCode that is the JSON number code with the reference's description, or
// no errorCode at all when code is 0.
func requireError(t *testing.T, r reply, status int, code vnccloud.ErrorCode) {
	t.Helper()
	require.Equal(t, status, r.status, "body %s", r.body)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "%s", r.body)
	msg, _ := m["errorMessage"].(string)
	require.NotEmpty(t, msg, "errorMessage in %s", r.body)
	if code == 0 {
		require.NotContains(t, m, "errorCode", "only particular bad requests carry an errorCode")
		return
	}
	require.IsType(t, float64(0), m["errorCode"], "errorCode is a JSON number")
	require.Equal(t, float64(code), m["errorCode"])
	require.Equal(t, code.Description(), msg)
}

// fakeClock is a settable clock for readiness and the request windows.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	return out
}

func jsonList(v []string) string {
	b, _ := json.Marshal(v)
	return string(b)
}
