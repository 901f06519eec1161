package zenlayer_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/sim/zenlayersim"
	"github.com/vncfleet/vncfleet/zenlayer"
)

const otherPassword = "not-the-password-either"

// requireNoSecret fails if err, printed any way, shows a password.
func requireNoSecret(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		require.NotContains(t, s, password)
		require.NotContains(t, s, otherPassword)
	}
}

// dialTo returns a transport that connects to srv whatever host a URL names, so
// the client can be pointed at https://console.zenlayer.com over real HTTP.
func dialTo(srv *httptest.Server) *http.Transport {
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{}
	}
	tr.TLSClientConfig.ServerName = "example.com" // a name httptest's certificate holds
	return tr
}

// TestWireRequest checks what the client puts on the wire: the method, path and
// headers, the Host it signs (without a default port), and a signature the
// server can recompute from what it received. Against console.zenlayer.com at
// the vector's instant it must send exactly the openssl-computed signature of
// TestSignatureVector.
func TestWireRequest(t *testing.T) {
	t.Parallel()
	const vectorSig = "628187b3aa27b08b59e5175e55378c693b24eba4421009ba1f409e1e1dfd9800"
	for _, tc := range []struct {
		name, base, wantHost string
		tls                  bool
		wantSig              string
	}{
		{name: "default https port", base: "https://console.zenlayer.com/api/v2", wantHost: "console.zenlayer.com", tls: true, wantSig: vectorSig},
		{name: "explicit default port is dropped", base: "https://console.zenlayer.com:443/api/v2/", wantHost: "console.zenlayer.com", tls: true, wantSig: vectorSig},
		{name: "explicit default http port is dropped", base: "http://console.zenlayer.com:80/api/v2", wantHost: "console.zenlayer.com", wantSig: vectorSig},
		{name: "other port is kept", base: "http://console.zenlayer.com:8080/api/v2", wantHost: "console.zenlayer.com:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			type seen struct {
				method, path, host, authorization string
				header                            http.Header
				body                              []byte
			}
			got := make(chan seen, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got <- seen{r.Method, r.URL.Path, r.Host, r.Header.Get("Authorization"), r.Header.Clone(), b}
				_, _ = io.WriteString(w, `{"requestId":"r1","response":{"requestId":"r1","url":"https://vnc.example/1"}}`)
			})
			srv := httptest.NewUnstartedServer(h)
			if tc.tls {
				srv.StartTLS()
			} else {
				srv.Start()
			}
			t.Cleanup(srv.Close)
			c, err := zenlayer.New(zenlayer.Config{
				BaseURL: tc.base, AccessKeyID: keyID, AccessKeyPassword: password,
				HTTPClient: &http.Client{Transport: dialTo(srv)},
				Now:        func() time.Time { return time.Unix(1700000000, 0) },
			})
			require.NoError(t, err)
			u, err := c.DescribeVncUrl(context.Background(), "instanceId1")
			require.NoError(t, err)
			require.Equal(t, "https://vnc.example/1", u)

			s := <-got
			require.Equal(t, http.MethodPost, s.method)
			require.Equal(t, "/api/v2/zec", s.path)
			require.Equal(t, tc.wantHost, s.host)
			require.Equal(t, `{"instanceId":"instanceId1"}`, string(s.body))
			require.Equal(t, "application/json", s.header.Get("Content-Type"))
			require.Equal(t, "DescribeVncUrl", s.header.Get("X-ZC-Action"))
			require.Equal(t, "2022-11-20", s.header.Get("X-ZC-Version"))
			require.Equal(t, "1700000000", s.header.Get("X-ZC-Timestamp"))
			require.Equal(t, "ZC2-HMAC-SHA256", s.header.Get("X-ZC-Signature-Method"))
			require.NotEmpty(t, s.header.Get("User-Agent"))

			ts, err := strconv.ParseInt(s.header.Get("X-ZC-Timestamp"), 10, 64)
			require.NoError(t, err)
			recomputed := zenlayer.Sign(zenlayer.SignInput{Host: s.host, ContentType: s.header.Get("Content-Type"), Body: s.body, Timestamp: ts, AccessKeyPassword: password})
			require.Equal(t, "ZC2-HMAC-SHA256 Credential="+keyID+", SignedHeaders=content-type;host, Signature="+recomputed, s.authorization)
			if tc.wantSig != "" {
				require.Equal(t, "ZC2-HMAC-SHA256 Credential="+keyID+", SignedHeaders=content-type;host, Signature="+tc.wantSig, s.authorization)
			}
			for _, v := range s.header {
				for _, x := range v {
					require.NotContains(t, x, password, "the password is never sent")
				}
			}
		})
	}
}

// answering serves every request with one fixed answer and counts requests.
func answering(t *testing.T, status int, body string, header map[string]string) (string, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/api/v2", &n
}

func newClient(t *testing.T, base, id, pw string, now func() time.Time) *zenlayer.Client {
	t.Helper()
	c, err := zenlayer.New(zenlayer.Config{BaseURL: base, AccessKeyID: id, AccessKeyPassword: pw, Now: now, Timeout: 5 * time.Second})
	require.NoError(t, err)
	return c
}

func TestSuccessShapes(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"wrapped (the general rule)":   `{"requestId":"r1","response":{"requestId":"r1","url":"https://vnc.example/1"}}`,
		"inner only (the action page)": `{"requestId":"r1","url":"https://vnc.example/1"}`,
		"both levels, inner wins":      `{"requestId":"r1","url":"https://stale.example/","response":{"url":"https://vnc.example/1"}}`,
		"extra fields and odd types":   `{"requestId":17,"extra":[1,2],"response":{"url":"https://vnc.example/1","expires":3600}}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			base, _ := answering(t, http.StatusOK, body, map[string]string{"Content-Type": "application/json"})
			u, err := newClient(t, base, keyID, password, nil).DescribeVncUrl(context.Background(), "zi-1")
			require.NoError(t, err)
			require.Equal(t, "https://vnc.example/1", u)
		})
	}
}

func TestErrorClassification(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                                 string
		status                               int
		body                                 string
		header                               map[string]string
		wantCode, wantRequestID              string
		notFound, notReady, retry, throttled bool
	}{
		{name: "instance not found", status: 404, body: `{"requestId":"T1","code":"INVALID_INSTANCE_NOT_FOUND","message":"Instance not found."}`,
			wantCode: zenlayer.CodeInstanceNotFound, wantRequestID: "T1", notFound: true},
		{name: "instance not ready", status: 400, body: `{"requestId":"T2","code":"OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT","message":"m"}`,
			wantCode: zenlayer.CodeInstanceStatusNotSupported, wantRequestID: "T2", notReady: true},
		{name: "429 with any code", status: 429, body: `{"requestId":"T3","code":"SOMETHING_ELSE"}`,
			wantCode: "SOMETHING_ELSE", wantRequestID: "T3", retry: true, throttled: true},
		{name: "429 without a body", status: 429, retry: true, throttled: true},
		{name: "REQUEST_LIMIT_EXCEEDED on a 400", status: 400, body: `{"requestId":"T4","code":"REQUEST_LIMIT_EXCEEDED"}`,
			wantCode: zenlayer.CodeRequestLimitExceeded, wantRequestID: "T4", retry: true, throttled: true},
		{name: "REQUEST_LIMIT_EXCEEDED inside response on a 200", status: 200, body: `{"requestId":"T5","response":{"requestId":"T5","code":"REQUEST_LIMIT_EXCEEDED"}}`,
			wantCode: zenlayer.CodeRequestLimitExceeded, wantRequestID: "T5", retry: true, throttled: true},
		{name: "500 with a code", status: 500, body: `{"requestId":"T6","code":"INTERNAL_ERROR"}`, wantCode: "INTERNAL_ERROR", wantRequestID: "T6", retry: true},
		{name: "503 html from a proxy", status: 503, body: `<html>busy</html>`, retry: true},
		{name: "502 empty", status: 502, retry: true},
		{name: "401 auth failure", status: 401, body: `{"requestId":"T7","code":"AUTH_FAILURE"}`, wantCode: "AUTH_FAILURE", wantRequestID: "T7"},
		{name: "not found on a 500 stays permanent", status: 500, body: `{"code":"INVALID_INSTANCE_NOT_FOUND"}`, wantCode: zenlayer.CodeInstanceNotFound, notFound: true},
		{name: "200 that is not JSON", status: 200, body: `<html>hello</html>`, wantCode: zenlayer.CodeMalformedResponse},
		{name: "200 without a url", status: 200, body: `{"requestId":"T8","response":{"requestId":"T8"}}`, wantCode: zenlayer.CodeMalformedResponse, wantRequestID: "T8"},
		{name: "200 with an empty url", status: 200, body: `{"url":""}`, wantCode: zenlayer.CodeMalformedResponse},
		{name: "a redirect is not followed", status: 307, header: map[string]string{"Location": "/elsewhere"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base, n := answering(t, tc.status, tc.body, tc.header)
			u, err := newClient(t, base, keyID, password, nil).DescribeVncUrl(context.Background(), "zi-1")
			require.Empty(t, u)
			var apiErr *zenlayer.APIError
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, tc.status, apiErr.StatusCode)
			require.Equal(t, tc.wantCode, apiErr.Code)
			require.Equal(t, tc.wantRequestID, apiErr.RequestID)
			require.Equal(t, tc.notFound, errors.Is(err, zenlayer.ErrInstanceNotFound), "ErrInstanceNotFound")
			require.Equal(t, tc.notReady, zenlayer.IsInstanceNotReady(err), "IsInstanceNotReady")
			require.Equal(t, tc.retry, zenlayer.IsRetryable(err), "IsRetryable")
			require.Equal(t, tc.throttled, zenlayer.IsThrottled(err), "IsThrottled")
			require.Contains(t, err.Error(), strconv.Itoa(tc.status))
			require.EqualValues(t, 1, n.Load(), "one request per call: retrying is the caller's job")
			requireNoSecret(t, err)
		})
	}
}

func newSim(t *testing.T, now func() time.Time) (*zenlayersim.Server, string) {
	t.Helper()
	s := zenlayersim.New(zenlayersim.Config{
		Credentials: map[string]string{keyID: password},
		Instances:   map[string]string{"zi-running": "RUNNING", "zi-starting": "STARTING"},
		Now:         now,
	})
	mux := http.NewServeMux()
	mux.Handle("/api/v2/zec", s)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return s, srv.URL + "/api/v2"
}

func TestAgainstSimulator(t *testing.T) {
	t.Parallel()
	sim, base := newSim(t, nil)
	ctx := context.Background()
	c := newClient(t, base, keyID, password, nil)

	u, err := c.DescribeVncUrl(ctx, "zi-running")
	require.NoError(t, err, "the simulator answers the wrapped shape")
	parsed, err := url.Parse(u)
	require.NoError(t, err)
	require.Equal(t, "zi-running", parsed.Query().Get("instance"))

	_, err = c.DescribeVncUrl(ctx, "zi-missing")
	require.ErrorIs(t, err, zenlayer.ErrInstanceNotFound)
	require.False(t, zenlayer.IsRetryable(err))
	require.False(t, zenlayer.IsInstanceNotReady(err))
	requireNoSecret(t, err)

	_, err = c.DescribeVncUrl(ctx, "zi-starting")
	require.True(t, zenlayer.IsInstanceNotReady(err))
	require.False(t, zenlayer.IsRetryable(err), "the caller bounds not-ready retries, not IsRetryable")
	require.NotErrorIs(t, err, zenlayer.ErrInstanceNotFound)
	requireNoSecret(t, err)

	sim.SetInstanceStatus("zi-starting", "RUNNING")
	u, err = c.DescribeVncUrl(ctx, "zi-starting")
	require.NoError(t, err, "STARTING -> RUNNING allows the console")
	require.Contains(t, u, "instance=zi-starting")
}

func TestAuthFailuresAgainstSimulator(t *testing.T) {
	t.Parallel()
	_, base := newSim(t, nil)
	skewed := func(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }
	for _, tc := range []struct {
		name, id, pw string
		now          func() time.Time
		wantStatus   int
		wantCode     string
	}{
		{"unknown access key id", "AKID-nobody", password, nil, 401, zenlayer.CodeAuthFailure},
		{"wrong password", keyID, otherPassword, nil, 401, zenlayer.CodeSignatureFailure},
		{"stale timestamp", keyID, password, skewed(-time.Hour), 400, zenlayer.CodeInvalidTimestamp},
		{"future timestamp", keyID, password, skewed(6 * time.Minute), 400, zenlayer.CodeInvalidTimestamp},
		{"small skew is accepted", keyID, password, skewed(-4 * time.Minute), 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := newClient(t, base, tc.id, tc.pw, tc.now).DescribeVncUrl(context.Background(), "zi-running")
			if tc.wantStatus == 200 {
				require.NoError(t, err)
				return
			}
			var apiErr *zenlayer.APIError
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, tc.wantStatus, apiErr.StatusCode)
			require.Equal(t, tc.wantCode, apiErr.Code)
			require.NotEmpty(t, apiErr.RequestID)
			require.False(t, zenlayer.IsRetryable(err))
			requireNoSecret(t, err)
		})
	}
}

func TestTransportFailures(t *testing.T) {
	t.Parallel()
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		base := srv.URL + "/api/v2"
		srv.Close()
		_, err := newClient(t, base, keyID, password, nil).DescribeVncUrl(context.Background(), "zi-1")
		require.ErrorIs(t, err, zenlayer.ErrTransport)
		require.True(t, zenlayer.IsRetryable(err))
		require.False(t, zenlayer.IsThrottled(err))
		requireNoSecret(t, err)
	})
	t.Run("per-call timeout", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		t.Cleanup(srv.Close)
		t.Cleanup(func() { close(release) })
		c, err := zenlayer.New(zenlayer.Config{BaseURL: srv.URL, AccessKeyID: keyID, AccessKeyPassword: password, Timeout: 50 * time.Millisecond})
		require.NoError(t, err)
		start := time.Now()
		_, err = c.DescribeVncUrl(context.Background(), "zi-1")
		require.Less(t, time.Since(start), 5*time.Second)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.True(t, zenlayer.IsRetryable(err))
		requireNoSecret(t, err)
	})
	t.Run("cancelled by the caller", func(t *testing.T) {
		t.Parallel()
		_, base := newSim(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := newClient(t, base, keyID, password, nil).DescribeVncUrl(ctx, "zi-running")
		require.ErrorIs(t, err, context.Canceled)
		require.False(t, zenlayer.IsRetryable(err), "someone asked to stop")
	})
	t.Run("plain errors are not retryable", func(t *testing.T) {
		t.Parallel()
		require.False(t, zenlayer.IsRetryable(nil))
		require.False(t, zenlayer.IsRetryable(errors.New("some local mistake")))
		_, err := newClient(t, "http://127.0.0.1:1", keyID, password, nil).DescribeVncUrl(context.Background(), "")
		require.Error(t, err, "an empty instance id is refused before any request")
		require.False(t, zenlayer.IsRetryable(err))
	})
}

// TestServerMessageCannotCarryThePassword: the password is never sent, so a real
// server cannot echo it; the client still scrubs it from messages it repeats.
func TestServerMessageCannotCarryThePassword(t *testing.T) {
	t.Parallel()
	base, _ := answering(t, 400, `{"requestId":"T9","code":"INVALID_PARAMETER","message":"bad key `+password+`"}`, nil)
	_, err := newClient(t, base, keyID, password, nil).DescribeVncUrl(context.Background(), "zi-1")
	requireNoSecret(t, err)
	require.Contains(t, err.Error(), "[redacted]")
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  zenlayer.Config
	}{
		{"no access key id", zenlayer.Config{AccessKeyPassword: password}},
		{"no password", zenlayer.Config{AccessKeyID: keyID}},
		{"key id with a comma", zenlayer.Config{AccessKeyID: "a,b", AccessKeyPassword: password}},
		{"key id with a space", zenlayer.Config{AccessKeyID: "a b", AccessKeyPassword: password}},
		{"not http", zenlayer.Config{BaseURL: "ftp://console.zenlayer.com/api/v2", AccessKeyID: keyID, AccessKeyPassword: password}},
		{"no host", zenlayer.Config{BaseURL: "https:///api/v2", AccessKeyID: keyID, AccessKeyPassword: password}},
		{"user info", zenlayer.Config{BaseURL: "https://u:" + otherPassword + "@console.zenlayer.com/api/v2", AccessKeyID: keyID, AccessKeyPassword: password}},
		{"query", zenlayer.Config{BaseURL: "https://console.zenlayer.com/api/v2?x=1", AccessKeyID: keyID, AccessKeyPassword: password}},
		{"non-ASCII host", zenlayer.Config{BaseURL: "https://zénlayer.example/api/v2", AccessKeyID: keyID, AccessKeyPassword: password}},
		{"unparseable", zenlayer.Config{BaseURL: "https://console.zenlayer.com:port/" + otherPassword, AccessKeyID: keyID, AccessKeyPassword: password}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := zenlayer.New(tc.cfg)
			require.Nil(t, c)
			requireNoSecret(t, err)
		})
	}
	c, err := zenlayer.New(zenlayer.Config{AccessKeyID: keyID, AccessKeyPassword: password})
	require.NoError(t, err, "the default base URL is valid")
	require.NotNil(t, c)
}

// TestPrintingDoesNotShowThePassword: a Config or Client that ends up in a log
// line or a %v does not show the password.
func TestPrintingDoesNotShowThePassword(t *testing.T) {
	t.Parallel()
	cfg := zenlayer.Config{AccessKeyID: keyID, AccessKeyPassword: password}
	c, err := zenlayer.New(cfg)
	require.NoError(t, err)
	for _, v := range []any{cfg, &cfg, c, *c} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(verb, v)
			require.NotContains(t, out, password, verb)
			require.Contains(t, out, keyID, "the key id is not secret and helps debugging")
		}
	}
}
