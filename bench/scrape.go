package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"time"

	"github.com/vncfleet/vncfleet/internal/metrics"
	"github.com/vncfleet/vncfleet/internal/store"
)

// benchScrape measures GET /metrics with devices in the database: one scrape (which
// serves the latest background reading), and one background reading of the
// fleet-wide gauges (the temporary count(*) GROUP BY and the rotation scan).
func benchScrape(baseURL string, devices, fleets, scrapes int) error {
	ctx := context.Background()
	const name = "vncfleet_bench_scrape"
	_, pool, err := freshDatabase(ctx, baseURL, name)
	if err != nil {
		return err
	}
	defer dropDatabase(ctx, baseURL, name)
	defer pool.Close()

	start := time.Now()
	if _, err := pool.Exec(ctx, `INSERT INTO fleets (name) SELECT 'fleet-' || f FROM generate_series(1, $1) f`, fleets); err != nil {
		return err
	}
	// Rows as wide as provisioned ones: a spec hash, an address, a sealed password.
	if _, err := pool.Exec(ctx, `
		INSERT INTO devices (fleet_id, device_id, action, groups, spec_hash, status, cloud_address, password_ct,
		                     password_key_id, password_set_at)
		SELECT 1 + i % $2, 'device-' || i, 'connect', ARRAY['line-' || (i % 100)], decode(md5(i::text) || md5(i::text), 'hex'),
		       CASE WHEN i % 100 = 0 THEN 'failed' WHEN i % 50 = 0 THEN 'awaiting_ready' ELSE 'ready' END,
		       md5(i::text) || '.' || md5((i+1)::text), decode(md5(i::text) || md5((i+2)::text) || md5((i+3)::text), 'hex'),
		       'k1', now() - (i % 60) * interval '1 day'
		FROM generate_series(1, $1) i`, devices, fleets); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE devices`); err != nil {
		return err
	}
	fmt.Printf("%d devices in %d fleets written in %s\n", devices, fleets, time.Since(start).Round(time.Millisecond))

	m := metrics.New()
	st := store.New(pool, nil)
	g := m.NewDBGauges(metrics.DBConfig{Store: st, Pool: pool})
	defer g.Close()
	start = time.Now()
	if err := g.Refresh(ctx); err != nil {
		return err
	}
	fmt.Printf("one background reading of every fleet-wide gauge (the leader's first, then every %s for the rotation gauges): %s\n",
		metrics.DefaultRotationInterval, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if err := g.Refresh(ctx); err != nil {
		return err
	}
	fmt.Printf("one background reading without the rotation gauges (every metrics_interval, %s): %s\n",
		metrics.DefaultDBInterval, time.Since(start).Round(time.Millisecond))
	parts := []struct {
		name string
		read func() error
	}{
		{"devices by fleet and status (temporary count(*) GROUP BY)", func() error { _, err := st.FleetStatusCounts(ctx); return err }},
		{"rotation: overdue and newest password per fleet", func() error { _, err := st.RotationStates(ctx, 30*24*time.Hour); return err }},
	}
	for _, p := range parts {
		start := time.Now()
		if err := p.read(); err != nil {
			return err
		}
		fmt.Printf("  of which %s: %s\n", p.name, time.Since(start).Round(time.Millisecond))
	}
	handler := m.Handler()
	var took []time.Duration
	var size int
	for range scrapes {
		rec := httptest.NewRecorder()
		start := time.Now()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		took = append(took, time.Since(start))
		if rec.Code != http.StatusOK {
			return fmt.Errorf("scrape: HTTP %d", rec.Code)
		}
		size = rec.Body.Len()
	}
	slices.Sort(took)
	fmt.Printf("one scrape (%d bytes): median %s, slowest %s of %d (target ≤ 50ms)\n",
		size, took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond), len(took))
	return nil
}
