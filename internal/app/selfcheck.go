package app

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/doctor"
	"github.com/vncfleet/vncfleet/internal/metrics"
	"github.com/vncfleet/vncfleet/internal/store"
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
