package cloudop_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// recordingLimiter is a ratelimit.Limiter that records what it is told.
type recordingLimiter struct {
	mu      sync.Mutex
	waitErr error
	reports []ratelimit.Outcome
	pauses  []time.Duration
}

func (l *recordingLimiter) Wait(context.Context) error { return l.waitErr }
func (l *recordingLimiter) Pause(_ context.Context, d time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pauses = append(l.pauses, d)
	return nil
}
func (l *recordingLimiter) Report(o ratelimit.Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reports = append(l.reports, o)
}

// TestLimitedFeedback is the one rule of limiter feedback that the worker's and
// reconciliation's calls share.
func TestLimitedFeedback(t *testing.T) {
	t.Parallel()
	api := func(status int, retryAfter time.Duration) error {
		return &vnccloud.APIError{StatusCode: status, RetryAfter: retryAfter}
	}
	for _, tc := range []struct {
		name   string
		err    error
		report ratelimit.Outcome
		pause  []time.Duration
	}{
		{"answered", nil, ratelimit.OK, nil},
		{"503 with Retry-After pauses every sender", api(503, 3*time.Second), ratelimit.Throttled, []time.Duration{3 * time.Second}},
		{"429 with Retry-After", api(429, time.Second), ratelimit.Throttled, []time.Duration{time.Second}},
		{"503 without Retry-After only slows down", api(503, 0), ratelimit.Throttled, nil},
		{"a 404 is an answer that says nothing of the rate", vnccloud.ErrNotFound, ratelimit.Failed, nil},
		{"a 502 is no throttling", api(http.StatusBadGateway, 0), ratelimit.Failed, nil},
		{"a timeout is no throttling", context.DeadlineExceeded, ratelimit.Failed, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := &recordingLimiter{}
			var hadDeadline bool
			sent, err := cloudop.Limited{Limiter: l, Timeout: time.Minute}.Call(context.Background(), func(ctx context.Context) error {
				_, hadDeadline = ctx.Deadline()
				return tc.err
			})
			require.True(t, sent)
			require.Equal(t, tc.err, err)
			require.True(t, hadDeadline, "the call runs under the timeout")
			require.Equal(t, []ratelimit.Outcome{tc.report}, l.reports)
			require.Equal(t, tc.pause, l.pauses)
		})
	}
}

func TestLimitedCallNotSentWhenTheWaitEnds(t *testing.T) {
	t.Parallel()
	l := &recordingLimiter{waitErr: context.Canceled}
	called := false
	sent, err := cloudop.Limited{Limiter: l}.Call(context.Background(), func(context.Context) error { called = true; return nil })
	require.False(t, sent)
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, called)
	require.Empty(t, l.reports, "nothing was answered")
}

// A task that carries the ETag its caller read writes with it at once; a 412 then
// brings the usual fresh GET.
func TestTaskETagSkipsTheFirstGET(t *testing.T) {
	t.Parallel()
	c, s := newCloud(t, nil)
	ctx := context.Background()
	created := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpCreate, Spec: vnccloud.Spec{Action: vnccloud.ActionConnect}})
	require.Equal(t, fleet.Created, created.Outcome, "%v", created.Err)
	details, rep := cloudop.Inspect(ctx, c, cloudop.Direct, created.Address)
	require.Empty(t, rep.Outcome, "%v", rep.Err)
	require.Equal(t, []string{"get"}, operations(rep.Calls))

	stale := details.ETag
	rotated := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpRotate, CloudAddress: created.Address, ETag: stale})
	require.Equal(t, fleet.Rotated, rotated.Outcome, "%v", rotated.Err)
	require.Equal(t, []string{"reset"}, operations(rotated.Calls), "no GET of its own")

	deleted := cloudop.Delete(ctx, c, cloudop.Direct, cloudop.Task{CloudAddress: created.Address, ETag: stale})
	require.Equal(t, fleet.Deleted, deleted.Outcome, "%v", deleted.Err)
	require.Equal(t, []string{"delete", "get", "delete"}, operations(deleted.Calls), "the stale ETag met a 412")
	require.True(t, errors.Is(deleted.Calls[0].Err, vnccloud.ErrPreconditionFailed))
	require.Empty(t, addressOf(s, created.Address).CloudAddress, "gone")

	_, gone := cloudop.Inspect(ctx, c, cloudop.Direct, created.Address)
	require.Equal(t, fleet.Vanished, gone.Outcome)
}
