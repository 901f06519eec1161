package metrics

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vncfleet/vncfleet/internal/readiness"
	"github.com/vncfleet/vncfleet/internal/store"
)

// DefaultDBInterval is how often the database gauges are read when
// DBConfig.Interval is zero: a third of Prometheus' usual minute-long alert windows,
// and at a million devices the (temporary) full counts cost the database well under a
// tenth of its time.
const DefaultDBInterval = 20 * time.Second

// DefaultRotationInterval: the rotation gauges scan every ready device (2.4 s at a
// million on the development machine) and passwords age by the day, so they are read
// less often than the rest.
const DefaultRotationInterval = 5 * time.Minute

// dbLockKey is the advisory lock whose holder reads the database gauges.
const dbLockKey = 0x76_6e_63_6d_65_74 // "vncmet"

// DBConfig configures the gauges read from the database.
type DBConfig struct {
	Store *store.Store
	// Pool holds the advisory lock that elects the one process reading the gauges.
	Pool *pgxpool.Pool
	// Interval is how often they are read. Defaults to DefaultDBInterval.
	Interval time.Duration
	// RotationMaxAge is rotation.max_age, for the overdue count. Defaults to 30 days,
	// as in package lifecycle.
	RotationMaxAge time.Duration
	// RotationInterval is how often the rotation gauges are read, at the first
	// reading after it passed (or as soon as a fleet gets its first ready devices).
	// Defaults to DefaultRotationInterval.
	RotationInterval time.Duration
	// ReadinessAccount is the account whose learned first-poll delay is exported
	// (readiness.Account); "" exports none.
	ReadinessAccount string
	// Logger receives refresh failures. Defaults to discarding.
	Logger *slog.Logger
}

// DBGauges are the fleet-wide gauges: devices by fleet and status, overdue rotations,
// manifests, River's queue, the webhook outbox. They describe the database, not a
// process, so exactly one process exports them — the one holding an advisory lock;
// the others export vncfleet_metrics_db_leader 0 and none of them. Sums and maxima
// across processes then both give the truth, the database pays for the reads once
// whatever the number of processes, and when the leader dies its lock goes with its
// connection and another process takes over at its next round.
//
// They are read in the background every Interval and a scrape serves the latest
// reading, so a scrape never waits for the database and costs the same at a million
// devices as at ten.
type DBGauges struct {
	cfg DBConfig

	mu       sync.Mutex
	leader   bool
	snap     dbSnapshot
	lockConn *pgxpool.Conn
	watch    settledWatch // only Refresh touches it
}

// dbSnapshot is one reading.
type dbSnapshot struct {
	at          time.Time
	took        time.Duration
	devices     map[string]map[string]int64 // fleet → status → devices
	rotation    map[string]store.RotationState
	rotationAt  time.Time                   // when rotation was read, at most RotationInterval ago
	manifests   map[string]map[string]int64 // fleet → state → manifests
	jobs        map[string]map[string]int64 // kind → state → jobs
	oldest      map[string]time.Duration    // kind → age of the oldest available job
	webhookDue  int64
	webhookDead int64
	readiness   readiness.Estimate
	learned     bool // readiness holds a stored estimate
}

var (
	descDevices = prometheus.NewDesc(namespace+"_devices", "Devices by fleet and status.", []string{"fleet", "status"}, nil)
	descOverdue = prometheus.NewDesc(namespace+"_rotation_overdue_devices",
		"Ready devices whose password is older than rotation.max_age.", []string{"fleet"}, nil)
	descLastRotation = prometheus.NewDesc(namespace+"_rotation_last_success_timestamp_seconds",
		"When the fleet's newest password was set, by a promoted rotation or a create (Unix time).", []string{"fleet"}, nil)
	descManifests = prometheus.NewDesc(namespace+"_manifests", "Stored manifests by fleet and state (applying, applied).",
		[]string{"fleet", "state"}, nil)
	descJobs      = prometheus.NewDesc(namespace+"_river_jobs", "River jobs by kind and state.", []string{"kind", "state"}, nil)
	descOldestJob = prometheus.NewDesc(namespace+"_river_oldest_available_job_age_seconds",
		"How long the oldest job that could run now has waited for a worker, by kind.", []string{"kind"}, nil)
	descWebhookPending = prometheus.NewDesc(namespace+"_webhook_pending_events", "Webhook events not yet delivered.", nil, nil)
	descWebhookDead    = prometheus.NewDesc(namespace+"_webhook_dead_events",
		"Webhook events given up on after their last attempt (kept for replay).", nil, nil)
	descFirstPoll = prometheus.NewDesc(namespace+"_readiness_first_poll_seconds",
		"The first readiness poll's delay learned for the VNC Cloud account (absent until something is learned).", nil, nil)
	descFirstPolls = prometheus.NewDesc(namespace+"_readiness_learned_first_polls",
		"First readiness polls the learned delay was learned from, by answer (pending, ready).", []string{"answer"}, nil)
	descLeader = prometheus.NewDesc(namespace+"_metrics_db_leader",
		"1 in the one process that reads and exports the fleet-wide gauges from the database.", nil, nil)
	descRefreshed = prometheus.NewDesc(namespace+"_metrics_db_refresh_timestamp_seconds",
		"When the fleet-wide gauges were last read (Unix time).", nil, nil)
	descRefreshTook = prometheus.NewDesc(namespace+"_metrics_db_refresh_duration_seconds",
		"How long the last reading of the fleet-wide gauges took.", nil, nil)
)

// NewDBGauges builds the database gauges and registers them; Run keeps them fresh.
func (m *Metrics) NewDBGauges(cfg DBConfig) *DBGauges {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultDBInterval
	}
	if cfg.RotationInterval <= 0 {
		cfg.RotationInterval = DefaultRotationInterval
	}
	if cfg.RotationMaxAge <= 0 {
		cfg.RotationMaxAge = 30 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g := &DBGauges{cfg: cfg}
	m.registry.MustRegister(g)
	return g
}

// Run reads the gauges every Interval, while this process holds the lock, until ctx
// ends; then it gives the lock up.
func (g *DBGauges) Run(ctx context.Context) {
	defer g.Close()
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		if err := g.Refresh(ctx); err != nil && ctx.Err() == nil {
			g.cfg.Logger.Warn("metrics: reading the fleet-wide gauges failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh takes or checks the lock and, as the leader, reads every gauge now.
func (g *DBGauges) Refresh(ctx context.Context) error {
	leader, err := g.lead(ctx)
	if err != nil || !leader {
		return err
	}
	g.mu.Lock()
	prev := g.snap
	g.mu.Unlock()
	snap, err := g.read(ctx, prev)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.snap = snap
	g.mu.Unlock()
	return g.announceSettled(ctx)
}

// lead reports whether this process holds the lock, taking it when free. The lock
// lives on one connection kept for the purpose: a ping proves the session, and with
// it the lock, is still there.
func (g *DBGauges) lead(ctx context.Context) (bool, error) {
	g.mu.Lock()
	conn := g.lockConn
	g.mu.Unlock()
	if conn != nil {
		if err := conn.Ping(ctx); err == nil {
			return true, nil
		}
		g.Close() // the session is gone, and the lock with it
	}
	conn, err := g.cfg.Pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, dbLockKey).Scan(&got); err != nil || !got {
		conn.Release()
		return false, err
	}
	g.mu.Lock()
	g.lockConn, g.leader = conn, true
	g.mu.Unlock()
	return true, nil
}

// Close gives the lock up and stops exporting what only the leader exports. A later
// Refresh may lead again.
func (g *DBGauges) Close() {
	g.mu.Lock()
	conn := g.lockConn
	g.lockConn, g.leader, g.snap = nil, false, dbSnapshot{}
	g.mu.Unlock()
	g.watch = settledWatch{}
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, dbLockKey); err != nil {
		// Unlocked or not, the session must not keep it: closing it ends the lock.
		_ = conn.Conn().Close(ctx)
	}
	conn.Release()
}

// read takes a reading, keeping prev's rotation gauges while they are recent enough.
func (g *DBGauges) read(ctx context.Context, prev dbSnapshot) (dbSnapshot, error) {
	start := time.Now()
	st := g.cfg.Store
	var snap dbSnapshot
	var errs [7]error
	snap.devices, errs[0] = st.FleetStatusCounts(ctx)
	if !prev.rotationAt.IsZero() && start.Sub(prev.rotationAt) < g.cfg.RotationInterval && !newReadyFleet(snap.devices, prev.rotation) {
		snap.rotation, snap.rotationAt = prev.rotation, prev.rotationAt
	} else {
		snap.rotation, errs[1] = st.RotationStates(ctx, g.cfg.RotationMaxAge)
		snap.rotationAt = start
	}
	snap.manifests, errs[2] = st.ManifestStates(ctx)
	snap.jobs, errs[3] = st.JobCounts(ctx)
	snap.oldest, errs[4] = st.OldestAvailableJobs(ctx)
	snap.webhookDue, snap.webhookDead, errs[5] = st.WebhookBacklog(ctx)
	if g.cfg.ReadinessAccount != "" {
		snap.readiness, snap.learned, errs[6] = st.ReadinessEstimate(ctx, g.cfg.ReadinessAccount)
	}
	if err := errors.Join(errs[:]...); err != nil {
		return dbSnapshot{}, err
	}
	snap.at, snap.took = time.Now(), time.Since(start)
	return snap, nil
}

// newReadyFleet: a fleet has ready devices that the last rotation reading did not
// see, so that reading must not wait for RotationInterval to show the fleet.
func newReadyFleet(devices map[string]map[string]int64, rotation map[string]store.RotationState) bool {
	for fleet, byStatus := range devices {
		if _, seen := rotation[fleet]; byStatus["ready"] > 0 && !seen {
			return true
		}
	}
	return false
}

// Describe implements prometheus.Collector.
func (g *DBGauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDevices, descOverdue, descLastRotation, descManifests, descJobs, descOldestJob,
		descWebhookPending, descWebhookDead, descFirstPoll, descFirstPolls, descLeader, descRefreshed, descRefreshTook} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the latest reading, no database access.
func (g *DBGauges) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	leader, snap := g.leader, g.snap
	g.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if !leader || snap.at.IsZero() {
		gauge(descLeader, 0)
		return
	}
	gauge(descLeader, 1)
	gauge(descRefreshed, float64(snap.at.UnixNano())/1e9)
	gauge(descRefreshTook, snap.took.Seconds())
	nested := func(d *prometheus.Desc, counts map[string]map[string]int64) {
		for outer, inner := range counts {
			for k, n := range inner {
				gauge(d, float64(n), outer, k)
			}
		}
	}
	nested(descDevices, snap.devices)
	nested(descManifests, snap.manifests)
	nested(descJobs, snap.jobs)
	for fleet, r := range snap.rotation {
		gauge(descOverdue, float64(r.Overdue), fleet)
		if !r.NewestPassword.IsZero() {
			gauge(descLastRotation, float64(r.NewestPassword.Unix()), fleet)
		}
	}
	// Every kind with jobs has an age, 0 when none is waiting, so that an alert on it
	// sees a series from the start.
	for kind := range snap.jobs {
		gauge(descOldestJob, snap.oldest[kind].Seconds(), kind)
	}
	gauge(descWebhookPending, float64(snap.webhookDue))
	gauge(descWebhookDead, float64(snap.webhookDead))
	if snap.learned {
		gauge(descFirstPoll, snap.readiness.FirstPoll.Seconds())
		gauge(descFirstPolls, float64(snap.readiness.Pending), "pending")
		gauge(descFirstPolls, float64(snap.readiness.Observations-snap.readiness.Pending), "ready")
	}
}
