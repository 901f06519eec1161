package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestProvisionTwoWorkersUnderFaults is the main job's acceptance test: two serve
// processes on one database, a simulator answering 5% of requests with 503 and
// capping each account's rate, a 500-device manifest uploaded with --wait.
func TestProvisionTwoWorkersUnderFaults(t *testing.T) {
	t.Parallel()
	const rate = 20
	c := newCluster(t, clusterOpts{
		rate:    rate,
		simArgs: []string{"--fail-rate", "0.05", "--rate", "25", "--ready-delay", "1s", "--seed", "7"},
	})
	c.startServe()
	c.startServe()

	devices := factoryManifest(50, 4, 6) // 200 connect, 300 listen
	require.Len(t, devices, 500)
	path := writeFile(t, "fleet.csv", manifestCSV(devices))

	start := time.Now()
	out, errOut, code := c.run("upload", "--wait", "--fleet", "factory", path)
	require.Equal(t, 0, code, "upload --wait: %s\n%s", out, errOut)
	t.Logf("500 devices provisioned in %s", time.Since(start).Round(time.Second))

	verifyFleet(t, c, devices)
	st := c.state()
	t.Logf("peak requests in any one second: %d (VNCCLOUD_RATE %d)", st.PeakPerSecond, rate)
	require.LessOrEqual(t, st.PeakPerSecond, rate, "peak requests in any one second, both workers together")
	require.Positive(t, st.PeakPerSecond)

	// Both workers did part of the work: the rate budget was shared, not wasted.
	for _, s := range c.serves {
		require.NotContains(t, s.out.String(), "panic")
	}

	// The same manifest again changes nothing and makes no API call of its own. (The
	// scheduled reconcile, every quarter hour by default, may list and GET meanwhile:
	// only what would change or poll a device is counted.)
	before := deviceCalls(c.state())
	out, errOut, code = c.run("upload", "--wait", "--fleet", "factory", path)
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	require.Contains(t, strings.ToLower(out+errOut), "unchanged")
	time.Sleep(1500 * time.Millisecond) // a poller or sweeper tick
	require.Equal(t, before, deviceCalls(c.state()), "an identical re-upload makes no API call")
}

// deviceCalls counts the requests that create, change, reset, delete or poll an
// address, by operation: every request but the listings and GETs a reconcile makes.
func deviceCalls(st simState) map[string]int64 {
	out := map[string]int64{}
	for _, acct := range st.Accounts {
		for op, n := range acct.Counts {
			if op != "list" && op != "get" {
				out[op] += n
			}
		}
	}
	return out
}
