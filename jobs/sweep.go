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
	return enqueueOrphanedWork(ctx, client, w.deps)
}

// enqueueOrphanedWork gives a job to every work queue with claimable work and no job
// waiting to run.
func enqueueOrphanedWork(ctx context.Context, client *river.Client[pgx.Tx], d *Deps) error {
	keys, err := d.Store.ClaimableKeys(ctx)
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
	d.Logger.Info("sweeper: enqueuing work without a job", "queues", len(params))
	if _, err := client.InsertMany(ctx, params); err != nil {
		return fmt.Errorf("sweep: enqueue: %w", err)
	}
	return nil
}

// deadWorkerCheckEvery is how often every process looks for dead ones. Not a River
// periodic job: those are inserted by River's leader, and when the dead process was
// the leader none runs until another is elected.
const deadWorkerCheckEvery = 2 * time.Second

// WatchDeadWorkers releases the claims of processes found dead, and gives their work
// a job at once, until ctx ends. Every process runs it; the release is one UPDATE
// that only one of them wins for each dead process.
func WatchDeadWorkers(ctx context.Context, client *river.Client[pgx.Tx], d *Deps) {
	t := time.NewTicker(deadWorkerCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		dead, err := d.Store.ReleaseDeadWorkers(ctx, d.Config.CallTimeout)
		if err != nil {
			if ctx.Err() == nil {
				d.Logger.Warn("looking for dead workers", "err", err)
			}
			continue
		}
		if len(dead.IDs) == 0 {
			continue
		}
		d.Logger.Info("released the claims of dead workers", "workers", dead.IDs,
			"devices", dead.ReleasedClaims, "unanswered_creates", dead.AttemptsSettled)
		if err := enqueueOrphanedWork(ctx, client, d); err != nil {
			d.Logger.Warn("enqueuing the dead workers' work", "err", err)
		}
	}
}

// queuedWorkKeys is the set of work queues that have a job waiting to run.
func queuedWorkKeys(ctx context.Context, client *river.Client[pgx.Tx]) (map[string]bool, error) {
	return queued(ctx, client, func(a WorkArgs) string { return a.Key })
}

// applyStalled gives a new job to every manifest whose apply has not advanced for
// applyStalledAfter and has no job waiting to run: its job died with its process
// (River rescues a running job only after the job timeout) or was discarded.
func (w *SweepWorker) applyStalled(ctx context.Context, client *river.Client[pgx.Tx]) error {
	ids, err := w.deps.Store.StalledManifests(ctx, applyStalledAfter)
	if err != nil || len(ids) == 0 {
		return err
	}
	queued, err := queuedApplies(ctx, client)
	if err != nil {
		return err
	}
	var params []river.InsertManyParams
	for _, id := range ids {
		if !queued[id] {
			params = append(params, river.InsertManyParams{Args: ApplyManifestArgs{ManifestID: id}})
		}
	}
	if len(params) == 0 {
		return nil
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

// queuedApplies is the set of manifests with an apply job waiting to run.
func queuedApplies(ctx context.Context, client *river.Client[pgx.Tx]) (map[int64]bool, error) {
	return queued(ctx, client, func(a ApplyManifestArgs) int64 { return a.ManifestID })
}

// queued is the set of keys of the jobs of A's kind waiting to run (snoozed ones
// included). Running jobs do not count: one may belong to a dead process.
func queued[A river.JobArgs, K comparable](ctx context.Context, client *river.Client[pgx.Tx], key func(A) K) (map[K]bool, error) {
	var zero A
	out := map[K]bool{}
	params := river.NewJobListParams().Kinds(zero.Kind()).
		States(rivertype.JobStateAvailable, rivertype.JobStateScheduled, rivertype.JobStateRetryable, rivertype.JobStatePending).
		First(10000)
	res, err := client.JobList(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("sweep: list queued %s jobs: %w", zero.Kind(), err)
	}
	for _, job := range res.Jobs {
		var args A
		if err := unmarshalArgs(job, &args); err != nil {
			return nil, err
		}
		out[key(args)] = true
	}
	return out, nil
}
