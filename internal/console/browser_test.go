package console_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

const manifestHeader = "device_id,action,groups,allow_groups,allow_devices,state,zenlayer_instance_id,location\n"

// twoLines is a factory of two lines: viewers, and servers that let their line in.
func twoLines() string {
	var b strings.Builder
	b.WriteString(manifestHeader)
	for _, line := range []string{"line-a", "line-b"} {
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(&b, "viewer-%s-%d,connect,%s,,,,,plant-1\n", line, i, line)
		}
		for i := 1; i <= 2; i++ {
			fmt.Fprintf(&b, "server-%s-%d,listen,,%s,viewer-%s-1,,,plant-1\n", line, i, line, line)
		}
	}
	return b.String()
}

// The operator's main path: sign in, see a bad manifest's every problem by line
// next to its cells, then plan, apply and watch a good one reach 100% live.
func TestConsoleSignInUploadAndWatch(t *testing.T) {
	st := newStack(t, nil) // the defaults users get: VNCCLOUD_RATE 10, readiness from 1 s
	b := newBrowser(t, st.url)

	b.open(st.url + "/")
	require.Equal(t, "Sign in", b.text("h1"), "a visitor is sent to sign in")
	b.screenshot("signin")
	b.expectHTTPError(401)
	b.signIn(st.url, "not-a-token")
	require.Contains(t, b.text("p.error"), "That token is not known")

	b.signIn(st.url, adminToken)
	require.Equal(t, "Fleets", b.text("h1"))
	require.Contains(t, b.text("form.who"), "Signed in as admin")
	require.Contains(t, b.text("main"), "No manifest has been uploaded yet")

	// A bad manifest: every problem, by line, next to its cells.
	b.click(`nav a[href="/upload"]`)
	b.waitText("h1", "Upload a manifest")
	b.expectHTTPError(422)
	b.pickFile(manifestHeader +
		"ok-1,connect,line-a,,,,,plant-1\n" +
		"bad-action,teleport,line-a,,,,,plant-1\n" +
		"ok-2,connect,line-a,,,,,plant-1\n" +
		"bad-state,connect,line-a,,,gone,,plant-1\n" +
		"bad-listen,listen,line-a,,,,,plant-1\n")
	b.click("#plan-button")
	b.waitText("#problems-h", "Rejected: 3 problems")
	require.Equal(t, []string{"Line 3", "Line 5", "Line 6"}, b.texts(".problem h3"))
	problems := b.texts(".problem li")
	require.Len(t, problems, 3)
	require.Contains(t, problems[0], "column 2 (action)")
	require.Contains(t, problems[1], "column 6 (state)")
	require.Contains(t, problems[2], "column 3 (groups)")
	require.Equal(t, []string{"✗ teleport", "✗ gone", "✗ line-a"}, b.texts(".preview td.bad"), "the offending cells are marked")
	require.Contains(t, b.text("#result"), "Nothing was stored")
	b.screenshot("upload-problems")

	// A good one: the plan first, then apply, then progress by SSE to 100%.
	b.pickFile(twoLines())
	b.click("#plan-button")
	b.waitText("#plan-h", "Plan (dry run")
	require.Equal(t, []string{"10to create", "0to update", "0to delete", "0unchanged"},
		squash(b.texts(".plan-counts li")))
	require.Contains(t, b.text("#result"), "viewer-line-a-1")
	b.screenshot("upload-plan")
	b.click("#apply")
	b.waitText("#progress", "Fleet default")
	require.True(t, strings.HasPrefix(b.text("h1"), "Manifest #"))
	eval[bool](b, `window.notReloaded = true`)
	b.waitText("#stream-state", "live")
	b.waitText("#state", "done")
	require.True(t, eval[bool](b, `window.notReloaded === true`), "progress arrived without a reload")
	require.Equal(t, "100.0", b.text("#pct"))
	require.Equal(t, "10", b.text("#settled"))
	require.Equal(t, "done", b.text("#eta"))
	require.Equal(t, []string{"line-a", "line-b"}, b.texts("#groups .group h3"), "a bar per group")
	require.Equal(t, []string{"5 of 5 settled", "5 of 5 settled"}, b.texts("#groups .group p"))
	require.Equal(t, "10 ready", eval[string](b, `document.querySelector("#by-status svg").getAttribute("aria-label")`))
	require.Contains(t, b.text("#failures"), "No device has failed")
	b.screenshot("manifest-progress")

	// Printed, the report is the page without navigation or buttons.
	b.step(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: "print"})
		return err
	}))
	require.Equal(t, []string{"none", "none", "block"}, eval[[]string](b,
		`["header.top", ".actions", "#progress"].map(s => getComputedStyle(document.querySelector(s)).display)`))
	b.step(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: ""})
		return err
	}))

	b.open(st.url + "/")
	b.waitText("#live", "last update") // the fleet status stream is live
	require.Contains(t, b.text("section.fleet"), "10 of 10")
	require.Contains(t, b.text("section.fleet table"), "done")
	b.screenshot("fleets")

	// A replace that deletes more than the guard allows needs the count typed in.
	b.expectHTTPError(409)
	b.open(st.url + "/upload")
	b.step(chromedp.SetValue(chromedp.CSS("#mode"), "replace"))
	b.pickFile(manifestHeader + "viewer-line-a-1,connect,line-a,,,,,plant-1\n")
	b.click("#plan-button")
	b.waitText("#plan-h", "Plan (dry run")
	require.Contains(t, b.text("#result"), "Deletions: 9")
	b.click("#apply")
	b.waitText("#result", "Type 9 to confirm the deletions")
	require.True(t, eval[bool](b, `document.querySelector("#apply").disabled`), "Apply waits for the confirmation")
	b.step(chromedp.SendKeys(chromedp.CSS("#confirm-deletions"), "8"))
	require.True(t, eval[bool](b, `document.querySelector("#apply").disabled`), "a wrong count does not confirm")
	b.screenshot("upload-deletion-guard")
	b.step(chromedp.SendKeys(chromedp.CSS("#confirm-deletions"), "\b9")) // backspace, then the right count
	require.Equal(t, "9", eval[string](b, `document.querySelector("#confirm-deletions").value`))
	b.click("#apply")
	b.waitText("#progress", "replace of 1 row")
	b.waitText("#by-status", "deleted 9")
}

// squash drops the line breaks innerText puts between a count and its label.
func squash(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strings.ReplaceAll(s, "\n", "")
	}
	return out
}
