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

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/store"
)

// Config tunes rotation.
type Config struct {
	// MaxAge is how old a password may get before the schedule rotates it.
	// Defaults to 30 days.
	MaxAge time.Duration
	// Window spreads a scheduled run's rotations evenly over this long, so a nightly
	// run neither spends the whole rate budget at once nor resets the whole fleet in
	// the same minute. Defaults to 1 hour. Rotations asked for by hand start at once.
	Window time.Duration
}

// Lifecycle implements jobs.Lifecycle and server.Lifecycle.
type Lifecycle struct {
	Store      *store.Store
	Pool       *pgxpool.Pool
	Reconciler *reconcile.Reconciler
	Config     Config
	Logger     *slog.Logger // nil discards
	// Enqueue starts work jobs for the devices scheduled under key.
	Enqueue func(ctx context.Context, key string, devices int) error
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

func (l *Lifecycle) maxAge() time.Duration {
	if l.Config.MaxAge <= 0 {
		return 30 * 24 * time.Hour
	}
	return l.Config.MaxAge
}

// Rotate schedules rotations now: the devices whose password is older than MaxAge,
// or every ready device with all.
func (l *Lifecycle) Rotate(ctx context.Context, fleet string, all bool) (int, string, error) {
	return l.rotate(ctx, fleet, all, 0)
}

// ScheduledRotation is the periodic run: due devices, spread over the window.
func (l *Lifecycle) ScheduledRotation(ctx context.Context) error {
	window := l.Config.Window
	if window <= 0 {
		window = time.Hour
	}
	n, key, err := l.rotate(ctx, "", false, window)
	if err == nil && n > 0 {
		l.logger().Info("rotations scheduled", "devices", n, "key", key, "window", window)
	}
	return err
}

func (l *Lifecycle) rotate(ctx context.Context, fleet string, all bool, window time.Duration) (int, string, error) {
	key := fmt.Sprintf("rotate:%d", time.Now().UnixNano())
	n, err := l.Store.ScheduleRotations(ctx, fleet, all, l.maxAge(), window, key)
	if err != nil {
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
	return l.reconcile(ctx, dryRun)
}

// ScheduledReconcile is the periodic run; a run already in progress elsewhere is not
// an error.
func (l *Lifecycle) ScheduledReconcile(ctx context.Context) error {
	rep, err := l.reconcile(ctx, false)
	if errors.Is(err, ErrReconcileRunning) {
		return nil
	}
	if err != nil {
		return err
	}
	l.logger().Info("reconciled", "converged", rep.Converged, "listed", rep.Listed, "waited_for_creates", rep.WaitedFor,
		"vanished", len(rep.Vanished), "drifted", len(rep.Drifted), "adopted", len(rep.Adopted), "deleted_orphans", len(rep.DeletedOrphans),
		"in_flight", len(rep.InFlight)+len(rep.CreatesInFlight), "ambiguous", len(rep.Ambiguous), "foreign", len(rep.Foreign),
		"rescheduled", rep.Rescheduled, "errors", len(rep.Errors))
	return nil
}

func (l *Lifecycle) reconcile(ctx context.Context, dryRun bool) (*reconcile.Report, error) {
	conn, err := l.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, reconcileLockKey).Scan(&locked); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	if !locked {
		return nil, ErrReconcileRunning
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, reconcileLockKey)
	}()
	return l.Reconciler.Run(ctx, dryRun)
}
