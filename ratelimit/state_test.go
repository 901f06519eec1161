package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/ratelimit"
)

// TestPublishShowsTheClusterSlowedDown: two processes on one database publish their
// limiter's state; one of them slowed down by a run of 503s makes the cluster's state
// (what the progress answer reads) say so, with the lowest factor and the requests
// sent by both; it clears when that process recovers, and a stopped process's row
// goes with it.
func TestPublishShowsTheClusterSlowedDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, url := dbtest.New(t)
	st := store.New(pool, nil)
	open := func() *pgxpool.Pool {
		p, err := pgxpool.New(ctx, url)
		require.NoError(t, err)
		t.Cleanup(p.Close)
		return p
	}
	cfg := ratelimit.Config{Rate: 40, Recovery: 300 * time.Millisecond}
	slow, err := ratelimit.NewCluster(open(), cfg)
	require.NoError(t, err)
	fast, err := ratelimit.NewCluster(open(), cfg)
	require.NoError(t, err)

	state, err := st.LimiterState(ctx, "vnccloud")
	require.NoError(t, err)
	require.Nil(t, state, "nobody publishes yet")

	pubCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	for _, c := range []*ratelimit.Cluster{slow, fast} {
		go func() { c.Publish(pubCtx, 50*time.Millisecond); done <- struct{}{} }()
	}
	for range 3 {
		slow.Report(ratelimit.Throttled)
	}
	require.InDelta(t, 0.5, slow.Factor(), 1e-9)
	// Both keep sending: their requests show in the cluster's rate (and a slowed
	// process counts as slowed only while it sends).
	sendCtx, stopSending := context.WithCancel(ctx)
	sent := make(chan struct{}, 2)
	for _, c := range []*ratelimit.Cluster{slow, fast} {
		go func() {
			defer func() { sent <- struct{}{} }()
			for c.Wait(sendCtx) == nil {
			}
		}()
	}
	require.Eventually(t, func() bool {
		state, err = st.LimiterState(ctx, "vnccloud")
		require.NoError(t, err)
		return state != nil && state.Processes == 2 && state.Slowed == 1 && state.Sending > 0
	}, 10*time.Second, 20*time.Millisecond, "both processes published, one slowed: %+v", state)
	require.InDelta(t, 40.0, state.Rate, 1e-9)
	require.InDelta(t, 0.5, state.Factor, 1e-9, "the lowest factor")
	require.NotNil(t, state.SlowedSince)
	require.LessOrEqual(t, state.Sending, 45.0, "at most the cap, give or take a second's measure")
	stopSending()
	<-sent
	<-sent

	// Successes bring the slowed process back to full speed (Recovery 300ms), and the
	// cluster's state follows.
	require.Eventually(t, func() bool {
		slow.Report(ratelimit.OK)
		return slow.Factor() == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		state, err = st.LimiterState(ctx, "vnccloud")
		require.NoError(t, err)
		return state != nil && state.Slowed == 0
	}, 10*time.Second, 20*time.Millisecond, "%+v", state)
	require.InDelta(t, 1.0, state.Factor, 1e-9)
	require.Nil(t, state.SlowedSince)

	stop()
	<-done
	<-done
	state, err = st.LimiterState(ctx, "vnccloud")
	require.NoError(t, err)
	require.Nil(t, state, "stopped processes take their rows with them")
}

// TestPublishIgnoresGoneProcesses: a row a killed process left is not counted once it
// is a few seconds old, and the next process to start deletes it once it is old.
func TestPublishIgnoresGoneProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := dbtest.New(t)
	st := store.New(pool, nil)
	_, err := pool.Exec(ctx, `INSERT INTO rate_limit_processes (name, process, rate, factor, sending, slowed_at, updated_at) VALUES
		('vnccloud', 'killed-lately', 40, 0.1, 4, now(), now() - interval '10 seconds'),
		('vnccloud', 'killed-long-ago', 40, 0.1, 4, now(), now() - interval '2 hours')`)
	require.NoError(t, err)
	state, err := st.LimiterState(ctx, "vnccloud")
	require.NoError(t, err)
	require.Nil(t, state, "no live process")

	c, err := ratelimit.NewCluster(pool, ratelimit.Config{Rate: 40})
	require.NoError(t, err)
	pubCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Publish(pubCtx, 50*time.Millisecond) }()
	require.Eventually(t, func() bool {
		state, err = st.LimiterState(ctx, "vnccloud")
		require.NoError(t, err)
		return state != nil
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, state.Processes)
	require.Zero(t, state.Slowed, "the killed process's slow-down is not the cluster's")
	var left []string
	rows, err := pool.Query(ctx, `SELECT process FROM rate_limit_processes WHERE process LIKE 'killed%' ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var p string
		require.NoError(t, rows.Scan(&p))
		left = append(left, p)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"killed-lately"}, left, "the row of an hour ago is deleted")
	stop()
	<-done
}
