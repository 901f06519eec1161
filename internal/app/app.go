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
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/riverqueue/rivercontrib/otelriver"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/certfile"
	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/console"
	"github.com/vncfleet/vncfleet/internal/metrics"
	"github.com/vncfleet/vncfleet/internal/readiness"
	"github.com/vncfleet/vncfleet/internal/secretbox"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/internal/tracing"
	"github.com/vncfleet/vncfleet/jobs"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// ErrUnreachable marks a dependency that could not be reached (exit code 3).
var ErrUnreachable = errors.New("unreachable")

// ErrBadConfig marks a setting that cannot work, found when it is used (exit code 2).
var ErrBadConfig = errors.New("invalid configuration")

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

// newVNCCloud builds the VNC Cloud client from config.
func newVNCCloud(cfg *config.Config, observe vnccloud.Observer) (*vnccloud.Client, error) {
	c, err := vnccloud.New(vnccloud.Config{
		BaseURL:   cfg.VNCCloud.APIURL,
		APIKey:    cfg.VNCCloud.APIKey,
		APISecret: cfg.VNCCloud.APISecret,
		Timeout:   cfg.VNCCloud.Timeout,
		Observe:   observe,
		Tracer:    tracing.TracerIfEnabled(os.Getenv),
	})
	if err != nil {
		return nil, fmt.Errorf("VNC Cloud client: %w", err)
	}
	return c, nil
}

// Worker is everything a `serve` process runs besides HTTP.
type Worker struct {
	Store   *store.Store
	River   *river.Client[pgx.Tx]
	Limiter ratelimit.Limiter
	Deps    *jobs.Deps
	API     *server.Server
	// HTTP is how Serve answers: TLS and timeouts.
	HTTP config.HTTP
	// Metrics is what GET /metrics serves; Gauges keeps its fleet-wide part fresh
	// while Serve runs.
	Metrics *metrics.Metrics
	Gauges  *metrics.DBGauges
	// cluster is the cluster-wide VNC Cloud limiter (nil with Options.LocalLimiter),
	// whose state Serve publishes for the progress answer.
	cluster *ratelimit.Cluster
	// Handler serves HTTP: the operator's console at / and, for every other path, the API.
	Handler http.Handler
	// RateStats reads what the cluster rate limiter did in this process (nil with a
	// local limiter): Serve logs it at shutdown, where the budget went.
	RateStats func() ratelimit.Stats
}

// Options are the parts a caller may supply instead of building them from config
// (tests and `demo` use them).
type Options struct {
	Logger *slog.Logger
	// Cloud replaces the VNC Cloud client built from config.
	Cloud jobs.Cloud
	// LocalLimiter uses an in-process limiter instead of the cluster-wide one.
	LocalLimiter bool
	// Metrics is the registry to fill (nil: a new one). `serve` makes it before its
	// self-check, so that the self-check's VNC Cloud call is counted too.
	Metrics *metrics.Metrics
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

	met := opts.Metrics
	if met == nil {
		met = metrics.New()
	}
	limCfg := ratelimit.Config{Name: "vnccloud", Rate: cfg.VNCCloud.Rate, OnboardingShare: cfg.VNCCloud.OnboardingShare,
		Margin: cfg.VNCCloud.RateMargin, Logger: logger}
	var bare ratelimit.Limiter
	var cluster *ratelimit.Cluster
	if opts.LocalLimiter {
		bare = ratelimit.NewLocal(limCfg)
	} else if cluster, err = ratelimit.NewCluster(pool, limCfg); err != nil {
		return nil, err
	} else {
		bare = cluster
	}
	limiter := met.InstrumentLimiter(bare, cfg.VNCCloud.Rate)
	var rateStats func() ratelimit.Stats
	if cl, ok := bare.(*ratelimit.Cluster); ok {
		rateStats = cl.Stats
	}

	cloud := opts.Cloud
	if cloud == nil {
		if cloud, err = newVNCCloud(cfg, met.ObserveCloud); err != nil {
			return nil, err
		}
	}

	deps := &jobs.Deps{
		Store:      st,
		Cloud:      cloud,
		Limiter:    limiter,
		Logger:     logger,
		Config:     jobsConfig(cfg),
		AfterReady: met.BecameReady,
		Recorded:   met.WorkRecorded,
		Middleware: []rivertype.Middleware{met.JobMiddleware(), otelriver.NewMiddleware(nil)},
	}
	if err := wireZenlayer(pool, cfg, opts, deps, met); err != nil {
		return nil, err
	}
	if err := wireWebhooks(pool, cfg, opts, deps, st, met); err != nil {
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
	life, err := newLifecycle(cfg, st, limiter, cloud, logger, enqueueNow)
	if err != nil {
		return nil, err
	}
	if life != nil {
		life.Observe = met
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
		tokens = append(tokens, server.Token{Name: t.Name, Value: t.Token, Roles: t.Roles, Fleets: t.Fleets})
	}
	proxies, err := cfg.TrustedProxyPrefixes()
	if err != nil {
		return nil, fmt.Errorf("trusted_proxies: %w", err)
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
		MaxUploadBytes:       cfg.MaxUploadBytes,
		ManifestLimits:       fleet.ReaderOptions{MaxCellBytes: cfg.MaxCellBytes, MaxColumns: cfg.MaxColumns},
		MaxDeletionsPercent:  cfg.MaxDeletionsPercent,
		MaxDeletionsMin:      cfg.MaxDeletionsMin,
		InlineApplyRows:      cfg.InlineApplyRows,
		Logger:               logger,
		UploadIdleTimeout:    cfg.HTTP.UploadIdleTimeout,
		WriteTimeout:         cfg.HTTP.WriteTimeout,
		MaxConcurrentUploads: cfg.HTTP.MaxConcurrentUploads,
		TrustedProxies:       proxies,
		ClaimTTL:             cfg.ClaimTTL,
		Metrics:              met.Handler(),
		ObserveRequest:       met.ObserveHTTP,
		ObserveUpload: func(p store.Plan, invalid int) {
			met.ObserveUpload(p.Creates, p.Updates, p.Deletes, p.Unchanged, invalid)
		},
		Rate:           cfg.VNCCloud.Rate,
		RotationMaxAge: cfg.Rotation.MaxAge,
		RotationWindow: cfg.Rotation.Window,
	}
	if life != nil {
		apiCfg.Lifecycle = life
		if deps.RotationSchedule != nil {
			apiCfg.RotationSchedule = deps.RotationSchedule
		}
	}
	api := server.New(apiCfg)
	gauges := met.NewDBGauges(metrics.DBConfig{Store: st, Pool: pool, Interval: cfg.MetricsInterval,
		RotationMaxAge: cfg.Rotation.MaxAge, ReadinessAccount: deps.Config.ReadyAccount, Logger: logger})
	ui, err := console.New(console.Config{API: api, Sessions: st, Logger: logger})
	if err != nil {
		return nil, err
	}
	return &Worker{Store: st, River: rc, Limiter: limiter, RateStats: rateStats, Deps: deps, API: api, Handler: ui, HTTP: cfg.HTTP,
		Metrics: met, Gauges: gauges, cluster: cluster}, nil
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
		ReadyFloor:      cfg.Readiness.Floor,
		ReadyCeiling:    cfg.Readiness.Ceiling,
		// The delay is learned per account, so the sim's and the real API's, or two
		// accounts', never mix.
		ReadyAccount:       readiness.Account(cfg.VNCCloud.APIURL, cfg.VNCCloud.APIKey),
		ReadyPendingTarget: cfg.Readiness.PendingTarget,
	}
}

// HTTPServer is the http.Server of the API: its timeouts, and its TLS configuration
// when w.HTTP names a certificate (loaded now, so that a wrong file is an error at
// start). Per-request bounds (upload idle, write per chunk) are the API's own.
func (w *Worker) HTTPServer(logger *slog.Logger) (*http.Server, error) {
	srv := &http.Server{
		Handler:           w.Handler,
		ReadHeaderTimeout: w.HTTP.ReadHeaderTimeout,
		IdleTimeout:       w.HTTP.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	if w.HTTP.TLSCertFile != "" {
		certs, err := certfile.New(w.HTTP.TLSCertFile, w.HTTP.TLSKeyFile, logger)
		if err != nil {
			return nil, err
		}
		srv.TLSConfig = certs.Config()
	}
	srv.RegisterOnShutdown(w.API.StopStreams)
	return srv, nil
}

// Serve runs the workers and the HTTP API on ln (HTTPS when w.HTTP names a
// certificate; a certificate that cannot be loaded is an ErrBadConfig) until ctx ends, then shuts down gracefully: no new jobs are fetched,
// in-flight calls finish (within shutdownTimeout, after which they are cancelled and
// their results still recorded), and the HTTP server drains.
func (w *Worker) Serve(ctx context.Context, ln net.Listener, shutdownTimeout time.Duration, logger *slog.Logger) error {
	srv, err := w.HTTPServer(logger)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	// River's own context is not the signal's: cancelling it would cancel the jobs
	// running now and cut their in-flight calls (a create whose answer is lost is an
	// orphan). The signal leads to Stop below, which stops fetching and waits.
	// Registered before the first claim: claims are made under this process's id, so
	// that others release them within seconds if it dies.
	presence, err := w.Store.Register(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := presence.Close(context.WithoutCancel(ctx)); err != nil {
			logger.Warn("unregistering the worker", "err", err)
		}
	}()
	w.Deps.Presence = presence
	if err := w.River.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("start workers: %w", err)
	}
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	go jobs.WatchDeadWorkers(watchCtx, w.River, w.Deps)
	gaugesCtx, stopGauges := context.WithCancel(context.WithoutCancel(ctx))
	gaugesDone := make(chan struct{})
	go func() { defer close(gaugesDone); w.Gauges.Run(gaugesCtx) }()
	defer func() { stopGauges(); <-gaugesDone }()
	if w.cluster != nil {
		// The limiter's state for the progress answer (`upload --wait` shows whether the
		// cluster is slowed down); its row goes when the process stops.
		pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
		pubDone := make(chan struct{})
		go func() { defer close(pubDone); w.cluster.Publish(pubCtx, 0) }()
		defer func() { stopPub(); <-pubDone }()
	}
	httpErr := make(chan error, 1)
	scheme := "http"
	if srv.TLSConfig != nil {
		scheme = "https"
		go func() { httpErr <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { httpErr <- srv.Serve(ln) }()
	}
	logger.Info("vncfleet serving", "listen", ln.Addr().String(), "scheme", scheme)

	select {
	case <-ctx.Done():
	case err := <-httpErr:
		return fmt.Errorf("http: %w", err)
	}
	logger.Info("shutting down: draining jobs and requests", "timeout", shutdownTimeout)
	if w.RateStats != nil {
		st := w.RateStats()
		logger.Info("rate limiter: this process's share of VNCCLOUD_RATE", "grants", st.Grants,
			"onboarding", st.ByClass[ratelimit.Onboarding], "rotation", st.ByClass[ratelimit.Rotation],
			"leases", st.Leases, "slots", st.Slots, "late", st.Late, "unused", st.Unused, "uncertain_clock", st.UncertainClock)
	}
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
