package console_test

// The browser tests drive Debian's chromium (chromedp) against a real `serve`
// stack: its own PostgreSQL database, the River workers, the simulator over real
// HTTP, and the console in front of the API, on the default settings unless a test
// says why not.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/servetest"
	"github.com/vncfleet/vncfleet/internal/sim"
)

const (
	adminToken  = servetest.AdminToken
	readerToken = servetest.ReaderToken
	simKey      = servetest.SimKey
)

// screenshotDir is where the browser tests save a screenshot of every page they
// visit: CONSOLE_SCREENSHOTS, or screenshots/ next to this file (ignored by git).
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("CONSOLE_SCREENSHOTS")
	if dir == "" {
		dir = "screenshots"
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

func newStack(t *testing.T, adjust func(*config.Config)) *stack {
	t.Helper()
	s := servetest.Start(t, adjust)
	return &stack{url: s.URL, pool: s.Pool, sim: s.Sim}
}

// stack names the parts of servetest.Stack the tests use.
type stack struct {
	url  string
	pool *pgxpool.Pool
	sim  *sim.Server
}

// browser is one headless chromium tab that records what would make a person
// frown: errors in the console, and requests to any other host.
type browser struct {
	t    *testing.T
	ctx  context.Context
	host string
	shot string // screenshot directory

	mu           sync.Mutex
	problems     []string
	expectStatus map[int]bool // HTTP error statuses this test provokes on purpose
}

func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: apt-get install -y chromium (.ci/run does it)")
	return ""
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // the tests may run as root
		chromedp.WindowSize(1280, 900),
	)
	u, err := url.Parse(base)
	require.NoError(t, err)
	b := &browser{t: t, host: u.Host, shot: screenshotDir(t), expectStatus: map[int]bool{}}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithListener(b.listen))
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b.ctx = ctx
	// The first run starts the browser; it must not have a timeout of its own.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		require.Empty(t, b.problems, "the browser saw problems")
	})
	return b
}

func (b *browser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		u, err := url.Parse(e.Request.URL)
		if err == nil && u.Scheme != "data" && u.Scheme != "about" && u.Host != b.host {
			b.problems = append(b.problems, "request to another host: "+e.Request.URL)
		}
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning {
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, a.Description+fmt.Sprint(a.Value))
			}
			b.problems = append(b.problems, "console "+string(e.Type)+": "+strings.Join(parts, " "))
		}
	case *runtime.EventExceptionThrown:
		msg := e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil {
			msg += " " + e.ExceptionDetails.Exception.Description
		}
		b.problems = append(b.problems, "exception: "+msg)
	case *log.EventEntryAdded:
		if e.Entry.Level != log.EntryLevelError && e.Entry.Level != log.EntryLevelWarning {
			return
		}
		// An API answer the test provokes on purpose (a rejected manifest is 422) is
		// logged by the browser as a failed load; anything else is a problem.
		if e.Entry.Source == log.EntrySourceNetwork {
			for status := range b.expectStatus {
				if strings.Contains(e.Entry.Text, fmt.Sprintf("status of %d", status)) {
					return
				}
			}
		}
		b.problems = append(b.problems, "log "+string(e.Entry.Level)+": "+e.Entry.Text+" "+e.Entry.URL)
	}
}

// takeProblems returns what the browser has seen so far and forgets it (for the test
// of the detector itself: the problems it provokes are not the test's failure).
func (b *browser) takeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	list := b.problems
	b.problems = nil
	return list
}

// expectHTTPError lets the browser log failed loads with this status.
func (b *browser) expectHTTPError(status int) {
	b.mu.Lock()
	b.expectStatus[status] = true
	b.mu.Unlock()
}

// step runs actions, each with a bound: a page that never shows what is awaited
// fails the test instead of hanging it.
func (b *browser) step(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	require.NoError(b.t, chromedp.Do(ctx, actions...))
}

func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	require.NoError(b.t, err, js)
	return v
}

// text is the visible text of the first element matching sel, once it is visible.
func (b *browser) text(sel string) string {
	b.t.Helper()
	b.step(chromedp.WaitVisible(chromedp.CSS(sel)))
	return strings.TrimSpace(eval[string](b, fmt.Sprintf(`document.querySelector(%q).innerText`, sel)))
}

// texts are the visible texts of every element matching sel (none is fine).
func (b *browser) texts(sel string) []string {
	b.t.Helper()
	return eval[[]string](b, fmt.Sprintf(`[...document.querySelectorAll(%q)].map(e => e.innerText.trim())`, sel))
}

func (b *browser) exists(sel string) bool {
	b.t.Helper()
	return eval[bool](b, fmt.Sprintf(`document.querySelector(%q) !== null`, sel))
}

// waitText waits until the element's visible text contains want. It asks again
// and again rather than waiting inside the page, so a navigation on the way (an
// Apply that opens the manifest's page) does not end the wait.
func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	b.waitTextFor(sel, want, strings.Contains)
}

// waitTextIs is waitText for the whole text: where a longer message holds want
// ("too many live streams" holds "live"), a substring proves nothing.
func (b *browser) waitTextIs(sel, want string) {
	b.t.Helper()
	b.waitTextFor(sel, want, func(got, want string) bool { return strings.TrimSpace(got) == want })
}

func (b *browser) waitTextFor(sel, want string, says func(got, want string) bool) {
	b.t.Helper()
	js := fmt.Sprintf(`(document.querySelector(%q) || {innerText: ""}).innerText`, sel)
	var got string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		cancel()
		if err == nil {
			if got = v; says(got, want) {
				return
			}
		}
	}
	b.t.Fatalf("%s never said %q; it says %q", sel, want, got)
}

// accessibilityProblems finds what keeps a keyboard or screen-reader user out: a
// form control without a label, a button or link without text, a drawing without a
// text alternative, a page without its language or one main heading.
const accessibilityProblems = `(() => {
  const out = [];
  if (!document.documentElement.lang) out.push("html without lang");
  if (document.querySelectorAll("h1").length !== 1) out.push("not exactly one h1");
  for (const e of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    const labelled = (e.id && document.querySelector('label[for="' + e.id + '"]')) || e.getAttribute("aria-label");
    if (!labelled) out.push("unlabelled " + e.outerHTML.slice(0, 80));
  }
  for (const e of document.querySelectorAll("button, a[href]")) {
    if (!(e.innerText.trim() || e.getAttribute("aria-label"))) out.push("no text: " + e.outerHTML.slice(0, 80));
  }
  for (const e of document.querySelectorAll("svg, img")) {
    if (!(e.getAttribute("aria-label") || e.getAttribute("alt") !== null || e.getAttribute("aria-hidden") === "true")) out.push("no text alternative: " + e.outerHTML.slice(0, 80));
  }
  return out;
})()`

// screenshot checks the page's accessibility basics and saves the whole page as
// NAME.png in the screenshot directory.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	require.Empty(b.t, eval[[]string](b, accessibilityProblems), "page %s", name)
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(b.t, err)
	require.NoError(b.t, os.WriteFile(filepath.Join(b.shot, name+".png"), png, 0o644))
}

// pickFile chooses content as the manifest file of the upload form.
func (b *browser) pickFile(content string) {
	b.t.Helper()
	path := filepath.Join(b.t.TempDir(), "manifest.csv")
	require.NoError(b.t, os.WriteFile(path, []byte(content), 0o644))
	b.step(chromedp.SetUploadFiles(chromedp.CSS("#file"), []string{path}))
}

func (b *browser) open(u string) {
	b.t.Helper()
	b.step(chromedp.Navigate(u), chromedp.WaitReady(chromedp.CSS("body")))
}

func (b *browser) click(sel string) {
	b.t.Helper()
	b.step(chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

// signIn signs in with token from the sign-in page.
func (b *browser) signIn(base, token string) {
	b.t.Helper()
	b.open(base + "/signin")
	b.step(chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Submit(chromedp.CSS("#token")))
	b.waitFor(`document.readyState === "complete" && (document.querySelector("form.who") || document.querySelector("p.error"))`)
}

// waitFor waits until the JavaScript condition holds, asking again across navigations.
func (b *browser) waitFor(cond string) {
	b.t.Helper()
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+cond+")"))
		cancel()
		if err == nil && ok {
			return
		}
	}
	b.t.Fatalf("never true: %s", cond)
}

// uploadThroughConsole plans and applies a manifest from the upload page, as an
// operator does, and returns when the manifest's page shows.
func (b *browser) uploadThroughConsole(base, fleetName, csv string) {
	b.t.Helper()
	b.open(base + "/upload")
	b.step(chromedp.WaitVisible(chromedp.CSS("#fleet")), chromedp.SetValue(chromedp.CSS("#fleet"), fleetName))
	b.pickFile(csv)
	b.click("#plan-button")
	b.waitText("#plan-h", "Plan (dry run")
	b.click("#apply")
	b.waitText("#progress", "Fleet "+fleetName)
}

// dropFile drags content, as a CSV file, onto the upload form's drop zone, as a
// person dragging it from their file manager does: dragenter, dragover and drop
// carrying a DataTransfer that holds the File. It reports whether the zone took the
// drag (marked itself and prevented the browser's default of opening the file).
func (b *browser) dropFile(content string) bool {
	b.t.Helper()
	b.step(chromedp.WaitVisible(chromedp.CSS("#drop")))
	return eval[bool](b, fmt.Sprintf(`(() => {
  const dt = new DataTransfer();
  dt.items.add(new File([%q], "manifest.csv", { type: "text/csv" }));
  const zone = document.querySelector("#drop");
  const fire = (type) => zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
  const took = !fire("dragenter") & !fire("dragover") & zone.classList.contains("over");
  const dropped = !fire("drop");
  return Boolean(took && dropped && !zone.classList.contains("over"));
})()`, content))
}

// setSelect chooses value in a <select>.
func setSelect(sel, value string) chromedp.Action[chromedp.Void] {
	return chromedp.SetValue(chromedp.CSS(sel), value)
}

// uploadViaAPI stores a manifest for fleetName through the API, as a factory
// pipeline does (not through the page the browser shows), and returns its id.
func uploadViaAPI(t *testing.T, base, fleetName, csv string) int64 {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/v1/manifests?fleet="+url.QueryEscape(fleetName), strings.NewReader(csv))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var created struct {
		Manifest struct {
			ID int64 `json:"id"`
		} `json:"manifest"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	return created.Manifest.ID
}
