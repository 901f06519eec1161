package console_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/sim"
)

// A device failed by a simulator fault shows the API's error; the fix-up CSV holds
// the failed rows as uploaded plus the error; "retry failed" provisions them.
func TestConsoleFailuresRetryAndFixup(t *testing.T) {
	st := newStack(t, func(cfg *config.Config) {
		cfg.Workers.MaxAttempts = 2 // a device fails after two 503s instead of ten
	})
	b := newBrowser(t, st.url)
	b.signIn(st.url, adminToken)

	st.sim.SetFaults(sim.Faults{FailRate: 1})
	b.uploadThroughConsole(st.url, "line-c",
		manifestHeader+"cam-1,connect,line-c,,,,,plant-2\ncam-2,connect,line-c,,,,,plant-2\n")
	b.waitText("#state", "done")
	b.waitText("#failures", "cam-2")
	rows := b.texts("#failures tbody tr")
	require.Len(t, rows, 2)
	require.Contains(t, rows[0], "cam-1")
	require.Contains(t, rows[0], "503", "the API's status is shown")
	require.Contains(t, b.text("#by-status"), "failed 2")
	b.screenshot("manifest-failures")

	fixup := eval[string](b, `fetch(document.querySelector("#fixup").href).then(r => r.text())`)
	lines := strings.Split(strings.TrimSpace(fixup), "\n")
	require.Equal(t, "device_id,action,groups,allow_groups,allow_devices,state,zenlayer_instance_id,location,error", lines[0])
	require.Len(t, lines, 3)
	require.True(t, strings.HasPrefix(lines[1], "cam-1,connect,line-c,,,present,,plant-2,"), lines[1])
	require.Contains(t, lines[1], "503")

	st.sim.SetFaults(sim.Faults{})
	b.click("#retry")
	b.waitText("#action-result", "2 failed devices scheduled again")
	b.waitText("#failures", "No device has failed")
	b.waitText("#by-status", "ready 2")
	b.waitText("#state", "done")
}

// The secrets role reveals a password (audited, until dismissed); the read role has
// no reveal button and no buttons that change anything. Rotation, reconcile and
// webhook pages work from the browser.
func TestConsoleRolesAndLifecyclePages(t *testing.T) {
	st := newStack(t, nil)
	b := newBrowser(t, st.url)
	b.signIn(st.url, adminToken)

	// A CSV dragged onto the upload form is checked at once: its plan appears.
	b.open(st.url + "/upload")
	require.True(t, b.dropFile(twoLines()), "the drop zone takes the drag")
	b.waitText("#plan-h", "Plan (dry run")
	require.Equal(t, []string{"10to create", "0to update", "0to delete", "0unchanged"}, squash(b.texts(".plan-counts li")))
	require.Equal(t, "manifest.csv", eval[string](b, `document.querySelector("#file").files[0].name`), "the dropped file is the one sent")
	b.screenshot("upload-dropped")
	b.click("#apply")
	b.waitText("#progress", "Fleet default")
	b.waitText("#state", "done")

	b.open(st.url + "/fleets/default/devices/viewer-line-a-1")
	require.Equal(t, "Device viewer-line-a-1", b.text("h1"))
	require.Contains(t, b.text(".facts"), "ready")
	// Rotation: never rotated yet; the default policy (30 days, the daily 03:00 run)
	// resets it at the first run after it falls due.
	require.Contains(t, b.text("#last-rotation"), "never")
	next := b.text("#next-rotation")
	require.Regexp(t, `^due \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; reset by the scheduled run of \d{4}-\d\d-\d\d 03:00:00 UTC, starting by \d{4}-\d\d-\d\d 04:00:00 UTC\.$`, next)
	address := b.text(".facts code")
	require.Contains(t, b.text("main"), "Status history, newest first")
	require.NotEmpty(t, b.texts("tbody tr"), "the calls made are listed")
	b.click("#reveal")
	b.waitText("#secret", "Password:")
	var want string
	for _, a := range st.sim.State().Accounts[simKey].Addresses {
		if a.CloudAddress == address {
			want = a.Password
		}
	}
	require.NotEmpty(t, want)
	require.Equal(t, want, b.text("#secret-value"), "the revealed password is the cloud's")
	b.screenshot("device-reveal")
	var audited int
	require.NoError(t, st.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM audit_log WHERE action = 'reveal_credentials' AND actor = 'admin' AND detail->>'device' = 'viewer-line-a-1'`).Scan(&audited))
	require.Equal(t, 1, audited, "the reveal is audited")
	b.click("#dismiss")
	require.False(t, eval[bool](b, `!document.querySelector("#secret").hidden`), "dismissed")
	require.Empty(t, eval[string](b, `document.querySelector("#secret-value").textContent`), "and not kept in the page")

	// Rotation: rotate the fleet now and watch it finish.
	b.open(st.url + "/rotation")
	require.Equal(t, "Password rotation", b.text("h1"))
	require.Contains(t, b.text("#sched-h + p"), "Passwords older than 30 days are due")
	require.NotContains(t, b.text("#next-run"), "none", "the default schedule runs daily")
	require.Equal(t, []string{"default", "10", "0"}, strings.Fields(b.text("#rotation-fleets tr"))[:3], "fleet, passwords, overdue")
	b.step(setSelect("#rot-fleet", "default"))
	b.click("#rot-all")
	b.click(`form[action="/rotation"] button[type=submit]`)
	b.waitText("#work", "10 devices scheduled")
	b.waitText("#work-state", "Done: 0 failed.")
	b.screenshot("rotation")
	require.NotEqual(t, want, b.revealedPassword(st.url, "default", "viewer-line-a-1"), "the password was rotated")
	require.NotContains(t, b.text("#last-rotation"), "never", "the device says when it was rotated")
	b.screenshot("device-rotated")

	// Reconcile: a dry run, then a run, each rendered as a report.
	b.open(st.url + "/reconcile")
	b.click(`button[name=dry_run]`)
	b.waitText("#rep-h", "Dry run of")
	require.Contains(t, b.text(".report"), "10 addresses in the account, 10 known to vncfleet")
	require.Contains(t, b.texts(".report h3"), "Vanished: 0")
	b.click(`form[action="/reconcile"] button:not([name])`)
	b.waitText("#rep-h", "Run of")

	// Both runs are recorded: the page, opened afresh, renders the last one's report
	// and lists the runs; the fleets overview says how the last one went.
	b.open(st.url + "/reconcile")
	require.Regexp(t, `^Last run: Run of `, b.text("#rep-h"))
	require.Contains(t, b.text(".report .verdict"), "Converged")
	require.Contains(t, b.text(".report"), "Started by a request")
	require.Contains(t, b.texts(".report h3"), "Drifted: 0")
	runs := b.texts("#runs tbody tr")
	require.Len(t, runs, 2)
	require.Equal(t, []string{"run", "a", "request"}, strings.Fields(runs[0])[3:6], runs[0])
	require.Contains(t, runs[1], "dry run")
	b.screenshot("reconcile")
	b.open(st.url + "/")
	require.Contains(t, b.text("#last-reconcile"), "converged: 0 vanished, 0 drifted")
	require.Equal(t, "Last reconcile, of this fleet's devices: nothing to put right.", b.text("section.fleet .reconciled"))
	require.Regexp(t, `next rotation: the scheduled run of \d{4}-\d\d-\d\d 03:00:00 UTC`, b.text("section.fleet .rotation"))
	b.screenshot("fleets-reconciled")

	// Webhooks: a dead event is listed with its last error and redelivered on request.
	var id int64
	require.NoError(t, st.pool.QueryRow(context.Background(), `
		INSERT INTO webhook_events (event_type, payload, attempts, dead_at, last_error, last_status)
		VALUES ('device.ready', '{"fleet":"default","deviceId":"viewer-line-a-1"}', 10, now(), 'receiver answered 500', 500)
		RETURNING id`).Scan(&id))
	b.open(st.url + "/webhooks")
	require.Contains(t, b.text("#dead-h + table"), "receiver answered 500")
	b.screenshot("webhooks")
	b.click(fmt.Sprintf(`form[action="/webhooks/%d/redeliver"] button`, id))
	b.waitText("p.flash", fmt.Sprintf("Event %d will be delivered again.", id))
	require.Contains(t, b.text("main"), "No dead events.")

	// The read role: no reveal, no buttons that change anything.
	b.click(`form.who button`)
	b.waitText("h1", "Sign in")
	b.signIn(st.url, readerToken)
	require.Contains(t, b.text("form.who"), "Signed in as reader")
	require.False(t, b.exists(`nav a[href="/upload"]`))
	b.open(st.url + "/fleets/default/devices/viewer-line-a-1")
	require.Equal(t, "Device viewer-line-a-1", b.text("h1"))
	require.False(t, b.exists("#reveal"), "no reveal button for the read role")
	b.open(st.url + "/manifests/" + b.firstManifestID(st.url))
	require.False(t, b.exists("#cancel"))
	require.False(t, b.exists("#retry"))
	b.screenshot("manifest-read-role")

	// On a tablet held upright nothing needs scrolling sideways.
	b.step(chromedp.EmulateViewport(768, 1024))
	for _, page := range []string{"/", "/manifests/" + b.firstManifestID(st.url), "/fleets/default/devices/viewer-line-a-1", "/webhooks"} {
		b.open(st.url + page)
		require.LessOrEqual(t, eval[int](b, `document.documentElement.scrollWidth`), 768, "page %s is wider than a tablet", page)
	}
	b.screenshot("tablet-webhooks")
}

// revealedPassword reveals a device's password on its page and dismisses it.
func (b *browser) revealedPassword(base, fleetName, deviceID string) string {
	b.t.Helper()
	b.open(base + "/fleets/" + fleetName + "/devices/" + deviceID)
	b.click("#reveal")
	b.waitText("#secret", "Password:")
	pw := b.text("#secret-value")
	b.click("#dismiss")
	return pw
}

// firstManifestID is the id of the newest manifest the fleets page links to.
func (b *browser) firstManifestID(base string) string {
	b.t.Helper()
	b.open(base + "/")
	href := eval[string](b, `document.querySelector("section.fleet tbody a").getAttribute("href")`)
	return strings.TrimPrefix(href, "/manifests/")
}

// Cancelling a manifest in the browser stops its owed work; what was done stays, the
// rest says cancelled.
func TestConsoleCancelManifest(t *testing.T) {
	st := newStack(t, nil) // VNCCLOUD_RATE 10: 300 creates take at least 30 s
	b := newBrowser(t, st.url)
	b.signIn(st.url, adminToken)
	var csv strings.Builder
	csv.WriteString(manifestHeader)
	for i := range 300 {
		fmt.Fprintf(&csv, "unit-%03d,connect,line-%d,,,,,plant-3\n", i, i%3)
	}
	b.uploadThroughConsole(st.url, "big", csv.String())
	b.click("#cancel")
	require.Contains(t, b.text("#action-result"), "Press again to confirm")
	b.click("#cancel")
	b.waitText("#action-result", "Cancelled: ")
	b.waitText("#state", "cancelled")
	b.waitText("#by-status", "cancelled")
	b.screenshot("manifest-cancelled")

	var cancelled, created int
	require.NoError(t, st.pool.QueryRow(context.Background(), `
		SELECT count(*) FILTER (WHERE status = 'cancelled'), count(*) FILTER (WHERE cloud_address IS NOT NULL)
		FROM devices`).Scan(&cancelled, &created))
	t.Logf("%d devices created before the cancel took hold, %d cancelled", created, cancelled)
	require.Positive(t, cancelled)
	require.Equal(t, 300, cancelled+created, "every device was either created or cancelled")
	require.Contains(t, b.text("#action-result"), fmt.Sprintf("Cancelled: %d devices will not be provisioned", cancelled))
	require.Len(t, st.sim.State().Accounts[simKey].Addresses, created, "the cloud holds exactly the devices created")
}

// The manifest page shows the cluster's limiter as `upload --wait` does (a
// Retry-After pause, a slow-down at VNC Cloud's request), its ETA follows the same
// rule (the calls owed at the slowed budget, after the pause), and the note clears
// once the limiter is back at full speed.
func TestConsoleShowsTheClusterLimiter(t *testing.T) {
	st := newStack(t, nil)
	ctx := context.Background()
	// A live process slowed down to a tenth, and a pause of an hour: every call waits.
	_, err := st.pool.Exec(ctx, `
		INSERT INTO rate_limit_processes (name, process, rate, factor, sending, slowed_at, sent_at, updated_at)
		VALUES ('vnccloud', 'elsewhere', 40, 0.1, 4, now(), now() + interval '1 hour', now() + interval '1 hour')`)
	require.NoError(t, err)
	_, err = st.pool.Exec(ctx, `UPDATE rate_limits SET paused_until = now() + interval '1 hour' WHERE name = 'vnccloud'`)
	require.NoError(t, err)

	b := newBrowser(t, st.url)
	b.signIn(st.url, adminToken)
	b.uploadThroughConsole(st.url, "held", twoLines())
	b.waitText("#limiter", "Sending 4/s of 40/s: VNC Cloud asked to slow down.")
	require.Regexp(t, `^Paused until .+ by Retry-After\. Sending`, b.text("#limiter"))
	b.waitText("#eta", "1 h 0 min") // 12 calls at 4/s after an hour's pause
	b.screenshot("manifest-limiter")

	_, err = st.pool.Exec(ctx, `UPDATE rate_limit_processes SET factor = 1, slowed_at = NULL, sending = 10`)
	require.NoError(t, err)
	_, err = st.pool.Exec(ctx, `UPDATE rate_limits SET paused_until = 'epoch' WHERE name = 'vnccloud'`)
	require.NoError(t, err)
	// (The process keeps the hour's pause it learned of: a pause is never shortened.
	// The page shows the cluster's state as the database has it.)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if eval[string](b, `document.querySelector("#limiter").innerText`) == "" {
			break
		}
		require.True(t, time.Now().Before(deadline), "the note never cleared: %q", b.text("#limiter"))
	}
	require.Equal(t, "in progress", b.text("#state"), "cleared while the manifest waits, not because it ended")
}
