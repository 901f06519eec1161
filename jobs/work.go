package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
		cancelled, stopWatching := d.watchCancel(ctx, job.Args.Key)
		batchCtx, span := startWorkBatch(claimCtx, job.Args.Key, len(items))
		err = d.runBatch(batchCtx, cancelled, items)
		span.End()
		wasCancelled := cancelled.Err() != nil
		stopWatching()
		release()
		if err != nil {
			return err
		}
		if wasCancelled {
			// The devices released unsent still owe their operation: drop it now, so
			// they settle as cancelled whether or not the canceller asks again.
			if _, err := d.Store.CancelManifest(ctx, manifestOfKey(job.Args.Key), "worker"); err != nil {
				return err
			}
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
		// The learned first-poll delay, once there is one (the poller learns it).
		ReadinessAccount: d.Config.ReadyAccount,
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
	// commitCount is the default batch (DefaultBatchSize): at full speed a default
	// batch's answers arrive within commitEvery, and one transaction records them, as
	// before group commit (half of it doubled the Finish statements per device); a
	// larger configured batch is recorded in groups of this many.
	commitCount = DefaultBatchSize
)

// runBatch performs the claimed items, at most Fanout at a time, and records their
// results in groups (commitEvery, commitCount) as they come.
func (d *Deps) runBatch(ctx, cancelled context.Context, items []store.WorkItem) error {
	results := make(chan store.Result, len(items)) // never blocks a sender
	go func() {
		fanOut(items, d.Config.Fanout, func(it store.WorkItem) struct{} {
			results <- d.runItem(ctx, cancelled, it)
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
//
// n goroutines take the items in turn, rather than one goroutine per item: a call's
// stack is deep (HTTP client, tracing, the limiter), and each new goroutine grew its
// stack again by copying (measured: 7% of the worker's CPU at full speed).
func fanOut[T, R any](items []T, n int, fn func(T) R) []R {
	results := make([]R, len(items))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(max(n, 1), len(items)) {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(items)); i = next.Add(1) - 1 {
				results[i] = fn(items[i])
			}
		})
	}
	wg.Wait()
	return results
}

// runItem performs one device's operation. No call starts once the claim is within
// CallTimeout of ending (measured on this process's clock from when the claim was
// asked for), so no other process can claim the device while a call of ours is still
// in flight. Once cancelled is done (the manifest was cancelled), no further call
// starts, and a call waiting for a send slot gives it back; one already sent is never
// cut off.
func (d *Deps) runItem(ctx, cancelled context.Context, item store.WorkItem) store.Result {
	leaseCtx, cancel := context.WithDeadline(workClass(ctx, item), item.LeaseEnds.Add(-d.Config.CallTimeout))
	defer cancel()
	begun := false
	call := func(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
		if cancelled.Err() != nil {
			return false, errWorkCancelled
		}
		ctx, begun = finishingAfterFirst(ctx, begun)
		waitCtx, stopWait := context.WithCancel(ctx)
		defer stopWait()
		defer context.AfterFunc(cancelled, stopWait)()
		return d.callAfterWait(waitCtx, ctx, fn)
	}
	return store.Result{Item: item, Report: cloudop.Perform(leaseCtx, d.Cloud, call, item.Task())}
}

var errWorkCancelled = errors.New("the manifest was cancelled")

// cancelCheckEvery is how often a running batch asks whether its manifest was
// cancelled: the calls it would start meanwhile are what a cancel still lets through.
const cancelCheckEvery = time.Second

// watchCancel returns a context that is done once the work key's manifest is
// cancelled (store.CancelManifest), checked at once and then every cancelCheckEvery
// until stop is called (which ends it too: read it before). Keys other than a
// manifest's are never cancelled.
func (d *Deps) watchCancel(ctx context.Context, key string) (cancelled context.Context, stop func()) {
	id := manifestOfKey(key)
	if id == 0 {
		return context.WithoutCancel(ctx), func() {} // only a manifest's work is cancelled
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	check := func() {
		if yes, err := d.Store.ManifestCancelled(ctx, id); err != nil {
			d.Logger.Warn("checking for a cancel failed", "manifest", id, "err", err)
		} else if yes {
			cancel()
		}
	}
	check()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(cancelCheckEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-cctx.Done():
				return
			case <-t.C:
				check()
			}
		}
	}()
	var once sync.Once
	return cctx, func() { once.Do(func() { close(done); cancel() }) }
}

// cancelledManifest is the manifest a work key belongs to, or 0.
func manifestOfKey(key string) int64 {
	id, _ := store.ManifestOfWorkKey(key)
	return id
}
