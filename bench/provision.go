package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/internal/app"
	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/sim"
)

const (
	benchKey    = "bench-key"
	benchSecret = "bench-secret"
	benchToken  = "bench-token"
)

// rig is an in-process simulator plus one in-process vncfleet worker.
type rig struct {
	sim    *sim.Server
	simSrv *httptest.Server
	api    string
	stop   context.CancelFunc
	done   chan error
}

func startRig(ctx context.Context, pool *pgxpool.Pool, dbURL string, s *sim.Server, simSrv *httptest.Server, rate float64) (*rig, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	env := map[string]string{
		"DATABASE_URL":        dbURL,
		"VNCFLEET_SECRET_KEY": base64.StdEncoding.EncodeToString(key),
		"VNCFLEET_TOKEN":      benchToken,
		"VNCCLOUD_API_URL":    simSrv.URL + "/cloud/1.1",
		"VNCCLOUD_API_KEY":    benchKey,
		"VNCCLOUD_API_SECRET": benchSecret,
		"VNCCLOUD_RATE":       fmt.Sprint(rate),
	}
	cfg, err := config.Load("", func(k string) string { return env[k] })
	if err != nil {
		return nil, err
	}
	cfg.Rotation.Schedule, cfg.Reconcile.Schedule = "", ""
	if v := os.Getenv("BENCH_BATCH"); v != "" {
		fmt.Sscan(v, &cfg.Workers.BatchSize)
	}
	if v := os.Getenv("BENCH_CHAINS"); v != "" {
		fmt.Sscan(v, &cfg.Workers.Chains)
	}
	if v := os.Getenv("BENCH_FANOUT"); v != "" {
		fmt.Sscan(v, &cfg.Workers.Fanout)
	}
	logger := slog.New(slog.DiscardHandler)
	w, err := app.NewWorker(ctx, pool, cfg, app.Options{Logger: logger, LocalLimiter: true})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(ctx)
	r := &rig{sim: s, simSrv: simSrv, api: "http://" + ln.Addr().String(), stop: stop, done: make(chan error, 1)}
	go func() { r.done <- w.Serve(runCtx, ln, 10*time.Second, logger) }()
	return r, nil
}

func (r *rig) close() {
	r.stop()
	<-r.done
}

func (r *rig) request(ctx context.Context, method, path, contentType string, body string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, r.api+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+benchToken)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// provision uploads a manifest of n devices to the fleet "bench" and waits until
// every one is settled.
func (r *rig) provision(ctx context.Context, n int) (time.Duration, error) {
	return r.provisionFleet(ctx, "bench", n)
}

// provisionFleet uploads a manifest of n devices to a fleet and waits until every one
// is settled.
func (r *rig) provisionFleet(ctx context.Context, fleet string, n int) (time.Duration, error) {
	var b strings.Builder
	b.WriteString("device_id,action,groups,allow_groups\n")
	for i := 0; i < n; i++ {
		if i%2 == 0 {
			fmt.Fprintf(&b, "dev-%07d,connect,line-%04d,\n", i, i/20)
		} else {
			fmt.Fprintf(&b, "dev-%07d,listen,,line-%04d\n", i, i/20)
		}
	}
	start := time.Now()
	var up struct {
		Manifest struct {
			ID int64 `json:"id"`
		} `json:"manifest"`
	}
	if err := r.request(ctx, http.MethodPost, "/v1/manifests?fleet="+fleet, "text/csv", b.String(), &up); err != nil {
		return 0, err
	}
	return r.waitDone(ctx, fmt.Sprintf("/v1/manifests/%d?no_groups=true", up.Manifest.ID), start)
}

// waitPoll is how often the benchmark asks whether the work is done: the figures it
// prints are precise to about this much.
const waitPoll = 200 * time.Millisecond

func (r *rig) waitDone(ctx context.Context, path string, start time.Time) (time.Duration, error) {
	for {
		var p struct {
			Total, Settled, Failed int
			Done                   bool
		}
		asked := time.Now()
		if err := r.request(ctx, http.MethodGet, path, "", "", &p); err != nil {
			return 0, err
		}
		took := time.Since(asked)
		if p.Done {
			if p.Failed > 0 {
				return 0, fmt.Errorf("%d devices failed", p.Failed)
			}
			return time.Since(start), nil
		}
		// Each poll counts the manifest's devices: paced as `upload --wait` paces its
		// polls (no more often than every four times the answer took), so that the
		// measurement costs the database what a waiting client does.
		time.Sleep(max(waitPoll, 4*took))
	}
}

func newSim(readyDelay time.Duration, readyJitter float64) (*sim.Server, *httptest.Server, error) {
	s, err := sim.New(sim.Config{Accounts: []sim.Account{{Key: benchKey, Secret: benchSecret}}, ReadyDelay: readyDelay,
		ReadyJitter: readyJitter, Seed: 1})
	if err != nil {
		return nil, nil, err
	}
	return s, httptest.NewServer(s.Handler()), nil
}

// scenario is a fresh database and an in-process simulator, torn down by done.
type scenario struct {
	url    string
	pool   *pgxpool.Pool
	sim    *sim.Server
	simSrv *httptest.Server
	done   func()
}

func newScenario(ctx context.Context, baseURL, name string, readyDelay time.Duration, readyJitter float64) (*scenario, error) {
	url, pool, err := freshDatabase(ctx, baseURL, name)
	if err != nil {
		return nil, err
	}
	s, srv, err := newSim(readyDelay, readyJitter)
	if err != nil {
		pool.Close()
		dropDatabase(ctx, baseURL, name)
		return nil, err
	}
	return &scenario{url: url, pool: pool, sim: s, simSrv: srv, done: func() {
		srv.Close()
		pool.Close()
		dropDatabase(ctx, baseURL, name)
	}}, nil
}

// rig starts a worker on the scenario with VNCCLOUD_RATE=rate (0: no cap).
func (sc *scenario) rig(ctx context.Context, rate float64) (*rig, error) {
	return startRig(ctx, sc.pool, sc.url, sc.sim, sc.simSrv, rate)
}

// benchThroughput: devices per second end to end, no rate cap, simulator in-process;
// then River's own no-op throughput on the same database, the ceiling of any work
// done by River jobs here, as the baseline.
func benchThroughput(baseURL string, devices int) error {
	ctx := context.Background()
	sc, err := newScenario(ctx, baseURL, "vncfleet_bench_throughput", 0, 0)
	if err != nil {
		return err
	}
	defer sc.done()
	r, err := sc.rig(ctx, 0)
	if err != nil {
		return err
	}
	took, err := r.provision(ctx, devices)
	r.close()
	if err != nil {
		return err
	}
	st := sc.sim.State()
	perSecond := float64(devices) / took.Seconds()
	fmt.Printf("throughput: %d devices ready in %.2fs = %.0f devices/s (no rate cap, readiness immediate, %d API calls = %.2f per device)\n",
		devices, took.Seconds(), perSecond, st.Requests, float64(st.Requests)/float64(devices))
	jobs, err := riverNoopThroughput(ctx, sc.pool, devices)
	if err != nil {
		return err
	}
	fmt.Printf("River baseline: %d no-op jobs (InsertMany, %d workers) on the same database: %.0f jobs/s; vncfleet's devices/s: %.0f%% of it\n",
		devices, noopWorkers, jobs, 100*perSecond/jobs)
	return nil
}

// benchCalls: API calls per device with a readiness delay (spread by readyJitter),
// against the floor of 2 (a create and one readiness check). Two manifests of
// `devices` devices, one after the other, on one database: the first on an account
// nothing was learned of, the second after what the first taught.
func benchCalls(baseURL string, devices int, readyDelay time.Duration, readyJitter float64) error {
	ctx := context.Background()
	sc, err := newScenario(ctx, baseURL, "vncfleet_bench_calls", readyDelay, readyJitter)
	if err != nil {
		return err
	}
	defer sc.done()
	r, err := sc.rig(ctx, 0)
	if err != nil {
		return err
	}
	defer r.close()
	fmt.Printf("calls: readiness delay %s × [%.2f, %.2f], %d devices a manifest, no rate cap\n",
		readyDelay, 1-readyJitter, 1+readyJitter, devices)
	for round, what := range []string{"fresh account", "after the first"} {
		before := sc.sim.State().Accounts[benchKey]
		took, err := r.provisionFleet(ctx, fmt.Sprintf("bench-%d", round), devices)
		if err != nil {
			return err
		}
		after := sc.sim.State().Accounts[benchKey]
		calls := after.Requests - before.Requests
		counts := map[string]int64{}
		for op, n := range after.Counts {
			if d := n - before.Counts[op]; d != 0 {
				counts[op] = d
			}
		}
		perDevice := float64(calls) / float64(devices)
		fmt.Printf("  manifest %d (%s): %d API calls = %.3f per device = %.1f%% above the floor of 2 (%v) in %.1fs; %s\n",
			round+1, what, calls, perDevice, 100*(perDevice-2)/2, counts, took.Seconds(), learned(ctx, sc))
	}
	return nil
}

// learned describes the first-poll delay the database holds (migration 0020), if any.
func learned(ctx context.Context, sc *scenario) string {
	var secs float64
	var obs, pending int64
	err := sc.pool.QueryRow(ctx, `SELECT first_poll_seconds, observations, pending FROM readiness_estimates`).Scan(&secs, &obs, &pending)
	if err != nil {
		return "no learned first-poll delay"
	}
	return fmt.Sprintf("learned first-poll delay %.3fs from %d first polls (%d pending)", secs, obs, pending)
}

// benchRotation: rotate every device of a provisioned fleet at a given rate and
// report the share of the rate budget the rotation used.
func benchRotation(baseURL string, devices int, rate float64) error {
	ctx := context.Background()
	sc, err := newScenario(ctx, baseURL, "vncfleet_bench_rotation", 0, 0)
	if err != nil {
		return err
	}
	defer sc.done()
	fast, err := sc.rig(ctx, 0)
	if err != nil {
		return err
	}
	if _, err := fast.provision(ctx, devices); err != nil {
		fast.close()
		return err
	}
	fast.close()

	r, err := sc.rig(ctx, rate)
	if err != nil {
		return err
	}
	defer r.close()
	s := sc.sim
	before := s.State().Requests
	var rot struct {
		Scheduled int    `json:"scheduled"`
		Key       string `json:"key"`
	}
	start := time.Now()
	if err := r.request(ctx, http.MethodPost, "/v1/rotate?all=true", "", "", &rot); err != nil {
		return err
	}
	took, err := r.waitDone(ctx, "/v1/work/"+rot.Key, start)
	if err != nil {
		return err
	}
	calls := s.State().Requests - before
	achieved := float64(calls) / took.Seconds()
	// (The simulator's peak per second is not printed: it counts the uncapped
	// provisioning before the rotation too.)
	fmt.Printf("rotation: %d devices in %.1fs = %.1f devices/s; %d API calls (%.2f per device) at %.1f calls/s = %.0f%% of VNCCLOUD_RATE=%g\n",
		rot.Scheduled, took.Seconds(), float64(rot.Scheduled)/took.Seconds(), calls, float64(calls)/float64(rot.Scheduled),
		achieved, 100*achieved/rate, rate)
	return nil
}
