package console_test

import (
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
	mu     sync.Mutex
	now    time.Time
}

func newConsoleOver(t *testing.T) *consoleOver {
	t.Helper()
	pool, _ := dbtest.New(t)
	api := server.New(server.Config{Store: store.New(pool, nil), Tokens: []server.Token{
		{Name: "op", Value: "op-token-value", Roles: []string{server.RoleRead, server.RoleUpload}}}})
	c := &consoleOver{now: time.Now()} // the cookie jar checks Expires against the real clock
	ui, err := console.New(console.Config{API: api, Now: func() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }})
	require.NoError(t, err)
	srv := httptest.NewServer(ui)
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	c.url = srv.URL
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
