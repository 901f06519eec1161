package jobs

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/readiness"
	"github.com/vncfleet/vncfleet/internal/store"
)

// PollArgs runs the readiness poller once. It is a periodic job (every second): one
// poller serves every device awaiting readiness, so no job holds a worker slot while
// a device is pending; the schedule of each device's next poll is in its row.
type PollArgs struct{}

func (PollArgs) Kind() string { return "poll_ready" }

// InsertOpts inserts at most one poller a second. Only one polls at a time, by an
// advisory lock rather than by River's uniqueness: a unique job that was running in a
// process that died would block every poller until River rescued it, minutes later,
// while the lock goes with the dead process's connection. A failed run is not
// retried: the next tick is a second away.
func (PollArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 1, UniqueOpts: river.UniqueOpts{ByPeriod: time.Second}}
}

// pollerLockKey is the advisory lock held by the one poller at work.
const pollerLockKey = 0x76_6e_63_70_6f_6c // "vncpol"

// PollWorker polls due devices until none is due, for at most pollRunBudget.
type PollWorker struct {
	river.WorkerDefaults[PollArgs]
	deps *Deps
}

const pollRunBudget = 20 * time.Second

// pollWaitAhead is how far ahead a poll loop waits for the next due poll rather than
// ending; pollIdle the shortest such wait (a poll claimed by another loop is due
// "now" but not claimable).
const (
	pollWaitAhead = 2 * time.Second
	pollIdle      = 50 * time.Millisecond
)

func (w *PollWorker) Timeout(*river.Job[PollArgs]) time.Duration {
	return pollRunBudget + w.deps.Config.CallTimeout + 30*time.Second
}

// AfterReady is called, in the transaction that marks them ready, with the devices
// that just became ready. Lifecycle features (webhooks, console URLs) hook in here.
type AfterReady func(ctx context.Context, tx pgx.Tx, became []store.PollItem) error

func (w *PollWorker) Work(ctx context.Context, job *river.Job[PollArgs]) error {
	d := w.deps
	release, ok, err := d.Store.TryLock(ctx, pollerLockKey)
	if err != nil || !ok {
		return err // another poller is at work
	}
	defer release()
	d.readLearned(ctx)
	stop := time.Now().Add(pollRunBudget)
	// Several loops claim disjoint batches (SKIP LOCKED), so the calls of one batch
	// overlap the claim and the recording of another.
	loops := make([]struct{}, d.Config.PollLoops)
	errs := fanOut(loops, len(loops), func(struct{}) error { return d.pollLoop(ctx, stop) })
	return errors.Join(errs...)
}

// pollLoop polls due devices, a batch at a time, until stop passes or none is due
// within pollWaitAhead. Waiting for a poll due soon, instead of ending the run for the
// next tick of the schedule, keeps a steady stream of creates polled as they come due.
func (d *Deps) pollLoop(ctx context.Context, stop time.Time) error {
	backlog := false
	for time.Now().Before(stop) {
		worker, claimCtx, release := d.claimer(ctx)
		claimedAt := time.Now()
		limit := d.pollLimit(backlog)
		items, err := d.Store.ClaimPolls(ctx, limit, d.Config.CallTimeout*2, worker)
		backlog = len(items) == limit
		if err != nil {
			release()
			return err
		}
		if len(items) == 0 {
			d.foldLearned(ctx, true)
			next, err := d.Store.NextPollAt(ctx)
			if err != nil {
				return err
			}
			wait := time.Until(next)
			if next.IsZero() || wait > pollWaitAhead || time.Now().Add(wait).After(stop) {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(max(wait, pollIdle)):
			}
			continue
		}
		results := fanOut(items, d.Config.Fanout, func(it store.PollItem) store.PollResult { return d.pollOne(claimCtx, it, claimedAt) })
		release()
		if err := d.finishDurably(ctx, func(ctx context.Context) error {
			return d.Store.FinishPolls(ctx, results, d.AfterReady)
		}); err != nil {
			return err
		}
		d.learnReadiness(ctx, results)
	}
	return nil
}

// While the account's readiness delay is learned from fewer than
// readiness.ColdObservations first polls, a poll loop claims coldProbe polls at a
// time instead of PollBatch. A fleet uploaded to a fresh account has all its first
// polls scheduled by the initial delay before any is answered; claimed 250 at a time
// by each loop, a thousand of them would be sent by that guess before the first
// answers could move the rest. Small claims let the first answers reschedule the
// others: the price of a wrong initial delay is then a few dozen second polls, not
// hundreds. They end, too, once this process has seen coldOnTime first polls
// answered on time: the estimate counts the scouts' ready answers only, and a delay
// that the first guess already covers would otherwise keep the claims small for
// thousands of polls. When a small claim comes back full the poller is behind: the
// next claim takes a full batch, so that small claims never make a backlog last
// (polls that late teach nothing anyway, and find their devices ready).
const (
	coldProbe  = 8
	coldOnTime = 100
)

// pollLimit is how many polls one claim takes; backlog says the last one was full.
func (d *Deps) pollLimit(backlog bool) int {
	if backlog || d.Config.ReadyAccount == "" || d.readySeen.Load() >= readiness.ColdObservations ||
		d.readyOnTime.Load() >= coldOnTime {
		return d.Config.PollBatch
	}
	return min(coldProbe, d.Config.PollBatch)
}

// readLearned reads how much the account's delay has been learned from, until that is
// enough; until it can, the poller claims as on a fresh account.
func (d *Deps) readLearned(ctx context.Context) {
	if d.Config.ReadyAccount == "" || d.readySeen.Load() >= readiness.ColdObservations {
		return
	}
	if e, ok, err := d.Store.ReadinessEstimate(ctx, d.Config.ReadyAccount); err == nil && ok {
		d.readySeen.Store(max(d.readySeen.Load(), e.Observations))
	}
}

// learning is the first polls' answers waiting to be folded into the account's
// estimate, and whether a poll loop of this process is folding them. One at a time:
// the estimate is one row, updated under its lock, and loops that each waited for it
// after every batch spent more time queued on that lock than polling (at 20,000
// devices with immediate readiness, a second of the run). A loop that finds another
// folding leaves its answers to it and polls on.
//
// Answers are folded at most every learnEvery once the estimate is learned from
// readiness.ColdObservations answers, every learnEveryCold before (and whenever the
// poller runs out of due polls), not after every batch: each fold is a transaction
// of its own, and a step of the estimate from many answers at once is the same as
// from the same answers in turns. (Answers that cannot count, such as the late polls
// of a busy poller, leave the estimate cold however many there are.)
type learning struct {
	mu       sync.Mutex
	pending  []readiness.Observation
	busy     bool
	foldedAt time.Time
}

const (
	learnEvery     = time.Second
	learnEveryCold = 100 * time.Millisecond
)

// maxUnlearned bounds the answers kept while the estimate cannot be written (the
// database down): the oldest are dropped, as a lost update would drop them.
const maxUnlearned = 4096

// learnReadiness feeds the answers of first polls to the account's first-poll delay.
// It is recorded after the polls, apart from them: a lost update costs a few
// observations of an estimate, while a failed recording of polls would repeat them.
func (d *Deps) learnReadiness(ctx context.Context, results []store.PollResult) {
	if d.Config.ReadyAccount == "" {
		return
	}
	obs := firstPollObservations(results)
	if len(obs) == 0 {
		return
	}
	for _, o := range obs {
		if o.Late <= readiness.OnTime+time.Duration(readiness.Tolerance*float64(o.Scheduled)) {
			d.readyOnTime.Add(1)
		}
	}
	l := &d.learning
	l.mu.Lock()
	l.pending = append(l.pending, obs...)
	if over := len(l.pending) - maxUnlearned; over > 0 {
		l.pending = append(l.pending[:0], l.pending[over:]...)
	}
	l.mu.Unlock()
	d.foldLearned(ctx, false)
}

// foldLearned folds the answers waiting into the account's estimate, unless another
// loop is at it or, unless now says so, the last fold is too recent (see learning).
func (d *Deps) foldLearned(ctx context.Context, now bool) {
	l := &d.learning
	l.mu.Lock()
	defer l.mu.Unlock()
	every := learnEveryCold
	if d.readySeen.Load() >= readiness.ColdObservations {
		every = learnEvery
	}
	if l.busy || len(l.pending) == 0 || (!now && time.Since(l.foldedAt) < every) {
		return
	}
	l.busy = true
	defer func() { l.busy, l.foldedAt = false, time.Now() }()
	for len(l.pending) > 0 && ctx.Err() == nil {
		batch := l.pending
		l.pending = nil
		l.mu.Unlock()
		e, err := d.Store.LearnReadiness(ctx, d.Config.ReadyAccount, d.Config.readiness(), batch)
		l.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				d.Logger.Warn("learning the readiness delay", "err", err)
			}
			return
		}
		d.readySeen.Store(e.Observations)
		d.Logger.Debug("readiness delay learned", "first_poll", e.FirstPoll, "observations", e.Observations, "answers", len(batch))
	}
}

// firstPollObservations are the first polls among results that the cloud answered
// ready or pending; errors and polls not sent tell nothing of the delay.
func firstPollObservations(results []store.PollResult) []readiness.Observation {
	var obs []readiness.Observation
	for _, r := range results {
		if r.Item.Polls != 0 || (r.Report.Outcome != fleet.Ready && r.Report.Outcome != fleet.Pending) {
			continue
		}
		obs = append(obs, readiness.Observation{Scheduled: r.Item.ScheduledAfter,
			Late: max(r.Waited-r.Item.ScheduledAfter, 0), Pending: r.Report.Outcome == fleet.Pending,
			Scout: readiness.IsScout(r.Item.PK)})
	}
	return obs
}

func (d *Deps) pollOne(ctx context.Context, item store.PollItem, claimedAt time.Time) store.PollResult {
	rep := cloudop.Perform(pollClass(ctx, item), d.Cloud, d.call, item.Task())
	waited := item.AwaitingFor + time.Since(claimedAt)
	return store.PollResult{Item: item, Report: rep, NextPoll: d.Config.pollInterval(item.Polls + 1),
		MayWait: waited < d.Config.ReadyMaxElapsed, Waited: waited}
}
