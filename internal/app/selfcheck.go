package app

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/doctor"
	"github.com/vncfleet/vncfleet/internal/metrics"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// SelfCheck runs the doctor's checks on the configuration, with the database at pool
// (nil when it could not be reached: poolErr says why). The API calls it makes are
// counted in met (nil: not counted): every request sent to VNC Cloud is in
// vncfleet_vnccloud_requests_total.
func SelfCheck(ctx context.Context, cfg *config.Config, pool *pgxpool.Pool, poolErr error, met *metrics.Metrics) []doctor.Result {
	c := doctor.Config{Pool: pool, DatabaseErr: poolErr, WebhookURL: cfg.Webhook.URL}
	keys, err := Keyring(cfg)
	switch {
	case err != nil:
		c.KeyErr = err
	case keys == nil:
		c.KeyErr = errors.New("VNCFLEET_SECRET_KEY is not set: vncfleet will not store cloud passwords unencrypted (openssl rand -base64 32 makes one)")
	}
	if pool != nil {
		c.Store = store.New(pool, keys)
	}
	if cfg.VNCCloud.APIKey != "" {
		if cloud, err := newVNCCloud(cfg, observeCloud(met)); err == nil {
			c.VNCCloud = cloud
			if pool != nil && cfg.VNCCloud.Rate > 0 {
				// The check's one call takes a slot like any other: a `serve` started, or
				// a `doctor` run, while others send at the cap must not add to them
				// (issue 12: one more request in a second at the cap).
				if lim, err := ratelimit.NewCluster(pool, ratelimit.Config{Name: "vnccloud", Rate: cfg.VNCCloud.Rate, Margin: cfg.VNCCloud.RateMargin}); err == nil {
					c.VNCCloud = limitedLister{cloud: cloud, limiter: lim}
				}
			}
		}
	}
	if zc, err := newZenlayer(cfg, met); err == nil {
		c.Zenlayer = zc
	}
	return doctor.Run(ctx, c)
}

func observeCloud(met *metrics.Metrics) vnccloud.Observer {
	if met == nil {
		return nil
	}
	return met.ObserveCloud
}

// limitedLister waits for a send slot before each page.
type limitedLister struct {
	cloud   doctor.Lister
	limiter ratelimit.Limiter
}

func (l limitedLister) ListPage(ctx context.Context, target string) (vnccloud.Page, error) {
	if err := l.limiter.Wait(ctx); err != nil && ctx.Err() != nil {
		return vnccloud.Page{}, err
	}
	// A limiter that cannot lease (a database not migrated yet, which its own check
	// reports) does not hide whether VNC Cloud takes the credentials: one call.
	return l.cloud.ListPage(ctx, target)
}
