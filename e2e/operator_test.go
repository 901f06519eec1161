package e2e

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
)

// lastLine is the last non-empty line of a command's stderr: the message main prints.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestOperatorFirstHour walks the common mistakes of a new operator with real
// processes, and holds each message to its exact wording (golden).
func TestOperatorFirstHour(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 80, simArgs: []string{"--ready-delay", "100ms"}, config: fastConfig})
	c.startServe()

	// Excel's ';'-separated file: one problem naming the separator, then read with the flag.
	semicolon := writeFile(t, "semicolon.csv", "Device ID;Action;Groups\nv1;connect;\" line-01 ;maint \"\nv2;connect;line-01\n")
	_, errOut, code := c.run("upload", "--fleet", "factory", semicolon)
	require.Equal(t, 2, code, errOut)
	require.Equal(t, "line 1, column 1: this file is separated by `;`, not `,`: export it as CSV UTF-8, or upload it with --separator ';'\n"+
		"vncfleet: manifest rejected: 1 problem; nothing was stored\n", errOut)
	out := c.upload("--fleet", "factory", "--separator", ";", "--wait", semicolon)
	require.Contains(t, out, "manifest #1 stored (fleet factory, merge, 2 rows): 2 to create, 0 to update, 0 to delete, 0 unchanged")

	// The whitespace rule: the cloud got the trimmed groups.
	groups := map[string]bool{}
	for _, a := range c.addresses() {
		for _, g := range a.Groups {
			groups[g] = true
		}
	}
	require.Equal(t, map[string]bool{"line-01": true, "maint": true}, groups)

	// status counts a device in every group it belongs to, and says so.
	out, errOut, code = c.run("status", "--fleet", "factory")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^line-01 +2 +2$`, out)
	require.Regexp(t, `(?m)^maint +1 +1$`, out, "v1 lists maint second, and counts in it")
	require.Contains(t, out, "(a device counts in every group it belongs to")

	// Windows-1252: one problem naming the encoding, then converted with the flag; the
	// metadata column comes out of export --metadata.
	cp1252 := writeFile(t, "cp1252.csv", "device_id,action,groups,Ger\xe4t\nv3,connect,line-02,\xd6lpumpe\nv4,connect,line-02,Stra\xdfe\n")
	_, errOut, code = c.run("upload", "--fleet", "factory", cp1252)
	require.Equal(t, 2, code, errOut)
	require.Equal(t, "line 1, column 4: this file is not UTF-8 but reads as Windows-1252 (a spreadsheet's plain \"CSV\"): "+
		"export it as CSV UTF-8, or upload it with --encoding windows-1252\n"+
		"vncfleet: manifest rejected: 1 problem; nothing was stored\n", errOut)
	c.upload("--fleet", "factory", "--encoding", "windows-1252", "--wait", cp1252)
	out, errOut, code = c.run("export", "--fleet", "factory", "--metadata")
	require.Equal(t, 0, code, errOut)
	records, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, "Gerät", records[0][len(records[0])-1])
	require.Equal(t, []string{"v3", "Ölpumpe"}, []string{records[3][0], records[3][len(records[3])-1]})

	// Near-miss and secret-like columns are problems; the dry run warns about open ACLs.
	_, errOut, code = c.run("upload", "--fleet", "factory", "--dry-run", writeFile(t, "typo.csv", "device_id,action,alow_groups,cloud_password\ns1,listen,line-01,x\n"))
	require.Equal(t, 2, code, errOut)
	require.Equal(t, "line 1, column 3 (alow_groups): unknown column; did you mean allow_groups?\n"+
		"line 1, column 4 (cloud_password): this column looks like it holds secrets (password), and unknown columns are stored in clear as device metadata: "+
		"remove it (an export --secrets file is not a manifest)\n"+
		"vncfleet: manifest rejected: 2 problems; nothing was stored\n", errOut)
	out, errOut, code = c.run("upload", "--fleet", "factory", "--dry-run", writeFile(t, "open.csv", "device_id,action,allow_devices\ns1,listen,\ns2,listen,v1\nv5,connect,\n"))
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "warning: 1 listen device accepts every connect address of the account (no allow_groups or allow_devices): s1\n")
	require.Contains(t, out, "warning: 1 connect device belongs to no group, so only listen devices that name it in allow_devices (or have no access list) accept it: v5\n")

	// Hostile cells: a formula and a bidi override, each a problem of its cell.
	_, errOut, code = c.run("upload", "--fleet", "factory", writeFile(t, "hostile.csv", "device_id,action\n=1+2,connect\nv\u202e9,connect\n"))
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "line 2, column 1 (device_id): device_id \"=1+2\" begins with \"=\", which a spreadsheet reads as a formula\n")
	require.Contains(t, errOut, "line 3, column 1 (device_id): device_id \"v\\u202e9\" contains an invisible formatting character (bidi control or zero-width)\n")

	// Unknown names are "not found", exit 2, everywhere.
	for _, args := range [][]string{
		{"status", "--fleet", "factroy"},
		{"manifests", "--fleet", "factroy"},
		{"export", "--fleet", "factroy"},
		{"rotate", "--fleet", "factroy"},
		{"retry", "--fleet", "factroy"},
	} {
		_, errOut, code = c.run(args...)
		require.Equal(t, 2, code, "%v: %s", args, errOut)
		require.Equal(t, `vncfleet: fleet "factroy": not found`, lastLine(errOut), args)
	}
	for _, args := range [][]string{{"status", "999"}, {"retry", "--manifest", "999"}, {"report", "999"}} {
		_, errOut, code = c.run(args...)
		require.Equal(t, 2, code, "%v: %s", args, errOut)
		require.Equal(t, "vncfleet: manifest 999: not found", lastLine(errOut), args)
	}

	// manifests and report: the API's views as commands.
	out, errOut, code = c.run("manifests", "--fleet", "factory")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?s)^ID +FLEET +MODE +ROWS +UPLOADED +BY\n#2 +factory +merge +2 .*\n#1 +factory +merge +2 `, out)
	out, errOut, code = c.run("report", "1")
	require.Equal(t, 0, code, errOut)
	require.True(t, strings.HasPrefix(out, "device_id,status,cloud_address,error,vnc_url\nv1,ready,"), out)

	// export --status: a replace deletes v2..v4; --status ready leaves them out.
	c.upload("--fleet", "factory", "--mode", "replace", "--max-deletions", "3", "--wait", writeFile(t, "only-v1.csv", "device_id,action,groups\nv1,connect,line-01;maint\n"))
	out, errOut, code = c.run("export", "--fleet", "factory", "--status", "ready")
	require.Equal(t, 0, code, errOut)
	records, err = csv.NewReader(strings.NewReader(out)).ReadAll()
	require.NoError(t, err)
	require.Len(t, records, 2, out)
	require.Equal(t, "v1", records[1][0])
	_, errOut, code = c.run("export", "--status", "redy")
	require.Equal(t, 2, code)
	require.Contains(t, lastLine(errOut), `--status: unknown status "redy"`)

	// The deletion guard says its sentence once.
	_, errOut, code = c.run("upload", "--fleet", "factory", "--mode", "replace", "--max-deletions", "0", writeFile(t, "other.csv", "device_id,action\nw1,connect\n"))
	require.Equal(t, 2, code, errOut)
	require.Equal(t, "vncfleet: this replace would delete 1 device, more than the 0 allowed, so nothing was changed; "+
		"if every deletion listed above is intended, upload again with --max-deletions 1", lastLine(errOut))

	// VNCFLEET_URL pointed at the simulator.
	_, errOut, code = c.runAt(c.simURL, "status")
	require.Equal(t, 3, code, errOut)
	require.Equal(t, "vncfleet: VNCFLEET_URL ("+c.simURL+") answers like a VNC Cloud simulator, not a vncfleet server: "+
		"point it at `vncfleet serve` (VNCFLEET_LISTEN, default 127.0.0.1:8080)", lastLine(errOut))
}

func TestDoctorAndServeSelfCheck(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{simArgs: []string{"--ready-delay", "100ms"}, config: fastConfig})
	c.startServe()
	c.upload("--wait", writeFile(t, "m.csv", "device_id,action,groups\nv1,connect,g\n"))

	out, errOut, code := c.run("doctor")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	require.Contains(t, out, "ok    database   reachable and migrated\n")
	require.Contains(t, out, "ok    secret key opens the 1 stored password sampled\n")
	require.Contains(t, out, "ok    VNC Cloud  credentials accepted (one list call)\n")
	require.Contains(t, out, "skip  Zenlayer   not configured")
	require.Regexp(t, `ok    clock      within \S+ of the database's`, out)

	// A wrong API secret and a secret key that opens none of the stored passwords:
	// doctor fails both, and serve refuses to start with them.
	bad := append(append([]string{}, c.env...), "VNCCLOUD_API_SECRET=wrong",
		"VNCFLEET_SECRET_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	badCluster := *c
	badCluster.env = bad
	out, _, code = badCluster.run("doctor")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "FAIL  VNC Cloud  credentials refused (HTTP 401): check VNCCLOUD_API_KEY and VNCCLOUD_API_SECRET\n")
	require.Regexp(t, `FAIL  secret key opens none of the 1 stored password sampled \(sealed under key ids \S+\): `+
		`set VNCFLEET_SECRET_KEY to the key that sealed them, or list that key in VNCFLEET_OLD_SECRET_KEYS`, out)

	code, errOut = runServeToExit(t, append(bad, "VNCFLEET_LISTEN="+freeAddr(t)))
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "serve cannot work and does not start: secret key: opens none of the 1 stored password sampled")
	require.Contains(t, errOut, "VNC Cloud: credentials refused (HTTP 401)")

	// An unmigrated database: "run vncfleet migrate", not a missing relation.
	empty := dbtest.NewEmpty(t)
	unmigrated := append(append([]string{}, c.env...), "DATABASE_URL="+empty, "VNCFLEET_LISTEN="+freeAddr(t))
	code, errOut = runServeToExit(t, unmigrated)
	require.Equal(t, 3, code, errOut)
	own, err := os.ReadDir("../migrations/sql")
	require.NoError(t, err)
	require.Contains(t, errOut, fmt.Sprintf("database: not migrated (%d of vncfleet's migrations missing, the first 0001_schema): run `vncfleet migrate`", len(own)))
	require.NotContains(t, errOut, "SQLSTATE")
}

// TestDoctorNamesEachFailure runs doctor with one thing wrong at a time, each alone
// enough to fail it (exit 1) with its own line: the Zenlayer credentials, the webhook,
// the VNC Cloud key, the database's migrations. What is right is said to be right.
func TestDoctorNamesEachFailure(t *testing.T) {
	t.Parallel()
	const zenlayerKey, zenlayerPassword = "zl-key", "zl-password-value"
	c := newCluster(t, clusterOpts{simArgs: []string{"--zenlayer-account", zenlayerKey + ":" + zenlayerPassword}})
	receiver := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(receiver.Close)
	receiverAddr := strings.TrimPrefix(receiver.URL, "http://")
	configured := append(append([]string{}, c.env...),
		"ZENLAYER_API_URL="+c.simURL+"/api/v2", "ZENLAYER_ACCESS_KEY_ID="+zenlayerKey, "ZENLAYER_ACCESS_KEY_PASSWORD="+zenlayerPassword,
		"VNCFLEET_WEBHOOK_URL="+receiver.URL+"/events", "VNCFLEET_WEBHOOK_SECRET="+strings.Repeat("w", 32))
	// doctor talks to no vncfleet server: VNCFLEET_URL points nowhere.
	doctor := func(env ...string) (string, int) {
		t.Helper()
		withEnv := *c
		withEnv.env = append(append([]string{}, configured...), env...)
		out, errOut, code := withEnv.runAt("http://"+freeAddr(t), "doctor")
		if code != 0 {
			require.Equal(t, "vncfleet: a check failed: see its line above", lastLine(errOut))
		}
		return out, code
	}

	out, code := doctor()
	require.Equal(t, 0, code, out)
	require.Empty(t, failedChecks(out), out)
	require.Contains(t, out, "ok    Zenlayer   credentials accepted (asked for an instance that does not exist)\n")
	require.Contains(t, out, "ok    webhook    "+receiverAddr+" accepts connections\n")

	out, code = doctor("ZENLAYER_ACCESS_KEY_PASSWORD=wrong-password")
	require.Equal(t, 1, code, out)
	require.Equal(t, []string{"FAIL  Zenlayer   credentials refused (HTTP 401 SIGNATURE_FAILURE): check ZENLAYER_ACCESS_KEY_ID and ZENLAYER_ACCESS_KEY_PASSWORD"},
		failedChecks(out))

	nobody := freeAddr(t)
	out, code = doctor("VNCFLEET_WEBHOOK_URL=http://" + nobody + "/events")
	require.Equal(t, 1, code, out)
	failed := failedChecks(out)
	require.Len(t, failed, 1, out)
	require.True(t, strings.HasPrefix(failed[0], "FAIL  webhook    cannot connect to "+nobody+" ("), out)

	out, code = doctor("VNCCLOUD_API_KEY=")
	require.Equal(t, 1, code, out)
	require.Equal(t, []string{"FAIL  VNC Cloud  no credentials: set VNCCLOUD_API_KEY and VNCCLOUD_API_SECRET (or VNCCLOUD_API_SECRET_FILE)"},
		failedChecks(out))

	own, err := os.ReadDir("../migrations/sql")
	require.NoError(t, err)
	out, code = doctor("DATABASE_URL=" + dbtest.NewEmpty(t))
	require.Equal(t, 1, code, out)
	require.Equal(t, []string{fmt.Sprintf("FAIL  database   not migrated (%d of vncfleet's migrations missing, the first 0001_schema): run `vncfleet migrate`", len(own))},
		failedChecks(out))
	require.Contains(t, out, "skip  secret key needs the database\n")
	require.Contains(t, out, "skip  clock      needs the database\n")
}

// failedChecks are the lines of doctor's output that report a failed check.
func failedChecks(out string) []string {
	var failed []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "FAIL ") {
			failed = append(failed, line)
		}
	}
	return failed
}

// runServeToExit runs `serve`, which must refuse to start, and returns its exit code
// and stderr.
func runServeToExit(t *testing.T, env []string) (int, string) {
	t.Helper()
	p := start(t, "serve-refused", env, "serve")
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		p.kill()
		t.Fatalf("serve did not refuse to start: %s", p.out.String())
	}
	return p.cmd.ProcessState.ExitCode(), p.out.String()
}

// TestWaitShowsTheCloud: with the cloud answering 503 to every call, the wait says so
// (and the backoff), and --timeout ends it with its own exit code; retry --now then
// takes the devices out of backoff once the cloud has recovered, and both end ready.
func TestWaitShowsTheCloud(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 80, simArgs: []string{"--ready-delay", "100ms", "--fail-rate", "1"}, config: fastConfig})
	c.startServe()
	manifest := writeFile(t, "m.csv", "device_id,action,groups\nv1,connect,g\nv2,connect,g\n")
	out, errOut, code := c.run("upload", "--wait", "--timeout", "15s", manifest)
	require.Equal(t, 4, code, "%s\n%s", out, errOut)
	require.Regexp(t, `VNC Cloud: answered 503 to (\d+) of the (\d+) calls? in the last minute \(\d+%\)`, errOut)
	require.Contains(t, errOut, "in backoff, the next retry in")
	require.Equal(t, "vncfleet: stopped waiting for manifest #1: --timeout passed; the work goes on on the server (vncfleet status follows it)", lastLine(errOut))

	c.simDo("POST", "/sim/faults", map[string]any{"failRate": 0})
	out, errOut, code = c.run("retry", "--now", "--wait")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	// retry --now takes out of backoff only the devices no worker holds at that
	// moment (store.RetryFailed); a device being tried, or due already, goes on by
	// itself. So it names 0 to 2 of them, and what must hold is that both end ready.
	require.Regexp(t, `^[0-2] failed or waiting devices? scheduled again`, out)
	eventually(t, 2*time.Minute, "both devices ready", func() bool {
		var st struct {
			ByStatus map[string]int `json:"byStatus"`
		}
		c.apiGet("/v1/status", &st)
		return st.ByStatus["ready"] == 2
	})
}
