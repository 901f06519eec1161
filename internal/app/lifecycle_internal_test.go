package app

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// pauseRecorder is a limiter that records its feedback.
type pauseRecorder struct {
	reports []ratelimit.Outcome
	pauses  []time.Duration
}

func (l *pauseRecorder) Wait(context.Context) error { return nil }
func (l *pauseRecorder) Pause(_ context.Context, d time.Duration) error {
	l.pauses = append(l.pauses, d)
	return nil
}
func (l *pauseRecorder) Report(o ratelimit.Outcome) { l.reports = append(l.reports, o) }

// The reconcile pass as `serve` wires it feeds the limiter by the worker's rule: a
// 503 with Retry-After pauses the cluster, a timeout is no throttling, and each call
// runs under workers.call_timeout.
func TestWiredReconcileCallsFollowTheWorkersLimiterRule(t *testing.T) {
	t.Parallel()
	cfg := config.Defaults()
	cloud, err := vnccloud.New(vnccloud.Config{BaseURL: "http://127.0.0.1:1/cloud/1.1", APIKey: "k", APISecret: "s"})
	require.NoError(t, err)
	lim := &pauseRecorder{}
	life, err := newLifecycle(cfg, nil, lim, cloud, slog.New(slog.DiscardHandler), nil)
	require.NoError(t, err)
	rec := life.Reconciler.(*reconcile.Reconciler)

	answers := []error{
		&vnccloud.APIError{Op: "delete", StatusCode: 503, RetryAfter: 2 * time.Second},
		context.DeadlineExceeded,
		nil,
	}
	for _, answer := range answers {
		var deadline time.Time
		sent, err := rec.Call(context.Background(), func(ctx context.Context) error {
			deadline, _ = ctx.Deadline()
			return answer
		})
		require.True(t, sent)
		require.Equal(t, answer, err)
		require.False(t, deadline.IsZero(), "the call has a deadline")
		require.LessOrEqual(t, time.Until(deadline), cfg.Workers.CallTimeout, "no later than call_timeout")
	}
	require.Equal(t, []ratelimit.Outcome{ratelimit.Throttled, ratelimit.Failed, ratelimit.OK}, lim.reports)
	require.Equal(t, []time.Duration{2 * time.Second}, lim.pauses, "the Retry-After paused the cluster")
}
