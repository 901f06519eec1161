package reconcile_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/secretbox"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/vnccloud"
)

const (
	apiKey    = "fleet-key"
	apiSecret = "fleet-secret-value"
	header    = "device_id,action,groups,allow_groups,allow_devices,state\n"
)

// env is one test's world: a fresh migrated database behind the store, the simulator
// behind a real HTTP server, and the VNC Cloud client talking to it.
type env struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	store *store.Store
	sim   *sim.Server
	cloud *vnccloud.Client
	enq   *enqueued
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool, _ := dbtest.New(t)
	key := make([]byte, secretbox.KeySize)
	_, _ = rand.Read(key)
	keys, err := secretbox.NewKeyring(key)
	require.NoError(t, err)
	s, err := sim.New(sim.Config{Accounts: []sim.Account{{Key: apiKey, Secret: apiSecret}}, Seed: 7})
	require.NoError(t, err)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	cloud, err := vnccloud.New(vnccloud.Config{BaseURL: ts.URL + sim.APIPrefix, APIKey: apiKey, APISecret: apiSecret, Timeout: 10 * time.Second})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, pool: pool, store: store.New(pool, keys), sim: s, cloud: cloud, enq: &enqueued{}}
}

// reconciler is reconciliation as the product wires it, minus the rate limiter.
func (e *env) reconciler(cfg reconcile.Config) *reconcile.Reconciler {
	return &reconcile.Reconciler{Store: e.store, Cloud: e.cloud, Config: cfg, Enqueue: e.enq.enqueue}
}

// run reconciles once and fails the test on a run error.
func (e *env) run(r *reconcile.Reconciler, dryRun bool) *reconcile.Report {
	e.t.Helper()
	rep, err := r.Run(e.ctx, dryRun)
	require.NoError(e.t, err)
	require.Equal(e.t, dryRun, rep.DryRun)
	return rep
}

// enqueued records the work queues reconciliation asks jobs for.
type enqueued struct {
	mu    sync.Mutex
	calls []enqueueCall
}

type enqueueCall struct {
	Key     string
	Devices int
}

func (q *enqueued) enqueue(_ context.Context, key string, devices int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls = append(q.calls, enqueueCall{key, devices})
	return nil
}

func (q *enqueued) all() []enqueueCall {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]enqueueCall(nil), q.calls...)
}

// ingest stores a manifest for fleetName as an upload does and returns its work key.
func (e *env) ingest(fleetName, csv string) string {
	e.t.Helper()
	res, err := e.store.Ingest(e.ctx, store.IngestRequest{Fleet: fleetName, Uploader: "test", Body: strings.NewReader(csv)})
	require.NoError(e.t, err)
	require.NotNil(e.t, res.Manifest)
	return res.WorkKey
}

// provision ingests a manifest and carries out all its work, then returns each
// device's cloud address.
func (e *env) provision(fleetName, csv string) map[string]string {
	e.t.Helper()
	e.drain(e.ingest(fleetName, csv))
	out := map[string]string{}
	rows, err := e.pool.Query(e.ctx, `SELECT d.device_id, d.cloud_address, d.status FROM devices d
		JOIN fleets f ON f.id = d.fleet_id WHERE f.name = $1`, fleetName)
	require.NoError(e.t, err)
	for rows.Next() {
		var id, addr, status string
		require.NoError(e.t, rows.Scan(&id, &addr, &status))
		require.Equal(e.t, "ready", status, "device %s", id)
		out[id] = addr
	}
	require.NoError(e.t, rows.Err())
	return out
}

// retryNow retries transient failures at once.
var retryNow = store.RetryPolicy{MaxAttempts: 5, Backoff: func(int) time.Duration { return 0 }, PollAfter: 0}

// step does what one batch of a work job does, synchronously: claim up to limit
// devices of the queue, call VNC Cloud for each, record the results. It returns how
// many devices it claimed.
func (e *env) step(key string, limit int, policy store.RetryPolicy) int {
	e.t.Helper()
	items, err := e.store.ClaimWork(e.ctx, key, limit, time.Minute)
	require.NoError(e.t, err)
	if len(items) == 0 {
		return 0
	}
	results := make([]store.Result, len(items))
	for i, it := range items {
		results[i] = e.perform(it)
	}
	require.NoError(e.t, e.store.Finish(e.ctx, results, policy))
	return len(items)
}

// perform carries out one claimed operation against the simulator, as the work job
// does: create; or GET for the ETag, then PUT, DELETE or reset.
func (e *env) perform(it store.WorkItem) store.Result {
	e.t.Helper()
	require.Empty(e.t, it.Unresolved, "device %s names devices without an address", it.DeviceID)
	res := store.Result{Item: it}
	var err error
	switch it.Op {
	case store.OpCreate:
		var c vnccloud.Created
		if c, err = e.cloud.Create(e.ctx, it.Spec()); err == nil {
			res.Created = &c
		}
		res.Events = append(res.Events, event("create", err))
	default:
		var d vnccloud.Details
		d, err = e.cloud.Get(e.ctx, it.CloudAddress)
		res.Events = append(res.Events, event("get", err))
		if err == nil {
			switch it.Op {
			case store.OpUpdate:
				if err = e.cloud.Update(e.ctx, it.CloudAddress, it.Spec(), d.ETag); err == nil {
					res.Applied = true
				}
			case store.OpDelete:
				if err = e.cloud.Delete(e.ctx, it.CloudAddress, d.ETag); err == nil {
					res.Deleted = true
				}
			case store.OpRotate:
				var c vnccloud.Created
				if c, err = e.cloud.ResetPassword(e.ctx, it.CloudAddress, d.ETag); err == nil {
					res.Rotated = &c
				}
			default:
				e.t.Fatalf("unknown operation %q", it.Op)
			}
			res.Events = append(res.Events, event(it.Op, err))
		}
		if errors.Is(err, vnccloud.ErrNotFound) {
			res.Deleted = it.Op == store.OpDelete
			res.Vanished = it.Op != store.OpDelete
			return res
		}
	}
	if err != nil {
		var apiErr *vnccloud.APIError
		res.Err = err
		res.Retryable = vnccloud.IsRetryable(err)
		res.Refused = errors.As(err, &apiErr)
	}
	return res
}

func event(op string, err error) store.Event {
	if err != nil {
		return store.EventFromError(op, err)
	}
	return store.Event{Operation: op, Outcome: "ok"}
}

// poll does what one run of the readiness poller does, synchronously, and returns
// how many devices it polled.
func (e *env) poll() int {
	e.t.Helper()
	items, err := e.store.ClaimPolls(e.ctx, 100, time.Minute)
	require.NoError(e.t, err)
	if len(items) == 0 {
		return 0
	}
	results := make([]store.PollResult, len(items))
	for i, it := range items {
		ready, err := e.cloud.Ready(e.ctx, it.CloudAddress)
		results[i] = store.PollResult{Item: it, Event: event("ready", err), Ready: ready && err == nil,
			Vanished: errors.Is(err, vnccloud.ErrNotFound)}
		if err != nil && !results[i].Vanished {
			e.t.Fatalf("readiness of %s: %v", it.DeviceID, err)
		}
	}
	require.NoError(e.t, e.store.FinishPolls(e.ctx, results, nil))
	return len(items)
}

// drain carries out the queue's work and every due readiness poll until nothing is
// left (the simulator answers ready at once), and checks that nothing is owed.
func (e *env) drain(key string) {
	e.t.Helper()
	for round := 0; ; round++ {
		require.Less(e.t, round, 50, "work of %s does not settle", key)
		if e.step(key, 100, retryNow)+e.poll() == 0 {
			break
		}
	}
	remaining, _, err := e.store.PendingWork(e.ctx, key)
	require.NoError(e.t, err)
	require.Zero(e.t, remaining, "work left under %s", key)
}

// device is a device row as the tests look at it.
type device struct {
	Address     string // "" when none
	Status      string
	Op          string // "" when none
	WorkKey     string
	Drift       string
	SpecVersion int
	HasPassword bool
}

func (e *env) device(fleetName, id string) device {
	e.t.Helper()
	var d device
	var addr, op, key, drift *string
	err := e.pool.QueryRow(e.ctx, `
		SELECT d.cloud_address, d.status, d.op, d.work_key, d.drift, d.spec_version, d.password_ct IS NOT NULL
		FROM devices d JOIN fleets f ON f.id = d.fleet_id WHERE f.name = $1 AND d.device_id = $2`, fleetName, id).
		Scan(&addr, &d.Status, &op, &key, &drift, &d.SpecVersion, &d.HasPassword)
	require.NoError(e.t, err, "device %s/%s", fleetName, id)
	d.Address, d.Op, d.WorkKey, d.Drift = deref(addr), deref(op), deref(key), deref(drift)
	return d
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// attempt is a create_attempts row.
type attempt struct {
	Outcome string
	Address string
}

// attempts lists a device's create attempts, oldest first.
func (e *env) attempts(fleetName, id string) []attempt {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, `
		SELECT a.outcome, coalesce(a.cloud_address, '') FROM create_attempts a
		JOIN devices d ON d.id = a.device_pk JOIN fleets f ON f.id = d.fleet_id
		WHERE f.name = $1 AND d.device_id = $2 ORDER BY a.id`, fleetName, id)
	require.NoError(e.t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[attempt])
	require.NoError(e.t, err)
	return out
}

// snapshot is every row of the tables reconciliation may write, as JSON text.
func (e *env) snapshot() string {
	e.t.Helper()
	var s string
	err := e.pool.QueryRow(e.ctx, `SELECT concat_ws(E'\n',
		(SELECT string_agg(to_jsonb(d)::text, E'\n' ORDER BY d.id) FROM devices d),
		(SELECT string_agg(to_jsonb(a)::text, E'\n' ORDER BY a.id) FROM create_attempts a))`).Scan(&s)
	require.NoError(e.t, err)
	return s
}

// addresses is the simulator's account: each live address with its state.
func (e *env) addresses() map[string]sim.AddressState {
	out := map[string]sim.AddressState{}
	for _, a := range e.sim.State().Accounts[apiKey].Addresses {
		out[a.CloudAddress] = a
	}
	return out
}

// counts is how many API calls of each operation the account has made.
func (e *env) counts() map[string]int64 { return e.sim.State().Accounts[apiKey].Counts }

// requireNothingToDo checks a report that found nothing to act on.
func requireNothingToDo(t *testing.T, rep *reconcile.Report) {
	t.Helper()
	require.Empty(t, rep.Vanished, "vanished")
	require.Empty(t, rep.Drifted, "drifted")
	require.Empty(t, rep.Adopted, "adopted")
	require.Empty(t, rep.DeletedOrphans, "deleted orphans")
	require.Empty(t, rep.InFlight, "in flight")
	require.Empty(t, rep.Foreign, "foreign")
	require.Empty(t, rep.DeletedForeign, "deleted foreign")
	require.Empty(t, rep.Errors, "errors")
	require.Zero(t, rep.Rescheduled, "rescheduled")
}
