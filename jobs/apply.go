package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/vncfleet/vncfleet/internal/store"
)

// ApplyManifestArgs applies a large manifest's staged rows to devices, batch by batch
// (store.ApplyStaged), after its upload has committed.
type ApplyManifestArgs struct {
	ManifestID int64 `json:"manifest_id"`
}

func (ApplyManifestArgs) Kind() string { return "apply_manifest" }

// Each batch commits with its cursor, so a retry resumes where the last attempt
// stopped, and two jobs for one manifest only take turns: the fleet's row lock
// serializes their batches. So the job is not unique: the sweeper enqueues another
// for a manifest whose apply has stalled (its process died while the job ran, which
// River rescues only much later), and if every attempt failed, the fleet's next
// upload would apply the rows itself.
func (ApplyManifestArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 50} }

// ApplyManifestWorker runs the batches until the manifest is applied.
type ApplyManifestWorker struct {
	river.WorkerDefaults[ApplyManifestArgs]
	deps *Deps
}

func (w *ApplyManifestWorker) Timeout(*river.Job[ApplyManifestArgs]) time.Duration { return time.Hour }

func (w *ApplyManifestWorker) Work(ctx context.Context, job *river.Job[ApplyManifestArgs]) error {
	client, err := river.ClientFromContextSafely[pgx.Tx](ctx)
	if err != nil {
		return err
	}
	consoleURLs := func(ctx context.Context, tx pgx.Tx, wanted []store.ConsoleURLWanted) error {
		return EnqueueConsoleURLs(ctx, client, tx, wanted)
	}
	start := time.Now()
	for batches := 1; ; batches++ {
		done, err := tracedApplyBatch(ctx, job.Args.ManifestID, func(ctx context.Context) (bool, error) {
			return w.deps.Store.ApplyStaged(ctx, job.Args.ManifestID, consoleURLs)
		})
		if errors.Is(err, store.ErrFleetBusy) {
			return river.JobSnooze(time.Second)
		}
		if err != nil {
			return err
		}
		if done {
			w.deps.Logger.InfoContext(ctx, "manifest applied", "manifest", job.Args.ManifestID,
				"batches", batches, "duration", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err // shutting down: the next attempt resumes from the cursor
		}
	}
}

// EnqueueApply inserts the job that applies a staged manifest, in tx.
func EnqueueApply(ctx context.Context, client *river.Client[pgx.Tx], tx pgx.Tx, manifestID int64) error {
	if _, err := client.InsertTx(ctx, tx, ApplyManifestArgs{ManifestID: manifestID}, nil); err != nil {
		return fmt.Errorf("enqueue apply of manifest %d: %w", manifestID, err)
	}
	return nil
}
