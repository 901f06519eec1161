package app_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// upload stores a manifest for fleetName with the uploader token and waits until its
// devices are done; it returns the manifest's id.
func (e *env) upload(fleetName, body string) int64 {
	e.t.Helper()
	status, resp := e.do("POST", "/v1/manifests?fleet="+fleetName, uploadToken, body)
	require.Equal(e.t, http.StatusCreated, status, string(resp))
	var up struct{ Manifest struct{ ID int64 } }
	require.NoError(e.t, json.Unmarshal(resp, &up))
	e.waitDone(up.Manifest.ID)
	return up.Manifest.ID
}

func (e *env) csvRows(data []byte) [][]string {
	e.t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	require.NoError(e.t, err, string(data))
	return rows
}

// Every role and fleet rule of docs/http-api.md, route by route.
func TestRolesAndFleetScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ma := e.upload("a", header+"a1,connect,g,,,\na2,connect,g,,,\n")
	mb := e.upload("b", header+"b1,connect,g,,,\n")

	for _, tc := range []struct {
		name, method, path, token string
		want                      int
	}{
		{"reader exports without secrets", "GET", "/v1/export", readToken, 200},
		{"reader may not export secrets", "GET", "/v1/export?secrets=true", readToken, 403},
		{"reader may not read a report's console URLs", "GET", "/v1/manifests/" + itoa(ma) + "/report?secrets=true", readToken, 403},
		{"reader may not read credentials", "GET", "/v1/fleets/a/devices/a1/credentials", readToken, 403},
		{"reader may not upload", "POST", "/v1/manifests?fleet=a", readToken, 403},
		{"reader may not see the audit log", "GET", "/v1/audit", readToken, 403},
		{"secrets-only token exports", "GET", "/v1/export", secretsToken, 200},
		{"secrets-only token exports secrets", "GET", "/v1/export?secrets=true", secretsToken, 200},
		{"secrets-only token reads a report with console URLs", "GET", "/v1/manifests/" + itoa(ma) + "/report?secrets=true", secretsToken, 200},
		{"secrets-only token reads credentials", "GET", "/v1/fleets/b/devices/b1/credentials", secretsToken, 200},
		{"secrets-only token is no reader of status", "GET", "/v1/status", secretsToken, 403},
		{"secrets-only token reads the audit log", "GET", "/v1/audit", secretsToken, 200},
		{"uploader may not see the audit log", "GET", "/v1/audit", uploadToken, 403},
		{"uploader rotates one fleet", "POST", "/v1/rotate?fleet=a", uploadToken, 200},
		{"uploader may not rotate every fleet", "POST", "/v1/rotate?all=true", uploadToken, 403},
		{"admin rotates every fleet", "POST", "/v1/rotate", adminToken, 200},
		{"uploader may run a reconcile dry run", "POST", "/v1/reconcile?dry_run=true", uploadToken, 200},
		{"uploader may not run a real reconcile", "POST", "/v1/reconcile", uploadToken, 403},
		{"admin sees the audit log", "GET", "/v1/audit", adminToken, 200},
		{"scoped token reads its fleet", "GET", "/v1/status?fleet=a", lineAToken, 200},
		{"scoped token may not read another fleet", "GET", "/v1/status?fleet=b", lineAToken, 403},
		{"scoped token sees its manifest", "GET", "/v1/manifests/" + itoa(ma), lineAToken, 200},
		{"scoped token does not see another fleet's manifest", "GET", "/v1/manifests/" + itoa(mb), lineAToken, 404},
		{"scoped token does not see another fleet's report", "GET", "/v1/manifests/" + itoa(mb) + "/report", lineAToken, 404},
		{"scoped token may not upload to another fleet", "POST", "/v1/manifests?fleet=b", lineAToken, 403},
		{"scoped token may not read another fleet's credentials", "GET", "/v1/fleets/b/devices/b1/credentials", lineAToken, 403},
		{"scoped token reads its fleet's credentials", "GET", "/v1/fleets/a/devices/a1/credentials", lineAToken, 200},
		{"scoped token may not claim another fleet's credentials", "POST", "/v1/fleets/b/devices/b1/credentials/claim", lineAToken, 403},
		{"scoped token may not export another fleet", "GET", "/v1/export?fleet=b", lineAToken, 403},
		{"scoped token may not retry another fleet", "POST", "/v1/retry?fleet=b", lineAToken, 403},
		{"scoped token may not reconcile", "POST", "/v1/reconcile?dry_run=true", lineAToken, 403},
		{"scoped token with two fleets must name one", "GET", "/v1/status", linesACToken, 403},
		{"scoped token with two fleets names one", "GET", "/v1/status?fleet=a", linesACToken, 200},
		{"scoped token naming its fleet that does not exist yet is told so", "GET", "/v1/status?fleet=c", linesACToken, 404},
		{"scoped admin may not reconcile", "POST", "/v1/reconcile?dry_run=true", lineAAdminToken, 403},
		{"scoped admin may not read the audit log", "GET", "/v1/audit", lineAAdminToken, 403},
		{"scoped secrets token may not read the audit log", "GET", "/v1/audit", lineAToken, 403},
		{"scoped admin rotates its fleet", "POST", "/v1/rotate", lineAAdminToken, 200},
	} {
		status, body := e.do(tc.method, tc.path, tc.token, "")
		require.Equal(t, tc.want, status, "%s: %s %s: %s", tc.name, tc.method, tc.path, body)
	}

	// What a token limited to fleet a sees, it sees of fleet a only.
	_, body := e.do("GET", "/v1/export", lineAToken, "")
	var ids []string
	for _, r := range e.csvRows(body)[1:] {
		ids = append(ids, r[0])
	}
	require.ElementsMatch(t, []string{"a1", "a2"}, ids)
	_, body = e.do("GET", "/v1/status", lineAToken, "")
	var st struct{ Total int }
	require.NoError(t, json.Unmarshal(body, &st))
	require.Equal(t, 2, st.Total)
	_, body = e.do("GET", "/v1/manifests", lineAToken, "")
	var ms []struct{ ID int64 }
	require.NoError(t, json.Unmarshal(body, &ms))
	require.Len(t, ms, 1)
	require.Equal(t, ma, ms[0].ID)

	// Work of another fleet is not shown to a scoped token.
	status, body := e.do("POST", "/v1/rotate?fleet=b&all=true", uploadToken, "")
	require.Equal(t, 200, status, string(body))
	var rot struct{ Key string }
	require.NoError(t, json.Unmarshal(body, &rot))
	status, _ = e.do("GET", "/v1/work/"+rot.Key, lineAToken, "")
	require.Equal(t, http.StatusForbidden, status)
	status, _ = e.do("GET", "/v1/work/"+rot.Key, readToken, "")
	require.Equal(t, http.StatusOK, status)
}

// Every reveal is one audit entry and one structured log line with who, what,
// where and the outcome; GET /v1/audit lists them for the admin.
func TestRevealsAreAuditedAndLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.upload("a", header+"a1,connect,g,,,\na2,connect,g,,,\n")
	status, _ := e.do("GET", "/v1/fleets/a/devices/a1/credentials", lineAToken, "")
	require.Equal(t, 200, status)
	status, _ = e.do("GET", "/v1/fleets/a/devices/ghost/credentials", lineAToken, "")
	require.Equal(t, 404, status)
	status, _ = e.do("GET", "/v1/export?fleet=a&secrets=true", secretsToken, "")
	require.Equal(t, 200, status)

	status, body := e.do("GET", "/v1/audit", adminToken, "")
	require.Equal(t, 200, status, string(body))
	var page struct {
		Entries []struct {
			Seq     int64
			Actor   string
			Action  string
			Remote  string
			Outcome string
			Detail  map[string]any
		}
	}
	require.NoError(t, json.Unmarshal(body, &page))
	require.Len(t, page.Entries, 4)
	type entry struct{ actor, action, outcome, device string }
	var got []entry
	for i, en := range page.Entries {
		require.Equal(t, int64(i+1), en.Seq)
		require.Equal(t, "127.0.0.1", en.Remote)
		device, _ := en.Detail["device"].(string)
		got = append(got, entry{en.Actor, en.Action, en.Outcome, device})
	}
	require.Equal(t, []entry{
		{"line-a", "reveal_credentials", "ok", "a1"},
		{"line-a", "reveal_credentials", "failed", "ghost"},
		{"vault", "export_secrets", "started", ""},
		{"vault", "export_secrets", "ok", ""},
	}, got)
	require.Equal(t, float64(2), page.Entries[3].Detail["devices"], "the export revealed two devices")

	logs := e.logs.String()
	require.Contains(t, logs, `msg=audit action=reveal_credentials actor=line-a remote=127.0.0.1 outcome=ok seq=1`)
	require.Contains(t, logs, `msg=audit action=export_secrets actor=vault remote=127.0.0.1 outcome=ok seq=4`)

	status, body = e.do("GET", "/v1/audit?after=3", adminToken, "")
	require.Equal(t, 200, status)
	require.NoError(t, json.Unmarshal(body, &page))
	require.Len(t, page.Entries, 1)
	status, _ = e.do("GET", "/v1/audit?since=yesterday", adminToken, "")
	require.Equal(t, http.StatusBadRequest, status)
}

// Failed authentications are logged without the token and, past the budget, an
// address is answered 429 whatever token it sends.
func TestFailedAuthenticationsAreLoggedAndLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const guess = "guessed-token-value-1234"
	for range 10 {
		status, _ := e.do("GET", "/v1/status", guess, "")
		require.Equal(t, http.StatusUnauthorized, status)
	}
	status, body := e.do("GET", "/v1/status", guess, "")
	require.Equal(t, http.StatusTooManyRequests, status, string(body))
	status, _ = e.do("GET", "/v1/status", adminToken, "")
	require.Equal(t, http.StatusTooManyRequests, status, "a guessing address is held back even with a good token")
	status, _ = e.do("POST", "/v1/claims/redeem", "", `{"token":"vfc_whatever"}`)
	require.Equal(t, http.StatusTooManyRequests, status, "claim redemption shares the budget")

	logs := e.logs.String()
	require.Equal(t, 10, strings.Count(logs, `msg="authentication failed" remote=127.0.0.1`), logs)
	require.NotContains(t, logs, guess)
}

// A claim issued by the secrets role is redeemed once, unauthenticated; the second
// redemption is refused, audited and logged as a security event; the bulk form gives
// a CSV for a manifest's devices.
func TestClaimsOverHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.upload("a", header+"a1,connect,g,,,\na2,connect,g,,,\n")
	truth := map[string]string{}
	for _, a := range e.sim.State().Accounts["k"].Addresses {
		truth[a.CloudAddress] = a.Password
	}

	status, body := e.do("POST", "/v1/fleets/a/devices/a1/credentials/claim", readToken, "")
	require.Equal(t, http.StatusForbidden, status, "claims need the secrets role")
	status, body = e.do("POST", "/v1/fleets/a/devices/a1/credentials/claim?ttl=48h", secretsToken, "")
	require.Equal(t, http.StatusBadRequest, status, string(body))
	status, body = e.do("POST", "/v1/fleets/a/devices/a1/credentials/claim", secretsToken, "")
	require.Equal(t, http.StatusCreated, status, string(body))
	var claim struct{ DeviceID, ClaimToken, ExpiresAt string }
	require.NoError(t, json.Unmarshal(body, &claim))
	require.Equal(t, "a1", claim.DeviceID)

	redeem := func(token string) (int, map[string]string) {
		status, body := e.do("POST", "/v1/claims/redeem", "", `{"token":"`+token+`"}`)
		var out map[string]string
		_ = json.Unmarshal(body, &out)
		return status, out
	}
	status, creds := redeem(claim.ClaimToken)
	require.Equal(t, http.StatusOK, status, creds)
	require.Equal(t, truth[creds["cloudAddress"]], creds["cloudPassword"])
	require.NotEmpty(t, creds["cloudPassword"])
	status, again := redeem(claim.ClaimToken)
	require.Equal(t, http.StatusGone, status)
	require.Contains(t, again["error"], "already redeemed")
	require.Contains(t, e.logs.String(), `msg="security event: claim token redeemed a second time" remote=127.0.0.1 fleet=a device=a1`)
	var outcomes []string
	rows, err := e.pool.Query(context.Background(), `SELECT outcome FROM audit_log WHERE action = 'claim_redeem' ORDER BY seq`)
	require.NoError(t, err)
	for rows.Next() {
		var o string
		require.NoError(t, rows.Scan(&o))
		outcomes = append(outcomes, o)
	}
	require.Equal(t, []string{"ok", "denied"}, outcomes)

	status, body = e.do("POST", "/v1/fleets/a/claims", secretsToken, `{"manifest": `+itoa(m)+`}`)
	require.Equal(t, http.StatusOK, status, string(body))
	table := e.csvRows(body)
	require.Equal(t, []string{"device_id", "claim_token", "expires_at"}, table[0])
	require.Len(t, table, 3)
	for _, r := range table[1:] {
		status, creds := redeem(r[1])
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, r[0], creds["deviceId"])
		require.Equal(t, truth[creds["cloudAddress"]], creds["cloudPassword"])
	}
	status, body = e.do("POST", "/v1/fleets/a/claims", secretsToken, `{"devices": ["a1", "ghost"]}`)
	require.Equal(t, http.StatusNotFound, status, string(body))
	status, _ = e.do("POST", "/v1/fleets/a/claims", secretsToken, `{"manifest": 1, "devices": ["a1"]}`)
	require.Equal(t, http.StatusBadRequest, status)
	status, _ = redeem("not-a-claim-token")
	require.Equal(t, http.StatusBadRequest, status)
	require.NotContains(t, e.logs.String(), claim.ClaimToken, "claim tokens stay out of the logs")
}
