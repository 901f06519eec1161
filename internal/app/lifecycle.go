package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/robfig/cron/v3"

	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/internal/metrics"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/internal/webhook"
	"github.com/vncfleet/vncfleet/jobs"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/zenlayer"
)

// cronSchedule parses a standard 5-field cron expression (or a descriptor such as
// @daily) into River's periodic schedule; an empty one disables the job.
func cronSchedule(spec string) (river.PeriodicSchedule, error) {
	if spec == "" {
		return nil, nil
	}
	return cron.ParseStandard(spec)
}

// reconcileCloud is the VNC Cloud client as reconciliation needs it.
type reconcileCloud interface {
	reconcile.Cloud
}

func newLifecycle(cfg *config.Config, st *store.Store, limiter ratelimit.Limiter,
	cloud jobs.Cloud, logger *slog.Logger, enqueue func(ctx context.Context, key string, devices int) error) (*lifecycle.Lifecycle, error) {
	rc, ok := cloud.(reconcileCloud)
	if !ok {
		return nil, nil
	}
	rec := &reconcile.Reconciler{
		Store: st,
		Cloud: rc,
		// The worker's rule: paced by the cluster limiter, under a call's timeout,
		// and a Retry-After pauses the whole cluster.
		Call: cloudop.Limited{Limiter: limiter, Timeout: cfg.Workers.CallTimeout, Logger: logger}.Call,
		Config: reconcile.Config{
			// The longest a create recorded before a run can be in progress.
			MaxWait:       cfg.Workers.ClaimLease + cfg.Workers.CallTimeout,
			DeleteForeign: cfg.Reconcile.ForeignPolicy == "delete",
		},
		Logger:  logger,
		Enqueue: enqueue,
	}
	return &lifecycle.Lifecycle{
		Store:      st,
		Reconciler: rec,
		Config:     lifecycle.Config{MaxAge: cfg.Rotation.MaxAge, Window: cfg.Rotation.Window},
		Logger:     logger,
		Enqueue:    enqueue,
	}, nil
}

// newZenlayer builds the Zenlayer client from config, its requests counted in met (nil:
// not counted); nil when it is not configured.
func newZenlayer(cfg *config.Config, met *metrics.Metrics) (*zenlayer.Client, error) {
	if cfg.Zenlayer.AccessKeyID == "" || cfg.Zenlayer.AccessKeyPassword == "" {
		return nil, nil
	}
	zc, err := zenlayer.New(zenlayer.Config{
		BaseURL:           cfg.Zenlayer.APIURL,
		AccessKeyID:       cfg.Zenlayer.AccessKeyID,
		AccessKeyPassword: cfg.Zenlayer.AccessKeyPassword,
		Observe:           observeZenlayer(met),
	})
	if err != nil {
		return nil, fmt.Errorf("Zenlayer client: %w", err)
	}
	return zc, nil
}

func observeZenlayer(met *metrics.Metrics) func(int) {
	if met == nil {
		return nil
	}
	return met.ObserveZenlayer
}

func wireZenlayer(pool *pgxpool.Pool, cfg *config.Config, opts Options, deps *jobs.Deps, met *metrics.Metrics) error {
	zc, err := newZenlayer(cfg, met)
	if zc == nil || err != nil {
		return err
	}
	deps.Zenlayer = zc
	limCfg := ratelimit.Config{Name: "zenlayer", Rate: cfg.Zenlayer.Rate}
	if opts.LocalLimiter {
		deps.ZenlayerLimiter = ratelimit.NewLocal(limCfg)
		return nil
	}
	deps.ZenlayerLimiter, err = ratelimit.NewCluster(pool, limCfg)
	return err
}

func wireWebhooks(pool *pgxpool.Pool, cfg *config.Config, opts Options, deps *jobs.Deps, st *store.Store, met *metrics.Metrics) error {
	if cfg.Webhook.URL == "" {
		return nil
	}
	limCfg := ratelimit.Config{Name: "webhook", Rate: cfg.Webhook.Rate}
	var limiter ratelimit.Limiter
	var err error
	if opts.LocalLimiter {
		limiter = ratelimit.NewLocal(limCfg)
	} else if limiter, err = ratelimit.NewCluster(pool, limCfg); err != nil {
		return err
	}
	worker, err := webhook.NewDispatchWorker(webhook.Config{
		URL:            cfg.Webhook.URL,
		Secret:         cfg.Webhook.Secret,
		PreviousSecret: cfg.Webhook.PreviousSecret,
		Rate:           cfg.Webhook.Rate,
		MaxAttempts:    cfg.Webhook.MaxAttempts,
		Logger:         deps.Logger,
		Observe:        met.ObserveWebhook,
	}, pool, limiter)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	st.EmitWebhookEvents(true)
	deps.Extra = func(workers *river.Workers) []*river.PeriodicJob {
		river.AddWorker(workers, worker)
		return []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(2*time.Second),
			func() (river.JobArgs, *river.InsertOpts) { return webhook.DispatchArgs{}, nil },
			&river.PeriodicJobOpts{ID: "webhook_dispatch", RunOnStart: true})}
	}
	return nil
}
