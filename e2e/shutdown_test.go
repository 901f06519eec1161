package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestGracefulShutdown sends SIGTERM to a serve process in the middle of a run: it
// stops fetching, lets its in-flight calls finish and record their results, and exits
// 0 within the shutdown timeout; a new process then finishes the work and nothing is
// lost or duplicated.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 40, config: fastConfig, simArgs: []string{"--latency", "150ms", "--ready-delay", "200ms"}})
	first := c.startServe()
	devices := factoryManifest(10, 4, 4)
	c.upload("--fleet", "stop", writeFile(t, "stop.csv", manifestCSV(devices)))
	eventually(t, 30*time.Second, "work under way", func() bool { return c.state().Accounts[apiKey].Creates > 10 })

	start := time.Now()
	require.Equal(t, 0, first.terminate(t, 20*time.Second), "SIGTERM drains and exits 0")
	require.Less(t, time.Since(start), 15*time.Second, "within the shutdown timeout")
	require.Contains(t, first.out.String(), "shutting down")
	require.Contains(t, first.out.String(), "stopped")

	c.serves, c.apiURLs = nil, nil
	c.startServe()
	c.waitSettled(2 * time.Minute)
	verifyFleet(t, c, devices) // no orphan: every in-flight create was recorded before exit
}
