package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// SweepArgs runs the sweeper once (a periodic job). Work jobs end when their queue is
// empty and a killed process leaves its job "running" until River rescues it, so
// owed work can be left without a job that will do it; the sweeper finds every queue
// with claimable work and no queued job and enqueues one. This makes progress
// level-triggered: whatever was lost, the rows say what is owed.
type SweepArgs struct{}

func (SweepArgs) Kind() string { return "sweep" }

func (SweepArgs) InsertOpts() river.InsertOpts { return singleton(1) }

type SweepWorker struct {
	river.WorkerDefaults[SweepArgs]
	deps *Deps
}

func (w *SweepWorker) Work(ctx context.Context, job *river.Job[SweepArgs]) error {
	client := river.ClientFromContext[pgx.Tx](ctx)
	if err := w.applyStalled(ctx, client); err != nil {
		return err
	}
	keys, err := w.deps.Store.ClaimableKeys(ctx)
	if err != nil || len(keys) == 0 {
		return err
	}
	queued, err := queuedWorkKeys(ctx, client)
	if err != nil {
		return err
	}
	var params []river.InsertManyParams
	for _, key := range keys {
		if !queued[key] {
			params = append(params, river.InsertManyParams{Args: WorkArgs{Key: key}})
		}
	}
	if len(params) == 0 {
		return nil
	}
	w.deps.Logger.Info("sweeper: enqueuing work without a job", "queues", len(params))
	if _, err := client.InsertMany(ctx, params); err != nil {
		return fmt.Errorf("sweep: enqueue: %w", err)
	}
	return nil
}

// queuedWorkKeys is the set of work queues that have a job waiting to run. Running
// jobs do not count: one may belong to a dead process.
func queuedWorkKeys(ctx context.Context, client *river.Client[pgx.Tx]) (map[string]bool, error) {
	queued := map[string]bool{}
	params := river.NewJobListParams().Kinds(WorkArgs{}.Kind()).
		States(rivertype.JobStateAvailable, rivertype.JobStateScheduled, rivertype.JobStateRetryable, rivertype.JobStatePending).
		First(10000)
	res, err := client.JobList(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("sweep: list queued work: %w", err)
	}
	for _, job := range res.Jobs {
		var args WorkArgs
		if err := unmarshalArgs(job, &args); err != nil {
			return nil, err
		}
		queued[args.Key] = true
	}
	return queued, nil
}

// applyStalled gives a new job to every manifest whose apply has not advanced for
// applyStalledAfter: its job died with its process (River rescues a running job only
// after the job timeout) or was discarded.
func (w *SweepWorker) applyStalled(ctx context.Context, client *river.Client[pgx.Tx]) error {
	ids, err := w.deps.Store.StalledManifests(ctx, applyStalledAfter)
	if err != nil || len(ids) == 0 {
		return err
	}
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: ApplyManifestArgs{ManifestID: id}}
	}
	w.deps.Logger.Info("sweeper: restarting stalled manifest applies", "manifests", ids)
	if _, err := client.InsertMany(ctx, params); err != nil {
		return fmt.Errorf("sweep: enqueue manifest apply: %w", err)
	}
	return nil
}

// applyStalledAfter: a batch takes well under a second, so an apply that has not
// advanced for this long has lost its job.
const applyStalledAfter = 15 * time.Second
