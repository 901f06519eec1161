package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/internal/syncbuf"
)

const adminToken = "admin-token-for-server-tests"

func newAPI(t *testing.T, pool *pgxpool.Pool, cfg server.Config) (*httptest.Server, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	cfg.Store = store.New(pool, nil)
	cfg.Tokens = []server.Token{{Name: "admin", Value: adminToken, Roles: []string{server.RoleAdmin}}}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	api := httptest.NewServer(server.New(cfg))
	t.Cleanup(api.Close)
	return api, logs
}

// downDatabase is a pool whose every connection fails, naming its user and database
// (nothing listens on port 1).
func downDatabase(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), "postgres://secret_db_user@127.0.0.1:1/secret_db_name?connect_timeout=2")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func TestReadyzWithTheDatabaseDownSaysOnlyNotReady(t *testing.T) {
	t.Parallel()
	pool := downDatabase(t)
	api, logs := newAPI(t, pool, server.Config{})

	resp, err := http.Get(api.URL + "/readyz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "not ready\n", string(body))
	id := resp.Header.Get("X-Request-Id")
	require.NotEmpty(t, id)
	require.Contains(t, logs.String(), "request_id="+id, "the cause is logged under the request's id")
	require.Contains(t, logs.String(), "127.0.0.1")

	pool2, _ := dbtest.New(t)
	api2, _ := newAPI(t, pool2, server.Config{})
	resp, err = http.Get(api2.URL + "/readyz")
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "ok\n", string(body))
}

func TestInternalErrorAnswersARequestIDOnly(t *testing.T) {
	t.Parallel()
	pool := downDatabase(t)
	api, logs := newAPI(t, pool, server.Config{})
	req, _ := http.NewRequest("GET", api.URL+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.GreaterOrEqual(t, resp.StatusCode, 500)
	id := resp.Header.Get("X-Request-Id")
	require.Contains(t, string(body), id)
	for _, secret := range []string{"secret_db_user", "secret_db_name", "127.0.0.1", "dial"} {
		require.NotContains(t, string(body), secret)
	}
	require.Contains(t, logs.String(), "request_id="+id)
	require.Contains(t, logs.String(), "secret_db_user", "the detail is in the log")
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	handler := server.New(server.Config{Store: store.New(pool, nil),
		Tokens: []server.Token{{Name: "admin", Value: adminToken, Roles: []string{server.RoleAdmin}}}})
	plain := httptest.NewServer(handler)
	t.Cleanup(plain.Close)
	secure := httptest.NewTLSServer(handler)
	t.Cleanup(secure.Close)

	for _, srv := range []*httptest.Server{plain, secure} {
		for _, path := range []string{"/healthz", "/readyz", "/v1/status", "/v1/nosuch", "/"} {
			resp, err := srv.Client().Get(srv.URL + path)
			require.NoError(t, err)
			_ = resp.Body.Close()
			h := resp.Header
			require.Equal(t, "nosniff", h.Get("X-Content-Type-Options"), path)
			require.Equal(t, "no-referrer", h.Get("Referrer-Policy"), path)
			require.Equal(t, "no-store", h.Get("Cache-Control"), path)
			require.Equal(t, "DENY", h.Get("X-Frame-Options"), path)
			require.Contains(t, h.Get("Content-Security-Policy"), "default-src 'self'", path)
			require.Contains(t, h.Get("Content-Security-Policy"), "frame-ancestors 'none'", path)
			require.NotEmpty(t, h.Get("X-Request-Id"), path)
			if srv == secure {
				require.Contains(t, h.Get("Strict-Transport-Security"), "max-age=", path)
			} else {
				require.Empty(t, h.Get("Strict-Transport-Security"), "HSTS only over TLS")
			}
		}
	}
}

// stalledUpload sends an upload's headers and the first rows of a body that
// announces more, then nothing, and returns the connection.
func stalledUpload(t *testing.T, addr, fleet string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	head := "device_id,action\nslow-1,connect\n"
	_, err = fmt.Fprintf(conn, "POST /v1/manifests?fleet=%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: text/csv\r\nContent-Length: %d\r\n\r\n%s", fleet, adminToken, len(head)+1000, head)
	require.NoError(t, err)
	return conn
}

func TestSilentUploadIsAnswered408AndStoresNothing(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	api, _ := newAPI(t, pool, server.Config{UploadIdleTimeout: 500 * time.Millisecond})
	conn := stalledUpload(t, strings.TrimPrefix(api.URL, "http://"), "f")
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute)) // a hang fails the test, not the suite
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusRequestTimeout, resp.StatusCode, string(body))
	require.Contains(t, string(body), "sent nothing for 500ms")

	var manifests, fleets, staged int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM manifests), (SELECT count(*) FROM fleets),
		(SELECT count(*) FROM pg_tables WHERE tablename LIKE 'staged\_%')`).Scan(&manifests, &fleets, &staged))
	require.Zero(t, manifests+fleets+staged, "a timed-out upload leaves nothing")
}

func TestUploadsBeyondTheLimitWaitThenAreTurnedAway(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	api, _ := newAPI(t, pool, server.Config{MaxConcurrentUploads: 1, UploadIdleTimeout: 2 * time.Second})
	post := func(body io.Reader) (int, string) {
		req, err := http.NewRequest("POST", api.URL+"/v1/manifests?fleet=f", body)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// A slow upload that keeps sending (never idle) holds the only slot.
	pr, pw := io.Pipe()
	stop, sent := make(chan struct{}), make(chan struct{})
	go func() {
		_, _ = io.WriteString(pw, "device_id,action\n")
		close(sent)
		for i := 0; ; i++ {
			select {
			case <-stop:
				_ = pw.Close()
				return
			case <-time.After(100 * time.Millisecond):
				_, _ = fmt.Fprintf(pw, "slow-%d,connect\n", i)
			}
		}
	}()
	slow := make(chan int, 1)
	go func() {
		status, _ := post(pr)
		slow <- status
	}()
	<-sent
	require.Eventually(t, func() bool {
		var n int
		_ = pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %staged_upload_%'`).Scan(&n)
		return n == 1
	}, time.Minute, 20*time.Millisecond, "the slow upload streams")

	status, body := post(strings.NewReader("device_id,action\nfast-1,connect\n"))
	require.Equal(t, http.StatusServiceUnavailable, status, body)
	require.Contains(t, body, "as many uploads as it may at once (1)")

	close(stop)
	require.Equal(t, http.StatusCreated, <-slow)
	status, body = post(strings.NewReader("device_id,action\nfast-1,connect\n"))
	require.Equal(t, http.StatusCreated, status, body, "a slot is free again")
}
