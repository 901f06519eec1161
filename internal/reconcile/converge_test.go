package reconcile_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// These tests hold reconciliation to its promise: one run with default settings,
// right after the work it follows, leaves exactly one address per present device,
// and never takes another tool's address.

// failingCall returns a Call that has the simulator answer 503 to the run's calls
// numbered in fail (counted from 1), and lets the others through; calls counts them.
func (e *env) failingCall(calls *atomic.Int64, fail ...int64) cloudop.Caller {
	return func(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
		n := calls.Add(1)
		for _, f := range fail {
			if n == f {
				e.Sim.SetFaults(sim.Faults{FailRate: 1})
				defer e.Sim.SetFaults(sim.Faults{})
			}
		}
		return true, fn(ctx)
	}
}

// requireOneAddressPerDevice checks the promise: every device ids of fleetName is ready
// with an address the cloud has and the password the cloud holds, and the account
// holds no other address.
func (e *env) requireOneAddressPerDevice(fleetName string, ids ...string) {
	e.T.Helper()
	cloud := e.Addresses()
	require.Len(e.T, cloud, len(ids), "one address per device, no surplus")
	for _, id := range ids {
		creds, err := e.Store.GetCredentials(e.Ctx, fleetName, id)
		require.NoError(e.T, err)
		require.Equal(e.T, "ready", creds.Status, id)
		require.Contains(e.T, cloud, creds.CloudAddress, id)
		require.Equal(e.T, cloud[creds.CloudAddress].Password, creds.CloudPassword, "%s: the stored password is the cloud's", id)
	}
}

func TestOneRunRightAfterALossyRunLeavesNoSurplus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const devices = 40
	var csv strings.Builder
	csv.WriteString(provisiontest.Header)
	ids := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("d%02d", i)
		fmt.Fprintf(&csv, "%s,connect,line-%d,,,\n", ids[i], i%3) // three specs, many devices each
	}
	key := e.Ingest("f", csv.String())
	// Most creates are committed but answered 503, over real HTTP; some devices fail
	// after their last attempt.
	e.Sim.SetFaults(sim.Faults{LostRate: 0.6})
	e.Drain(key)
	e.Sim.SetFaults(sim.Faults{})
	surplus := len(e.Addresses()) - devices
	require.Positive(t, surplus, "lost answers made surplus addresses (the test must exercise them)")

	// At once, with default settings: the lost creates were answered, so none is in flight.
	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.True(t, rep.Converged, "%+v", rep)
	require.Zero(t, rep.WaitedFor, "answered creates are not waited for")
	require.Empty(t, rep.InFlight)
	require.Empty(t, rep.Ambiguous)
	require.Empty(t, rep.Foreign, "every surplus address is known to be an orphan of ours")
	require.Empty(t, rep.Errors)
	require.NotEmpty(t, rep.DeletedOrphans)
	require.NotEmpty(t, rep.Adopted, "devices whose every create was lost take an orphan (the simulator is seeded)")
	t.Logf("%d devices, %d addresses more than devices after the lossy run; one reconcile deleted %d orphans and adopted %d",
		devices, surplus, len(rep.DeletedOrphans), len(rep.Adopted))
	e.Drain(rep.WorkKey) // the resets of adopted orphans, if any
	e.requireOneAddressPerDevice("f", ids...)
	requireNothingToDo(t, e.run(e.reconciler(reconcile.Config{}), false))
}

func TestOrphanDeleteAnswered503IsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	orphan := e.loseCreate(key)
	require.Equal(t, 1, e.Step(key, 1, provisiontest.RetryNow), "the retry makes v1's address")

	// Call 1 lists, 2 inspects the orphan, 3 deletes it: answered 503. Default retries.
	var calls atomic.Int64
	r := e.reconciler(reconcile.Config{})
	r.Call = e.failingCall(&calls, 3)
	deletes := e.Counts()["delete"]
	rep := e.run(r, false)
	require.True(t, rep.Converged, "%q", rep.Errors)
	require.Empty(t, rep.Errors)
	require.Equal(t, []string{orphan}, rep.DeletedOrphans)
	require.Equal(t, deletes+2, e.Counts()["delete"], "the delete was sent again")
	cloud := e.Addresses()
	require.NotContains(t, cloud, orphan)
	require.Len(t, cloud, 1)
	require.Equal(t, []attempt{{"discarded", orphan}, {"created", e.Device("f", "v1").Address}}, e.attempts("f", "v1"))
}

func TestListPageAnswered503IsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	for range 120 { // two pages of 99
		e.foreignConnect("other-tool")
	}
	// The second page is answered 503 once.
	var calls atomic.Int64
	r := e.reconciler(reconcile.Config{})
	r.Call = e.failingCall(&calls, 2)
	rep := e.run(r, false)
	require.Equal(t, 121, rep.Listed, "the whole listing")
	require.Len(t, rep.Foreign, 120)
	require.NotContains(t, rep.Foreign, addrs["v1"])
	require.Empty(t, rep.Vanished, "nothing taken for vanished")
	require.Empty(t, rep.Errors)
	require.True(t, rep.Converged)
	require.Equal(t, int64(3), e.Counts()["list"], "two pages, one of them twice")
}

func TestDriftCheckAnswered503IsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	require.NoError(t, e.Sim.ForceSpec(provisiontest.APIKey, addrs["v1"], vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"intruders"}}))

	// Call 1 lists, call 2 checks v1's spec: answered 503 once, then twice in a row.
	for _, fail := range [][]int64{{2}, {2, 3}} {
		var calls atomic.Int64
		r := e.reconciler(reconcile.Config{})
		r.Call = e.failingCall(&calls, fail...)
		rep := e.run(r, true)
		require.Empty(t, rep.Errors, "fail %v", fail)
		require.Equal(t, 1, rep.Checked, "fail %v", fail)
		require.Equal(t, []string{"f/v1"}, rep.Drifted, "fail %v", fail)
		require.True(t, rep.Converged, "fail %v", fail)
	}
	// Failing on every attempt: reported, and the run does not converge.
	e.Sim.SetFaults(sim.Faults{FailRate: 1})
	var calls atomic.Int64
	r := e.reconciler(reconcile.Config{Backoff: quickRetries})
	r.Call = func(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
		if calls.Add(1) == 1 {
			e.Sim.SetFaults(sim.Faults{})
			defer e.Sim.SetFaults(sim.Faults{FailRate: 1})
		}
		return true, fn(ctx)
	}
	rep := e.run(r, false)
	e.Sim.SetFaults(sim.Faults{})
	require.False(t, rep.Converged)
	require.Len(t, rep.Errors, 1)
	require.Contains(t, rep.Errors[0], "check drift of v1")
	require.Zero(t, rep.Checked)
	require.Empty(t, rep.Drifted)
	require.Equal(t, int64(1+reconcile.DefaultAttempts), calls.Load())
	require.Empty(t, e.Device("f", "v1").Op, "nothing decided on a failed check")
}

// foreignConnect makes another tool's connect address in group: vncfleet has no
// record of it.
func (e *env) foreignConnect(group string) string {
	e.T.Helper()
	addr, _, err := e.Sim.CreateAddress(provisiontest.APIKey, vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{group}})
	require.NoError(e.T, err)
	return addr
}

func TestForeignAddressListedBeforeTheCreateIsNotAdopted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	// Another tool's address of v1's very spec, listed by a run before v1's create.
	foreign := e.foreignConnect("line-a")
	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.Equal(t, []string{foreign}, rep.Foreign)

	orphan := e.loseCreate(key)
	cfg := reconcile.Config{}
	rep = e.run(e.reconciler(cfg), false)
	require.Equal(t, []string{"f/v1: " + orphan}, rep.Adopted, "the address first listed after the create is the orphan")
	require.Equal(t, []string{foreign}, rep.Foreign, "the one listed before it cannot be the create's")
	require.Empty(t, rep.Ambiguous)
	require.Empty(t, rep.DeletedOrphans)
	require.True(t, rep.Converged)
	e.Drain(rep.WorkKey)
	cloud := e.Addresses()
	require.Contains(t, cloud, foreign, "another tool's address is left alone")
	require.Equal(t, 1, cloud[foreign].Version, "and its password was not reset")
	require.Equal(t, orphan, e.Device("f", "v1").Address)
	rep = e.run(e.reconciler(cfg), false)
	require.Equal(t, []string{foreign}, rep.Foreign)
	require.Empty(t, rep.Adopted)
}

func TestAddressesMoreThanTheLostCreatesCouldMakeAreAmbiguous(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	// Another tool's address of v1's spec, never listed before v1's create was lost:
	// either address may be the orphan.
	foreign := e.foreignConnect("line-a")
	orphan := e.loseCreate(key)

	db := e.snapshot()
	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.ElementsMatch(t, []string{foreign, orphan}, rep.Ambiguous)
	require.Empty(t, rep.Adopted)
	require.Empty(t, rep.DeletedOrphans)
	require.Empty(t, rep.Foreign)
	require.Empty(t, rep.DeletedForeign)
	require.False(t, rep.Converged, "an ambiguous address is not settled")
	require.Len(t, e.Addresses(), 2, "both left alone")
	require.Equal(t, []attempt{{"unknown", ""}}, e.attempts("f", "v1"), "the attempt stays open: it may have made either")
	require.Empty(t, e.Device("f", "v1").Address)
	require.Equal(t, db, e.snapshot(), "no device or attempt changed")

	// The delete policy says what to do with addresses that may be another tool's.
	rep = e.run(e.reconciler(reconcile.Config{DeleteForeign: true}), false)
	require.ElementsMatch(t, []string{foreign, orphan}, rep.DeletedForeign)
	require.Empty(t, rep.Ambiguous)
	require.True(t, rep.Converged)
	require.Empty(t, e.Addresses())
	require.Equal(t, []attempt{{"discarded", ""}}, e.attempts("f", "v1"))
	e.Drain(key) // v1's own retry creates its address
	e.requireOneAddressPerDevice("f", "v1")

	// Sightings of addresses that are gone are forgotten by the next complete listing.
	requireNothingToDo(t, e.run(e.reconciler(reconcile.Config{}), false))
	var seen int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT count(*) FROM seen_addresses`).Scan(&seen))
	require.Zero(t, seen)
}

// onMessage is a log handler that calls fn once, at the first record with msg.
type onMessage struct {
	msg  string
	fn   func()
	once *sync.Once
}

func (h onMessage) Enabled(context.Context, slog.Level) bool { return true }
func (h onMessage) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(h.fn)
	}
	return nil
}
func (h onMessage) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h onMessage) WithGroup(string) slog.Handler      { return h }

const waitingMessage = "reconcile: waiting for creates that may still be in flight"

func TestRunWaitsForACreateInFlightAndFindsItAnswered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	// A job has sent v1's create; its claim (and so the create) lasts a minute.
	res := e.sendCreate(key)
	made := res.Report.Address

	// While the run waits, the job records its answer.
	r := e.reconciler(reconcile.Config{})
	r.Logger = slog.New(onMessage{msg: waitingMessage, once: &sync.Once{}, fn: func() { e.Finish(res) }})
	rep := e.run(r, false)
	require.Equal(t, 1, rep.WaitedFor, "the run waited for the create")
	require.True(t, rep.Converged)
	requireNothingToDo(t, rep)
	require.Equal(t, made, e.Device("f", "v1").Address)
	require.Len(t, e.Addresses(), 1)
}

func TestDeadWorkersCreateIsWaitedForOnlyUntilItsInFlightUntil(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	// A worker process claims v1 for 10 minutes, sends its create, and dies before
	// recording the answer (no lock held: kill -9).
	var worker int64
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `INSERT INTO worker_processes (hostname, pid) VALUES ('gone', 1) RETURNING id`).Scan(&worker))
	items, err := e.Store.ClaimWork(e.Ctx, key, 1, 10*time.Minute, worker)
	require.NoError(t, err)
	require.Len(t, items, 1)
	made := e.Perform(items[0]).Report.Address

	// The sweeper finds it dead: its create can be in progress a call's timeout more.
	dead, err := e.Store.ReleaseDeadWorkers(e.Ctx, time.Second)
	require.NoError(t, err)
	require.Equal(t, []int64{worker}, dead.IDs)
	require.EqualValues(t, 1, dead.AttemptsSettled)

	// Default settings wait up to 2m30s; the test's context ends after a minute, so
	// the run can only succeed by waiting until the attempt's in_flight_until.
	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.Equal(t, 1, rep.WaitedFor)
	require.Equal(t, []string{"f/v1: " + made}, rep.Adopted)
	require.Empty(t, rep.InFlight)
	require.Empty(t, rep.CreatesInFlight)
	require.True(t, rep.Converged)
	e.Drain(rep.WorkKey)
	e.requireOneAddressPerDevice("f", "v1")
}
