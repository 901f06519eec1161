package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/vnccloud"
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
		items, err := d.Store.ClaimWork(ctx, job.Args.Key, d.Config.batchLimit(), d.Config.ClaimLease)
		if err != nil {
			return err
		}
		if len(items) == 0 {
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
		results := fanOut(items, d.Config.Fanout, func(it store.WorkItem) store.Result { return d.runItem(ctx, cancelled, it) })
		stopWatching()
		if err := d.finishDurably(ctx, func(ctx context.Context) error {
			return d.Store.Finish(ctx, results, d.retryPolicy())
		}); err != nil {
			return err
		}
		if cancelled.Err() != nil {
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
// CallTimeout of ending, so no other process can claim the device while a call of
// ours is still in flight.
// Once cancelled is done (the manifest was cancelled), no further call starts; one
// already sent is never cut off.
func (d *Deps) runItem(ctx, cancelled context.Context, item store.WorkItem) store.Result {
	res := store.Result{Item: item}
	leaseCtx, cancel := context.WithDeadline(ctx, item.ClaimUntil.Add(-d.Config.CallTimeout))
	defer cancel()
	var sentAny bool
	call := func(op string, fn func(ctx context.Context) error) error {
		if cancelled.Err() != nil {
			return errWorkCancelled
		}
		// A cancel while waiting for a send slot ends the wait: nothing was sent.
		waitCtx, stopWait := context.WithCancel(leaseCtx)
		defer stopWait()
		defer context.AfterFunc(cancelled, stopWait)()
		sent, err := d.callAfterWait(waitCtx, leaseCtx, fn)
		sentAny = sentAny || sent
		if sent {
			if err != nil {
				res.Events = append(res.Events, store.EventFromError(op, err))
			} else {
				res.Events = append(res.Events, store.Event{Operation: op, Outcome: "ok"})
			}
		}
		return err
	}
	var err error
	switch item.Op {
	case store.OpCreate:
		err = d.create(item, &res, call)
	case store.OpUpdate:
		err = d.update(item, &res, call)
	case store.OpDelete:
		err = d.delete(item, &res, call)
	case store.OpRotate:
		err = d.rotate(item, &res, call)
	default:
		err = &permanentError{fmt.Sprintf("unknown operation %q", item.Op)}
	}
	if err == nil {
		return res
	}
	var perm *permanentError
	var apiErr *vnccloud.APIError
	var invalid *vnccloud.ValidationError
	// Only an error status or a request never built is a definite refusal; a 2xx
	// whose body could not be read may have made an address.
	res.Refused = errors.As(err, &perm) || errors.As(err, &apiErr) || errors.As(err, &invalid)
	switch {
	case errors.As(err, &perm):
		res.Err = err
	case !sentAny:
		// Nothing left the process (the lease ran short, a shutdown, or the rate
		// limiter could not reach the database): release the claim as if never taken.
		// Such a failure says nothing about the device and must not count against it.
		res.NotSent = true
	default:
		res.Err = err
		res.Retryable = vnccloud.IsRetryable(err) || errors.Is(err, context.Canceled)
	}
	return res
}

type callFunc func(op string, fn func(ctx context.Context) error) error

var errWorkCancelled = errors.New("the manifest was cancelled")

// cancelCheckEvery is how often a running batch asks whether its manifest was
// cancelled: the calls it would start meanwhile are what a cancel still lets through.
const cancelCheckEvery = time.Second

// watchCancel returns a context that is done once the work key's manifest is
// cancelled (store.CancelManifest), checked at once and then every cancelCheckEvery
// until stop is called. Keys other than a manifest's are never cancelled.
func (d *Deps) watchCancel(ctx context.Context, key string) (cancelled context.Context, stop func()) {
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	id := manifestOfKey(key)
	if id == 0 {
		return cctx, cancel
	}
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
	return cctx, func() { once.Do(func() { close(done) }) }
}

// cancelledManifest is the manifest a work key belongs to, or 0.
func manifestOfKey(key string) int64 {
	id, _ := store.ManifestOfWorkKey(key)
	return id
}

// permanentError fails a device without a request (a listen device whose named
// connect devices have no address).
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

func (d *Deps) create(item store.WorkItem, res *store.Result, call callFunc) error {
	if len(item.Unresolved) > 0 {
		return &permanentError{fmt.Sprintf("allow_devices %s: no cloud address (failed or deleted)", strings.Join(item.Unresolved, ", "))}
	}
	var created vnccloud.Created
	err := call("create", func(ctx context.Context) error {
		var err error
		created, err = d.Cloud.Create(ctx, item.Spec())
		return err
	})
	if err != nil {
		return err
	}
	res.Created = &created
	return nil
}

// maxPreconditionRetries bounds the GET/write loop when another writer keeps changing
// the address between our GET and our write (412).
const maxPreconditionRetries = 3

// withETag runs GET then write(etag), again on 412. A 404 at either step reports
// that the address has vanished.
func withETag(item store.WorkItem, d *Deps, call callFunc, op string, write func(ctx context.Context, etag string) error) (vanished bool, err error) {
	for try := 0; ; try++ {
		var details vnccloud.Details
		err = call("get", func(ctx context.Context) error {
			var err error
			details, err = d.Cloud.Get(ctx, item.CloudAddress)
			return err
		})
		if errors.Is(err, vnccloud.ErrNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		err = call(op, func(ctx context.Context) error { return write(ctx, details.ETag) })
		switch {
		case errors.Is(err, vnccloud.ErrNotFound):
			return true, nil
		case errors.Is(err, vnccloud.ErrPreconditionFailed) && try < maxPreconditionRetries:
			continue
		}
		return false, err
	}
}

func (d *Deps) update(item store.WorkItem, res *store.Result, call callFunc) error {
	if len(item.Unresolved) > 0 {
		return &permanentError{fmt.Sprintf("allow_devices %s: no cloud address (failed or deleted)", strings.Join(item.Unresolved, ", "))}
	}
	vanished, err := withETag(item, d, call, "update", func(ctx context.Context, etag string) error {
		return d.Cloud.Update(ctx, item.CloudAddress, item.Spec(), etag)
	})
	if err != nil {
		return err
	}
	res.Vanished = vanished
	res.Applied = !vanished
	return nil
}

func (d *Deps) delete(item store.WorkItem, res *store.Result, call callFunc) error {
	if item.CloudAddress == "" {
		res.Deleted = true
		return nil
	}
	// A 404 at any step means the address is already gone, which is what we wanted.
	_, err := withETag(item, d, call, "delete", func(ctx context.Context, etag string) error {
		return d.Cloud.Delete(ctx, item.CloudAddress, etag)
	})
	if err != nil {
		return err
	}
	res.Deleted = true
	return nil
}

func (d *Deps) rotate(item store.WorkItem, res *store.Result, call callFunc) error {
	var created vnccloud.Created
	vanished, err := withETag(item, d, call, "reset", func(ctx context.Context, etag string) error {
		var err error
		created, err = d.Cloud.ResetPassword(ctx, item.CloudAddress, etag)
		return err
	})
	if err != nil {
		return err
	}
	if vanished {
		res.Vanished = true
		return nil
	}
	res.Rotated = &created
	return nil
}
