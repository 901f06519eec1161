package jobs

import (
	"context"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/ratelimit"
)

// Provisioning and rotation share the rate budget (issue 12): every call says whose
// it is, and the limiter splits the slots by vnccloud.onboarding_share while both
// wait. The class follows the operation, not the queue, so a rotation's readiness
// polls count as rotation and a manifest's as onboarding.

// workClass is the budget class of a work item's calls.
func workClass(ctx context.Context, item store.WorkItem) context.Context {
	return ratelimit.WithClass(ctx, classOf(fleet.Op(item.Op) == fleet.OpRotate))
}

// pollClass is the budget class of a readiness poll: finishing work, served before
// the new work of its class.
func pollClass(ctx context.Context, item store.PollItem) context.Context {
	return ratelimit.WithClass(ratelimit.Finishing(ctx), classOf(item.Rotation))
}

// classOf is rotation's class for a rotation's calls, onboarding's for the rest.
func classOf(rotation bool) ratelimit.Class {
	if rotation {
		return ratelimit.Rotation
	}
	return ratelimit.Onboarding
}

// finishingAfterFirst marks the calls of a device's operation after its first (a
// rotation's reset after its GET) as finishing work already begun, so that they go
// before the first calls of other devices: a run's resets start with its first
// answers, not after a fan-out's worth of GETs. It returns ctx for this call and
// whether the operation has begun.
func finishingAfterFirst(ctx context.Context, begun bool) (context.Context, bool) {
	if begun {
		return ratelimit.Finishing(ctx), true
	}
	return ctx, true
}
