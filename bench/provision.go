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

// provision uploads a manifest of n devices and waits until every one is settled.
func (r *rig) provision(ctx context.Context, n int) (time.Duration, error) {
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
	if err := r.request(ctx, http.MethodPost, "/v1/manifests?fleet=bench", "text/csv", b.String(), &up); err != nil {
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

func newSim(readyDelay time.Duration) (*sim.Server, *httptest.Server, error) {
	s, err := sim.New(sim.Config{Accounts: []sim.Account{{Key: benchKey, Secret: benchSecret}}, ReadyDelay: readyDelay, Seed: 1})
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

func newScenario(ctx context.Context, baseURL, name string, readyDelay time.Duration) (*scenario, error) {
	url, pool, err := freshDatabase(ctx, baseURL, name)
	if err != nil {
		return nil, err
	}
	s, srv, err := newSim(readyDelay)
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

// provisionOnce provisions devices on a fresh scenario and reports what it took.
func provisionOnce(baseURL, name string, devices int, readyDelay time.Duration) (time.Duration, sim.State, error) {
	ctx := context.Background()
	sc, err := newScenario(ctx, baseURL, name, readyDelay)
	if err != nil {
		return 0, sim.State{}, err
	}
	defer sc.done()
	r, err := sc.rig(ctx, 0)
	if err != nil {
		return 0, sim.State{}, err
	}
	defer r.close()
	took, err := r.provision(ctx, devices)
	return took, sc.sim.State(), err
}

// benchThroughput: devices per second end to end, no rate cap, simulator in-process;
// then River's own no-op throughput on the same database, the ceiling of any work
// done by River jobs here, as the baseline.
func benchThroughput(baseURL string, devices int) error {
	ctx := context.Background()
	sc, err := newScenario(ctx, baseURL, "vncfleet_bench_throughput", 0)
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

// benchCalls: API calls per device with a readiness delay.
func benchCalls(baseURL string, devices int, readyDelay time.Duration) error {
	took, st, err := provisionOnce(baseURL, "vncfleet_bench_calls", devices, readyDelay)
	if err != nil {
		return err
	}
	fmt.Printf("calls: %d devices, readiness delay %s: %d API calls = %.2f per device (%v) in %.1fs\n",
		devices, readyDelay, st.Requests, float64(st.Requests)/float64(devices), st.Accounts[benchKey].Counts, took.Seconds())
	return nil
}

// benchRotation: rotate every device of a provisioned fleet at a given rate and
// report the share of the rate budget the rotation used.
func benchRotation(baseURL string, devices int, rate float64) error {
	ctx := context.Background()
	sc, err := newScenario(ctx, baseURL, "vncfleet_bench_rotation", 0)
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
