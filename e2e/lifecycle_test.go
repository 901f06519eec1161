package e2e

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fastConfig shortens the timings that bound recovery, so that crash tests finish in
// seconds: claims expire 8 s after a process dies, and reconciliation waits at most
// 10 s for an unanswered create to end. Scheduled rotation and
// reconciliation are off: the tests run them by hand.
const fastConfig = `
workers:
  claim_lease: 8s
  call_timeout: 2s
  shutdown_timeout: 5s
rotation:
  schedule: ""
reconcile:
  schedule: ""
`

func reconcileTwice(t *testing.T, c *cluster) {
	t.Helper()
	out, errOut, code := c.run("reconcile")
	require.Equal(t, 0, code, "reconcile: %s\n%s", out, errOut)
	c.waitSettled(2 * time.Minute)
	// Level-triggered and idempotent: a second run finds nothing left to do.
	out, errOut, code = c.run("reconcile", "--json")
	require.Equal(t, 0, code, "reconcile: %s\n%s", out, errOut)
	for _, field := range []string{`"vanished": null`, `"adopted": null`, `"deletedOrphans": null`, `"drifted": null`} {
		require.Contains(t, out, field, "second reconcile acted: %s", out)
	}
}

// TestKillWorkersDuringProvisioningAndRotation kills serve processes with SIGKILL at
// random moments, starts new ones, and checks that after a reconcile every device is
// ready with the password the cloud holds, and no address is orphaned or duplicated.
func TestKillWorkersDuringProvisioningAndRotation(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 60, config: fastConfig, simArgs: []string{"--ready-delay", "300ms", "--latency", "20ms"}})
	c.startServe()
	c.startServe()
	devices := factoryManifest(20, 5, 5)
	c.upload("--fleet", "crash", writeFile(t, "crash.csv", manifestCSV(devices)))

	chaos := func(rounds int) {
		for i := 0; i < rounds; i++ {
			time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond)
			victim := rand.IntN(len(c.serves))
			c.serves[victim].kill() // SIGKILL: no chance to release claims or record results
			c.serves = append(c.serves[:victim], c.serves[victim+1:]...)
			c.apiURLs = append(c.apiURLs[:victim], c.apiURLs[victim+1:]...)
			c.startServe()
		}
	}
	chaos(4)
	c.waitSettled(3 * time.Minute)
	reconcileTwice(t, c)
	verifyFleet(t, c, devices)

	out, errOut, code := c.run("rotate", "--all")
	require.Equal(t, 0, code, "rotate: %s\n%s", out, errOut)
	chaos(3)
	c.waitSettled(3 * time.Minute)
	reconcileTwice(t, c)
	verifyFleet(t, c, devices)
	for _, a := range c.addresses() {
		require.Greater(t, a.Version, 1, "every password was reset at least once")
	}
}

// TestLostCreateResponsesEndWithOneAddressPerDevice: 5% of creates are committed but
// answered 503 (2.5%) or have their connection dropped (2.5%); after reconciliation
// the account holds exactly one address per device.
func TestLostCreateResponsesEndWithOneAddressPerDevice(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 80, config: fastConfig,
		simArgs: []string{"--lost-rate", "0.025", "--drop-rate", "0.025", "--ready-delay", "200ms", "--seed", "11"}})
	c.startServe()
	devices := factoryManifest(20, 5, 5)
	out, errOut, code := c.run("upload", "--wait", "--fleet", "lossy", writeFile(t, "lossy.csv", manifestCSV(devices)))
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	require.Greater(t, len(c.addresses()), len(devices), "lost responses made surplus addresses (the test must exercise them)")
	// Right after the upload: one run settles every lost create.
	reconcileTwice(t, c)
	verifyFleet(t, c, devices)
}

// TestReplaceModeAndDeletionGuard: replace deletes what the manifest leaves out, and
// a mass deletion without --max-deletions is refused with its plan and changes nothing.
func TestReplaceModeAndDeletionGuard(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 80, config: fastConfig, simArgs: []string{"--ready-delay", "100ms"}})
	c.startServe()
	all := factoryManifest(4, 3, 2) // 20 devices
	out, errOut, code := c.run("upload", "--wait", "--fleet", "r", writeFile(t, "all.csv", manifestCSV(all)))
	require.Equal(t, 0, code, "%s\n%s", out, errOut)

	// Two of 20 left out: within the default guard (10% of the fleet).
	keep := all[:len(all)-2]
	out, errOut, code = c.run("upload", "--wait", "--fleet", "r", "--mode", "replace", writeFile(t, "keep.csv", manifestCSV(keep)))
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	verifyFleet(t, c, keep)
	rows := c.export("--fleet", "r")
	require.Equal(t, "deleted", rows[all[len(all)-1].id]["status"])

	// Only line 0 kept: 13 deletions, over the guard.
	small := all[:5]
	before := c.state().Requests
	dry, errOut, code := c.run("upload", "--dry-run", "--fleet", "r", "--mode", "replace", writeFile(t, "small.csv", manifestCSV(small)))
	require.Equal(t, 0, code, errOut)
	for _, d := range keep[5:] {
		require.Contains(t, dry, d.id, "dry run lists every deletion by device_id")
	}
	// The default limit (max_deletions_percent 10, max_deletions_min 1) of the 18
	// devices: 1. Said once, in the CLI's words (golden).
	require.Contains(t, dry, "\nnote: this replace would delete 13 devices, more than the 1 allowed; "+
		"if every deletion listed above is intended, upload again with --max-deletions 13\n")
	out, errOut, code = c.run("upload", "--fleet", "r", "--mode", "replace", writeFile(t, "small.csv", manifestCSV(small)))
	require.Equal(t, 2, code, "guard refuses: %s\n%s", out, errOut)
	require.Contains(t, out+errOut, keep[len(keep)-1].id, "the refusal shows the plan")
	require.Equal(t, "vncfleet: this replace would delete 13 devices, more than the 1 allowed, so nothing was changed; "+
		"if every deletion listed above is intended, upload again with --max-deletions 13", lastLine(errOut))
	require.Equal(t, 1, strings.Count(out+errOut, "more than the 1 allowed"), "said once: %s\n%s", out, errOut)
	require.NotContains(t, out+errOut, "max_deletions", "the API's parameter is no CLI user's")
	require.Equal(t, before, c.state().Requests, "a refused upload makes no API call")
	verifyFleet(t, c, keep)

	out, errOut, code = c.run("upload", "--wait", "--fleet", "r", "--mode", "replace", "--max-deletions", fmt.Sprint(len(keep)-len(small)),
		writeFile(t, "small.csv", manifestCSV(small)))
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	verifyFleet(t, c, small)
}

// TestDriftIsRepaired changes groups and deletes an address behind vncfleet's back.
func TestDriftIsRepaired(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 80, config: fastConfig, simArgs: []string{"--ready-delay", "100ms"}})
	c.startServe()
	devices := factoryManifest(3, 3, 3)
	out, errOut, code := c.run("upload", "--wait", "--fleet", "d", writeFile(t, "d.csv", manifestCSV(devices)))
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	rows := c.export()
	changed := rows["viewer-000-01"]["cloud_address"]
	c.simDo("POST", "/sim/accounts/"+apiKey+"/addresses/"+changed+"/force",
		map[string]any{"allowedActions": []string{"connect"}, "groups": []string{"intruders"}})
	gone := rows["viewer-001-00"]["cloud_address"] // named by server-001-00's allow_devices
	c.simDo("DELETE", "/sim/accounts/"+apiKey+"/addresses/"+gone, nil)

	out, errOut, code = c.run("reconcile", "--json")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	require.Contains(t, out, "viewer-000-01", "the drifted device is reported")
	require.Contains(t, out, "viewer-001-00", "the vanished device is reported")
	c.waitSettled(time.Minute)
	verifyFleet(t, c, devices)
	require.NotEqual(t, gone, c.export()["viewer-001-00"]["cloud_address"], "a new address replaced the vanished one")
	_ = strings.TrimSpace
}
