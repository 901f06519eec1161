package console_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The browser tests fail on any error in the browser's console and on any request to
// another host (newBrowser): the detector is tested itself, on pages made to do
// each, so that a detector gone deaf cannot pass every browser test.
func TestBrowserDetectorCatchesConsoleErrorsAndOtherHosts(t *testing.T) {
	page := func(body string) string {
		return `<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>t</title></head><body>` + body + `</body></html>`
	}
	// Another host that answers, so that the request is the only thing wrong: the
	// page is at 127.0.0.1, this is localhost on a port of its own.
	pixel, _ := base64.StdEncoding.DecodeString("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/gif")
		_, _ = w.Write(pixel)
	}))
	t.Cleanup(elsewhere.Close)
	other := strings.Replace(elsewhere.URL, "127.0.0.1", "localhost", 1) + "/pixel.gif"
	pages := map[string]string{
		"/quiet":      page(`<h1>Nothing wrong here</h1>`),
		"/error":      page(`<script>console.error("boom from the page")</script>`),
		"/other-host": page(`<img alt="" src="` + other + `">`),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	b := newBrowser(t, srv.URL)

	// caught waits for a problem that contains want, and forgets all of them so far.
	caught := func(want string) {
		t.Helper()
		var seen []string
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			b.mu.Lock()
			seen = append([]string(nil), b.problems...)
			b.mu.Unlock()
			for _, p := range seen {
				if strings.Contains(p, want) {
					b.takeProblems()
					return
				}
			}
		}
		t.Fatalf("the detector never caught %q; it saw %q", want, seen)
	}

	b.open(srv.URL + "/quiet")
	require.Equal(t, "Nothing wrong here", b.text("h1"))
	require.Empty(t, b.takeProblems(), "a quiet page is no problem")
	b.open(srv.URL + "/error")
	caught(`console error: "boom from the page"`)
	b.open(srv.URL + "/other-host")
	caught("request to another host: " + other)
	// What the cleanup checks is empty again: everything provoked was taken.
}
