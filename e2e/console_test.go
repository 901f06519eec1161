package e2e

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// browserClient is a browser's view of the console: a session cookie it carries to
// whichever `serve` process it reaches (as a load balancer without affinity sends
// it), and no redirects followed, so that a sign-in page is seen as such.
type browserClient struct {
	t      *testing.T
	cookie *http.Cookie
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

func (b *browserClient) do(method, target string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	require.NoError(b.t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if b.cookie != nil {
		req.AddCookie(b.cookie)
	}
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	for _, c := range resp.Cookies() {
		if c.Name == "vncfleet_session" {
			b.cookie = c
		}
	}
	return resp, string(data)
}

func (b *browserClient) signIn(base string) {
	b.t.Helper()
	resp, body := b.do("POST", base+"/signin", url.Values{"token": {adminTok}, "next": {"/"}})
	require.Equal(b.t, http.StatusSeeOther, resp.StatusCode, body)
	require.NotNil(b.t, b.cookie)
}

// signedIn reports whether base's console takes the session: the fleets page, not a
// redirect to sign in.
func (b *browserClient) signedIn(base string) bool {
	b.t.Helper()
	resp, _ := b.do("GET", base+"/", nil)
	if resp.StatusCode == http.StatusSeeOther {
		require.True(b.t, strings.HasPrefix(resp.Header.Get("Location"), "/signin"), resp.Header.Get("Location"))
		return false
	}
	require.Equal(b.t, http.StatusOK, resp.StatusCode)
	return true
}

// TestConsoleSessionsAcrossServeProcesses: a session made through one `serve` is
// taken by another on the same database; sign-out through the second ends it on
// both; a session outlives the process it was made through (a restart). A reconcile
// run from the CLI through one process is recorded and served by another.
func TestConsoleSessionsAcrossServeProcesses(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{config: fastConfig})
	first := c.startServe()
	c.startServe()
	one, two := c.apiURLs[0], c.apiURLs[1]

	b := &browserClient{t: t}
	b.signIn(one)
	require.True(t, b.signedIn(one))
	require.True(t, b.signedIn(two), "the second process takes the first's session")
	_, page := b.do("GET", two+"/", nil)
	csrf := csrfMeta.FindStringSubmatch(page)
	require.NotNil(t, csrf)
	stale := &browserClient{t: t, cookie: &http.Cookie{Name: b.cookie.Name, Value: b.cookie.Value}} // a tab that keeps the old cookie
	resp, body := b.do("POST", two+"/signout", url.Values{"csrf": {csrf[1]}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
	require.False(t, stale.signedIn(one), "signed out through the second, signed out on the first")
	require.False(t, stale.signedIn(two))

	// `vncfleet reconcile` through the second is recorded; the first serves the run.
	out, errOut, code := c.runAt(two, "reconcile")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	var last struct {
		Trigger   string `json:"trigger"`
		DryRun    bool   `json:"dryRun"`
		Converged bool   `json:"converged"`
		Report    struct {
			Listed int `json:"listed"`
		} `json:"report"`
	}
	c.apiGet("/v1/reconcile/runs/last", &last)
	require.Equal(t, "request", last.Trigger)
	require.False(t, last.DryRun)
	require.True(t, last.Converged)
	require.Zero(t, last.Report.Listed, "no device yet, nothing in the account")

	// A session outlives its process: sign in through the first, stop it, start a
	// third; the session still works there.
	fresh := &browserClient{t: t}
	fresh.signIn(one)
	require.Equal(t, 0, first.terminate(t, 30*time.Second))
	c.startServe()
	require.True(t, fresh.signedIn(c.apiURLs[2]), "the session survives the restart")
}
