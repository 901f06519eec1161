package app_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/app"
	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/sim/zenlayersim"
	"github.com/vncfleet/vncfleet/internal/syncbuf"
)

const (
	adminToken      = "admin-token-for-tests"
	readToken       = "read-only-token"
	uploadToken     = "upload-token"
	secretsToken    = "secrets-only-token"
	lineAToken      = "fleet-a-token"
	linesACToken    = "fleets-a-and-c-token"
	lineAAdminToken = "fleet-a-admin-token"
)

type env struct {
	t    *testing.T
	pool *pgxpool.Pool
	sim  *sim.Server
	zl   *zenlayersim.Server
	api  *httptest.Server
	logs *syncbuf.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool, dbURL := dbtest.New(t)
	zl := zenlayersim.New(zenlayersim.Config{Credentials: map[string]string{"zl-key": "zl-password-value"},
		Instances: map[string]string{"zi-running": "RUNNING", "zi-starting": "STARTING"}})
	s, err := sim.New(sim.Config{Accounts: []sim.Account{{Key: "k", Secret: "s3cret-api-value"}}, ReadyDelay: 50 * time.Millisecond, Zenlayer: zl})
	require.NoError(t, err)
	simSrv := httptest.NewServer(s.Handler())
	t.Cleanup(simSrv.Close)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	vars := map[string]string{
		"DATABASE_URL":                 dbURL,
		"VNCFLEET_SECRET_KEY":          base64.StdEncoding.EncodeToString(key),
		"VNCFLEET_TOKEN":               adminToken,
		"VNCCLOUD_API_URL":             simSrv.URL + "/cloud/1.1",
		"VNCCLOUD_API_KEY":             "k",
		"VNCCLOUD_API_SECRET":          "s3cret-api-value",
		"VNCCLOUD_RATE":                "0",
		"ZENLAYER_API_URL":             simSrv.URL + "/api/v2",
		"ZENLAYER_ACCESS_KEY_ID":       "zl-key",
		"ZENLAYER_ACCESS_KEY_PASSWORD": "zl-password-value",
	}
	cfg, err := config.Load("", func(k string) string { return vars[k] })
	require.NoError(t, err)
	cfg.Tokens = []config.Token{
		{Name: "reader", Token: readToken, Roles: []string{"read"}},
		{Name: "uploader", Token: uploadToken, Roles: []string{"upload", "read"}},
		{Name: "vault", Token: secretsToken, Roles: []string{"secrets"}},
		{Name: "line-a", Token: lineAToken, Roles: []string{"upload", "read", "secrets"}, Fleets: []string{"a"}},
		{Name: "lines-a-c", Token: linesACToken, Roles: []string{"read"}, Fleets: []string{"a", "c"}},
		{Name: "line-a-admin", Token: lineAAdminToken, Roles: []string{"admin"}, Fleets: []string{"a"}},
	}
	cfg.MaxUploadBytes = 64 << 10
	cfg.Readiness.InitialInterval = 100 * time.Millisecond
	cfg.Rotation.Schedule, cfg.Reconcile.Schedule = "", ""
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := app.NewWorker(context.Background(), pool, cfg, app.Options{Logger: logger, LocalLimiter: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, w.River.Start(ctx))
	t.Cleanup(func() {
		stopCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		_ = w.River.Stop(stopCtx)
		cancel()
	})
	api := httptest.NewServer(w.API)
	t.Cleanup(api.Close)
	return &env{t: t, pool: pool, sim: s, zl: zl, api: api, logs: logs}
}

func (e *env) do(method, path, token, body string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.api.URL+path, strings.NewReader(body))
	require.NoError(e.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (e *env) count(table string) int {
	var n int
	require.NoError(e.t, e.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}

func (e *env) waitDone(manifestID int64) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		_, body := e.do("GET", "/v1/manifests/"+itoa(manifestID), readToken, "")
		var p struct{ Done bool }
		return json.Unmarshal(body, &p) == nil && p.Done
	}, 30*time.Second, 50*time.Millisecond)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

const header = "device_id,action,groups,allow_groups,allow_devices,state\n"

func TestInvalidManifestIsRejectedWholeWithEveryProblem(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := header +
		"v1,connect,line-a,,,\n" +
		"v2,teleport,,,,\n" + // line 3, column 2
		"s1,listen,line-a,,,\n" + // line 4, column 3: groups on listen
		"s2,listen,,,ghost,\n" + // line 5, column 5: names no device (checked in SQL)
		"v1,connect,,,,\n" // line 6, column 1: duplicate
	status, resp := e.do("POST", "/v1/manifests?fleet=f", uploadToken, body)
	require.Equal(t, http.StatusUnprocessableEntity, status, string(resp))
	var r struct {
		Problems []string
		Total    int
	}
	require.NoError(t, json.Unmarshal(resp, &r))
	joined := strings.Join(r.Problems, "\n")
	require.Contains(t, joined, "line 3, column 2 (action)")
	require.Contains(t, joined, "line 4, column 3 (groups)")
	// Cross-row checks run only when every row is valid on its own, so fix those and
	// look again: the duplicate and the unknown allow_devices are found.
	body = header + "v1,connect,line-a,,,\n" + "s2,listen,,,ghost,\n" + "v1,connect,,,,\n"
	status, resp = e.do("POST", "/v1/manifests?fleet=f", uploadToken, body)
	require.Equal(t, http.StatusUnprocessableEntity, status)
	require.Contains(t, string(resp), "line 3, column 5 (allow_devices)")
	require.Contains(t, string(resp), "line 4, column 1 (device_id)")
	require.Contains(t, string(resp), "duplicate of line 2")

	for _, table := range []string{"fleets", "manifests", "devices", "create_attempts", "river_job WHERE kind = 'work'"} {
		require.Zero(t, e.count(table), "a rejected manifest leaves no trace in %s", table)
	}
	require.Zero(t, e.sim.State().Requests, "and makes no API call")
}

func TestErrorInTheLastRowStoresNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var b strings.Builder
	b.WriteString(header)
	for i := 0; i < 500; i++ {
		b.WriteString("dev-" + itoa(int64(i)) + ",connect,g,,,\n")
	}
	b.WriteString("last,connect,g,,,gone\n")
	status, resp := e.do("POST", "/v1/manifests", uploadToken, b.String())
	require.Equal(t, http.StatusUnprocessableEntity, status)
	require.Contains(t, string(resp), "line 502, column 6 (state)")
	require.Zero(t, e.count("devices"))
	require.Zero(t, e.count("manifests"))
}

func TestDryRunUpdatesAndIdempotentReupload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := header + "v1,connect,line-a,,,\nv2,connect,line-a,,,\ns1,listen,,line-a,v1,\n"
	status, resp := e.do("POST", "/v1/manifests?fleet=f&dry_run=true", uploadToken, body)
	require.Equal(t, http.StatusOK, status, string(resp))
	require.Contains(t, string(resp), `"creates": 3`)
	require.Zero(t, e.count("devices"), "a dry run stores nothing")

	status, resp = e.do("POST", "/v1/manifests?fleet=f", uploadToken, body)
	require.Equal(t, http.StatusCreated, status, string(resp))
	var up struct{ Manifest struct{ ID int64 } }
	require.NoError(t, json.Unmarshal(resp, &up))
	e.waitDone(up.Manifest.ID)
	before := e.sim.State()

	status, resp = e.do("POST", "/v1/manifests?fleet=f", uploadToken, body)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(resp), `"unchanged": true`)
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, before.Requests, e.sim.State().Requests, "an identical re-upload makes no API call")

	// v1 moves to line-b: one update, a GET for the ETag then a PUT with If-Match.
	changed := header + "v1,connect,line-b,,,\nv2,connect,line-a,,,\ns1,listen,,line-a,v1,\n"
	status, resp = e.do("POST", "/v1/manifests?fleet=f&dry_run=true", uploadToken, changed)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(resp), `"deviceId": "v1"`)
	require.Contains(t, string(resp), `"groups"`)
	status, resp = e.do("POST", "/v1/manifests?fleet=f", uploadToken, changed)
	require.Equal(t, http.StatusCreated, status, string(resp))
	require.NoError(t, json.Unmarshal(resp, &up))
	e.waitDone(up.Manifest.ID)
	after := e.sim.State().Accounts["k"]
	require.Equal(t, before.Accounts["k"].Counts["update"]+1, after.Counts["update"])
	require.Equal(t, before.Accounts["k"].Counts["get"]+1, after.Counts["get"])
	require.Equal(t, before.Accounts["k"].Counts["create"], after.Counts["create"], "no new address")
	found := false
	for _, a := range after.Addresses {
		if len(a.Groups) == 1 && a.Groups[0] == "line-b" {
			found = true
			require.Equal(t, 2, a.Version)
		}
	}
	require.True(t, found, "the cloud holds the new groups")
}

// TestDeletionGuardAnswerAtTheDefaultLimit: at the configuration's default limit (10%
// of the fleet, at least 1) a replace that deletes more is refused with one sentence
// that names the API's parameter, and nothing is stored (golden).
func TestDeletionGuardAnswerAtTheDefaultLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var all, kept strings.Builder
	all.WriteString("device_id,action,location\n")
	for i := range 20 {
		fmt.Fprintf(&all, "d%02d,connect,hall-%d\n", i, i%2)
	}
	kept.WriteString("device_id,action,location\nd00,connect,hall-0\nd01,connect,hall-1\n")
	status, resp := e.do("POST", "/v1/manifests?fleet=g", uploadToken, all.String())
	require.Equal(t, http.StatusCreated, status, string(resp))

	status, resp = e.do("POST", "/v1/manifests?fleet=g&mode=replace", uploadToken, kept.String())
	require.Equal(t, http.StatusConflict, status, string(resp))
	var refused struct {
		Error        string
		MaxDeletions int
	}
	require.NoError(t, json.Unmarshal(resp, &refused))
	require.Equal(t, "this replace would delete 18 devices, more than the 2 allowed, so nothing was changed; "+
		"if every deletion of the plan is intended, send the manifest again with max_deletions=18", refused.Error)
	require.Equal(t, 2, refused.MaxDeletions, "10% of 20")
	_, resp = e.do("GET", "/v1/manifests?fleet=g", readToken, "")
	var manifests []struct{ ID int64 }
	require.NoError(t, json.Unmarshal(resp, &manifests))
	require.Len(t, manifests, 1, "the refused replace stored nothing")
}

func TestAuthAndLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		method, path, token string
		status              int
	}{
		{"GET", "/v1/status", "", 401},
		{"GET", "/v1/status", "not-a-token", 401},
		{"GET", "/v1/status", readToken, 200},
		{"POST", "/v1/manifests", readToken, 403},
		{"GET", "/v1/export?secrets=true", readToken, 403},
		{"GET", "/v1/export?secrets=true", uploadToken, 403},
		{"GET", "/v1/fleets/f/devices/x/credentials", uploadToken, 403},
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
	} {
		status, body := e.do(tc.method, tc.path, tc.token, "")
		require.Equal(t, tc.status, status, "%s %s with %q: %s", tc.method, tc.path, tc.token, body)
	}
	big := header + strings.Repeat("d,connect,g,,,\n", 10000)
	status, _ := e.do("POST", "/v1/manifests", uploadToken, big)
	require.Equal(t, http.StatusRequestEntityTooLarge, status)
	status, _ = e.do("POST", "/v1/manifests?mode=upsert", uploadToken, header)
	require.Equal(t, http.StatusBadRequest, status)
	status, body := e.do("GET", "/v1/export?secrets=maybe", adminToken, "")
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, string(body), "secrets:")
	status, body = e.do("POST", "/v1/manifests?dry_run=perhaps", uploadToken, header)
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, string(body), "dry_run:")
}

func TestSecretsAreAuditedAndNeverLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	status, resp := e.do("POST", "/v1/manifests?fleet=f", uploadToken, header+"v1,connect,a,,,\ns1,listen,,a,v1,\n")
	require.Equal(t, http.StatusCreated, status, string(resp))
	var up struct{ Manifest struct{ ID int64 } }
	require.NoError(t, json.Unmarshal(resp, &up))
	e.waitDone(up.Manifest.ID)

	_, plain := e.do("GET", "/v1/export", readToken, "")
	rows, err := csv.NewReader(bytes.NewReader(plain)).ReadAll()
	require.NoError(t, err)
	for _, r := range rows[1:] {
		require.Empty(t, r[4], "no password without --secrets")
	}
	require.Zero(t, e.count("audit_log"))
	status, secret := e.do("GET", "/v1/export?secrets=true", adminToken, "")
	require.Equal(t, 200, status)
	rows, err = csv.NewReader(bytes.NewReader(secret)).ReadAll()
	require.NoError(t, err)
	truth := map[string]string{}
	for _, a := range e.sim.State().Accounts["k"].Addresses {
		truth[a.CloudAddress] = a.Password
	}
	for _, r := range rows[1:] {
		require.Equal(t, truth[r[3]], r[4], "export gives the password the cloud holds")
	}
	require.Equal(t, 2, e.count("audit_log"), "each reveal is audited: its start, and its end with the count")
	status, cred := e.do("GET", "/v1/fleets/f/devices/v1/credentials", adminToken, "")
	require.Equal(t, 200, status)
	require.Contains(t, string(cred), "cloudPassword")
	require.Equal(t, 3, e.count("audit_log"))
	var outcome string
	var devices int
	require.NoError(t, e.pool.QueryRow(context.Background(),
		`SELECT outcome, (detail->>'devices')::int FROM audit_log WHERE action = 'export_secrets' ORDER BY seq DESC LIMIT 1`).Scan(&outcome, &devices))
	require.Equal(t, "ok", outcome)
	require.Equal(t, 2, devices, "the count of devices whose secrets left")

	// Stored encrypted: no password in the database in clear.
	var stored []byte
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT password_ct FROM devices WHERE device_id = 'v1'`).Scan(&stored))
	logs := e.logs.String()
	require.NotEmpty(t, logs)
	for _, pw := range truth {
		require.NotContains(t, string(stored), pw)
		require.NotContains(t, logs, pw, "a password reached the logs")
	}
	require.NotContains(t, logs, "s3cret-api-value", "the API secret reached the logs")
	var args string
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(args::text, ' '), '') FROM river_job`).Scan(&args))
	for _, pw := range truth {
		require.NotContains(t, args, pw, "a password reached the job args")
	}
}

// TestZenlayerConsoleURLs: a running instance's console URL shows in the report and
// the export; an unknown instance fails at once with the reason; an instance that is
// starting is retried until it runs.
func TestZenlayerConsoleURLs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := "device_id,action,groups,zenlayer_instance_id\n" +
		"k1,connect,a,zi-running\nk2,connect,a,zi-missing\nk3,connect,a,zi-starting\n"
	status, resp := e.do("POST", "/v1/manifests?fleet=z", uploadToken, body)
	require.Equal(t, http.StatusCreated, status, string(resp))
	var up struct{ Manifest struct{ ID int64 } }
	require.NoError(t, json.Unmarshal(resp, &up))
	e.waitDone(up.Manifest.ID)

	report := func() map[string][]string {
		_, data := e.do("GET", "/v1/manifests/"+itoa(up.Manifest.ID)+"/report?secrets=true", adminToken, "")
		rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
		require.NoError(t, err)
		require.Equal(t, []string{"device_id", "status", "cloud_address", "error", "vnc_url"}, rows[0])
		out := map[string][]string{}
		for _, r := range rows[1:] {
			out[r[0]] = r
		}
		return out
	}
	require.Eventually(t, func() bool {
		r := report()
		return r["k1"][4] != "" && r["k2"][3] != ""
	}, 20*time.Second, 100*time.Millisecond)
	r := report()
	require.Contains(t, r["k1"][4], "zi-running")
	require.Contains(t, r["k2"][3], "INVALID_INSTANCE_NOT_FOUND")
	require.Empty(t, r["k3"][4], "not while the instance is starting")
	require.Equal(t, "ready", r["k2"][1], "a console URL problem does not fail the device's VNC Cloud identity")

	e.zl.SetInstanceStatus("zi-starting", "RUNNING")
	// The retry comes after River's backoff (10 s for the first).
	require.Eventually(t, func() bool { return report()["k3"][4] != "" }, 40*time.Second, 250*time.Millisecond)

	_, exported := e.do("GET", "/v1/export?fleet=z&secrets=true", adminToken, "")
	require.Contains(t, string(exported), "zi-running", "vnc_url in the export with secrets")
	// Console URLs are secrets: sealed at rest, never shown to a reader.
	_, exported = e.do("GET", "/v1/export?fleet=z", readToken, "")
	require.NotContains(t, string(exported), "zi-running", "no console URL without secrets")
	_, plainReport := e.do("GET", "/v1/manifests/"+itoa(up.Manifest.ID)+"/report", readToken, "")
	require.NotContains(t, string(plainReport), "zi-running", "no console URL in a reader's report")
	var stored, sealed int
	require.NoError(t, e.pool.QueryRow(context.Background(),
		`SELECT count(*) FILTER (WHERE vnc_url IS NOT NULL), count(*) FILTER (WHERE vnc_url_ct IS NOT NULL) FROM devices`).Scan(&stored, &sealed))
	require.Zero(t, stored, "no console URL in clear")
	require.Equal(t, 2, sealed)
	var sealedText string
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT string_agg(encode(vnc_url_ct, 'escape'), ' ') FROM devices`).Scan(&sealedText))
	require.NotContains(t, sealedText, "zi-running")
	require.NotContains(t, e.logs.String(), "zl-password-value")
}
