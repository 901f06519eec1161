package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Lifecycle runs the scheduled lifecycle work; internal/lifecycle provides it.
type Lifecycle interface {
	ScheduledRotation(ctx context.Context) error
	ScheduledReconcile(ctx context.Context) error
}

// singleton keeps at most one job of a kind queued or running.
func singleton(maxAttempts int) river.InsertOpts {
	return river.InsertOpts{
		MaxAttempts: maxAttempts,
		UniqueOpts: river.UniqueOpts{ByState: []rivertype.JobState{
			rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateScheduled, rivertype.JobStateRunning,
		}},
	}
}

// RotationArgs schedules the rotations that are due (a cron-driven periodic job).
type RotationArgs struct{}

func (RotationArgs) Kind() string                 { return "rotation_schedule" }
func (RotationArgs) InsertOpts() river.InsertOpts { return singleton(3) }

type RotationWorker struct {
	river.WorkerDefaults[RotationArgs]
	deps *Deps
}

func (w *RotationWorker) Work(ctx context.Context, _ *river.Job[RotationArgs]) error {
	return w.deps.Lifecycle.ScheduledRotation(ctx)
}

// ReconcileArgs runs reconciliation (a cron-driven periodic job).
type ReconcileArgs struct{}

func (ReconcileArgs) Kind() string                 { return "reconcile" }
func (ReconcileArgs) InsertOpts() river.InsertOpts { return singleton(3) }

type ReconcileWorker struct {
	river.WorkerDefaults[ReconcileArgs]
	deps *Deps
}

// Timeout: listing a large account and checking drift at a low rate takes a while.
func (w *ReconcileWorker) Timeout(*river.Job[ReconcileArgs]) time.Duration { return time.Hour }

func (w *ReconcileWorker) Work(ctx context.Context, _ *river.Job[ReconcileArgs]) error {
	return w.deps.Lifecycle.ScheduledReconcile(ctx)
}
