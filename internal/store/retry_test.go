package store

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
)

// TestRetryNowEndsBackoff: retry --now makes devices waiting out a backoff due at
// once, under the retry's key whose job is enqueued; without it they keep waiting.
func TestRetryNowEndsBackoff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newStagedEnv(t)
	_, err := e.upload(t, fleet.ModeMerge, "device_id,action,groups\nv1,connect,g\nv2,connect,g\nv3,connect,g\n")
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `UPDATE devices SET next_attempt_at = now() + interval '1 hour' WHERE device_id IN ('v1', 'v2')`)
	require.NoError(t, err)
	enqueued := map[string]int{}
	enqueue := func(_ context.Context, _ pgx.Tx, key string, devices int) error {
		enqueued[key] = devices
		return nil
	}

	n, _, err := e.st.RetryFailed(ctx, "f", 0, false, enqueue)
	require.NoError(t, err)
	require.Zero(t, n, "no failed device: nothing to retry")
	require.Equal(t, 2, e.count(t, `SELECT count(*) FROM devices WHERE next_attempt_at > now()`))

	n, key, err := e.st.RetryFailed(ctx, "f", 0, true, enqueue)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, map[string]int{key: 2}, enqueued)
	require.Zero(t, e.count(t, `SELECT count(*) FROM devices WHERE next_attempt_at > now()`))
	require.Equal(t, 2, e.count(t, `SELECT count(*) FROM devices WHERE work_key = $1`, key))
}
