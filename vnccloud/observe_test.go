package vnccloud_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

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

// TestTracerSpansEveryRequest: with a Tracer, every request is a span named by its
// operation, never by the URL (whose path holds a cloud address), with its answer's
// status; without one, the client makes none.
func TestTracerSpansEveryRequest(t *testing.T) {
	f := newFixture(t, sim.Config{})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	c, err := vnccloud.New(vnccloud.Config{BaseURL: f.base, APIKey: key, APISecret: secret, Tracer: tp.Tracer("test")})
	require.NoError(t, err)
	ctx := context.Background()
	created, err := c.Create(ctx, connect("g"))
	require.NoError(t, err)
	f.sim.SetFaults(sim.Faults{FailRate: 1})
	_, err = c.Ready(ctx, created.CloudAddress)
	require.Error(t, err)
	f.sim.SetFaults(sim.Faults{})

	spans := rec.Ended()
	require.Len(t, spans, 2)
	status := func(s sdktrace.ReadOnlySpan) int64 {
		for _, a := range s.Attributes() {
			if a.Key == "http.response.status_code" {
				return a.Value.AsInt64()
			}
		}
		return 0
	}
	require.Equal(t, "vnccloud.create", spans[0].Name())
	require.Equal(t, int64(http.StatusCreated), status(spans[0]))
	require.Equal(t, "vnccloud.ready", spans[1].Name())
	require.Equal(t, int64(http.StatusServiceUnavailable), status(spans[1]))
	require.Equal(t, codes.Error, spans[1].Status().Code)
	for _, s := range spans {
		require.NotContains(t, s.Name(), created.CloudAddress)
		for _, a := range s.Attributes() {
			require.NotContains(t, a.Value.Emit(), created.CloudAddress, "attribute %s", a.Key)
		}
	}

	untraced, err := vnccloud.New(vnccloud.Config{BaseURL: f.base, APIKey: key, APISecret: secret})
	require.NoError(t, err)
	_, err = untraced.Create(ctx, connect("g"))
	require.NoError(t, err)
	require.Len(t, rec.Ended(), 2, "a client without a Tracer made spans")
}
