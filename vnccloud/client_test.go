package vnccloud_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/vnccloud"
)

const (
	key    = "test-key"
	secret = "test-secret-value-7f3a"
	// missing is well-formed but belongs to nobody.
	missing = "AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA"
)

type fixture struct {
	sim    *sim.Server
	srv    *httptest.Server
	client *vnccloud.Client
	base   string
}

// newFixture serves a simulator over real HTTP with two accounts.
func newFixture(t *testing.T, cfg sim.Config) *fixture {
	t.Helper()
	if cfg.Accounts == nil {
		cfg.Accounts = []sim.Account{{Key: key, Secret: secret}, {Key: "other-key", Secret: "other-secret"}}
	}
	s, err := sim.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	f := &fixture{sim: s, srv: srv, base: srv.URL + "/cloud/1.1"}
	f.client = f.clientAs(t, key, secret)
	return f
}

func (f *fixture) clientAs(t *testing.T, k, s string) *vnccloud.Client {
	t.Helper()
	c, err := vnccloud.New(vnccloud.Config{BaseURL: f.base, APIKey: k, APISecret: s})
	require.NoError(t, err)
	return c
}

func (f *fixture) requests() int64 { return f.sim.State().Requests }

func connect(groups ...string) vnccloud.Spec {
	return vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: groups}
}

func listen(groups []string, addrs []string) vnccloud.Spec {
	return vnccloud.Spec{Action: vnccloud.ActionListen, AccessControl: &vnccloud.AccessControl{Groups: groups, CloudAddresses: addrs}}
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func jsonList(items []string) string {
	quoted := make([]string, len(items))
	for i, s := range items {
		quoted[i] = `"` + s + `"`
	}
	return "[" + strings.Join(quoted, ",") + "]"
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h[http.CanonicalHeaderKey(kv[i])] = []string{kv[i+1]}
	}
	return h
}

// op is one client operation on an address, for the rows every operation shares.
type op struct {
	name string
	call func(ctx context.Context, c *vnccloud.Client, addr string) error
}

var ops = []op{
	{"create", func(ctx context.Context, c *vnccloud.Client, _ string) error {
		_, err := c.Create(ctx, connect("a"))
		return err
	}},
	{"list", func(ctx context.Context, c *vnccloud.Client, _ string) error {
		for _, err := range c.List(ctx, vnccloud.ListOptions{}) {
			if err != nil {
				return err
			}
		}
		return nil
	}},
	{"ready", func(ctx context.Context, c *vnccloud.Client, a string) error { _, err := c.Ready(ctx, a); return err }},
	{"get", func(ctx context.Context, c *vnccloud.Client, a string) error { _, err := c.Get(ctx, a); return err }},
	{"update", func(ctx context.Context, c *vnccloud.Client, a string) error {
		return c.Update(ctx, a, connect("b"), "")
	}},
	{"reset", func(ctx context.Context, c *vnccloud.Client, a string) error {
		_, err := c.ResetPassword(ctx, a, "")
		return err
	}},
	{"delete", func(ctx context.Context, c *vnccloud.Client, a string) error { return c.Delete(ctx, a, "") }},
}

func opByName(name string) op {
	for _, o := range ops {
		if o.name == name {
			return o
		}
	}
	panic(name)
}

// TestDocumentedErrors has a row per documented status and errorCode of every
// operation, over real HTTP against the simulator. Rows the client can express go
// through its public methods; rows it refuses to send (invalid bodies, malformed
// addresses, wrong headers) go through the client's own pipeline with the request
// altered (Raw), and, where the client can be asked, the test also checks that it
// refuses the same input with the same code without a request.
func TestDocumentedErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, sim.Config{})
	failing := newFixture(t, sim.Config{FailRate: 1})
	created, err := f.client.Create(ctx, connect("a"))
	require.NoError(t, err)
	addr := created.CloudAddress
	failingAddr, _, err := failing.sim.CreateAddress(key, connect("a"))
	require.NoError(t, err)

	type row struct {
		name   string
		status int
		code   vnccloud.ErrorCode
		// Exactly one of call (public API) and raw (altered request) is set.
		client string // "", "nokey", "unknown", "wrongsecret", "malformed", "failing"
		call   func(ctx context.Context, c *vnccloud.Client, addr string) error
		method string
		path   string
		body   string
		header http.Header
		// refuse, when set, asks the client for the same thing: it must answer a
		// *ValidationError with the row's code and send nothing.
		refuse func(c *vnccloud.Client) error
	}
	js := header("Content-Type", "application/json")
	html := header("Accept", "text/html")
	text := header("Content-Type", "text/plain")
	put := func(body string) string { return `{"cloudAddress":"` + addr + `",` + body[1:] }
	tooLong := strings.Repeat("é", 257)
	nineAddrs := make([]string, 9)
	for i := range nineAddrs {
		nineAddrs[i] = addr
	}

	rows := []row{
		// create
		{name: "create 1001", status: 400, code: 1001, method: "POST", path: "/static-address", body: `{"allowedActions":["connect"]}`, header: text},
		{name: "create 1002", status: 400, code: 1002, method: "POST", path: "/static-address", body: `{"allowedActions":["connect"]}`, header: html},
		{name: "create 1003", status: 400, code: 1003, method: "POST", path: "/static-address", body: `{"allowedActions":["serve"]}`, header: js,
			refuse: func(c *vnccloud.Client) error { _, err := c.Create(ctx, vnccloud.Spec{Action: "serve"}); return err }},
		{name: "create 1004 connect 17 groups", status: 400, code: 1004, method: "POST", path: "/static-address", body: `{"allowedActions":["connect"],"groups":` + jsonList(names("g", 17)) + `}`, header: js,
			refuse: func(c *vnccloud.Client) error { _, err := c.Create(ctx, connect(names("g", 17)...)); return err }},
		{name: "create 1004 listen 25 groups", status: 400, code: 1004, method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"accessControl":{"groups":` + jsonList(names("g", 25)) + `}}`, header: js,
			refuse: func(c *vnccloud.Client) error { _, err := c.Create(ctx, listen(names("g", 25), nil)); return err }},
		{name: "create 1004 listen 9 addresses", status: 400, code: 1004, method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"accessControl":{"cloudAddresses":` + jsonList(nineAddrs) + `}}`, header: js,
			refuse: func(c *vnccloud.Client) error { _, err := c.Create(ctx, listen(nil, nineAddrs)); return err }},
		{name: "create 1005 allowedActions []", status: 400, code: 1005, method: "POST", path: "/static-address", body: `{"allowedActions":[]}`, header: js},
		{name: "create 1005 groups []", status: 400, code: 1005, method: "POST", path: "/static-address", body: `{"allowedActions":["connect"],"groups":[]}`, header: js,
			refuse: func(c *vnccloud.Client) error { _, err := c.Create(ctx, connect([]string{}...)); return err }},
		{name: "create 1005 cloudAddresses []", status: 400, code: 1005, method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"accessControl":{"groups":["a"],"cloudAddresses":[]}}`, header: js,
			refuse: func(c *vnccloud.Client) error { _, err := c.Create(ctx, listen([]string{"a"}, []string{})); return err }},
		{name: "create 1006 empty name", status: 400, code: 1006, method: "POST", path: "/static-address", body: `{"allowedActions":["connect"],"groups":[""]}`, header: js,
			refuse: func(c *vnccloud.Client) error { _, err := c.Create(ctx, connect("")); return err }},
		{name: "create 1006 257 characters", status: 400, code: 1006, method: "POST", path: "/static-address", body: `{"allowedActions":["connect"],"groups":["` + tooLong + `"]}`, header: js,
			refuse: func(c *vnccloud.Client) error { _, err := c.Create(ctx, connect(tooLong)); return err }},
		{name: "create 1008", status: 400, code: 1008, method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"accessControl":{}}`, header: js,
			refuse: func(c *vnccloud.Client) error { _, err := c.Create(ctx, listen(nil, nil)); return err }},
		{name: "create 1009 ACL on connect", status: 400, code: 1009, method: "POST", path: "/static-address", body: `{"allowedActions":["connect"],"accessControl":{"groups":["a"]}}`, header: js,
			refuse: func(c *vnccloud.Client) error {
				_, err := c.Create(ctx, vnccloud.Spec{Action: vnccloud.ActionConnect, AccessControl: &vnccloud.AccessControl{Groups: []string{"a"}}})
				return err
			}},
		{name: "create 1009 groups on listen", status: 400, code: 1009, method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"groups":["a"]}`, header: js,
			refuse: func(c *vnccloud.Client) error {
				_, err := c.Create(ctx, vnccloud.Spec{Action: vnccloud.ActionListen, Groups: []string{"a"}})
				return err
			}},
		// list
		{name: "list 1002", status: 400, code: 1002, method: "GET", path: "/static-address", header: html},
		// ready, get, reset
		{name: "ready 1002", status: 400, code: 1002, method: "GET", path: "/static-address/" + addr + "/ready", header: html},
		{name: "ready 1007", status: 400, code: 1007, method: "GET", path: "/static-address/not-an-address/ready",
			refuse: func(c *vnccloud.Client) error { _, err := c.Ready(ctx, "not-an-address"); return err }},
		{name: "get 1002", status: 400, code: 1002, method: "GET", path: "/static-address/" + addr, header: html},
		{name: "get 1007", status: 400, code: 1007, method: "GET", path: "/static-address/" + addr[:40],
			refuse: func(c *vnccloud.Client) error { _, err := c.Get(ctx, addr[:40]); return err }},
		{name: "reset 1002", status: 400, code: 1002, method: "POST", path: "/static-address/" + addr, header: html},
		{name: "reset 1007", status: 400, code: 1007, method: "POST", path: "/static-address/" + strings.ReplaceAll(addr, ".", "-"),
			refuse: func(c *vnccloud.Client) error {
				_, err := c.ResetPassword(ctx, strings.ReplaceAll(addr, ".", "-"), "")
				return err
			}},
		// update
		{name: "update 1001", status: 400, code: 1001, method: "PUT", path: "/static-address/" + addr, body: put(`{"allowedActions":["connect"]}`), header: text},
		{name: "update 1003", status: 400, code: 1003, method: "PUT", path: "/static-address/" + addr, body: put(`{"allowedActions":["serve"]}`), header: js,
			refuse: func(c *vnccloud.Client) error { return c.Update(ctx, addr, vnccloud.Spec{Action: "serve"}, "") }},
		{name: "update 1004", status: 400, code: 1004, method: "PUT", path: "/static-address/" + addr, body: put(`{"allowedActions":["connect"],"groups":` + jsonList(names("g", 17)) + `}`), header: js,
			refuse: func(c *vnccloud.Client) error { return c.Update(ctx, addr, connect(names("g", 17)...), "") }},
		{name: "update 1005", status: 400, code: 1005, method: "PUT", path: "/static-address/" + addr, body: put(`{"allowedActions":["listen"],"accessControl":{"groups":[]}}`), header: js,
			refuse: func(c *vnccloud.Client) error { return c.Update(ctx, addr, listen([]string{}, nil), "") }},
		{name: "update 1006", status: 400, code: 1006, method: "PUT", path: "/static-address/" + addr, body: put(`{"allowedActions":["listen"],"accessControl":{"groups":["` + tooLong + `"]}}`), header: js,
			refuse: func(c *vnccloud.Client) error { return c.Update(ctx, addr, listen([]string{tooLong}, nil), "") }},
		{name: "update 1007 in URI", status: 400, code: 1007, method: "PUT", path: "/static-address/not-an-address", body: `{"cloudAddress":"not-an-address","allowedActions":["connect"]}`, header: js,
			refuse: func(c *vnccloud.Client) error { return c.Update(ctx, "not-an-address", connect("a"), "") }},
		{name: "update 1007 in ACL", status: 400, code: 1007, method: "PUT", path: "/static-address/" + addr, body: put(`{"allowedActions":["listen"],"accessControl":{"cloudAddresses":["x"]}}`), header: js,
			refuse: func(c *vnccloud.Client) error { return c.Update(ctx, addr, listen(nil, []string{"x"}), "") }},
		{name: "update 1008", status: 400, code: 1008, method: "PUT", path: "/static-address/" + addr, body: put(`{"allowedActions":["listen"],"accessControl":{}}`), header: js,
			refuse: func(c *vnccloud.Client) error { return c.Update(ctx, addr, listen(nil, nil), "") }},
		{name: "update 1009", status: 400, code: 1009, method: "PUT", path: "/static-address/" + addr, body: put(`{"allowedActions":["connect"],"accessControl":{"groups":["a"]}}`), header: js,
			refuse: func(c *vnccloud.Client) error {
				return c.Update(ctx, addr, vnccloud.Spec{Action: vnccloud.ActionConnect, AccessControl: &vnccloud.AccessControl{Groups: []string{"a"}}}, "")
			}},
		{name: "update 409", status: 409, method: "PUT", path: "/static-address/" + addr, body: `{"cloudAddress":"` + missing + `","allowedActions":["connect"]}`, header: js},
		{name: "update 409 without cloudAddress", status: 409, method: "PUT", path: "/static-address/" + addr, body: `{"allowedActions":["connect"]}`, header: js},
		{name: "update 412", status: 412, call: func(ctx context.Context, c *vnccloud.Client, a string) error {
			return c.Update(ctx, a, connect("b"), `"99"`)
		}},
		{name: "reset 412", status: 412, call: func(ctx context.Context, c *vnccloud.Client, a string) error {
			_, err := c.ResetPassword(ctx, a, `"99"`)
			return err
		}},
		// delete
		{name: "delete 1007", status: 400, code: 1007, method: "DELETE", path: "/static-address/" + addr + "x",
			refuse: func(c *vnccloud.Client) error { return c.Delete(ctx, addr+"x", "") }},
		{name: "delete 412", status: 412, call: func(ctx context.Context, c *vnccloud.Client, a string) error { return c.Delete(ctx, a, `"99"`) }},
	}
	// 404 on every operation that names an address.
	for _, name := range []string{"ready", "get", "update", "reset", "delete"} {
		o := opByName(name)
		rows = append(rows, row{name: name + " 404", status: 404, call: func(ctx context.Context, c *vnccloud.Client, _ string) error { return o.call(ctx, c, missing) }})
	}
	// Authentication and 503 on every operation.
	for _, o := range ops {
		for _, who := range []struct {
			client string
			status int
		}{{"nokey", 401}, {"unknown", 401}, {"wrongsecret", 401}, {"malformed", 403}, {"failing", 503}} {
			rows = append(rows, row{name: fmt.Sprintf("%s %d %s", o.name, who.status, who.client), status: who.status, client: who.client, call: o.call})
		}
	}

	clients := map[string]*vnccloud.Client{
		"":            f.client,
		"nokey":       f.clientAs(t, "", ""),
		"unknown":     f.clientAs(t, "nobody", "x"),
		"wrongsecret": f.clientAs(t, key, "wrong"),
		"malformed":   f.clientAs(t, "bad key!", "x"),
		"failing":     failing.client,
	}
	for _, tc := range rows {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, target := clients[tc.client], addr
			if tc.client == "failing" {
				target = failingAddr
			}
			var err error
			var status int
			if tc.call != nil {
				err = tc.call(ctx, c, target)
			} else {
				status, err = c.Raw(ctx, strings.Fields(tc.name)[0], tc.method, tc.path, []byte(tc.body), tc.header)
				require.Equal(t, tc.status, status)
			}
			apiErr := requireAPIError(t, err, tc.status, tc.code)
			require.Equal(t, strings.Fields(tc.name)[0], apiErr.Op)
			require.Equal(t, tc.status == 503, vnccloud.IsRetryable(err))
			if tc.refuse != nil {
				var sent atomic.Int64
				refuser, err := vnccloud.New(vnccloud.Config{BaseURL: f.base, APIKey: key, APISecret: secret,
					Before: func(context.Context, string) error { sent.Add(1); return nil }})
				require.NoError(t, err)
				err = tc.refuse(refuser)
				var ve *vnccloud.ValidationError
				require.ErrorAs(t, err, &ve, "the client refuses what the server rejects")
				require.Equal(t, tc.code, ve.Code)
				require.False(t, vnccloud.IsRetryable(err))
				require.Zero(t, sent.Load(), "a refused call sends nothing")
			}
		})
	}

	// The control rows: the same pipeline succeeds when nothing is wrong, so the rows
	// above fail for the reason they name.
	status, err := f.client.Raw(ctx, "create", "POST", "/static-address", []byte(`{"allowedActions":["connect"],"groups":["ok"]}`), nil)
	require.NoError(t, err)
	require.Equal(t, 201, status)
	status, err = f.client.Raw(ctx, "update", "PUT", "/static-address/"+addr, []byte(put(`{"allowedActions":["connect"],"groups":["b"]}`)), header("Accept", "text/html"))
	require.NoError(t, err, "PUT does not check Accept: its table does not list 1002")
	require.Equal(t, 200, status)
}

func requireAPIError(t *testing.T, err error, status int, code vnccloud.ErrorCode) *vnccloud.APIError {
	t.Helper()
	var apiErr *vnccloud.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, status, apiErr.StatusCode)
	require.Equal(t, code, apiErr.Code)
	require.NotEmpty(t, apiErr.Message)
	if code != 0 {
		require.Equal(t, code.Description(), apiErr.Message, "errorMessage is the reference's description")
	}
	for sentinel, st := range map[error]int{vnccloud.ErrUnauthorized: 401, vnccloud.ErrForbidden: 403, vnccloud.ErrNotFound: 404,
		vnccloud.ErrConflict: 409, vnccloud.ErrPreconditionFailed: 412, vnccloud.ErrServiceUnavailable: 503} {
		require.Equal(t, st == status, errors.Is(err, sentinel), "errors.Is(%v, HTTP %d)", err, st)
	}
	return apiErr
}

// TestClientRefusesWithoutARequest: invalid specs and malformed addresses cost no call.
func TestClientRefusesWithoutARequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var sent atomic.Int64
	f := newFixture(t, sim.Config{})
	c, err := vnccloud.New(vnccloud.Config{BaseURL: f.base, APIKey: key, APISecret: secret,
		Before: func(context.Context, string) error { sent.Add(1); return nil }})
	require.NoError(t, err)
	for name, call := range map[string]func() error{
		"bad action":      func() error { _, err := c.Create(ctx, vnccloud.Spec{Action: "serve"}); return err },
		"no action":       func() error { _, err := c.Create(ctx, vnccloud.Spec{}); return err },
		"17 groups":       func() error { return c.Update(ctx, missing, connect(names("g", 17)...), "") },
		"path traversal":  func() error { _, err := c.Get(ctx, "../../etc/passwd"); return err },
		"query injection": func() error { return c.Delete(ctx, missing[:78]+"?x", "") },
		"empty address":   func() error { _, err := c.Ready(ctx, ""); return err },
		"bad limit": func() error {
			for _, err := range c.List(ctx, vnccloud.ListOptions{Limit: 100}) {
				return err
			}
			return nil
		},
	} {
		require.Error(t, call(), name)
	}
	require.Zero(t, sent.Load())
	require.Zero(t, f.requests())
}

func TestAccountsSeeOnlyTheirOwnAddresses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, sim.Config{})
	mine, err := f.client.Create(ctx, connect("a"))
	require.NoError(t, err)
	other := f.clientAs(t, "other-key", "other-secret")
	_, err = other.Get(ctx, mine.CloudAddress)
	require.ErrorIs(t, err, vnccloud.ErrNotFound)
	require.ErrorIs(t, other.Delete(ctx, mine.CloudAddress, ""), vnccloud.ErrNotFound)
	var listed []string
	for a, err := range other.List(ctx, vnccloud.ListOptions{}) {
		require.NoError(t, err)
		listed = append(listed, a)
	}
	require.Empty(t, listed)
}

// TestLifecycle: create, readiness pending → none, get with ETag, If-Match on update,
// reset and delete (success and 412), against the simulator.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, sim.Config{ReadyDelay: 100 * time.Millisecond})
	spec := listen([]string{"ops", "line-a"}, nil)
	created, err := f.client.Create(ctx, spec)
	require.NoError(t, err)
	require.True(t, vnccloud.IsWellFormedAddress(created.CloudAddress))
	require.NotEmpty(t, created.CloudPassword)
	addr := created.CloudAddress

	waitReady := func(what string) {
		t.Helper()
		ready, err := f.client.Ready(ctx, addr)
		require.NoError(t, err)
		require.False(t, ready, "pending right after the %s", what)
		require.Eventually(t, func() bool {
			ready, err := f.client.Ready(ctx, addr)
			require.NoError(t, err)
			return ready
		}, 3*time.Second, 10*time.Millisecond, "none after the %s", what)
	}
	waitReady("create")

	d, err := f.client.Get(ctx, addr)
	require.NoError(t, err)
	require.Equal(t, addr, d.CloudAddress)
	require.Equal(t, `"1"`, d.ETag)
	require.True(t, d.Spec.Equal(listen([]string{"line-a", "ops"}, nil)), "%+v", d.Spec)

	// If-Match: the current ETag is accepted, a stale one refused.
	require.NoError(t, f.client.Update(ctx, addr, connect("line-b"), d.ETag))
	waitReady("update")
	err = f.client.Update(ctx, addr, connect("line-c"), d.ETag)
	requireAPIError(t, err, 412, 0)
	require.Equal(t, []string{"line-b"}, f.sim.State().Accounts[key].Addresses[0].Groups, "a refused update changes nothing")
	require.NoError(t, f.client.Update(ctx, addr, connect("line-c"), ""), "no If-Match: unconditional")

	d2, err := f.client.Get(ctx, addr)
	require.NoError(t, err)
	require.Equal(t, `"3"`, d2.ETag)
	require.True(t, d2.Spec.Equal(connect("line-c")))
	_, err = f.client.ResetPassword(ctx, addr, d.ETag)
	requireAPIError(t, err, 412, 0)
	require.Equal(t, created.CloudPassword, f.sim.State().Accounts[key].Addresses[0].Password, "a refused reset changes nothing")
	reset, err := f.client.ResetPassword(ctx, addr, d2.ETag)
	require.NoError(t, err)
	require.Equal(t, addr, reset.CloudAddress)
	require.NotEqual(t, created.CloudPassword, reset.CloudPassword)
	require.Equal(t, reset.CloudPassword, f.sim.State().Accounts[key].Addresses[0].Password)
	waitReady("reset")

	require.ErrorIs(t, f.client.Delete(ctx, addr, d2.ETag), vnccloud.ErrPreconditionFailed, "the reset bumped the version")
	d3, err := f.client.Get(ctx, addr)
	require.NoError(t, err)
	require.NoError(t, f.client.Delete(ctx, addr, d3.ETag))
	_, err = f.client.Get(ctx, addr)
	require.ErrorIs(t, err, vnccloud.ErrNotFound)
	require.ErrorIs(t, f.client.Delete(ctx, addr, ""), vnccloud.ErrNotFound)
}

// recorder wraps a handler and records the list requests and the Links answered.
type recorder struct {
	next  http.Handler
	mu    sync.Mutex
	urls  []string // absolute URLs of list requests, as received
	links []string // Link header of each list answer
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rw := httptest.NewRecorder()
	r.next.ServeHTTP(rw, req)
	if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/static-address") {
		r.mu.Lock()
		r.urls = append(r.urls, "http://"+req.Host+req.URL.RequestURI())
		r.links = append(r.links, rw.Header().Get("Link"))
		r.mu.Unlock()
	}
	for k, v := range rw.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rw.Code)
	_, _ = w.Write(rw.Body.Bytes())
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		n, limit int
		requests int // list requests made, a final 204 included
	}{
		{"empty", 0, 5, 1},
		{"one", 1, 5, 1},
		{"exactly limit", 5, 5, 1},
		{"limit plus one", 6, 5, 2},
		{"limit one", 3, 1, 3},
		{"default page size, exactly 20", 20, 0, 1},
		{"default page size, 21", 21, 0, 2},
		{"default page size, 41", 41, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, err := sim.New(sim.Config{Accounts: []sim.Account{{Key: key, Secret: secret}}})
			require.NoError(t, err)
			rec := &recorder{next: s.Handler()}
			srv := httptest.NewServer(rec)
			t.Cleanup(srv.Close)
			c, err := vnccloud.New(vnccloud.Config{BaseURL: srv.URL + "/cloud/1.1/", APIKey: key, APISecret: secret})
			require.NoError(t, err)
			var want []string
			for i := 0; i < tc.n; i++ {
				created, err := c.Create(ctx, connect(fmt.Sprint("g", i)))
				require.NoError(t, err)
				want = append(want, created.CloudAddress)
			}
			var got []string
			for a, err := range c.List(ctx, vnccloud.ListOptions{Limit: tc.limit}) {
				require.NoError(t, err)
				got = append(got, a)
			}
			require.Equal(t, want, got, "every address once, in creation order")
			require.Len(t, rec.urls, tc.requests)
			for i, u := range rec.urls {
				require.LessOrEqual(t, strings.Count(u, "limit="), 1, "limit is not added again: %s", u)
				if tc.limit > 0 {
					require.Contains(t, u, fmt.Sprintf("limit=%d", tc.limit))
				}
				if i > 0 {
					require.Equal(t, rec.links[i-1], "<"+u+`>; rel="next"`, "the Link is followed verbatim")
				}
			}
			require.Empty(t, rec.links[len(rec.links)-1], "the last page has no Link")
		})
	}
}

// TestListPerRequest: the PerRequest hook wraps every page's request, so a rate
// limiter sees each one, and its error ends the listing before the request is sent.
func TestListPerRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, sim.Config{})
	for i := 0; i < 7; i++ {
		_, err := f.client.Create(ctx, connect("g"))
		require.NoError(t, err)
	}
	before := f.sim.State().Accounts[key].Requests
	wrapped := 0
	var got []string
	perRequest := func(ctx context.Context, request func(ctx context.Context) error) error {
		wrapped++
		return request(ctx)
	}
	for a, err := range f.client.List(ctx, vnccloud.ListOptions{Limit: 3, PerRequest: perRequest}) {
		require.NoError(t, err)
		got = append(got, a)
	}
	require.Len(t, got, 7)
	require.Equal(t, 3, wrapped, "pages of 3, 3 and 1")
	require.Equal(t, before+3, f.sim.State().Accounts[key].Requests, "one request per wrapped call")

	refused := errors.New("limiter closed")
	calls := 0
	for _, err := range f.client.List(ctx, vnccloud.ListOptions{Limit: 3, PerRequest: func(ctx context.Context, request func(ctx context.Context) error) error {
		calls++
		if calls == 2 {
			return refused
		}
		return request(ctx)
	}}) {
		if err != nil {
			require.ErrorIs(t, err, refused)
			break
		}
	}
	require.Equal(t, 2, calls)
	require.Equal(t, before+4, f.sim.State().Accounts[key].Requests, "the refused page was never requested")
}

// TestListSeesChangesOnPagesNotYetViewed: the reference's paging semantics, through
// ListPage.
func TestListSeesChangesOnPagesNotYetViewed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, sim.Config{})
	var addrs []string
	for i := 0; i < 6; i++ {
		c, err := f.client.Create(ctx, connect("g"))
		require.NoError(t, err)
		addrs = append(addrs, c.CloudAddress)
	}
	first, err := f.client.ListPage(ctx, "static-address?limit=3") // relative to the base URL
	require.NoError(t, err)
	require.Equal(t, addrs[:3], first.Addresses)
	require.True(t, strings.HasPrefix(first.Next, f.base+"/static-address?"), first.Next)
	require.NoError(t, f.client.Delete(ctx, addrs[4], "")) // on the page not yet viewed
	require.NoError(t, f.client.Delete(ctx, addrs[0], "")) // on the page viewed
	added, err := f.client.Create(ctx, connect("g"))
	require.NoError(t, err)
	second, err := f.client.ListPage(ctx, first.Next)
	require.NoError(t, err)
	require.Equal(t, []string{addrs[3], addrs[5], added.CloudAddress}, second.Addresses)
	require.Empty(t, second.Next)

	// The tail deleted after a Link was given: the next page is 204, an empty end.
	p1, err := f.client.ListPage(ctx, f.base+"/static-address?limit=4")
	require.NoError(t, err)
	require.NotEmpty(t, p1.Next)
	require.NoError(t, f.client.Delete(ctx, added.CloudAddress, ""))
	p2, err := f.client.ListPage(ctx, p1.Next)
	require.NoError(t, err)
	require.Empty(t, p2.Addresses)
	require.Empty(t, p2.Next)
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, sim.Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Go(func() {
			created, err := f.client.Create(ctx, connect(fmt.Sprint("g", i)))
			if err == nil {
				_, err = f.client.Get(ctx, created.CloudAddress)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, f.sim.State().Accounts[key].Addresses, 40)
}
