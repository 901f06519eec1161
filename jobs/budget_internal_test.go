package jobs

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/ratelimit"
)

// TestBudgetClasses: a rotation's calls and polls are rotation, everything else
// onboarding (class.go's rule lives in the limiter; which call is whose lives here).
func TestBudgetClasses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	require.Equal(t, ratelimit.Rotation, ratelimit.ClassOf(workClass(ctx, store.WorkItem{Op: string(fleet.OpRotate)})))
	for _, op := range []fleet.Op{fleet.OpCreate, fleet.OpUpdate, fleet.OpDelete} {
		require.Equal(t, ratelimit.Onboarding, ratelimit.ClassOf(workClass(ctx, store.WorkItem{Op: string(op)})), op)
	}
	require.Equal(t, ratelimit.Rotation, ratelimit.ClassOf(pollClass(ctx, store.PollItem{Rotation: true})))
	require.Equal(t, ratelimit.Onboarding, ratelimit.ClassOf(pollClass(ctx, store.PollItem{})))

	first, begun := finishingAfterFirst(ctx, false)
	require.True(t, begun)
	require.Equal(t, ctx, first, "a device's first call is new work")
	second, _ := finishingAfterFirst(ctx, begun)
	require.NotEqual(t, ctx, second, "its later calls finish work begun")
}
