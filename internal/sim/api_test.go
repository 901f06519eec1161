package sim

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/vnccloud"
)

var passwordShape = regexp.MustCompile(`^[0-9A-Za-z]{20}$`)

// TestDocumentedAnswers has a row per documented status and errorCode of every
// operation, and rows that pin the order of the checks. Each row runs against its own
// simulator in which account A owns {addr} and account B owns {other}, both fresh
// (version 1). A row that fails must leave both exactly as they were.
func TestDocumentedAnswers(t *testing.T) {
	t.Parallel()
	const (
		connect = `{"allowedActions":["connect"],"groups":["g1"]}`
		put     = `{"cloudAddress":"{addr}","allowedActions":["connect"],"groups":["g2"]}`
	)
	putWith := func(rest string) string { return `{"cloudAddress":"{addr}",` + rest[1:] }
	tooLong := strings.Repeat("é", 257)
	longest := make([]string, 16) // 16 distinct names of exactly 256 characters
	for i := range longest {
		longest[i] = strings.Repeat("é", 255) + string(rune('a'+i))
	}
	nine := jsonList([]string{missing, missing, missing, missing, missing, missing, missing, missing, missing})
	text := hdr("Content-Type", "text/plain")
	html := hdr("Accept", "text/html")
	anon := []opt{noAuth}
	unknown := []opt{as("nobody", "x")}
	wrong := []opt{as(keyA, "wrong")}
	malformed := []opt{as("bad key!", "x")}

	type row struct {
		name   string
		method string
		path   string
		body   string
		opts   []opt
		status int
		code   vnccloud.ErrorCode
		// check, for successes, looks at the answer and the state; addr is {addr}.
		check func(t *testing.T, f *fixture, r reply, addr string)
	}
	created := func(t *testing.T, f *fixture, r reply, _ string) {
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		var c struct{ CloudAddress, CloudPassword string }
		require.NoError(t, json.Unmarshal(r.body, &c))
		require.True(t, vnccloud.IsWellFormedAddress(c.CloudAddress), c.CloudAddress)
		require.Regexp(t, passwordShape, c.CloudPassword)
		st := f.sim.State().Accounts[keyA]
		require.Len(t, st.Addresses, 2)
		require.EqualValues(t, 2, st.Creates)
		require.Equal(t, c.CloudAddress, st.Addresses[1].CloudAddress)
		require.Equal(t, c.CloudPassword, st.Addresses[1].Password)
		require.Equal(t, 1, st.Addresses[1].Version)
	}
	createdAs := func(want vnccloud.Spec) func(*testing.T, *fixture, reply, string) {
		return func(t *testing.T, f *fixture, r reply, addr string) {
			created(t, f, r, addr)
			require.True(t, want.Equal(f.sim.State().Accounts[keyA].Addresses[1].Spec()), "%+v", f.sim.State().Accounts[keyA].Addresses[1])
		}
	}
	updated := func(want vnccloud.Spec) func(*testing.T, *fixture, reply, string) {
		return func(t *testing.T, f *fixture, r reply, _ string) {
			require.Empty(t, r.body, "PUT answers no body")
			a := f.sim.State().Accounts[keyA].Addresses[0]
			require.Equal(t, 2, a.Version)
			require.True(t, want.Equal(a.Spec()), "%+v", a)
		}
	}
	reset := func(t *testing.T, f *fixture, r reply, addr string) {
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		var c struct{ CloudAddress, CloudPassword string }
		require.NoError(t, json.Unmarshal(r.body, &c))
		require.Equal(t, addr, c.CloudAddress)
		require.Regexp(t, passwordShape, c.CloudPassword)
		a := f.sim.State().Accounts[keyA].Addresses[0]
		require.Equal(t, c.CloudPassword, a.Password)
		require.Equal(t, 2, a.Version)
	}
	deleted := func(t *testing.T, f *fixture, r reply, _ string) {
		require.Empty(t, r.body)
		require.Empty(t, f.sim.State().Accounts[keyA].Addresses)
	}

	rows := []row{
		// create
		{name: "create 201 connect", method: "POST", path: "/static-address", body: connect, status: 201,
			check: createdAs(vnccloud.Spec{Action: "connect", Groups: []string{"g1"}})},
		{name: "create 201 connect without groups", method: "POST", path: "/static-address", body: `{"allowedActions":["connect"]}`, status: 201,
			check: createdAs(vnccloud.Spec{Action: "connect"})},
		{name: "create 201 connect 16 groups of 256 characters", method: "POST", path: "/static-address",
			body: `{"allowedActions":["connect"],"groups":` + jsonList(longest) + `}`, status: 201, check: created},
		{name: "create 201 listen without ACL", method: "POST", path: "/static-address", body: `{"allowedActions":["listen"]}`, status: 201,
			check: createdAs(vnccloud.Spec{Action: "listen"})},
		{name: "create 201 listen with ACL", method: "POST", path: "/static-address",
			body: `{"allowedActions":["listen"],"accessControl":{"groups":["g1"],"cloudAddresses":["` + missing + `"]}}`, status: 201,
			check: createdAs(vnccloud.Spec{Action: "listen", AccessControl: &vnccloud.AccessControl{Groups: []string{"g1"}, CloudAddresses: []string{missing}}})},
		{name: "create 201 listen 24 groups 8 addresses", method: "POST", path: "/static-address",
			body: `{"allowedActions":["listen"],"accessControl":{"groups":` + jsonList(names("g", 24)) + `,"cloudAddresses":` + nine[:len(nine)-len(missing)-4] + `]}}`, status: 201, check: created},
		{name: "create 201 Content-Type with charset", method: "POST", path: "/static-address", body: connect, opts: []opt{hdr("Content-Type", "application/json; charset=utf-8")}, status: 201, check: created},
		{name: "create 201 without Accept", method: "POST", path: "/static-address", body: connect, opts: []opt{hdr("Accept", "")}, status: 201, check: created},
		{name: "create 201 Accept */*", method: "POST", path: "/static-address", body: connect, opts: []opt{hdr("Accept", "*/*")}, status: 201, check: created},
		{name: "create 201 Accept application/*", method: "POST", path: "/static-address", body: connect, opts: []opt{hdr("Accept", "application/*;q=0.2")}, status: 201, check: created},
		{name: "create 201 Accept list with q-values", method: "POST", path: "/static-address", body: connect, opts: []opt{hdr("Accept", "text/html, application/json;q=0.5")}, status: 201, check: created},
		{name: "create 1001 text/plain", method: "POST", path: "/static-address", body: connect, opts: []opt{text}, status: 400, code: 1001},
		{name: "create 1001 no Content-Type", method: "POST", path: "/static-address", body: connect, opts: []opt{hdr("Content-Type", "")}, status: 400, code: 1001},
		{name: "create 1001 application/json-seq", method: "POST", path: "/static-address", body: connect, opts: []opt{hdr("Content-Type", "application/json-seq")}, status: 400, code: 1001},
		{name: "create 1001 before 1002", method: "POST", path: "/static-address", body: connect, opts: []opt{text, html}, status: 400, code: 1001},
		{name: "create 1002 text/html", method: "POST", path: "/static-address", body: connect, opts: []opt{html}, status: 400, code: 1002},
		{name: "create 1002 application/xml", method: "POST", path: "/static-address", body: connect, opts: []opt{hdr("Accept", "application/xml")}, status: 400, code: 1002},
		{name: "create 1002 json with q=0", method: "POST", path: "/static-address", body: connect, opts: []opt{hdr("Accept", "application/json;q=0")}, status: 400, code: 1002},
		{name: "create 1002 before the body", method: "POST", path: "/static-address", body: `{`, opts: []opt{html}, status: 400, code: 1002},
		{name: "create 1003 serve", method: "POST", path: "/static-address", body: `{"allowedActions":["serve"]}`, status: 400, code: 1003},
		{name: "create 1003 no allowedActions", method: "POST", path: "/static-address", body: `{"groups":["g"]}`, status: 400, code: 1003},
		{name: "create 1003 two actions", method: "POST", path: "/static-address", body: `{"allowedActions":["connect","listen"]}`, status: 400, code: 1003},
		{name: "create 1003 null body", method: "POST", path: "/static-address", body: `null`, status: 400, code: 1003},
		{name: "create 1004 connect 17 groups", method: "POST", path: "/static-address", body: `{"allowedActions":["connect"],"groups":` + jsonList(names("g", 17)) + `}`, status: 400, code: 1004},
		{name: "create 1004 listen 25 groups", method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"accessControl":{"groups":` + jsonList(names("g", 25)) + `}}`, status: 400, code: 1004},
		{name: "create 1004 listen 9 addresses", method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"accessControl":{"cloudAddresses":` + nine + `}}`, status: 400, code: 1004},
		{name: "create 1005 allowedActions []", method: "POST", path: "/static-address", body: `{"allowedActions":[]}`, status: 400, code: 1005},
		{name: "create 1005 groups []", method: "POST", path: "/static-address", body: `{"allowedActions":["connect"],"groups":[]}`, status: 400, code: 1005},
		{name: "create 1005 ACL groups []", method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"accessControl":{"groups":[]}}`, status: 400, code: 1005},
		{name: "create 1005 ACL cloudAddresses []", method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"accessControl":{"groups":["a"],"cloudAddresses":[]}}`, status: 400, code: 1005},
		{name: "create 1006 empty group name", method: "POST", path: "/static-address", body: `{"allowedActions":["connect"],"groups":[""]}`, status: 400, code: 1006},
		{name: "create 1006 257 characters", method: "POST", path: "/static-address", body: `{"allowedActions":["connect"],"groups":["` + tooLong + `"]}`, status: 400, code: 1006},
		{name: "create 1007 in ACL", method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"accessControl":{"cloudAddresses":["x.y"]}}`, status: 400, code: 1007},
		{name: "create 1008", method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"accessControl":{}}`, status: 400, code: 1008},
		{name: "create 1009 ACL on connect", method: "POST", path: "/static-address", body: `{"allowedActions":["connect"],"accessControl":{"groups":["a"]}}`, status: 400, code: 1009},
		{name: "create 1009 groups on listen", method: "POST", path: "/static-address", body: `{"allowedActions":["listen"],"groups":["a"]}`, status: 400, code: 1009},
		{name: "create 400 not JSON", method: "POST", path: "/static-address", body: `{"allowedActions":`, status: 400},
		{name: "create 400 trailing garbage", method: "POST", path: "/static-address", body: connect + ` x`, status: 400},
		{name: "create 400 allowedActions a bare string", method: "POST", path: "/static-address", body: `{"allowedActions":"connect"}`, status: 400},
		{name: "create 400 array body", method: "POST", path: "/static-address", body: `[]`, status: 400},
		{name: "create 401 no key", method: "POST", path: "/static-address", body: connect, opts: anon, status: 401},
		{name: "create 401 unknown key", method: "POST", path: "/static-address", body: connect, opts: unknown, status: 401},
		{name: "create 401 wrong secret", method: "POST", path: "/static-address", body: connect, opts: wrong, status: 401},
		{name: "create 403", method: "POST", path: "/static-address", body: connect, opts: malformed, status: 403},
		{name: "create 404 unknown path", method: "POST", path: "/static-addresses", body: connect, status: 404},
		{name: "create 405 PATCH", method: "PATCH", path: "/static-address", body: connect, status: 405,
			check: func(t *testing.T, _ *fixture, r reply, _ string) {
				require.Equal(t, "GET, POST", r.header.Get("Allow"))
			}},

		// list
		{name: "list 200", method: "GET", path: "/static-address", status: 200, check: func(t *testing.T, f *fixture, r reply, addr string) {
			require.Equal(t, "application/json", r.header.Get("Content-Type"))
			require.JSONEq(t, `{"cloudAddresses":["`+addr+`"]}`, string(r.body), "strings only: no passwords, no other account")
			require.Empty(t, r.header.Get("Link"))
		}},
		{name: "list 200 limit 1", method: "GET", path: "/static-address?limit=1", status: 200},
		{name: "list 200 limit 99", method: "GET", path: "/static-address?limit=99", status: 200},
		{name: "list 1002", method: "GET", path: "/static-address", opts: []opt{html}, status: 400, code: 1002},
		{name: "list 400 limit 0", method: "GET", path: "/static-address?limit=0", status: 400},
		{name: "list 400 limit 100", method: "GET", path: "/static-address?limit=100", status: 400},
		{name: "list 400 limit abc", method: "GET", path: "/static-address?limit=abc", status: 400},
		{name: "list 400 limit empty", method: "GET", path: "/static-address?limit=", status: 400},
		{name: "list 400 limit -1", method: "GET", path: "/static-address?limit=-1", status: 400},
		{name: "list 400 cursor", method: "GET", path: "/static-address?cursor=bm9wZQ", status: 400},
		{name: "list 400 cursor not base64", method: "GET", path: "/static-address?cursor=***", status: 400},
		{name: "list 401", method: "GET", path: "/static-address", opts: anon, status: 401},
		{name: "list 403", method: "GET", path: "/static-address", opts: malformed, status: 403},
		{name: "list 405 DELETE", method: "DELETE", path: "/static-address", status: 405},

		// ready
		{name: "ready 200", method: "GET", path: "/static-address/{addr}/ready", status: 200, check: func(t *testing.T, _ *fixture, r reply, _ string) {
			require.Equal(t, "application/json", r.header.Get("Content-Type"))
			require.JSONEq(t, `{"changes":"none"}`, string(r.body))
		}},
		{name: "ready 1002", method: "GET", path: "/static-address/{addr}/ready", opts: []opt{html}, status: 400, code: 1002},
		{name: "ready 1007", method: "GET", path: "/static-address/not-an-address/ready", status: 400, code: 1007},
		{name: "ready 1007 encoded slash", method: "GET", path: "/static-address/a%2Fb/ready", status: 400, code: 1007},
		{name: "ready 1007 before 1002", method: "GET", path: "/static-address/not-an-address/ready", opts: []opt{html}, status: 400, code: 1007},
		{name: "ready 404", method: "GET", path: "/static-address/{missing}/ready", status: 404},
		{name: "ready 404 before 1002", method: "GET", path: "/static-address/{missing}/ready", opts: []opt{html}, status: 404},
		{name: "ready 404 other account", method: "GET", path: "/static-address/{other}/ready", status: 404},
		{name: "ready 404 extra segment", method: "GET", path: "/static-address/{addr}/ready/x", status: 404},
		{name: "ready 401", method: "GET", path: "/static-address/{addr}/ready", opts: wrong, status: 401},
		{name: "ready 403", method: "GET", path: "/static-address/{addr}/ready", opts: malformed, status: 403},
		{name: "ready 405 POST", method: "POST", path: "/static-address/{addr}/ready", status: 405,
			check: func(t *testing.T, _ *fixture, r reply, _ string) { require.Equal(t, "GET", r.header.Get("Allow")) }},

		// get
		{name: "get 200", method: "GET", path: "/static-address/{addr}", status: 200, check: func(t *testing.T, f *fixture, r reply, addr string) {
			require.Equal(t, "application/json", r.header.Get("Content-Type"))
			require.Equal(t, `"1"`, r.header.Get("ETag"))
			require.JSONEq(t, `{"cloudAddress":"`+addr+`","allowedActions":["connect"],"groups":["g"]}`, string(r.body))
			require.NotContains(t, string(r.body), f.sim.State().Accounts[keyA].Addresses[0].Password)
		}},
		{name: "get 1002", method: "GET", path: "/static-address/{addr}", opts: []opt{html}, status: 400, code: 1002},
		{name: "get 1007", method: "GET", path: "/static-address/{short}", status: 400, code: 1007},
		{name: "get 404", method: "GET", path: "/static-address/{missing}", status: 404},
		{name: "get 404 other account", method: "GET", path: "/static-address/{other}", status: 404},
		{name: "get 404 trailing slash", method: "GET", path: "/static-address/", status: 404},
		{name: "get 401", method: "GET", path: "/static-address/{addr}", opts: unknown, status: 401},
		{name: "get 403", method: "GET", path: "/static-address/{addr}", opts: malformed, status: 403},
		{name: "get 405 PATCH", method: "PATCH", path: "/static-address/{addr}", body: put, status: 405,
			check: func(t *testing.T, _ *fixture, r reply, _ string) {
				require.Equal(t, "GET, PUT, POST, DELETE", r.header.Get("Allow"))
			}},

		// update
		{name: "update 200", method: "PUT", path: "/static-address/{addr}", body: put, status: 200,
			check: updated(vnccloud.Spec{Action: "connect", Groups: []string{"g2"}})},
		{name: "update 200 to listen", method: "PUT", path: "/static-address/{addr}", body: putWith(`{"allowedActions":["listen"],"accessControl":{"groups":["g1"]}}`), status: 200,
			check: updated(vnccloud.Spec{Action: "listen", AccessControl: &vnccloud.AccessControl{Groups: []string{"g1"}}})},
		{name: "update 200 dropping groups", method: "PUT", path: "/static-address/{addr}", body: putWith(`{"allowedActions":["connect"]}`), status: 200,
			check: updated(vnccloud.Spec{Action: "connect"})},
		{name: "update 200 If-Match", method: "PUT", path: "/static-address/{addr}", body: put, opts: []opt{hdr("If-Match", `"1"`)}, status: 200,
			check: updated(vnccloud.Spec{Action: "connect", Groups: []string{"g2"}})},
		{name: "update 200 If-Match *", method: "PUT", path: "/static-address/{addr}", body: put, opts: []opt{hdr("If-Match", `*`)}, status: 200,
			check: updated(vnccloud.Spec{Action: "connect", Groups: []string{"g2"}})},
		{name: "update 200 If-Match list", method: "PUT", path: "/static-address/{addr}", body: put, opts: []opt{hdr("If-Match", `"7", W/"1"`)}, status: 200,
			check: updated(vnccloud.Spec{Action: "connect", Groups: []string{"g2"}})},
		{name: "update 200 Accept not checked", method: "PUT", path: "/static-address/{addr}", body: put, opts: []opt{html}, status: 200,
			check: updated(vnccloud.Spec{Action: "connect", Groups: []string{"g2"}})},
		{name: "update 1001", method: "PUT", path: "/static-address/{addr}", body: put, opts: []opt{text}, status: 400, code: 1001},
		{name: "update 1001 no Content-Type", method: "PUT", path: "/static-address/{addr}", body: put, opts: []opt{hdr("Content-Type", "")}, status: 400, code: 1001},
		{name: "update 1003", method: "PUT", path: "/static-address/{addr}", body: putWith(`{"allowedActions":["serve"]}`), status: 400, code: 1003},
		{name: "update 1004", method: "PUT", path: "/static-address/{addr}", body: putWith(`{"allowedActions":["connect"],"groups":` + jsonList(names("g", 17)) + `}`), status: 400, code: 1004},
		{name: "update 1005", method: "PUT", path: "/static-address/{addr}", body: putWith(`{"allowedActions":["connect"],"groups":[]}`), status: 400, code: 1005},
		{name: "update 1006", method: "PUT", path: "/static-address/{addr}", body: putWith(`{"allowedActions":["listen"],"accessControl":{"groups":["` + tooLong + `"]}}`), status: 400, code: 1006},
		{name: "update 1007 in URI", method: "PUT", path: "/static-address/not-an-address", body: `{"cloudAddress":"not-an-address","allowedActions":["connect"]}`, status: 400, code: 1007},
		{name: "update 1007 in ACL", method: "PUT", path: "/static-address/{addr}", body: putWith(`{"allowedActions":["listen"],"accessControl":{"cloudAddresses":["x"]}}`), status: 400, code: 1007},
		{name: "update 1008", method: "PUT", path: "/static-address/{addr}", body: putWith(`{"allowedActions":["listen"],"accessControl":{}}`), status: 400, code: 1008},
		{name: "update 1009", method: "PUT", path: "/static-address/{addr}", body: putWith(`{"allowedActions":["connect"],"accessControl":{"groups":["a"]}}`), status: 400, code: 1009},
		{name: "update 400 not JSON", method: "PUT", path: "/static-address/{addr}", body: `{"cloudAddress":`, status: 400},
		{name: "update 404", method: "PUT", path: "/static-address/{missing}", body: `{"cloudAddress":"{missing}","allowedActions":["connect"]}`, status: 404},
		{name: "update 404 other account", method: "PUT", path: "/static-address/{other}", body: `{"cloudAddress":"{other}","allowedActions":["connect"]}`, status: 404},
		{name: "update 409", method: "PUT", path: "/static-address/{addr}", body: `{"cloudAddress":"{missing}","allowedActions":["connect"]}`, status: 409},
		{name: "update 409 cloudAddress missing", method: "PUT", path: "/static-address/{addr}", body: `{"allowedActions":["connect"]}`, status: 409},
		{name: "update 409 cloudAddress null", method: "PUT", path: "/static-address/{addr}", body: `{"cloudAddress":null,"allowedActions":["connect"]}`, status: 409},
		{name: "update 412", method: "PUT", path: "/static-address/{addr}", body: put, opts: []opt{hdr("If-Match", `"2"`)}, status: 412},
		{name: "update 412 unquoted", method: "PUT", path: "/static-address/{addr}", body: put, opts: []opt{hdr("If-Match", `1`)}, status: 412},
		{name: "update 401", method: "PUT", path: "/static-address/{addr}", body: put, opts: anon, status: 401},
		{name: "update 403", method: "PUT", path: "/static-address/{addr}", body: put, opts: malformed, status: 403},
		// update: the order of its checks
		{name: "update order 1007 before 1001", method: "PUT", path: "/static-address/nope", body: `{`, opts: []opt{text}, status: 400, code: 1007},
		{name: "update order 404 before 1001", method: "PUT", path: "/static-address/{missing}", body: put, opts: []opt{text}, status: 404},
		{name: "update order 1001 before JSON syntax", method: "PUT", path: "/static-address/{addr}", body: `{`, opts: []opt{text}, status: 400, code: 1001},
		{name: "update order JSON syntax before 409", method: "PUT", path: "/static-address/{addr}", body: `{"cloudAddress":"x"`, status: 400},
		{name: "update order 409 before body rules", method: "PUT", path: "/static-address/{addr}", body: `{"cloudAddress":"{missing}","allowedActions":["serve"]}`, status: 409},
		{name: "update order body rules before 412", method: "PUT", path: "/static-address/{addr}", body: putWith(`{"allowedActions":["serve"]}`), opts: []opt{hdr("If-Match", `"9"`)}, status: 400, code: 1003},

		// reset
		{name: "reset 200", method: "POST", path: "/static-address/{addr}", status: 200, check: reset},
		{name: "reset 200 If-Match", method: "POST", path: "/static-address/{addr}", opts: []opt{hdr("If-Match", `"1"`)}, status: 200, check: reset},
		{name: "reset 200 If-Match *", method: "POST", path: "/static-address/{addr}", opts: []opt{hdr("If-Match", `*`)}, status: 200, check: reset},
		{name: "reset 200 body and Content-Type ignored", method: "POST", path: "/static-address/{addr}", body: "whatever", opts: []opt{text}, status: 200, check: reset},
		{name: "reset 1002", method: "POST", path: "/static-address/{addr}", opts: []opt{html}, status: 400, code: 1002},
		{name: "reset 1002 before 412", method: "POST", path: "/static-address/{addr}", opts: []opt{html, hdr("If-Match", `"9"`)}, status: 400, code: 1002},
		{name: "reset 1007", method: "POST", path: "/static-address/{dashes}", status: 400, code: 1007},
		{name: "reset 404", method: "POST", path: "/static-address/{missing}", status: 404},
		{name: "reset 404 other account", method: "POST", path: "/static-address/{other}", status: 404},
		{name: "reset 412", method: "POST", path: "/static-address/{addr}", opts: []opt{hdr("If-Match", `"2", "3"`)}, status: 412},
		{name: "reset 401", method: "POST", path: "/static-address/{addr}", opts: wrong, status: 401},
		{name: "reset 403", method: "POST", path: "/static-address/{addr}", opts: malformed, status: 403},

		// delete
		{name: "delete 204", method: "DELETE", path: "/static-address/{addr}", status: 204, check: deleted},
		{name: "delete 204 If-Match", method: "DELETE", path: "/static-address/{addr}", opts: []opt{hdr("If-Match", `"1"`)}, status: 204, check: deleted},
		{name: "delete 204 If-Match *", method: "DELETE", path: "/static-address/{addr}", opts: []opt{hdr("If-Match", `*`)}, status: 204, check: deleted},
		{name: "delete 204 Accept not checked", method: "DELETE", path: "/static-address/{addr}", opts: []opt{html}, status: 204, check: deleted},
		{name: "delete 1007", method: "DELETE", path: "/static-address/{addr}x", status: 400, code: 1007},
		{name: "delete 404", method: "DELETE", path: "/static-address/{missing}", status: 404},
		{name: "delete 404 other account", method: "DELETE", path: "/static-address/{other}", status: 404},
		{name: "delete 412", method: "DELETE", path: "/static-address/{addr}", opts: []opt{hdr("If-Match", `"0"`)}, status: 412},
		{name: "delete 401", method: "DELETE", path: "/static-address/{addr}", opts: unknown, status: 401},
		{name: "delete 403", method: "DELETE", path: "/static-address/{addr}", opts: malformed, status: 403},
	}

	for _, tc := range rows {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{})
			addr, pw, err := f.sim.CreateAddress(keyA, vnccloud.Spec{Action: "connect", Groups: []string{"g"}})
			require.NoError(t, err)
			other, otherPW, err := f.sim.CreateAddress(keyB, vnccloud.Spec{Action: "connect"})
			require.NoError(t, err)
			fill := strings.NewReplacer("{addr}", addr, "{other}", other, "{missing}", missing,
				"{short}", addr[:40], "{dashes}", strings.ReplaceAll(addr, ".", "-")).Replace

			r := f.do(t, tc.method, fill(tc.path), fill(tc.body), tc.opts...)

			if tc.status >= 400 {
				requireError(t, r, tc.status, tc.code)
				if tc.status == 401 {
					require.Equal(t, `Basic realm="VNC Cloud"`, r.header.Get("WWW-Authenticate"))
				}
				st := f.sim.State()
				require.Equal(t, []AddressState{{CloudAddress: addr, Password: pw, Version: 1, Ready: true, AllowedActions: []string{"connect"},
					Groups: []string{"g"}, CreatedAt: st.Accounts[keyA].Addresses[0].CreatedAt, ChangedAt: st.Accounts[keyA].Addresses[0].CreatedAt,
					ReadyAt: st.Accounts[keyA].Addresses[0].CreatedAt}},
					st.Accounts[keyA].Addresses, "a refused request changes nothing")
				require.EqualValues(t, 1, st.Accounts[keyA].Creates)
				require.Len(t, st.Accounts[keyB].Addresses, 1)
				require.Equal(t, otherPW, st.Accounts[keyB].Addresses[0].Password)
				require.Equal(t, 1, st.Accounts[keyB].Addresses[0].Version)
			} else {
				require.Equal(t, tc.status, r.status, "body %s", r.body)
			}
			if tc.check != nil {
				tc.check(t, f, r, addr)
			}
		})
	}
}

// TestFailRateAnswers503: with FailRate 1 every request, authenticated or not, on
// every path, is 503 with no errorCode and does nothing.
func TestFailRateAnswers503(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{FailRate: 1})
	addr, _, err := f.sim.CreateAddress(keyA, vnccloud.Spec{Action: "connect"})
	require.NoError(t, err)
	for _, tc := range []struct {
		method, path, body string
		opts               []opt
	}{
		{"POST", "/static-address", `{"allowedActions":["connect"]}`, nil},
		{"GET", "/static-address", "", nil},
		{"GET", "/static-address/" + addr + "/ready", "", nil},
		{"GET", "/static-address/" + addr, "", nil},
		{"PUT", "/static-address/" + addr, `{"cloudAddress":"` + addr + `","allowedActions":["listen"]}`, nil},
		{"POST", "/static-address/" + addr, "", nil},
		{"DELETE", "/static-address/" + addr, "", nil},
		{"GET", "/static-address/" + addr, "", []opt{noAuth}},
		{"GET", "/static-address/" + addr, "", []opt{as("bad key!", "x")}},
		{"GET", "/nowhere", "", nil},
	} {
		r := f.do(t, tc.method, tc.path, tc.body, tc.opts...)
		requireError(t, r, 503, 0)
		require.JSONEq(t, `{"errorMessage":"Service Unavailable"}`, string(r.body))
		require.Empty(t, r.header.Get("Retry-After"), "only the rate cap names a delay")
	}
	st := f.sim.State()
	require.EqualValues(t, 10, st.Requests, "refused requests are counted")
	require.Len(t, st.Accounts[keyA].Addresses, 1)
	require.Equal(t, 1, st.Accounts[keyA].Addresses[0].Version)
	require.EqualValues(t, 1, st.Accounts[keyA].Creates)
	require.EqualValues(t, 1, st.Accounts[keyA].Counts["create"], "counted per operation although refused")
}

// TestAuthentication: 401 for what is missing or unknown, 403 for a malformed key,
// checked before the route.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{Accounts: []Account{{keyA, secretA}, {strings.Repeat("k", 128), "s"}}})
	for _, tc := range []struct {
		name   string
		path   string
		opts   []opt
		status int
	}{
		{"no Authorization", "/static-address", []opt{noAuth}, 401},
		{"Bearer", "/static-address", []opt{hdr("Authorization", "Bearer abc")}, 401},
		{"Basic not base64", "/static-address", []opt{hdr("Authorization", "Basic !!!")}, 401},
		{"empty key", "/static-address", []opt{as("", secretA)}, 401},
		{"unknown key", "/static-address", []opt{as("acct-z", secretA)}, 401},
		{"wrong secret", "/static-address", []opt{as(keyA, secretA+"x")}, 401},
		{"empty secret", "/static-address", []opt{as(keyA, "")}, 401},
		{"128 characters, known", "/static-address", []opt{as(strings.Repeat("k", 128), "s")}, 204},
		{"129 characters", "/static-address", []opt{as(strings.Repeat("k", 129), "s")}, 403},
		{"space", "/static-address", []opt{as("acct a", secretA)}, 403},
		{"non-ASCII", "/static-address", []opt{as("acct-é", secretA)}, 403},
		{"unknown path unauthenticated", "/nowhere", []opt{noAuth}, 401},
		{"unknown path malformed key", "/nowhere", []opt{as("a b", "x")}, 403},
		{"unknown path authenticated", "/nowhere", nil, 404},
		{"prefix only", "/cloud/1.1/", nil, 404},
		{"well-formed", "/static-address", nil, 204},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := f.do(t, "GET", tc.path, "", tc.opts...)
			if tc.status >= 400 {
				requireError(t, r, tc.status, 0)
			} else {
				require.Equal(t, tc.status, r.status)
			}
		})
	}
}
