// Package lifecycle runs what happens after provisioning: scheduled and on-demand
// password rotation, and reconciliation of the cloud account with the store. It
// serves both the periodic jobs and the HTTP API.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/store"
)

// Config tunes rotation.
type Config struct {
	// MaxAge is how old a password may get before the schedule rotates it.
	// Defaults to DefaultMaxAge, 30 days. NextRotation states the rule.
	MaxAge time.Duration
	// Window spreads a scheduled run's rotations evenly over this long, so a nightly
	// run neither spends the whole rate budget at once nor resets the whole fleet in
	// the same minute. Defaults to DefaultWindow, 1 hour. Rotations asked for by hand
	// start at once.
	Window time.Duration
}

// The defaults of Config, exported so that the configuration layer shows the same.
const (
	DefaultMaxAge = 30 * 24 * time.Hour
	DefaultWindow = time.Hour
)

// withDefaults fills every unset (or negative) field.
func (c Config) withDefaults() Config {
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	return c
}

// Store is what the lifecycle needs of the database; *store.Store provides it.
type Store interface {
	ScheduleRotations(ctx context.Context, fleetName string, all bool, maxAge, window time.Duration, key string) (int, error)
	// TryLock takes a cluster-wide advisory lock if nobody holds it.
	TryLock(ctx context.Context, key int64) (release func(), ok bool, err error)
	// RecordReconcileRun keeps every reconcile run's report (a bounded history).
	RecordReconcileRun(ctx context.Context, run store.ReconcileRun) (int64, error)
}

var _ Store = (*store.Store)(nil)

// Reconciler runs one reconciliation; *reconcile.Reconciler is one.
type Reconciler interface {
	Run(ctx context.Context, dryRun bool) (*reconcile.Report, error)
}

// Lifecycle implements jobs.Lifecycle and server.Lifecycle.
type Lifecycle struct {
	Store      Store
	Reconciler Reconciler
	Config     Config
	Logger     *slog.Logger // nil discards
	// Enqueue starts work jobs for the devices scheduled under key.
	Enqueue func(ctx context.Context, key string, devices int) error
	// Observe, when set, is told of every rotation and reconciliation run (metrics).
	Observe Observer
}

// Observer is told of each run once it ends. Its methods must be fast.
type Observer interface {
	// RotationRun: devices scheduled for a reset, or err.
	RotationRun(scheduled int, err error)
	// ReconcileRun: the report (nil with err), after a run that was not a dry run.
	ReconcileRun(rep *reconcile.Report, err error)
}

// ErrReconcileRunning: another process is reconciling right now.
var ErrReconcileRunning error = busyError{}

type busyError struct{}

func (busyError) Error() string { return "reconciliation is already running" }

// HTTPStatus lets the API answer 409 Conflict without knowing this package.
func (busyError) HTTPStatus() int { return 409 }

func (l *Lifecycle) logger() *slog.Logger {
	if l.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Logger
}

// Rotate schedules rotations now: the devices whose password is older than MaxAge,
// or every ready device with all.
func (l *Lifecycle) Rotate(ctx context.Context, fleet string, all bool) (int, string, error) {
	return l.rotate(ctx, fleet, all, 0)
}

// ScheduledRotation is the periodic run: due devices, spread over the window
// (Config.NextRotation states the rule).
func (l *Lifecycle) ScheduledRotation(ctx context.Context) error {
	_, _, err := l.rotate(ctx, "", false, l.Config.withDefaults().Window)
	return err
}

// rotate schedules a run and logs it, one line whatever the outcome.
func (l *Lifecycle) rotate(ctx context.Context, fleet string, all bool, window time.Duration) (n int, key string, err error) {
	start := time.Now()
	key = fmt.Sprintf("rotate:%d", start.UnixNano())
	defer func() {
		if l.Observe != nil {
			l.Observe.RotationRun(n, err)
		}
		attrs := []any{"fleet", fleet, "all", all, "devices", n, "key", key, "window", window, "duration", time.Since(start)}
		if err != nil {
			l.logger().Error("rotation run failed", append(attrs, "err", err)...)
			return
		}
		l.logger().Info("rotations scheduled", attrs...)
	}()
	if n, err = l.Store.ScheduleRotations(ctx, fleet, all, l.Config.withDefaults().MaxAge, window, key); err != nil {
		return 0, "", err
	}
	if n > 0 {
		if err := l.Enqueue(ctx, key, n); err != nil {
			return 0, "", err
		}
	}
	return n, key, nil
}

// reconcileLockKey is the advisory lock that keeps reconciliation to one process.
const reconcileLockKey = 0x76_6e_63_72_65_63 // "vncrec"

// Reconcile runs reconciliation now and returns its report.
func (l *Lifecycle) Reconcile(ctx context.Context, dryRun bool) (any, error) {
	return l.reconcile(ctx, dryRun, store.ReconcileByRequest)
}

// ScheduledReconcile is the periodic run; a run already in progress elsewhere is not
// an error.
func (l *Lifecycle) ScheduledReconcile(ctx context.Context) error {
	_, err := l.reconcile(ctx, false, store.ReconcileBySchedule)
	if errors.Is(err, ErrReconcileRunning) {
		return nil
	}
	return err
}

// reconcile runs reconciliation under the cluster-wide lock, records the run in the
// store (its report, or that it failed) and logs it, one line whatever the outcome (a
// run that found another in progress is no run).
func (l *Lifecycle) reconcile(ctx context.Context, dryRun bool, trigger string) (rep *reconcile.Report, err error) {
	start := time.Now()
	defer func() {
		if errors.Is(err, ErrReconcileRunning) {
			return
		}
		if l.Observe != nil && !dryRun {
			l.Observe.ReconcileRun(rep, err)
		}
		l.record(context.WithoutCancel(ctx), rep, err, dryRun, trigger, start)
		if err != nil {
			l.logger().Error("reconcile run failed", "dry_run", dryRun, "duration", time.Since(start), "err", err)
			return
		}
		l.logger().Info("reconciled", "dry_run", dryRun, "duration", time.Since(start), "converged", rep.Converged,
			"listed", rep.Listed, "waited_for_creates", rep.WaitedFor,
			"vanished", len(rep.Vanished), "drifted", len(rep.Drifted), "adopted", len(rep.Adopted),
			"deleted_orphans", len(rep.DeletedOrphans), "in_flight", len(rep.InFlight)+len(rep.CreatesInFlight),
			"ambiguous", len(rep.Ambiguous), "foreign", len(rep.Foreign),
			"deleted_foreign", len(rep.DeletedForeign), "rescheduled", rep.Rescheduled, "errors", len(rep.Errors))
	}()
	return l.lockedReconcile(ctx, dryRun)
}

// record stores a run's report; a run whose report cannot be stored is still a run
// (its caller gets the report), so the failure is logged only.
func (l *Lifecycle) record(ctx context.Context, rep *reconcile.Report, runErr error, dryRun bool, trigger string, start time.Time) {
	run, err := reconcile.RunRecord(rep, runErr, dryRun, trigger, start.UTC(), time.Now().UTC())
	if err == nil {
		_, err = l.Store.RecordReconcileRun(ctx, run)
	}
	if err != nil {
		l.logger().Error("reconcile run not recorded", "dry_run", dryRun, "trigger", trigger, "err", err)
	}
}

func (l *Lifecycle) lockedReconcile(ctx context.Context, dryRun bool) (*reconcile.Report, error) {
	release, locked, err := l.Store.TryLock(ctx, reconcileLockKey)
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	if !locked {
		return nil, ErrReconcileRunning
	}
	defer release()
	return l.Reconciler.Run(ctx, dryRun)
}
