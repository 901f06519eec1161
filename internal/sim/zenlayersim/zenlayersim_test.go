package zenlayersim_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/sim/zenlayersim"
	"github.com/vncfleet/vncfleet/internal/syncbuf"
	"github.com/vncfleet/vncfleet/zenlayer"
)

const (
	keyID    = "AKID-sim"
	password = "sim-password-value"
)

// t0 is the simulator's clock in these tests.
var t0 = time.Unix(1_800_000_000, 0)

// requestIDPattern is Zenlayer's shape: "T" and an upper-case UUID.
var requestIDPattern = regexp.MustCompile(`^T[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$`)

type fixture struct {
	sim  *zenlayersim.Server
	url  string // .../api/v2/zec
	host string
	logs *syncbuf.Buffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	logs := &syncbuf.Buffer{}
	sim := zenlayersim.New(zenlayersim.Config{
		Credentials: map[string]string{keyID: password},
		Instances:   map[string]string{"zi-running": "RUNNING", "zi-starting": "STARTING"},
		Logger:      slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:         func() time.Time { return t0 },
	})
	mux := http.NewServeMux()
	mux.Handle("/api/v2/zec", sim)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	return &fixture{sim: sim, url: srv.URL + "/api/v2/zec", host: u.Host, logs: logs}
}

// wire is one request before it is sent; signed() signs it like the client does.
type wire struct {
	method, host, contentType, action, sigMethod string
	ts                                           int64
	body                                         []byte
	keyID, password, signedHeaders               string
}

func (f *fixture) wire(body string) *wire {
	return &wire{
		method: http.MethodPost, host: f.host, contentType: "application/json", action: "DescribeVncUrl",
		sigMethod: "ZC2-HMAC-SHA256", ts: t0.Unix(), body: []byte(body),
		keyID: keyID, password: password, signedHeaders: "content-type;host",
	}
}

func (w *wire) signature() string {
	return zenlayer.Sign(zenlayer.SignInput{Host: w.host, ContentType: w.contentType, Body: w.body, Timestamp: w.ts, AccessKeyPassword: w.password})
}

func (w *wire) request(t *testing.T, url string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(w.method, url, bytes.NewReader(w.body))
	require.NoError(t, err)
	r.Host = w.host
	r.Header.Set("Content-Type", w.contentType)
	r.Header.Set("X-ZC-Action", w.action)
	r.Header.Set("X-ZC-Version", "2022-11-20")
	r.Header.Set("X-ZC-Signature-Method", w.sigMethod)
	r.Header.Set("X-ZC-Timestamp", strconv.FormatInt(w.ts, 10))
	r.Header.Set("Authorization", "ZC2-HMAC-SHA256 Credential="+w.keyID+", SignedHeaders="+w.signedHeaders+", Signature="+w.signature())
	return r
}

type answer struct {
	status    int
	header    http.Header
	RequestID string `json:"requestId"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	Response  *struct {
		RequestID string `json:"requestId"`
		URL       string `json:"url"`
	} `json:"response"`
}

func send(t *testing.T, r *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(r)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{status: resp.StatusCode, header: resp.Header}
	require.NoError(t, json.Unmarshal(data, &a), "%s", data)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.Regexp(t, requestIDPattern, a.RequestID, "every answer has a request id")
	return a
}

func TestChecks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		body       string
		prepare    func(w *wire)         // before signing
		tamper     func(r *http.Request) // after signing
		wantStatus int
		wantCode   string
	}{
		{name: "running instance", body: `{"instanceId":"zi-running"}`, wantStatus: 200},
		{name: "unknown fields in the body are ignored", body: `{"instanceId":"zi-running","extra":1}`, wantStatus: 200},

		{name: "GET", body: ``, prepare: func(w *wire) { w.method = http.MethodGet }, wantStatus: 405, wantCode: zenlayer.CodeMethodNotAllowed},
		{name: "other action", body: `{"instanceId":"zi-running"}`, prepare: func(w *wire) { w.action = "DescribeInstances" }, wantStatus: 400, wantCode: zenlayer.CodeUnsupportedAction},
		{name: "no action", body: `{"instanceId":"zi-running"}`, tamper: func(r *http.Request) { r.Header.Del("X-ZC-Action") }, wantStatus: 400, wantCode: zenlayer.CodeUnsupportedAction},
		{name: "other signature method", body: `{"instanceId":"zi-running"}`, prepare: func(w *wire) { w.sigMethod = "HmacSHA1" }, wantStatus: 401, wantCode: zenlayer.CodeSignatureFailure},

		{name: "no timestamp", body: `{"instanceId":"zi-running"}`, tamper: func(r *http.Request) { r.Header.Del("X-ZC-Timestamp") }, wantStatus: 400, wantCode: zenlayer.CodeInvalidTimestamp},
		{name: "timestamp in milliseconds", body: `{"instanceId":"zi-running"}`, prepare: func(w *wire) { w.ts = t0.UnixMilli() }, wantStatus: 400, wantCode: zenlayer.CodeInvalidTimestamp},
		{name: "timestamp not a number", body: `{"instanceId":"zi-running"}`, tamper: func(r *http.Request) { r.Header.Set("X-ZC-Timestamp", "yesterday") }, wantStatus: 400, wantCode: zenlayer.CodeInvalidTimestamp},
		{name: "stale timestamp", body: `{"instanceId":"zi-running"}`, prepare: func(w *wire) { w.ts = t0.Add(-5*time.Minute - time.Second).Unix() }, wantStatus: 400, wantCode: zenlayer.CodeInvalidTimestamp},
		{name: "future timestamp", body: `{"instanceId":"zi-running"}`, prepare: func(w *wire) { w.ts = t0.Add(5*time.Minute + time.Second).Unix() }, wantStatus: 400, wantCode: zenlayer.CodeInvalidTimestamp},
		{name: "timestamp at the edge of the skew", body: `{"instanceId":"zi-running"}`, prepare: func(w *wire) { w.ts = t0.Add(-5 * time.Minute).Unix() }, wantStatus: 200},

		{name: "no authorization", body: `{"instanceId":"zi-running"}`, tamper: func(r *http.Request) { r.Header.Del("Authorization") }, wantStatus: 401, wantCode: zenlayer.CodeAuthFailure},
		{name: "malformed authorization", body: `{"instanceId":"zi-running"}`, tamper: func(r *http.Request) { r.Header.Set("Authorization", "Basic a2V5OnNlY3JldA==") }, wantStatus: 401, wantCode: zenlayer.CodeAuthFailure},
		{name: "unknown access key id", body: `{"instanceId":"zi-running"}`, prepare: func(w *wire) { w.keyID = "AKID-nobody" }, wantStatus: 401, wantCode: zenlayer.CodeAuthFailure},
		{name: "wrong password", body: `{"instanceId":"zi-running"}`, prepare: func(w *wire) { w.password = "guess" }, wantStatus: 401, wantCode: zenlayer.CodeSignatureFailure},
		{name: "other signed headers", body: `{"instanceId":"zi-running"}`, prepare: func(w *wire) { w.signedHeaders = "host" }, wantStatus: 401, wantCode: zenlayer.CodeSignatureFailure},

		{name: "tampered body", body: `{"instanceId":"zi-running"}`, tamper: func(r *http.Request) {
			b := []byte(`{"instanceId":"zi-starting"}`)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}, wantStatus: 401, wantCode: zenlayer.CodeSignatureFailure},
		{name: "tampered content type", body: `{"instanceId":"zi-running"}`, tamper: func(r *http.Request) { r.Header.Set("Content-Type", "application/json; charset=utf-8") }, wantStatus: 401, wantCode: zenlayer.CodeSignatureFailure},
		{name: "tampered host", body: `{"instanceId":"zi-running"}`, tamper: func(r *http.Request) { r.Host = strings.Replace(r.Host, "127.0.0.1", "localhost", 1) }, wantStatus: 401, wantCode: zenlayer.CodeSignatureFailure},
		{name: "tampered timestamp", body: `{"instanceId":"zi-running"}`, tamper: func(r *http.Request) { r.Header.Set("X-ZC-Timestamp", strconv.FormatInt(t0.Unix()+1, 10)) }, wantStatus: 401, wantCode: zenlayer.CodeSignatureFailure},

		{name: "body not JSON", body: `instanceId=zi-running`, wantStatus: 400, wantCode: zenlayer.CodeInvalidParameter},
		{name: "no instanceId", body: `{}`, wantStatus: 400, wantCode: zenlayer.CodeInvalidParameter},
		{name: "empty instanceId", body: `{"instanceId":""}`, wantStatus: 400, wantCode: zenlayer.CodeInvalidParameter},
		{name: "instanceId not a string", body: `{"instanceId":42}`, wantStatus: 400, wantCode: zenlayer.CodeInvalidParameter},
		{name: "body too large", body: `{"instanceId":"zi-running","pad":"` + strings.Repeat("x", 70<<10) + `"}`, wantStatus: 400, wantCode: zenlayer.CodeInvalidParameter},

		{name: "unknown instance", body: `{"instanceId":"zi-missing"}`, wantStatus: 404, wantCode: zenlayer.CodeInstanceNotFound},
		{name: "instance not running", body: `{"instanceId":"zi-starting"}`, wantStatus: 400, wantCode: zenlayer.CodeInstanceStatusNotSupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			w := f.wire(tc.body)
			if tc.prepare != nil {
				tc.prepare(w)
			}
			r := w.request(t, f.url)
			if tc.tamper != nil {
				tc.tamper(r)
			}
			a := send(t, r)
			require.Equal(t, tc.wantStatus, a.status, "code %s", a.Code)
			require.Equal(t, tc.wantCode, a.Code)
			if tc.wantCode != "" {
				require.NotEmpty(t, a.Message)
				require.Nil(t, a.Response, "an error carries no response object")
			} else {
				require.NotNil(t, a.Response, "success is wrapped in response")
				require.Equal(t, a.RequestID, a.Response.RequestID)
				u, err := url.Parse(a.Response.URL)
				require.NoError(t, err)
				require.Equal(t, "https", u.Scheme)
				require.Equal(t, "zi-running", u.Query().Get("instance"))
				require.Regexp(t, `^[0-9a-f]{32}$`, u.Query().Get("token"))
			}
			if a.status == 405 {
				require.Equal(t, "POST", a.header.Get("Allow"))
			}
			logs := f.logs.String()
			require.Contains(t, logs, a.RequestID, "every request is logged")
			require.Contains(t, logs, `"code":"`+tc.wantCode+`"`)
			require.NotContains(t, logs, password)
			require.NotContains(t, logs, w.signature(), "signatures are not logged")
		})
	}
}

func TestInstanceStatusTransitions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ask := func(id string) answer { return send(t, f.wire(`{"instanceId":"`+id+`"}`).request(t, f.url)) }

	require.Equal(t, zenlayer.CodeInstanceStatusNotSupported, ask("zi-starting").Code)
	f.sim.SetInstanceStatus("zi-starting", zenlayersim.StatusRunning)
	require.Equal(t, 200, ask("zi-starting").status)
	f.sim.SetInstanceStatus("zi-starting", "STOPPED")
	require.Equal(t, zenlayer.CodeInstanceStatusNotSupported, ask("zi-starting").Code)

	require.Equal(t, 404, ask("zi-new").status)
	f.sim.SetInstanceStatus("zi-new", zenlayersim.StatusRunning)
	require.Equal(t, 200, ask("zi-new").status, "SetInstanceStatus adds unknown instances")
	st, ok := f.sim.InstanceStatus("zi-new")
	require.True(t, ok)
	require.Equal(t, "RUNNING", st)
}

func TestConfigIsCopied(t *testing.T) {
	t.Parallel()
	creds := map[string]string{keyID: password}
	inst := map[string]string{"zi-1": "RUNNING"}
	sim := zenlayersim.New(zenlayersim.Config{Credentials: creds, Instances: inst})
	inst["zi-1"] = "STOPPED"
	delete(creds, keyID)
	st, ok := sim.InstanceStatus("zi-1")
	require.True(t, ok)
	require.Equal(t, "RUNNING", st, "changing the caller's map does not change the simulator")
	sim.SetInstanceStatus("zi-2", "RUNNING")
	require.NotContains(t, inst, "zi-2", "nor the other way round")
}

// TestConcurrentUse runs requests and status changes at once; run with -race.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var wg sync.WaitGroup
	ids := make(chan string, 40)
	for i := range 40 {
		wg.Go(func() {
			if i%4 == 0 {
				f.sim.SetInstanceStatus(fmt.Sprintf("zi-%d", i), "RUNNING")
			}
			r := f.wire(`{"instanceId":"zi-running"}`).request(t, f.url)
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var a answer
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != 200 {
				t.Errorf("status %d, decode %v", resp.StatusCode, err)
				return
			}
			ids <- a.RequestID
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		require.False(t, seen[id], "request ids are unique")
		seen[id] = true
	}
	require.Len(t, seen, 40)
}

// TestWithTheClient: the real client and the simulator agree on signing.
func TestWithTheClient(t *testing.T) {
	t.Parallel()
	sim := zenlayersim.New(zenlayersim.Config{Credentials: map[string]string{keyID: password}, Instances: map[string]string{"zi-1": "RUNNING"}})
	mux := http.NewServeMux()
	mux.Handle("/api/v2/zec", sim)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, err := zenlayer.New(zenlayer.Config{BaseURL: srv.URL + "/api/v2", AccessKeyID: keyID, AccessKeyPassword: password})
	require.NoError(t, err)
	u, err := c.DescribeVncUrl(t.Context(), "zi-1")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(u, zenlayersim.ConsoleBaseURL), u)
}

func TestLoadInstances(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, content string
		want          map[string]string
		wantErr       string
	}{
		{name: "two instances", content: `{"instances":[{"instanceId":"zec-1","status":"RUNNING"},{"instanceId":"zec-2","status":"starting"}]}`,
			want: map[string]string{"zec-1": "RUNNING", "zec-2": "STARTING"}},
		{name: "empty list", content: `{"instances":[]}`, want: map[string]string{}},
		{name: "not JSON", content: `zec-1=RUNNING`, wantErr: "invalid character"},
		{name: "missing status", content: `{"instances":[{"instanceId":"zec-1"}]}`, wantErr: "entry 1 needs instanceId and status"},
		{name: "missing id", content: `{"instances":[{"status":"RUNNING"}]}`, wantErr: "entry 1 needs"},
		{name: "duplicate id", content: `{"instances":[{"instanceId":"a","status":"RUNNING"},{"instanceId":"a","status":"STOPPED"}]}`, wantErr: `"a" listed twice`},
		{name: "unknown field (typo)", content: `{"instances":[{"instance_id":"a","status":"RUNNING"}]}`, wantErr: "unknown field"},
		{name: "trailing data", content: `{"instances":[]} {}`, wantErr: "data after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "instances.json")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			got, err := zenlayersim.LoadInstances(path)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	_, err := zenlayersim.LoadInstances(filepath.Join(t.TempDir(), "absent.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
