package vnccloud_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// TestObserveCountsEveryRequest: with 503s from the simulator and a paged listing, the
// observer sees exactly the requests the simulator received, per operation and in
// total, and a 503 as code 503.
func TestObserveCountsEveryRequest(t *testing.T) {
	f := newFixture(t, sim.Config{})
	var mu sync.Mutex
	seen := map[string]int64{}
	codes := map[int]int64{}
	c, err := vnccloud.New(vnccloud.Config{BaseURL: f.base, APIKey: key, APISecret: secret,
		Observe: func(op string, status int, elapsed time.Duration) {
			require.GreaterOrEqual(t, elapsed, time.Duration(0))
			mu.Lock()
			defer mu.Unlock()
			seen[op]++
			codes[status]++
		}})
	require.NoError(t, err)
	ctx := context.Background()
	var addrs []string
	for range 7 {
		created, err := c.Create(ctx, connect("g"))
		require.NoError(t, err)
		addrs = append(addrs, created.CloudAddress)
	}
	for a, err := range c.List(ctx, vnccloud.ListOptions{Limit: 3}) {
		require.NoError(t, err)
		require.NotEmpty(t, a)
	}
	f.sim.SetFaults(sim.Faults{FailRate: 1})
	_, err = c.Ready(ctx, addrs[0])
	require.Error(t, err)
	f.sim.SetFaults(sim.Faults{})
	_, err = c.Get(ctx, addrs[0])
	require.NoError(t, err)
	require.NoError(t, c.Delete(ctx, addrs[1], ""))
	// Refused before sending: not a request, not observed.
	_, err = c.Get(ctx, "not an address")
	require.Error(t, err)

	counts := f.sim.State().Accounts[key].Counts
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[string]int64{"create": 7, "list": 3, "ready": 1, "get": 1, "delete": 1}, seen)
	for op, n := range seen {
		require.Equal(t, counts[op], n, op)
	}
	require.Equal(t, f.requests(), int64(13))
	require.Equal(t, int64(1), codes[http.StatusServiceUnavailable])
}

// TestObserveLeavesSharedClientAlone: the caller's http.Client keeps its transport.
func TestObserveLeavesSharedClientAlone(t *testing.T) {
	f := newFixture(t, sim.Config{})
	hc := &http.Client{}
	var n int
	c, err := vnccloud.New(vnccloud.Config{BaseURL: f.base, APIKey: key, APISecret: secret, HTTPClient: hc,
		Observe: func(string, int, time.Duration) { n++ }})
	require.NoError(t, err)
	_, err = c.Create(context.Background(), connect())
	require.NoError(t, err)
	require.Nil(t, hc.Transport)
	require.Equal(t, 1, n)
}
