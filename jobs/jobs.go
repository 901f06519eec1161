// Package jobs holds vncfleet's River jobs: the work driver that creates, updates,
// deletes and rotates cloud addresses in batches, the readiness poller, and the
// sweeper that makes sure no owed work is left without a job. All state lives in the
// store; a job only claims rows, calls VNC Cloud through the cluster-wide rate
// limiter, and records what happened, so any process can pick up where another died.
package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/readiness"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/ratelimit"
)

// Cloud is what the jobs need of VNC Cloud; *vnccloud.Client provides it.
type Cloud = cloudop.Cloud

// Config tunes the jobs. Zero fields take the defaults named on each.
type Config struct {
	// BatchSize is how many devices one work job claims at a time. Defaults to 250:
	// large enough that database round trips are a small share of a batch, small
	// enough that a crash repeats little. With a rate limit it is cut to what the
	// rate can send in a third of the claim's lease (batchLimit).
	BatchSize int
	// Rate is the cluster-wide VNCCLOUD_RATE (0: none), for batchLimit.
	Rate float64
	// Fanout is how many API calls one batch makes at once. Defaults to 64. The rate
	// limiter decides the pace; fan-out only hides each call's latency.
	Fanout int
	// Chains is how many work jobs one manifest gets at once. Defaults to 4, so that a
	// large manifest spreads over processes while a small upload still gets its turn.
	Chains int
	// ClaimLease is how long a claim on a device lasts. A process that dies holding
	// claims delays those devices by at most this much. Defaults to 2 minutes.
	ClaimLease time.Duration
	// CallTimeout bounds one API call. Defaults to 30 seconds. No call is started later
	// than CallTimeout before its claim ends, so an expired claim never races a call.
	CallTimeout time.Duration
	// MaxAttempts is how many transient failures in a row fail a device. Defaults to 10.
	MaxAttempts int
	// RetryInitial and RetryMax shape the backoff between transient failures.
	// Default 2s and 5m.
	RetryInitial, RetryMax time.Duration
	// ReadyInitial is the first readiness poll after a create, change or reset;
	// ReadyMultiplier and ReadyMax grow the interval; ReadyMaxElapsed fails a device
	// that is still pending after it. Defaults: 1s, 1.6, 30s, 10m. The first poll
	// waits the usual readiness delay so that most devices need one poll only: every
	// poll spends rate budget.
	//
	// With ReadyAccount set, the first poll's delay is learned instead, from the
	// answers first polls get (package readiness), and ReadyInitial is only where the
	// learning starts; later polls back off from the first as before.
	ReadyInitial    time.Duration
	ReadyMultiplier float64
	ReadyMax        time.Duration
	ReadyMaxElapsed time.Duration
	// ReadyAccount names the account whose first-poll delay is learned
	// (readiness.Account: a digest of the API URL and key), stored in PostgreSQL so
	// that every process schedules by it and it outlives restarts. "" learns nothing.
	ReadyAccount string
	// ReadyFloor and ReadyCeiling bound the learned delay. Defaults 100ms and 15s,
	// widened to admit ReadyInitial.
	ReadyFloor, ReadyCeiling time.Duration
	// ReadyPendingTarget is the share of the scouts' first polls (one device in 16
	// is polled at the learned delay, the others 5% later; readiness.ScoutEvery)
	// that the learning lets find the address still pending: the second polls it
	// spends to keep the delay as short as will do. Defaults to 0.01.
	ReadyPendingTarget float64
	// PollBatch is how many due polls one poll loop claims at a time. Defaults to 250.
	PollBatch int
	// PollLoops is how many claim-poll-record loops the poller runs at once, so that
	// one batch's calls overlap another's database round trips. Defaults to 4.
	PollLoops int
	// MaxWorkers is River's number of concurrent jobs per process. Defaults to 20.
	MaxWorkers int
	// SweepInterval is how often the sweeper looks for work without a job. Defaults to 5s.
	SweepInterval time.Duration
}

// The defaults of Config, exported so that the configuration layer shows and fills
// the same values (internal/config uses them) instead of stating its own.
const (
	DefaultBatchSize       = 250
	DefaultFanout          = 64
	DefaultChains          = 4
	DefaultClaimLease      = 2 * time.Minute
	DefaultCallTimeout     = 30 * time.Second
	DefaultMaxAttempts     = 10
	DefaultRetryInitial    = 2 * time.Second
	DefaultRetryMax        = 5 * time.Minute
	DefaultReadyInitial    = readiness.DefaultInitial
	DefaultReadyMultiplier = 1.6
	DefaultReadyMax        = 30 * time.Second
	DefaultReadyMaxElapsed = 10 * time.Minute
	DefaultReadyFloor      = readiness.DefaultFloor
	DefaultReadyCeiling    = readiness.DefaultCeiling
	DefaultReadyPending    = readiness.DefaultPendingTarget
	DefaultPollBatch       = 250
	DefaultPollLoops       = 4
	DefaultMaxWorkers      = 20
	DefaultSweepInterval   = 5 * time.Second
)

// setDefaults fills every zero (or negative) field with its default, once.
func (c *Config) setDefaults() {
	orDefault := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	orDefaultDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	orDefault(&c.BatchSize, DefaultBatchSize)
	orDefault(&c.Fanout, DefaultFanout)
	orDefault(&c.Chains, DefaultChains)
	orDefault(&c.MaxAttempts, DefaultMaxAttempts)
	orDefault(&c.PollBatch, DefaultPollBatch)
	orDefault(&c.PollLoops, DefaultPollLoops)
	orDefault(&c.MaxWorkers, DefaultMaxWorkers)
	orDefaultDur(&c.ClaimLease, DefaultClaimLease)
	orDefaultDur(&c.CallTimeout, DefaultCallTimeout)
	orDefaultDur(&c.RetryInitial, DefaultRetryInitial)
	orDefaultDur(&c.RetryMax, DefaultRetryMax)
	orDefaultDur(&c.ReadyInitial, DefaultReadyInitial)
	orDefaultDur(&c.ReadyMax, DefaultReadyMax)
	orDefaultDur(&c.ReadyMaxElapsed, DefaultReadyMaxElapsed)
	orDefaultDur(&c.SweepInterval, DefaultSweepInterval)
	// The bounds always admit ReadyInitial, where the learning starts.
	orDefaultDur(&c.ReadyFloor, DefaultReadyFloor)
	orDefaultDur(&c.ReadyCeiling, DefaultReadyCeiling)
	c.ReadyFloor = min(c.ReadyFloor, c.ReadyInitial)
	c.ReadyCeiling = max(c.ReadyCeiling, c.ReadyInitial)
	if !(c.ReadyPendingTarget > 0 && c.ReadyPendingTarget <= 0.5) {
		c.ReadyPendingTarget = DefaultReadyPending
	}
	if c.ReadyMultiplier <= 1 {
		c.ReadyMultiplier = DefaultReadyMultiplier
	}
	// A claim must outlive at least one call with room to record its result.
	if c.ClaimLease < 2*c.CallTimeout {
		c.ClaimLease = 2 * c.CallTimeout
	}
}

// Store is what the jobs need of the database; *store.Store provides it. Declared
// here, by its consumer, so that the job logic (batching, group commit, polling) has
// unit tests without PostgreSQL; the SQL behind it has its own tests.
type Store interface {
	ClaimWork(ctx context.Context, key string, limit int, lease time.Duration, worker int64) ([]store.WorkItem, error)
	Finish(ctx context.Context, results []store.Result, policy store.RetryPolicy) error
	PendingWork(ctx context.Context, key string) (remaining int, next time.Time, err error)
	ClaimableKeys(ctx context.Context) ([]string, error)
	ClaimPolls(ctx context.Context, limit int, lease time.Duration, worker int64) ([]store.PollItem, error)
	FinishPolls(ctx context.Context, results []store.PollResult, ready func(ctx context.Context, tx pgx.Tx, became []store.PollItem) error) error
	NextPollAt(ctx context.Context) (time.Time, error)
	LearnReadiness(ctx context.Context, account string, cfg readiness.Config, obs []readiness.Observation) (readiness.Estimate, error)
	ReadinessEstimate(ctx context.Context, account string) (e readiness.Estimate, ok bool, err error)
	TryLock(ctx context.Context, key int64) (release func(), ok bool, err error)
	ReleaseDeadWorkers(ctx context.Context, callTimeout time.Duration) (store.DeadWorkers, error)
	ApplyStaged(ctx context.Context, manifestID int64, consoleURLs store.EnqueueConsoleURLsFunc) (done bool, err error)
	StalledManifests(ctx context.Context, stalledFor time.Duration) ([]int64, error)
	SetConsoleURL(ctx context.Context, devicePK int64, instanceID, url string) error
	SetConsoleURLError(ctx context.Context, devicePK int64, instanceID, msg string) error
	ManifestCancelled(ctx context.Context, id int64) (bool, error)
	CancelManifest(ctx context.Context, id int64, by string) (*store.CancelResult, error)
}

// Deps are the collaborators of every job.
type Deps struct {
	Store   Store
	Cloud   Cloud
	Limiter ratelimit.Limiter
	Logger  *slog.Logger
	Config  Config
	// Presence is this process's registration as a live worker; claims are made
	// under its id. Nil (tests that drive jobs without `serve`) claims under none,
	// and such claims end with their lease only.
	Presence *store.Presence
	// AfterReady, when set, runs in the transaction that marks devices ready.
	AfterReady AfterReady

	// Zenlayer fetches console URLs under ZenlayerLimiter; nil when not configured.
	Zenlayer        ConsoleURLs
	ZenlayerLimiter ratelimit.Limiter
	// Lifecycle runs scheduled rotation and reconciliation; nil disables both.
	Lifecycle Lifecycle
	// RotationSchedule and ReconcileSchedule are when they run (cron schedules).
	RotationSchedule, ReconcileSchedule river.PeriodicSchedule
	// Extra registers more workers and periodic jobs (webhook delivery).
	Extra func(workers *river.Workers) []*river.PeriodicJob
	// Middleware wraps every job (metrics, traces); nil for none.
	Middleware []rivertype.Middleware
	// Recorded, when set, is told of each batch of work results once they are
	// recorded (metrics).
	Recorded func(results []store.Result)

	// readySeen is how many first polls the account's readiness delay has been
	// learned from, as last stored; readyOnTime how many first polls this process
	// has seen answered on time (see coldOnTime).
	readySeen, readyOnTime atomic.Int64
	// learning holds the first polls' answers not yet folded into the estimate.
	learning learning
}

// River queue names.
const QueueDefault = river.QueueDefault

// NewClient builds the River client with every worker and periodic job registered.
// It inserts jobs from any process; it works them only once Start is called.
func NewClient(pool *pgxpool.Pool, deps *Deps) (*river.Client[pgx.Tx], error) {
	deps.Config.setDefaults()
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &WorkWorker{deps: deps})
	river.AddWorker(workers, &ApplyManifestWorker{deps: deps})
	river.AddWorker(workers, &PollWorker{deps: deps})
	river.AddWorker(workers, &SweepWorker{deps: deps})
	river.AddWorker(workers, &ConsoleURLWorker{deps: deps})
	river.AddWorker(workers, &RotationWorker{deps: deps})
	river.AddWorker(workers, &ReconcileWorker{deps: deps})
	cfg := deps.Config
	periodic := []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(time.Second),
			func() (river.JobArgs, *river.InsertOpts) { return PollArgs{}, nil },
			&river.PeriodicJobOpts{ID: "poll_ready", RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(cfg.SweepInterval),
			func() (river.JobArgs, *river.InsertOpts) { return SweepArgs{}, nil },
			&river.PeriodicJobOpts{ID: "sweep", RunOnStart: true}),
	}
	if deps.Lifecycle != nil && deps.RotationSchedule != nil {
		periodic = append(periodic, river.NewPeriodicJob(deps.RotationSchedule,
			func() (river.JobArgs, *river.InsertOpts) { return RotationArgs{}, nil },
			&river.PeriodicJobOpts{ID: "rotation_schedule"}))
	}
	if deps.Lifecycle != nil && deps.ReconcileSchedule != nil {
		periodic = append(periodic, river.NewPeriodicJob(deps.ReconcileSchedule,
			func() (river.JobArgs, *river.InsertOpts) { return ReconcileArgs{}, nil },
			&river.PeriodicJobOpts{ID: "reconcile"}))
	}
	if deps.Extra != nil {
		periodic = append(periodic, deps.Extra(workers)...)
	}
	jobTimeout := cfg.ClaimLease + time.Minute
	return river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:  map[string]river.QueueConfig{QueueDefault: {MaxWorkers: cfg.MaxWorkers}},
		Workers: workers,
		Logger:  deps.Logger,
		// A job's own claims expire after ClaimLease; River may rescue the job itself a
		// little after that.
		JobTimeout:           jobTimeout,
		RescueStuckJobsAfter: jobTimeout + time.Minute,
		FetchPollInterval:    200 * time.Millisecond,
		// A job inserted by an upload is announced by a notification; River fetches at
		// most once per cooldown (100ms by default, most of the time from an upload
		// stored to its first create: issue 12 wants 100ms).
		FetchCooldown: 20 * time.Millisecond,
		PeriodicJobs:  periodic,
		Middleware:    deps.Middleware,
	})
}

// EnqueueWork inserts the work jobs of a queue in tx: one per chain, as many chains as
// the work can use.
func EnqueueWork(ctx context.Context, client *river.Client[pgx.Tx], tx pgx.Tx, cfg Config, key string, devices int) error {
	cfg.setDefaults()
	batch := cfg.batchLimit()
	chains := min(cfg.Chains, (devices+batch-1)/batch)
	chains = max(chains, 1)
	params := make([]river.InsertManyParams, chains)
	for i := range params {
		params[i] = river.InsertManyParams{Args: WorkArgs{Key: key, Chain: i}}
	}
	if _, err := client.InsertManyTx(ctx, tx, params); err != nil {
		return fmt.Errorf("enqueue work %s: %w", key, err)
	}
	return nil
}

// batchLimit is how many devices a work job claims at once: BatchSize, or fewer when
// a chain's share of the rate limit (the rate over Chains) could not send them within
// a third of the time a claim may make calls (ClaimLease less CallTimeout): calls
// that would start later are given back unsent, so a larger batch would only hold
// devices it cannot serve. At least 10.
func (c Config) batchLimit() int {
	if c.Rate <= 0 {
		return c.BatchSize
	}
	window := (c.ClaimLease - c.CallTimeout).Seconds() / 3
	return min(c.BatchSize, max(10, int(c.Rate*window/float64(max(c.Chains, 1)))))
}

// readiness is the configuration of the first-poll learning.
func (c Config) readiness() readiness.Config {
	return readiness.Config{Initial: c.ReadyInitial, Floor: c.ReadyFloor, Ceiling: c.ReadyCeiling, PendingTarget: c.ReadyPendingTarget}
}

// retryBackoff is the delay before the n-th retry of a transient failure.
func (c Config) retryBackoff(n int) time.Duration {
	return nthBackoff(c.RetryInitial, 2, c.RetryMax, 0.2, n)
}

// pollInterval is the delay before readiness poll number n+1, after n pending answers.
func (c Config) pollInterval(n int) time.Duration {
	return nthBackoff(c.ReadyInitial, c.ReadyMultiplier, c.ReadyMax, 0.1, n)
}

// nthBackoff is the n-th interval (1-based) of an exponential backoff. The schedule
// lives in the database rather than in a sleeping goroutine, so each interval is
// computed from the attempt count alone.
func nthBackoff(initial time.Duration, mult float64, maxInterval time.Duration, jitter float64, n int) time.Duration {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     initial,
		RandomizationFactor: jitter,
		Multiplier:          mult,
		MaxInterval:         maxInterval,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	d := initial
	for i := 0; i < max(n, 1); i++ {
		d = b.NextBackOff()
	}
	return d
}

// call makes one VNC Cloud call under the rate limiter and feeds its outcome back.
// sent is false when the call never left (the limiter gave up waiting): such a call
// is known to have had no effect.
func (d *Deps) call(ctx context.Context, fn func(ctx context.Context) error) (sent bool, err error) {
	return d.callAfterWait(ctx, ctx, fn)
}

// callAfterWait is call whose wait for a send slot ends, unsent, when waitCtx does
// (a cancelled manifest), while the call itself, once sent, runs under ctx alone.
// The limiter hears of the answer by the rule reconciliation's calls follow too.
func (d *Deps) callAfterWait(waitCtx, ctx context.Context, fn func(ctx context.Context) error) (sent bool, err error) {
	return cloudop.Limited{Limiter: d.Limiter, Timeout: d.Config.CallTimeout, Logger: d.Logger}.CallAfterWait(waitCtx, ctx, fn)
}

// claimer is the worker id to claim under, and a context that ends when claims made
// under it may have been released by another process.
func (d *Deps) claimer(ctx context.Context) (int64, context.Context, context.CancelFunc) {
	if d.Presence == nil {
		ctx, cancel := context.WithCancel(ctx)
		return 0, ctx, cancel
	}
	id, lost := d.Presence.Current()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(lost, cancel)
	return id, ctx, func() { stop(); cancel() }
}

func unmarshalArgs(job *rivertype.JobRow, args any) error {
	if err := json.Unmarshal(job.EncodedArgs, args); err != nil {
		return fmt.Errorf("decode args of job %d: %w", job.ID, err)
	}
	return nil
}
