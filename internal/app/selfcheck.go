package app

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/doctor"
	"github.com/vncfleet/vncfleet/internal/store"
)

// SelfCheck runs the doctor's checks on the configuration, with the database at pool
// (nil when it could not be reached: poolErr says why).
func SelfCheck(ctx context.Context, cfg *config.Config, pool *pgxpool.Pool, poolErr error) []doctor.Result {
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
		if cloud, err := newVNCCloud(cfg, nil); err == nil {
			c.VNCCloud = cloud
		}
	}
	if zc, err := newZenlayer(cfg, nil); err == nil {
		c.Zenlayer = zc
	}
	return doctor.Run(ctx, c)
}
