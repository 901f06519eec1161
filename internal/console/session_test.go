package console_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/console"
	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
)

// consoleOver serves the console in front of a real API on a real database, with a
// clock the test moves.
type consoleOver struct {
	url    string
	client *http.Client
	pool   *pgxpool.Pool
	srv    *httptest.Server
	mu     sync.Mutex
	now    time.Time
}

var opToken = server.Token{Name: "op", Value: "op-token-value", Roles: []string{server.RoleRead, server.RoleUpload}}

func newConsoleOver(t *testing.T) *consoleOver {
	t.Helper()
	pool, _ := dbtest.New(t)
	return consoleOn(t, pool, opToken)
}

// consoleOn is another server (an API and its console) on pool's database, as a
// second `serve` process is, with a cookie jar of its own.
func consoleOn(t *testing.T, pool *pgxpool.Pool, tokens ...server.Token) *consoleOver {
	t.Helper()
	st := store.New(pool, nil)
	api := server.New(server.Config{Store: st, Tokens: tokens})
	c := &consoleOver{now: time.Now(), pool: pool} // the cookie jar checks Expires against the real clock
	ui, err := console.New(console.Config{API: api, Sessions: st, Now: func() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }})
	require.NoError(t, err)
	c.srv = httptest.NewServer(ui)
	t.Cleanup(c.srv.Close)
	jar, _ := cookiejar.New(nil)
	c.url = c.srv.URL
	c.client = &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c
}

func (c *consoleOver) do(t *testing.T, method, path string, form url.Values, header map[string]string) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.url+path, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

func TestSignInSessionCookieCSRFAndSignOut(t *testing.T) {
	t.Parallel()
	c := newConsoleOver(t)
	resp, _ := c.do(t, "GET", "/", nil, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/signin?next=%2F", resp.Header.Get("Location"))

	resp, body := c.do(t, "POST", "/signin", url.Values{"token": {"wrong"}}, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, body, "That token is not known")
	resp, _ = c.do(t, "POST", "/signin", url.Values{"token": {"op-token-value"}}, map[string]string{"Origin": "https://evil.example"})
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "a sign-in form posted from another site")

	resp, _ = c.do(t, "POST", "/signin", url.Values{"token": {"op-token-value"}, "next": {"//evil.example/"}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/", resp.Header.Get("Location"), "no redirect off the site")
	cookie := resp.Cookies()[0]
	require.Equal(t, "vncfleet_session", cookie.Name)
	require.True(t, cookie.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, cookie.SameSite)
	require.NotContains(t, cookie.Value, "op-token-value")

	resp, page := c.do(t, "GET", "/", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'none'")
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	require.NotContains(t, page, "op-token-value", "the token never reaches a page")
	csrf := csrfMeta.FindStringSubmatch(page)[1]

	// State-changing API calls from the page need the CSRF token; reads do not.
	resp, _ = c.do(t, "POST", "/ui/api/v1/retry", nil, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	resp, _ = c.do(t, "POST", "/ui/api/v1/retry", nil, map[string]string{"X-CSRF-Token": "guess"})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	resp, body = c.do(t, "POST", "/ui/api/v1/retry", nil, map[string]string{"X-CSRF-Token": csrf})
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Contains(t, body, `"retried": 0`)
	resp, body = c.do(t, "GET", "/ui/api/v1/me", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `"name": "op"`)
	resp, _ = c.do(t, "GET", "/ui/api/healthz", nil, nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "the proxy reaches /v1 only")

	resp, _ = c.do(t, "POST", "/signout", url.Values{}, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "a sign-out without the CSRF token")
	resp, _ = c.do(t, "POST", "/signout", url.Values{"csrf": {csrf}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	resp, _ = c.do(t, "GET", "/ui/api/v1/me", nil, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the session is gone")
}

func TestSessionExpires(t *testing.T) {
	t.Parallel()
	c := newConsoleOver(t)
	resp, _ := c.do(t, "POST", "/signin", url.Values{"token": {"op-token-value"}, "next": {"/webhooks"}}, nil)
	require.Equal(t, "/webhooks", resp.Header.Get("Location"))
	c.mu.Lock()
	c.now = c.now.Add(console.DefaultSessionTTL - time.Minute)
	c.mu.Unlock()
	resp, _ = c.do(t, "GET", "/", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "still signed in just before the end")

	c.mu.Lock()
	c.now = c.now.Add(2 * time.Minute)
	c.mu.Unlock()
	// The browser would drop the cookie by itself; a client that keeps it still
	// finds the session over.
	resp, _ = c.do(t, "GET", "/webhooks", nil, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	loc, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	require.Equal(t, "/signin", loc.Path)
	require.Equal(t, "1", loc.Query().Get("expired"))
	_, page := c.do(t, "GET", loc.RequestURI(), nil, nil)
	require.Contains(t, page, "Your session has ended")
}

// withCookie sends requests to c carrying the session cookie value id, as a browser
// whose requests a load balancer sends to one process or another does.
func (c *consoleOver) withCookie(t *testing.T, id string) {
	t.Helper()
	u, err := url.Parse(c.url)
	require.NoError(t, err)
	c.client.Jar.SetCookies(u, []*http.Cookie{{Name: "vncfleet_session", Value: id, Path: "/"}})
}

func (c *consoleOver) sessionCookie(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(c.url)
	require.NoError(t, err)
	for _, ck := range c.client.Jar.Cookies(u) {
		if ck.Name == "vncfleet_session" {
			return ck.Value
		}
	}
	t.Fatal("no session cookie")
	return ""
}

// A session made through one server is accepted by a second on the same database,
// with the same CSRF token; sign-out on either ends it on both; the database holds
// hashes only, never the session id, the CSRF token or the bearer token.
func TestSessionSharedByEveryServer(t *testing.T) {
	t.Parallel()
	one := newConsoleOver(t)
	two := consoleOn(t, one.pool, opToken)

	resp, _ := one.do(t, "POST", "/signin", url.Values{"token": {opToken.Value}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	id := one.sessionCookie(t)
	_, page := one.do(t, "GET", "/", nil, nil)
	csrf := csrfMeta.FindStringSubmatch(page)[1]

	two.withCookie(t, id)
	resp, page = two.do(t, "GET", "/", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "the second server knows the session")
	require.Contains(t, page, "Signed in as <strong>op</strong>")
	require.Equal(t, csrf, csrfMeta.FindStringSubmatch(page)[1], "and prints the same CSRF token")
	resp, body := two.do(t, "POST", "/ui/api/v1/retry", nil, map[string]string{"X-CSRF-Token": csrf})
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	resp, _ = two.do(t, "POST", "/ui/api/v1/retry", nil, map[string]string{"X-CSRF-Token": "guess"})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)

	var stored string
	require.NoError(t, one.pool.QueryRow(context.Background(), `
		SELECT encode(id_hash, 'escape') || encode(csrf_hash, 'escape') || token_name || array_to_string(roles, ',')
		FROM console_sessions`).Scan(&stored))
	for _, secret := range []string{id, csrf, opToken.Value} {
		require.NotContains(t, stored, secret)
	}
	var idHash, csrfHash []byte
	require.NoError(t, one.pool.QueryRow(context.Background(), `SELECT id_hash, csrf_hash FROM console_sessions`).Scan(&idHash, &csrfHash))
	idSum, csrfSum := sha256.Sum256([]byte(id)), sha256.Sum256([]byte(csrf))
	require.Equal(t, idSum[:], idHash, "the session id is kept as its SHA-256")
	require.Equal(t, csrfSum[:], csrfHash, "and so is the CSRF token")

	// Sign out through the second: the first no longer knows the session either.
	resp, _ = two.do(t, "POST", "/signout", url.Values{"csrf": {csrf}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	resp, _ = one.do(t, "GET", "/ui/api/v1/me", nil, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "signed out on both")
	var n int
	require.NoError(t, one.pool.QueryRow(context.Background(), `SELECT count(*) FROM console_sessions`).Scan(&n))
	require.Zero(t, n, "sign-out deletes the session")
}

// A session survives a restart of the server (a new API and console on the same
// database), and ends when its token is no longer configured.
func TestSessionSurvivesRestart(t *testing.T) {
	t.Parallel()
	before := newConsoleOver(t)
	resp, _ := before.do(t, "POST", "/signin", url.Values{"token": {opToken.Value}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	id := before.sessionCookie(t)
	before.srv.Close()

	after := consoleOn(t, before.pool, opToken)
	after.withCookie(t, id)
	resp, page := after.do(t, "GET", "/webhooks", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "still signed in after the restart")
	require.Contains(t, page, "Signed in as <strong>op</strong>")

	// The operator's token removed from the configuration: its session acts no more.
	renamed := opToken
	renamed.Name = "someone-else"
	without := consoleOn(t, before.pool, renamed)
	without.withCookie(t, id)
	resp, _ = without.do(t, "GET", "/ui/api/v1/me", nil, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// Expired sessions are pruned at the next sign-in, and the number kept is bounded.
func TestSessionsPruned(t *testing.T) {
	t.Parallel()
	c := newConsoleOver(t)
	for range 3 {
		resp, _ := c.do(t, "POST", "/signin", url.Values{"token": {opToken.Value}}, nil)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	}
	count := func() (n int) {
		require.NoError(t, c.pool.QueryRow(context.Background(), `SELECT count(*) FROM console_sessions`).Scan(&n))
		return n
	}
	require.Equal(t, 3, count())
	c.mu.Lock()
	c.now = c.now.Add(console.DefaultSessionTTL + time.Minute)
	c.mu.Unlock()
	resp, _ := c.do(t, "POST", "/signin", url.Values{"token": {opToken.Value}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, 1, count(), "the expired ones were deleted")

	st := store.New(c.pool, nil)
	for i := range 5 {
		_, err := st.CreateConsoleSession(context.Background(), store.ConsoleSession{
			IDHash: bytes.Repeat([]byte{byte(i)}, 32), CSRFHash: bytes.Repeat([]byte{1}, 32), TokenName: "op", Roles: []string{"read"},
			CreatedAt: c.now.Add(time.Duration(i) * time.Second), ExpiresAt: c.now.Add(time.Hour)}, 3)
		require.NoError(t, err)
	}
	require.Equal(t, 3, count(), "at most max sessions, the newest")
	var oldest []byte
	require.NoError(t, c.pool.QueryRow(context.Background(), `SELECT id_hash FROM console_sessions ORDER BY created_at LIMIT 1`).Scan(&oldest))
	require.Equal(t, bytes.Repeat([]byte{2}, 32), oldest)
}
