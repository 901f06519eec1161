package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/readiness"
)

// TestReadinessLearnsAJitteredDelay: with readiness delays spread ±50% around 1 s
// (sim --ready-jitter 0.5), two serve processes learn the account's first-poll delay
// as they provision and spend at most 2.05 calls per device (a create and, mostly,
// one readiness check), from a fresh account on; the delay stays learned in the
// database, and a serve started afterwards goes on from it. Without the learning
// every first poll would come at 1 s after the create was recorded and some of them
// find "pending" (the group commit of the creates' answers, up to half a second
// after them, hides part of the delay).
//
// It counts calls, not time: the delays are the simulator's, and a loaded machine
// only makes vncfleet record the creates later (shorter delays to learn), never
// shorter than the simulator's.
func TestReadinessLearnsAJitteredDelay(t *testing.T) {
	t.Parallel()
	// Creates are held to a few at a time (fan-out 4, one chain, 20 ms a call), below
	// the rate cap, so that readiness polls never queue behind them at the limiter:
	// polls sent late find every address ready whatever the schedule, and would let
	// this test pass without any learning.
	c := newCluster(t, clusterOpts{rate: 400, config: readinessConfig,
		simArgs: []string{"--ready-delay", "1s", "--ready-jitter", "0.5", "--seed", "12", "--latency", "20ms"}})
	c.startServe()
	c.startServe()
	pool := c.pool()

	provision := func(fleet string, n int) (creates, ready int64) {
		t.Helper()
		var b strings.Builder
		b.WriteString("device_id,action,groups\n")
		for i := range n {
			fmt.Fprintf(&b, "%s-%05d,connect,line-%d\n", fleet, i, i%10)
		}
		before := c.state().Accounts[apiKey].Counts
		out, errOut, code := c.run("upload", "--wait", "--fleet", fleet, writeFile(t, fleet+".csv", b.String()))
		require.Equal(t, 0, code, "upload --wait: %s\n%s", out, errOut)
		after := c.state().Accounts[apiKey].Counts
		return after["create"] - before["create"], after["ready"] - before["ready"]
	}
	learned := func() (firstPoll time.Duration, observations int64) {
		t.Helper()
		var secs float64
		require.NoError(t, pool.QueryRow(context.Background(),
			`SELECT first_poll_seconds, observations FROM readiness_estimates`).Scan(&secs, &observations))
		return time.Duration(secs * float64(time.Second)), observations
	}

	const first = 1000
	creates, ready := provision("first", first)
	require.EqualValues(t, first, creates)
	perDevice := float64(creates+ready) / first
	q1, obs1 := learned()
	t.Logf("fresh account: %d readiness checks for %d devices = %.3f calls per device; learned %s from %d first polls", ready, first, perDevice, q1, obs1)
	require.LessOrEqual(t, perDevice, 2.05, "calls per device, the learning's cold start included")
	require.GreaterOrEqual(t, ready, int64(first), "every device was checked once at least")
	// The delays are 0.5..1.5 s after the create; vncfleet starts counting when it
	// records the create, a little later. Only a pending answer lengthens the learned
	// delay, so it is within that range, or one update above it at most.
	require.GreaterOrEqual(t, q1, 300*time.Millisecond)
	require.LessOrEqual(t, q1, time.Duration(1.5*readiness.MaxUpdateFactor*float64(time.Second)))

	// Restarted: a new serve goes on from what the first two learned.
	for _, s := range c.serves {
		require.Equal(t, 0, s.terminate(t, 30*time.Second))
	}
	c.serves, c.apiURLs = nil, nil
	c.startServe()
	const second = 400
	creates, ready = provision("second", second)
	require.EqualValues(t, second, creates)
	perDevice = float64(creates+ready) / second
	q2, obs2 := learned()
	t.Logf("after a restart: %.3f calls per device; learned %s from %d first polls", perDevice, q2, obs2)
	// Learned, the first polls find "pending" about once in a thousand; without the
	// learning (readiness.floor = ceiling = 1s) this manifest took 2.09 calls a device.
	require.LessOrEqual(t, perDevice, 2.02, "calls per device once learned")
	require.GreaterOrEqual(t, obs2, obs1, "the estimate went on from the stored one")
}

// readinessConfig is fastConfig with creates held to a few at a time.
const readinessConfig = `
workers:
  claim_lease: 8s
  call_timeout: 2s
  shutdown_timeout: 5s
  fanout: 4
  chains: 1
rotation:
  schedule: ""
reconcile:
  schedule: ""
`
