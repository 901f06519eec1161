package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"
)

// The AIMD factor is per process (each process sees its own answers), but the
// operator waiting on a manifest asks of the whole cluster: is it slowed down, and to
// what? Publish answers with a row per process in rate_limit_processes (migration
// 0018), which the progress answer reads (store.ManifestCloudState). It only exposes
// the state: the algorithm above does not read the rows.

// DefaultPublishEvery is how often Publish writes: often enough that a slow-down shows
// within a poll or two of `upload --wait`, rarely enough to cost nothing (one upsert
// a second per process).
const DefaultPublishEvery = time.Second

// staleAfter is how old another process's row may be before Publish deletes it (a
// process that was killed leaves its row; readers already ignore it after seconds).
const staleAfter = time.Hour

// Publish writes this process's limiter state (its cap, AIMD factor and the requests
// per second it sent since the last write) to its row every interval (0:
// DefaultPublishEvery) until ctx ends, then deletes the row. A failed write is
// logged and tried again at the next tick. It returns at once for an unlimited
// limiter, which has no state to show.
func (c *Cluster) Publish(ctx context.Context, every time.Duration) {
	if c.cfg.Rate <= 0 {
		return
	}
	if every <= 0 {
		every = DefaultPublishEvery
	}
	process := processName()
	if _, err := c.pool.Exec(ctx, `DELETE FROM rate_limit_processes WHERE name = $1 AND updated_at < now() - $2::float8 * interval '1 second'`,
		c.cfg.Name, staleAfter.Seconds()); err != nil && ctx.Err() == nil {
		c.cfg.Logger.Warn("rate limiter: cannot delete the rows of gone processes", "limiter", c.cfg.Name, "err", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = c.pool.Exec(dctx, `DELETE FROM rate_limit_processes WHERE name = $1 AND process = $2`, c.cfg.Name, process)
	}()
	grants, at := c.Stats().Grants, time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	failing := false
	for {
		now := time.Now()
		g := c.Stats().Grants
		sending := 0.0
		if secs := now.Sub(at).Seconds(); secs > 0 {
			sending = float64(g-grants) / secs
		}
		grants, at = g, now
		err := c.publishOnce(ctx, process, sending)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			c.cfg.Logger.Warn("rate limiter: cannot publish its state; the progress answer may not show a slow-down", "limiter", c.cfg.Name, "err", err)
		case err == nil && failing:
			failing = false
			c.cfg.Logger.Info("rate limiter: publishing its state again", "limiter", c.cfg.Name)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *Cluster) publishOnce(ctx context.Context, process string, sending float64) error {
	_, err := c.pool.Exec(ctx, `
		INSERT INTO rate_limit_processes AS p (name, process, rate, factor, sending, slowed_at, sent_at, updated_at)
		VALUES ($1, $2, $3::float8, $4::float8, $5::float8, CASE WHEN $4::float8 < 1 THEN now() END,
			CASE WHEN $5::float8 > 0 THEN now() END, now())
		ON CONFLICT (name, process) DO UPDATE SET rate = $3::float8, factor = $4::float8, sending = $5::float8, updated_at = now(),
			slowed_at = CASE WHEN $4::float8 < 1 THEN coalesce(p.slowed_at, now()) END,
			sent_at = CASE WHEN $5::float8 > 0 THEN now() ELSE p.sent_at END`,
		c.cfg.Name, process, c.cfg.Rate, c.Factor(), sending)
	if err != nil {
		return fmt.Errorf("rate limiter %s: publish: %w", c.cfg.Name, err)
	}
	return nil
}

// processName names this process's row: host, pid, and a random suffix so that a
// pid reused on the host (a restarted container) is another row.
func processName() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b))
}
