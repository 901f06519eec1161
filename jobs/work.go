package jobs

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/store"
)

// WorkArgs drives one work queue (a manifest's devices, a rotation run, a repair).
// Several chains of the same key may run at once: claims keep them apart.
type WorkArgs struct {
	Key   string `json:"key"`
	Chain int    `json:"chain"`
}

func (WorkArgs) Kind() string { return "work" }

// WorkWorker claims batches and carries them out for up to workSlice, then snoozes,
// so that every queue with work gets a turn between two slices of another: a 20-row
// urgent upload is not stuck behind a million-row one.
type WorkWorker struct {
	river.WorkerDefaults[WorkArgs]
	deps *Deps
}

// workSlice is how long one work job runs batches before giving others a turn. One
// batch per job run cost a round trip through River's queue (fetch, snooze, fetch
// again: 100-200 ms) per batch, which capped a manifest at a few thousand devices a
// second whatever the database and the API could do.
const workSlice = 2 * time.Second

func (w *WorkWorker) Timeout(*river.Job[WorkArgs]) time.Duration {
	return workSlice + w.deps.Config.ClaimLease + 30*time.Second
}

func (w *WorkWorker) Work(ctx context.Context, job *river.Job[WorkArgs]) error {
	d := w.deps
	stop := time.Now().Add(workSlice)
	for {
		worker, claimCtx, release := d.claimer(ctx)
		items, err := d.Store.ClaimWork(ctx, job.Args.Key, d.Config.batchLimit(), d.Config.ClaimLease, worker)
		if err != nil {
			release()
			return err
		}
		if len(items) == 0 {
			release()
			remaining, next, err := d.Store.PendingWork(ctx, job.Args.Key)
			if err != nil {
				return err
			}
			if remaining == 0 {
				return nil
			}
			// Work is owed but not claimable yet (backoff, another chain's claim, a listen
			// device waiting for its connect devices): come back when it may be.
			wait := min(max(time.Until(next), 200*time.Millisecond), 30*time.Second)
			return river.JobSnooze(wait)
		}
		batchCtx, span := startWorkBatch(claimCtx, job.Args.Key, len(items))
		err = d.runBatch(batchCtx, items)
		span.End()
		release()
		if err != nil {
			return err
		}
		if time.Now().After(stop) || ctx.Err() != nil {
			return river.JobSnooze(0)
		}
	}
}

func (d *Deps) retryPolicy() store.RetryPolicy {
	return store.RetryPolicy{
		MaxAttempts: d.Config.MaxAttempts,
		Backoff:     d.Config.retryBackoff,
		PollAfter:   d.Config.ReadyInitial,
	}
}

// Answers are recorded in groups as they arrive, not when the whole batch is done: a
// process killed in the middle of a batch loses at most the answers of the last
// commitEvery (under a rate cap a batch lasts up to a third of the claim's lease, and
// the cloud's answers to creates are addresses and passwords that exist nowhere else).
// A group is recorded when its oldest answer has waited commitEvery, or when it holds
// commitCount answers (at full speed a batch's answers arrive faster than one
// transaction a second could take them).
const (
	commitEvery = 500 * time.Millisecond
	commitCount = 125
)

// runBatch performs the claimed items, at most Fanout at a time, and records their
// results in groups (commitEvery, commitCount) as they come.
func (d *Deps) runBatch(ctx context.Context, items []store.WorkItem) error {
	results := make(chan store.Result, len(items)) // never blocks a sender
	go func() {
		fanOut(items, d.Config.Fanout, func(it store.WorkItem) struct{} {
			results <- d.runItem(ctx, it)
			return struct{}{}
		})
		close(results)
	}()
	policy := d.retryPolicy()
	var group []store.Result
	var due <-chan time.Time
	flush := func() error {
		if len(group) == 0 {
			return nil
		}
		rs := group
		group, due = nil, nil
		if err := d.finishDurably(ctx, func(ctx context.Context) error { return d.Store.Finish(ctx, rs, policy) }); err != nil {
			return err
		}
		if d.Recorded != nil {
			d.Recorded(rs)
		}
		return nil
	}
	for {
		select {
		case r, ok := <-results:
			if !ok {
				return flush()
			}
			group = append(group, r)
			if len(group) == 1 {
				due = time.After(commitEvery)
			}
			if len(group) >= commitCount {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-due:
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// finishDurably records results, retrying through a database outage: the calls have
// been made, and forgetting their results would leave orphan addresses and lose the
// passwords the cloud now holds. It keeps trying for as long as the job may run.
func (d *Deps) finishDurably(ctx context.Context, record func(context.Context) error) error {
	// Results are recorded even if the job's context is cancelled by a shutdown.
	ctx = context.WithoutCancel(ctx)
	deadline := time.Now().Add(d.Config.ClaimLease)
	delay := 200 * time.Millisecond
	for {
		err := record(ctx)
		if err == nil {
			return nil
		}
		if time.Now().Add(delay).After(deadline) {
			return fmt.Errorf("record results: %w", err)
		}
		d.Logger.Warn("recording results failed; retrying", "err", err, "in", delay)
		time.Sleep(delay)
		delay = min(delay*2, 5*time.Second)
	}
}

// fanOut applies fn to every item, at most n at a time, and returns the results in
// the items' order. The rate limiter paces the calls; fan-out only hides latency.
func fanOut[T, R any](items []T, n int, fn func(T) R) []R {
	results := make([]R, len(items))
	sem := make(chan struct{}, max(n, 1))
	var wg sync.WaitGroup
	for i := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = fn(items[i])
		}(i)
	}
	wg.Wait()
	return results
}

// runItem performs one device's operation. No call starts once the claim is within
// CallTimeout of ending (measured on this process's clock from when the claim was
// asked for), so no other process can claim the device while a call of ours is still
// in flight.
func (d *Deps) runItem(ctx context.Context, item store.WorkItem) store.Result {
	leaseCtx, cancel := context.WithDeadline(ctx, item.LeaseEnds.Add(-d.Config.CallTimeout))
	defer cancel()
	return store.Result{Item: item, Report: cloudop.Perform(leaseCtx, d.Cloud, d.call, item.Task())}
}
