package console_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// holdStreams opens event streams to the server as a script would, with the
// administrator's token, until the process's stream limit answers 503; it returns
// them open, and closing them frees their slots.
func holdStreams(t *testing.T, base string) func() {
	t.Helper()
	var open []*http.Response
	release := func() {
		for _, resp := range open {
			_ = resp.Body.Close()
		}
		open = nil
	}
	t.Cleanup(release)
	for range 1000 {
		req, err := http.NewRequest("GET", base+"/v1/status/events", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		if resp.StatusCode == http.StatusServiceUnavailable {
			_ = resp.Body.Close()
			require.Equal(t, "5", resp.Header.Get("Retry-After"))
			return release
		}
		require.Equal(t, http.StatusOK, resp.StatusCode)
		open = append(open, resp)
	}
	t.Fatal("the server never said its stream limit was reached")
	return nil
}

// A page whose stream the server turns away tries again after the Retry-After of a
// 503 (the stream limit), and goes to sign in when its session ended (401), instead
// of falling silent: EventSource gives up on either for good.
func TestConsoleStreamsRetryAfter503AndSignInOn401(t *testing.T) {
	st := newStack(t, nil)
	ctx := context.Background()
	// A pause of an hour: the manifest stays in progress, so its stream stays open.
	_, err := st.pool.Exec(ctx, `UPDATE rate_limits SET paused_until = now() + interval '1 hour' WHERE name = 'vnccloud'`)
	require.NoError(t, err)
	id := uploadViaAPI(t, st.url, "held", "device_id,action,groups,location\ncam-1,connect,line-1,hall\n")
	page := st.url + "/manifests/" + strconv.FormatInt(id, 10)

	b := newBrowser(t, st.url)
	b.expectHTTPError(http.StatusServiceUnavailable)
	b.expectHTTPError(http.StatusUnauthorized)
	b.signIn(st.url, adminToken)
	b.open(st.url + "/webhooks") // a page without a stream, while the slots fill

	// 503: the page says so, and is live once a slot is free.
	release := holdStreams(t, st.url)
	b.open(page)
	b.waitText("#stream-state", "the server has too many live streams open; trying again in 5 s")
	b.screenshot("manifest-stream-limit")
	release()
	b.waitTextIs("#stream-state", "live")

	// 401: the session ends while the page waits to try again; its next try signs in.
	b.open(st.url + "/webhooks")
	release = holdStreams(t, st.url)
	b.open(page)
	b.waitText("#stream-state", "trying again in 5 s")
	_, err = st.pool.Exec(ctx, `DELETE FROM console_sessions`)
	require.NoError(t, err)
	release()
	b.waitText("h1", "Sign in")
	require.Contains(t, b.text("p.flash"), "Your session has ended")
	require.Equal(t, "/manifests/"+strconv.FormatInt(id, 10), eval[string](b, `document.querySelector("input[name=next]").value`),
		"and back to the manifest after")
}
