// Package provisiontest is a test harness for the packages that drive provisioning
// (reconcile, lifecycle): each test gets a fresh migrated database behind the store,
// the VNC Cloud simulator behind a real HTTP server, and the VNC Cloud client talking
// to it, and carries out work jobs and readiness polls synchronously.
//
// It is for tests only: it fails the test it is given rather than return errors.
package provisiontest

import (
	"context"
	"crypto/rand"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/secretbox"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/vnccloud"
)

const (
	// APIKey and APISecret are the simulator account's credentials.
	APIKey    = "fleet-key"
	APISecret = "fleet-secret-value"
	// Header is a manifest's header line.
	Header = "device_id,action,groups,allow_groups,allow_devices,state\n"
)

// RetryNow retries transient failures at once.
var RetryNow = store.RetryPolicy{MaxAttempts: 5, Backoff: func(int) time.Duration { return 0 }, PollAfter: 0}

// Env is one test's world: a fresh migrated database behind the store, the simulator
// behind a real HTTP server, and the VNC Cloud client talking to it.
type Env struct {
	T     *testing.T
	Ctx   context.Context
	Pool  *pgxpool.Pool
	DBURL string
	Keys  *secretbox.Keyring
	// Key is Keys' primary key, for tests that rotate it.
	Key   []byte
	Store *store.Store
	Sim   *sim.Server
	Cloud *vnccloud.Client
	// Enq records the work queues the code under test asks jobs for; pass
	// Enq.Enqueue as its Enqueue.
	Enq *Enqueued
}

// New sets up t's world; everything it starts is stopped when t ends.
func New(t *testing.T) *Env {
	t.Helper()
	pool, dbURL := dbtest.New(t)
	key := make([]byte, secretbox.KeySize)
	_, _ = rand.Read(key)
	keys, err := secretbox.NewKeyring(key)
	require.NoError(t, err)
	s, err := sim.New(sim.Config{Accounts: []sim.Account{{Key: APIKey, Secret: APISecret}}, Seed: 7})
	require.NoError(t, err)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	cloud, err := vnccloud.New(vnccloud.Config{BaseURL: ts.URL + sim.APIPrefix, APIKey: APIKey, APISecret: APISecret, Timeout: 10 * time.Second})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return &Env{T: t, Ctx: ctx, Pool: pool, DBURL: dbURL, Keys: keys, Key: key, Store: store.New(pool, keys), Sim: s, Cloud: cloud, Enq: &Enqueued{}}
}

// Enqueued records the work queues the code under test asks jobs for.
type Enqueued struct {
	mu    sync.Mutex
	calls []EnqueueCall
}

// EnqueueCall is one request for a work job.
type EnqueueCall struct {
	Key     string
	Devices int
}

// Enqueue records a request for a work job; it never fails.
func (q *Enqueued) Enqueue(_ context.Context, key string, devices int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls = append(q.calls, EnqueueCall{key, devices})
	return nil
}

// All is every request so far, oldest first.
func (q *Enqueued) All() []EnqueueCall {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]EnqueueCall(nil), q.calls...)
}

// Ingest stores a manifest for fleetName as an upload does and returns its work key.
func (e *Env) Ingest(fleetName, csv string) string {
	e.T.Helper()
	res, err := e.Store.Ingest(e.Ctx, store.IngestRequest{Fleet: fleetName, Uploader: "test", Body: strings.NewReader(csv)})
	require.NoError(e.T, err)
	require.NotNil(e.T, res.Manifest)
	return res.WorkKey
}

// Provision ingests a manifest and carries out all its work, then returns each
// device's cloud address.
func (e *Env) Provision(fleetName, csv string) map[string]string {
	e.T.Helper()
	e.Drain(e.Ingest(fleetName, csv))
	out := map[string]string{}
	rows, err := e.Pool.Query(e.Ctx, `SELECT d.device_id, d.cloud_address, d.status FROM devices d
		JOIN fleets f ON f.id = d.fleet_id WHERE f.name = $1`, fleetName)
	require.NoError(e.T, err)
	for rows.Next() {
		var id, addr, status string
		require.NoError(e.T, rows.Scan(&id, &addr, &status))
		require.Equal(e.T, "ready", status, "device %s", id)
		out[id] = addr
	}
	require.NoError(e.T, rows.Err())
	return out
}

// Step does what one batch of a work job does, synchronously: claim up to limit
// devices of the queue, call VNC Cloud for each, record the results. It returns how
// many devices it claimed.
func (e *Env) Step(key string, limit int, policy store.RetryPolicy) int {
	e.T.Helper()
	items, err := e.Store.ClaimWork(e.Ctx, key, limit, time.Minute, 0)
	require.NoError(e.T, err)
	if len(items) == 0 {
		return 0
	}
	results := make([]store.Result, len(items))
	for i, it := range items {
		results[i] = e.Perform(it)
	}
	require.NoError(e.T, e.Store.Finish(e.Ctx, results, policy))
	return len(items)
}

// Finish records the results of claimed work, as a work job does, under RetryNow.
func (e *Env) Finish(results ...store.Result) {
	e.T.Helper()
	require.NoError(e.T, e.Store.Finish(e.Ctx, results, RetryNow))
}

// Perform carries out one claimed operation against the simulator with
// cloudop.Perform, as the work job does, without a rate limiter.
func (e *Env) Perform(it store.WorkItem) store.Result {
	e.T.Helper()
	return store.Result{Item: it, Report: cloudop.Perform(e.Ctx, e.Cloud, cloudop.Direct, it.Task())}
}

// Poll does what one run of the readiness poller does, synchronously, and returns
// how many devices it polled. A poll that fails fails the test.
func (e *Env) Poll() int {
	e.T.Helper()
	items, err := e.Store.ClaimPolls(e.Ctx, 100, time.Minute, 0)
	require.NoError(e.T, err)
	if len(items) == 0 {
		return 0
	}
	results := make([]store.PollResult, len(items))
	for i, it := range items {
		rep := cloudop.Perform(e.Ctx, e.Cloud, cloudop.Direct, it.Task())
		switch rep.Outcome {
		case fleet.Ready, fleet.Pending, fleet.Vanished:
		default:
			e.T.Fatalf("readiness of %s: %s: %v", it.DeviceID, rep.Outcome, rep.Err)
		}
		results[i] = store.PollResult{Item: it, Report: rep, MayWait: true}
	}
	require.NoError(e.T, e.Store.FinishPolls(e.Ctx, results, nil))
	return len(items)
}

// Drain carries out the queue's work and every due readiness poll until nothing is
// left (the simulator answers ready at once), and checks that nothing is owed.
func (e *Env) Drain(key string) {
	e.T.Helper()
	for round := 0; ; round++ {
		require.Less(e.T, round, 50, "work of %s does not settle", key)
		if e.Step(key, 100, RetryNow)+e.Poll() == 0 {
			break
		}
	}
	remaining, _, err := e.Store.PendingWork(e.Ctx, key)
	require.NoError(e.T, err)
	require.Zero(e.T, remaining, "work left under %s", key)
}

// Device is a device row as the tests look at it.
type Device struct {
	Address     string // "" when none
	Status      string
	PK          int64  // devices.id
	Op          string // "" when none
	WorkKey     string
	Drift       string
	SpecVersion int
	HasPassword bool
}

// Device reads the row of device id of fleetName, which must exist.
func (e *Env) Device(fleetName, id string) Device {
	e.T.Helper()
	var d Device
	var addr, op, key, drift *string
	err := e.Pool.QueryRow(e.Ctx, `
		SELECT d.id, d.cloud_address, d.status, d.op, d.work_key, d.drift, d.spec_version, d.password_ct IS NOT NULL
		FROM devices d JOIN fleets f ON f.id = d.fleet_id WHERE f.name = $1 AND d.device_id = $2`, fleetName, id).
		Scan(&d.PK, &addr, &d.Status, &op, &key, &drift, &d.SpecVersion, &d.HasPassword)
	require.NoError(e.T, err, "device %s/%s", fleetName, id)
	d.Address, d.Op, d.WorkKey, d.Drift = deref(addr), deref(op), deref(key), deref(drift)
	return d
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Addresses is the simulator's account: each live address with its state.
func (e *Env) Addresses() map[string]sim.AddressState {
	out := map[string]sim.AddressState{}
	for _, a := range e.Sim.State().Accounts[APIKey].Addresses {
		out[a.CloudAddress] = a
	}
	return out
}

// Counts is how many API calls of each operation the account has made.
func (e *Env) Counts() map[string]int64 { return e.Sim.State().Accounts[APIKey].Counts }
