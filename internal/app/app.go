// Package app assembles a vncfleet process from its configuration: the database pool,
// the keyring, the VNC Cloud client behind the cluster-wide rate limiter, the River
// client with its workers, and the HTTP API. cmd/vncfleet only calls into it.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/console"
	"github.com/vncfleet/vncfleet/internal/secretbox"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/jobs"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// ErrUnreachable marks a dependency that could not be reached (exit code 3).
var ErrUnreachable = errors.New("unreachable")

// OpenPool connects to PostgreSQL and checks that it answers.
func OpenPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if pcfg.MaxConns < 20 {
		pcfg.MaxConns = 20
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w: %w", ErrUnreachable, err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: %w: %w", ErrUnreachable, err)
	}
	return pool, nil
}

// Keyring builds the password keyring from the configured keys; nil when none is set.
func Keyring(cfg *config.Config) (*secretbox.Keyring, error) {
	if cfg.SecretKey == "" {
		return nil, nil
	}
	primary, err := secretbox.ParseKey(cfg.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("VNCFLEET_SECRET_KEY: %w", err)
	}
	var old [][]byte
	for i, k := range cfg.OldSecretKeys {
		key, err := secretbox.ParseKey(k)
		if err != nil {
			return nil, fmt.Errorf("VNCFLEET_OLD_SECRET_KEYS[%d]: %w", i, err)
		}
		old = append(old, key)
	}
	return secretbox.NewKeyring(primary, old...)
}

// Worker is everything a `serve` process runs besides HTTP.
type Worker struct {
	Store   *store.Store
	River   *river.Client[pgx.Tx]
	Limiter ratelimit.Limiter
	Deps    *jobs.Deps
	API     *server.Server
	// Handler serves HTTP: the operator's console at / and, for every other path, the API.
	Handler http.Handler
}

// Options are the parts a caller may supply instead of building them from config
// (tests and `demo` use them).
type Options struct {
	Logger *slog.Logger
	// Cloud replaces the VNC Cloud client built from config.
	Cloud jobs.Cloud
	// LocalLimiter uses an in-process limiter instead of the cluster-wide one.
	LocalLimiter bool
}

// NewWorker wires the store, the rate-limited VNC Cloud client, River and the API.
func NewWorker(ctx context.Context, pool *pgxpool.Pool, cfg *config.Config, opts Options) (*Worker, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	keys, err := Keyring(cfg)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		return nil, errors.New("VNCFLEET_SECRET_KEY is not set: vncfleet will not store cloud passwords unencrypted")
	}
	st := store.New(pool, keys)

	limCfg := ratelimit.Config{Name: "vnccloud", Rate: cfg.VNCCloud.Rate, Logger: logger}
	var limiter ratelimit.Limiter
	if opts.LocalLimiter {
		limiter = ratelimit.NewLocal(limCfg)
	} else if limiter, err = ratelimit.NewCluster(pool, limCfg); err != nil {
		return nil, err
	}

	cloud := opts.Cloud
	if cloud == nil {
		if cloud, err = vnccloud.New(vnccloud.Config{
			BaseURL:   cfg.VNCCloud.APIURL,
			APIKey:    cfg.VNCCloud.APIKey,
			APISecret: cfg.VNCCloud.APISecret,
			Timeout:   cfg.VNCCloud.Timeout,
		}); err != nil {
			return nil, fmt.Errorf("VNC Cloud client: %w", err)
		}
	}

	deps := &jobs.Deps{
		Store:   st,
		Cloud:   cloud,
		Limiter: limiter,
		Logger:  logger,
		Config:  jobsConfig(cfg),
	}
	if err := wireZenlayer(pool, cfg, opts, deps); err != nil {
		return nil, err
	}
	if err := wireWebhooks(pool, cfg, opts, deps, st); err != nil {
		return nil, err
	}
	// The River client is built after the lifecycle that its periodic jobs call, and
	// the lifecycle enqueues through the client: rc is filled in below.
	var rc *river.Client[pgx.Tx]
	enqueueNow := func(ctx context.Context, key string, devices int) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return jobs.EnqueueWork(ctx, rc, tx, deps.Config, key, devices)
		})
	}
	life, err := newLifecycle(pool, cfg, st, limiter, cloud, logger, enqueueNow)
	if err != nil {
		return nil, err
	}
	if life != nil {
		deps.Lifecycle = life
		if deps.RotationSchedule, err = cronSchedule(cfg.Rotation.Schedule); err != nil {
			return nil, fmt.Errorf("rotation schedule: %w", err)
		}
		if deps.ReconcileSchedule, err = cronSchedule(cfg.Reconcile.Schedule); err != nil {
			return nil, fmt.Errorf("reconcile schedule: %w", err)
		}
	}
	if rc, err = jobs.NewClient(pool, deps); err != nil {
		return nil, fmt.Errorf("river: %w", err)
	}
	enqueue := func(ctx context.Context, tx pgx.Tx, key string, devices int) error {
		return jobs.EnqueueWork(ctx, rc, tx, deps.Config, key, devices)
	}
	var tokens []server.Token
	if cfg.Token != "" {
		tokens = append(tokens, server.Token{Name: "admin", Value: cfg.Token, Roles: []string{server.RoleAdmin}})
	}
	for _, t := range cfg.Tokens {
		tokens = append(tokens, server.Token{Name: t.Name, Value: t.Token, Roles: t.Roles})
	}
	apiCfg := server.Config{
		Store:   st,
		Tokens:  tokens,
		Enqueue: enqueue,
		EnqueueConsoleURLs: func(ctx context.Context, tx pgx.Tx, wanted []store.ConsoleURLWanted) error {
			return jobs.EnqueueConsoleURLs(ctx, rc, tx, wanted)
		},
		EnqueueApply: func(ctx context.Context, tx pgx.Tx, manifestID int64) error {
			return jobs.EnqueueApply(ctx, rc, tx, manifestID)
		},
		MaxUploadBytes:      cfg.MaxUploadBytes,
		MaxDeletionsPercent: cfg.MaxDeletionsPercent,
		MaxDeletionsMin:     cfg.MaxDeletionsMin,
		InlineApplyRows:     cfg.InlineApplyRows,
		Logger:              logger,
		Rate:                cfg.VNCCloud.Rate,
		RotationMaxAge:      cfg.Rotation.MaxAge,
	}
	if life != nil {
		apiCfg.Lifecycle = life
		if deps.RotationSchedule != nil {
			apiCfg.RotationSchedule = deps.RotationSchedule
		}
	}
	api := server.New(apiCfg)
	ui, err := console.New(console.Config{API: api, Logger: logger})
	if err != nil {
		return nil, err
	}
	return &Worker{Store: st, River: rc, Limiter: limiter, Deps: deps, API: api, Handler: ui}, nil
}

func jobsConfig(cfg *config.Config) jobs.Config {
	return jobs.Config{
		BatchSize:       cfg.Workers.BatchSize,
		Rate:            cfg.VNCCloud.Rate,
		MaxWorkers:      cfg.Workers.Concurrency,
		Chains:          cfg.Workers.Chains,
		Fanout:          cfg.Workers.Fanout,
		ClaimLease:      cfg.Workers.ClaimLease,
		CallTimeout:     cfg.Workers.CallTimeout,
		MaxAttempts:     cfg.Workers.MaxAttempts,
		ReadyInitial:    cfg.Readiness.InitialInterval,
		ReadyMax:        cfg.Readiness.MaxInterval,
		ReadyMultiplier: cfg.Readiness.Multiplier,
		ReadyMaxElapsed: cfg.Readiness.MaxElapsed,
	}
}

// Serve runs the workers and the HTTP API on ln until ctx ends, then shuts down
// gracefully: no new jobs are fetched, in-flight calls finish (within
// shutdownTimeout, after which they are cancelled and their results still recorded),
// and the HTTP server drains.
func (w *Worker) Serve(ctx context.Context, ln net.Listener, shutdownTimeout time.Duration, logger *slog.Logger) error {
	// River's own context is not the signal's: cancelling it would cancel the jobs
	// running now and cut their in-flight calls (a create whose answer is lost is an
	// orphan). The signal leads to Stop below, which stops fetching and waits.
	if err := w.River.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("start workers: %w", err)
	}
	srv := &http.Server{Handler: w.Handler, ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(w.API.StopStreams)
	httpErr := make(chan error, 1)
	go func() { httpErr <- srv.Serve(ln) }()
	logger.Info("vncfleet serving", "listen", ln.Addr().String())

	select {
	case <-ctx.Done():
	case err := <-httpErr:
		return fmt.Errorf("http: %w", err)
	}
	logger.Info("shutting down: draining jobs and requests", "timeout", shutdownTimeout)
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	_ = srv.Shutdown(stopCtx)
	if err := w.River.Stop(stopCtx); err != nil {
		logger.Warn("jobs did not finish in time; cancelling them", "err", err)
		hardCtx, hardCancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer hardCancel()
		if err := w.River.StopAndCancel(hardCtx); err != nil {
			return fmt.Errorf("stop workers: %w", err)
		}
	}
	logger.Info("stopped")
	return nil
}
