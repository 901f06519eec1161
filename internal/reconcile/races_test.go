package reconcile_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// These tests run reconciliation while work jobs change the rows and the account
// under it: at a chosen API call of the run (counted through Call), the test does
// what a job would do at that moment.

// atCall returns a Call that runs hook, once, right after the run's nth API call.
func atCall(n int64, hook func()) cloudop.Caller {
	var calls atomic.Int64
	return func(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
		err := fn(ctx)
		if calls.Add(1) == n {
			hook()
		}
		return true, err
	}
}

// sendCreate claims the queue's next device and sends its create, as a job does, but
// does not record the answer: the create is in flight. It returns the result to
// record, which holds the address the create made.
func (e *env) sendCreate(key string) store.Result {
	e.T.Helper()
	items, err := e.Store.ClaimWork(e.Ctx, key, 1, time.Minute, 0)
	require.NoError(e.T, err)
	require.Len(e.T, items, 1)
	res := e.Perform(items[0])
	require.Equal(e.T, fleet.Created, res.Report.Outcome, "create: %v", res.Report.Err)
	return res
}

// rotateAll schedules a password reset of every ready device of fleetName under key,
// due at once, as a rotation asked for by hand does. It returns how many it scheduled.
func (e *env) rotateAll(fleetName, key string) int {
	e.T.Helper()
	n, err := e.Store.ScheduleRotations(e.Ctx, fleetName, true, 0, 0, key)
	require.NoError(e.T, err)
	return n
}

func TestAddressOfACreateInFlightIsNeitherForeignNorDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	// Another tool's address, of another spec: foreign whatever is in flight.
	foreign, _, err := e.Sim.CreateAddress(provisiontest.APIKey, vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"other-tool"}})
	require.NoError(t, err)
	// A job claims v1 and sends its create; the answer has not been recorded yet.
	res := e.sendCreate(key)
	made := res.Report.Address

	// A run that does not wait for it: the create is in flight until its claim ends,
	// so the address it made may be v1's.
	cfg := reconcile.Config{DeleteForeign: true, MaxWait: time.Millisecond}
	rep := e.run(e.reconciler(cfg), false)
	require.False(t, rep.Converged)
	require.Equal(t, 1, rep.WaitedFor)
	require.Contains(t, e.Addresses(), made, "not deleted")
	require.Equal(t, []string{foreign}, rep.Foreign, "not called foreign")
	require.Equal(t, []string{foreign}, rep.DeletedForeign)
	require.Equal(t, []string{made}, rep.InFlight)
	require.Empty(t, rep.Adopted)
	require.Empty(t, rep.DeletedOrphans)
	require.Empty(t, rep.Errors)
	require.Equal(t, []attempt{{"sent", ""}}, e.attempts("f", "v1"), "the attempt stays open")

	// The job records its answer: the address is v1's, and it exists.
	e.Finish(res)
	e.Drain(key)
	v1 := e.Device("f", "v1")
	require.Equal(t, made, v1.Address)
	require.Equal(t, "ready", v1.Status)
	require.Equal(t, []attempt{{"created", made}}, e.attempts("f", "v1"))
	cloud := e.Addresses()
	require.Contains(t, cloud, made)
	require.Len(t, cloud, 1)
	requireNothingToDo(t, e.run(e.reconciler(cfg), false))
}

func TestOrphanThatARetryInFlightMayHaveMadeWaits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	// v1's first create made an address and lost its answer long ago...
	orphan := e.loseCreate(key)
	_, err := e.Pool.Exec(e.Ctx, `UPDATE create_attempts SET sent_at = now() - interval '1 hour'`)
	require.NoError(t, err)
	// ...and its retry, of the same spec, is in flight.
	res := e.sendCreate(key)
	made := res.Report.Address

	cfg := reconcile.Config{DeleteForeign: true, MaxWait: time.Millisecond}
	rep := e.run(e.reconciler(cfg), false)
	require.False(t, rep.Converged)
	cloud := e.Addresses()
	require.Contains(t, cloud, made, "the retry's address is not deleted")
	require.Contains(t, cloud, orphan, "either address may be the retry's")
	require.Empty(t, rep.Foreign)
	require.Empty(t, rep.DeletedForeign)
	require.Empty(t, rep.DeletedOrphans)
	require.Empty(t, rep.Adopted)
	require.Empty(t, rep.Errors)
	require.ElementsMatch(t, []string{orphan, made}, rep.InFlight)
	require.Equal(t, []attempt{{"unknown", ""}, {"sent", ""}}, e.attempts("f", "v1"),
		"the old attempt is not discarded: it may have made one of them")

	// The retry's answer is recorded; the next run knows the orphan for what it is.
	e.Finish(res)
	e.Drain(key)
	require.Equal(t, made, e.Device("f", "v1").Address)
	rep = e.run(e.reconciler(cfg), false)
	require.Equal(t, []string{orphan}, rep.DeletedOrphans)
	require.Empty(t, rep.Foreign)
	require.Empty(t, rep.InFlight)
	require.Empty(t, rep.Adopted)
	cloud = e.Addresses()
	require.NotContains(t, cloud, orphan)
	require.Contains(t, cloud, made)
	require.Len(t, cloud, 1)
	require.Equal(t, []attempt{{"discarded", orphan}, {"created", made}}, e.attempts("f", "v1"))
	requireNothingToDo(t, e.run(e.reconciler(cfg), false))
}

func TestFailedInspectionKeepsTheLostCreateOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	orphan := e.loseCreate(key)

	// Call 1 is the listing, call 2 the GET of the orphan: that one and its every
	// retry are answered 503.
	r := e.reconciler(reconcile.Config{Backoff: quickRetries})
	var calls atomic.Int64
	r.Call = func(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
		if calls.Add(1) == 2 {
			e.Sim.SetFaults(sim.Faults{FailRate: 1})
		}
		return true, fn(ctx)
	}
	rep := e.run(r, false)
	e.Sim.SetFaults(sim.Faults{})
	require.Equal(t, int64(1+reconcile.DefaultAttempts), calls.Load())
	require.False(t, rep.Converged)
	require.Len(t, rep.Errors, 1, "%q", rep.Errors)
	require.True(t, strings.HasPrefix(rep.Errors[0], "inspect "+orphan), rep.Errors[0])
	require.Empty(t, rep.Adopted)
	require.Empty(t, rep.DeletedOrphans)
	require.Empty(t, rep.Foreign)
	require.Equal(t, []attempt{{"unknown", ""}}, e.attempts("f", "v1"),
		"the attempt may have made the address that could not be inspected")
	require.Contains(t, e.Addresses(), orphan)

	// The next run sees the orphan and adopts it.
	rep = e.run(e.reconciler(reconcile.Config{}), false)
	require.Equal(t, []string{"f/v1: " + orphan}, rep.Adopted)
	require.Empty(t, rep.Foreign)
	require.Empty(t, rep.Errors)
	require.Equal(t, []attempt{{"adopted", orphan}}, e.attempts("f", "v1"))
	require.Equal(t, orphan, e.Device("f", "v1").Address)
}

func TestVanishedMarkSparesTheAddressThatReplacedIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	require.NoError(t, e.Sim.ForceDelete(provisiontest.APIKey, addrs["v1"]))

	// Right after the GET that finds v1's address gone (call 2, after the listing),
	// a rotation meets the 404 too, and v1 gets a new address before the run marks it.
	var replaced string
	r := e.reconciler(reconcile.Config{})
	r.Call = atCall(2, func() {
		require.Equal(t, 1, e.rotateAll("f", "rotate:test"))
		e.Drain("rotate:test")
		replaced = e.Device("f", "v1").Address
	})
	rep := e.run(r, false)
	require.NotEmpty(t, replaced)
	require.NotEqual(t, addrs["v1"], replaced)
	require.Empty(t, rep.Vanished, "v1 was not marked: it holds a new address")
	require.Empty(t, rep.Errors)
	v1 := e.Device("f", "v1")
	require.Equal(t, replaced, v1.Address, "the new address is kept")
	require.Equal(t, "ready", v1.Status)
	require.Empty(t, v1.Op)
	require.True(t, v1.HasPassword)
	require.Contains(t, e.Addresses(), replaced)
	requireNothingToDo(t, e.run(e.reconciler(reconcile.Config{}), false))
}

func TestVanishedMarkLeavesAClaimedDeviceToItsJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	require.NoError(t, e.Sim.ForceDelete(provisiontest.APIKey, addrs["v1"]))

	// Right after the GET that finds v1's address gone, a rotation job claims v1.
	var claimed []store.WorkItem
	r := e.reconciler(reconcile.Config{})
	r.Call = atCall(2, func() {
		require.Equal(t, 1, e.rotateAll("f", "rotate:test"))
		var err error
		claimed, err = e.Store.ClaimWork(e.Ctx, "rotate:test", 1, time.Minute, 0)
		require.NoError(t, err)
	})
	rep := e.run(r, false)
	require.Len(t, claimed, 1)
	require.Empty(t, rep.Vanished, "a claimed device is left to its job")
	v1 := e.Device("f", "v1")
	require.Equal(t, addrs["v1"], v1.Address)
	require.Equal(t, "rotate", v1.Op)
	require.Empty(t, e.Enq.All())

	// The job meets the 404 itself, and v1 gets a new address.
	e.Finish(e.Perform(claimed[0]))
	e.Drain("rotate:test")
	v1 = e.Device("f", "v1")
	require.Equal(t, "ready", v1.Status)
	require.NotEqual(t, addrs["v1"], v1.Address)
	require.Contains(t, e.Addresses(), v1.Address)
	requireNothingToDo(t, e.run(e.reconciler(reconcile.Config{}), false))
}

func TestOrphanGoesToAnotherDeviceWhenTheFirstGotAnAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	keyA := e.Ingest("a", provisiontest.Header+"v1,connect,line-a,,,\n")
	keyB := e.Ingest("b", provisiontest.Header+"v2,connect,line-a,,,\n")
	// v1's create made an address and lost its answer; v2's, of the same spec, was
	// answered 503 and made nothing. Either may have made the orphan.
	orphan := e.loseCreate(keyA)
	e.Sim.SetFaults(sim.Faults{FailRate: 1})
	require.Equal(t, 1, e.Step(keyB, 1, provisiontest.RetryNow))
	e.Sim.SetFaults(sim.Faults{})
	require.Equal(t, []attempt{{"unknown", ""}}, e.attempts("a", "v1"))
	require.Equal(t, []attempt{{"unknown", ""}}, e.attempts("b", "v2"))

	// While the orphan is inspected (call 2, after the listing), v1's own retry
	// succeeds: when attempts were read, both devices wanted an address.
	r := e.reconciler(reconcile.Config{})
	r.Call = atCall(2, func() { require.Equal(t, 1, e.Step(keyA, 1, provisiontest.RetryNow)) })
	rep := e.run(r, false)
	require.Equal(t, []string{"b/v2: " + orphan}, rep.Adopted, "v2 still wants it")
	require.Empty(t, rep.DeletedOrphans)
	require.Empty(t, rep.Foreign)
	require.Empty(t, rep.Errors)
	v1, v2 := e.Device("a", "v1"), e.Device("b", "v2")
	require.NotEmpty(t, v1.Address)
	require.NotEqual(t, orphan, v1.Address)
	require.Equal(t, orphan, v2.Address)
	require.Contains(t, e.Addresses(), orphan)
	require.Equal(t, []attempt{{"adopted", orphan}}, e.attempts("b", "v2"))
	require.Equal(t, []attempt{{"discarded", ""}, {"created", v1.Address}}, e.attempts("a", "v1"))

	e.Drain(rep.WorkKey)
	e.Drain(keyA)
	creds, err := e.Store.GetCredentials(e.Ctx, "b", "v2")
	require.NoError(t, err)
	require.Equal(t, "ready", creds.Status)
	require.Equal(t, e.Addresses()[orphan].Password, creds.CloudPassword)
	require.Equal(t, int64(2), e.Sim.State().Accounts[provisiontest.APIKey].Creates, "v2 made no address of its own")
	requireNothingToDo(t, e.run(e.reconciler(reconcile.Config{}), false))
}
