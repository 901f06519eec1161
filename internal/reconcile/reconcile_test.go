package reconcile_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// quickRetries retries a failed call at once, for tests where the cloud keeps failing.
func quickRetries(int) time.Duration { return time.Millisecond }

// loseCreate claims the queue's next device and sends its create while the simulator
// commits every create but loses its answer (a 503 or a dropped connection). It
// returns the orphan address the create left in the account.
func (e *env) loseCreate(key string) string {
	e.T.Helper()
	before := e.Addresses()
	e.Sim.SetFaults(sim.Faults{LostRate: 1})
	require.Equal(e.T, 1, e.Step(key, 1, provisiontest.RetryNow))
	e.Sim.SetFaults(sim.Faults{})
	var orphan string
	for addr := range e.Addresses() {
		if _, ok := before[addr]; !ok {
			require.Empty(e.T, orphan, "one lost create made one address")
			orphan = addr
		}
	}
	require.NotEmpty(e.T, orphan, "the lost create made an address")
	return orphan
}

func TestVanishedAddressIsCreatedAgainAndListenersFollow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\nv2,connect,line-a,,,\ns1,listen,,,v1,\n")
	require.NoError(t, e.Sim.ForceDelete(provisiontest.APIKey, addrs["v1"]))

	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.Equal(t, []string{"f/v1"}, rep.Vanished)
	require.Equal(t, 2, rep.Listed)
	require.Equal(t, 3, rep.Known)
	require.Empty(t, rep.Drifted)
	require.Empty(t, rep.Adopted)
	require.Empty(t, rep.DeletedOrphans)
	require.Empty(t, rep.Foreign)
	require.Empty(t, rep.Errors)
	require.Equal(t, 1, rep.Checked, "only v2 is settled: v1 owes a create, s1 an update")
	require.True(t, strings.HasPrefix(rep.WorkKey, "reconcile:"), rep.WorkKey)

	v1 := e.Device("f", "v1")
	require.Empty(t, v1.Address, "the vanished address is forgotten")
	require.False(t, v1.HasPassword, "and so is its password")
	require.Equal(t, "create", v1.Op)
	require.Equal(t, rep.WorkKey, v1.WorkKey)
	require.Equal(t, "cloud address vanished", v1.Drift)
	s1 := e.Device("f", "s1")
	require.Equal(t, "update", s1.Op, "the listen device naming v1 must take its new address")
	require.Equal(t, rep.WorkKey, s1.WorkKey)
	require.Equal(t, 2, s1.SpecVersion)
	require.Equal(t, addrs["s1"], s1.Address)
	v2 := e.Device("f", "v2")
	require.Empty(t, v2.Op, "a device whose address is there is left alone")
	require.Equal(t, addrs["v2"], v2.Address)
	require.Equal(t, []provisiontest.EnqueueCall{{Key: rep.WorkKey, Devices: 2}}, e.Enq.All())

	e.Drain(rep.WorkKey)
	v1 = e.Device("f", "v1")
	require.Equal(t, "ready", v1.Status)
	require.NotEqual(t, addrs["v1"], v1.Address, "a new address replaced the vanished one")
	cloud := e.Addresses()
	require.Len(t, cloud, 3)
	require.Contains(t, cloud, v1.Address)
	require.NotNil(t, cloud[addrs["s1"]].AccessControl)
	require.Equal(t, []string{v1.Address}, cloud[addrs["s1"]].AccessControl.CloudAddresses,
		"the listen device's access control names v1's new address")

	again := e.run(e.reconciler(reconcile.Config{}), false)
	requireNothingToDo(t, again)
	require.Equal(t, 3, again.Listed)
	require.Equal(t, 3, again.Checked)
	require.Len(t, e.Enq.All(), 1, "a run with nothing to do starts no work")
}

func TestDriftedSpecIsPutBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\nv2,connect,line-b,,,\ns1,listen,,line-a,v1,\n")
	before := e.Addresses()
	require.NoError(t, e.Sim.ForceSpec(provisiontest.APIKey, addrs["v1"], vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"intruders"}}))
	require.NoError(t, e.Sim.ForceSpec(provisiontest.APIKey, addrs["s1"], vnccloud.Spec{Action: vnccloud.ActionListen,
		AccessControl: &vnccloud.AccessControl{Groups: []string{"everyone"}}}))

	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.ElementsMatch(t, []string{"f/v1", "f/s1"}, rep.Drifted)
	require.Equal(t, 3, rep.Checked)
	require.Empty(t, rep.Vanished)
	require.Empty(t, rep.Foreign)
	require.Empty(t, rep.Errors)
	for _, id := range []string{"v1", "s1"} {
		d := e.Device("f", id)
		require.Equal(t, "update", d.Op, id)
		require.Equal(t, "updating", d.Status, id)
		require.Equal(t, "spec changed outside vncfleet", d.Drift, id)
		require.Equal(t, rep.WorkKey, d.WorkKey, id)
		require.Equal(t, addrs[id], d.Address, id)
	}
	v2 := e.Device("f", "v2")
	require.Empty(t, v2.Op)
	require.Empty(t, v2.Drift)
	require.Equal(t, []provisiontest.EnqueueCall{{Key: rep.WorkKey, Devices: 2}}, e.Enq.All())

	e.Drain(rep.WorkKey)
	after := e.Addresses()
	require.Len(t, after, 3, "the same addresses: put back, not recreated")
	for id, addr := range addrs {
		require.True(t, before[addr].Spec().Equal(after[addr].Spec()), "%s: want %+v, cloud has %+v", id, before[addr].Spec(), after[addr].Spec())
	}
	require.Equal(t, before[addrs["v1"]].Version+2, after[addrs["v1"]].Version, "forced, then put back")
	require.Equal(t, before[addrs["v2"]].Version, after[addrs["v2"]].Version, "v2 was not touched")

	requireNothingToDo(t, e.run(e.reconciler(reconcile.Config{}), false))
}

func TestDriftChecksAreBoundedAndLeastRecentlyCheckedFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"d1,connect,g,,,\nd2,connect,g,,,\nd3,connect,g,,,\n")
	cfg := reconcile.Config{DriftChecks: 2}

	rep := e.run(e.reconciler(cfg), false)
	require.Equal(t, 2, rep.Checked)
	requireNothingToDo(t, rep)
	var unchecked string
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT device_id FROM devices WHERE checked_at IS NULL`).Scan(&unchecked))

	// The device the bounded run left out is drifted: the next run checks it first.
	require.NoError(t, e.Sim.ForceSpec(provisiontest.APIKey, addrs[unchecked], vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"elsewhere"}}))
	rep = e.run(e.reconciler(cfg), false)
	require.Equal(t, 2, rep.Checked)
	require.Equal(t, []string{"f/" + unchecked}, rep.Drifted)
	require.Equal(t, "update", e.Device("f", unchecked).Op)
}

func TestForeignAddressIsReportedAndKeptByDefault(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	// Another tool's address, with the very spec of v1: a matching spec alone does
	// not make an address ours.
	foreign, _, err := e.Sim.CreateAddress(provisiontest.APIKey, vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"line-a"}})
	require.NoError(t, err)

	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.Equal(t, []string{foreign}, rep.Foreign)
	require.Empty(t, rep.DeletedForeign)
	require.Empty(t, rep.Adopted)
	require.Empty(t, rep.DeletedOrphans)
	require.Empty(t, rep.Vanished)
	require.Equal(t, 2, rep.Listed)
	require.Equal(t, 1, rep.Known)
	require.Contains(t, e.Addresses(), foreign, "reported, not deleted")
	require.Zero(t, e.Counts()["delete"])
	require.Equal(t, addrs["v1"], e.Device("f", "v1").Address)
	require.Empty(t, e.Enq.All())

	// The delete policy deletes it, and nothing of ours.
	rep = e.run(e.reconciler(reconcile.Config{DeleteForeign: true}), false)
	require.Equal(t, []string{foreign}, rep.Foreign)
	require.Equal(t, []string{foreign}, rep.DeletedForeign)
	cloud := e.Addresses()
	require.NotContains(t, cloud, foreign)
	require.Contains(t, cloud, addrs["v1"])
	require.Len(t, cloud, 1)
}

func TestListingFollowsEveryPageThroughCall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	const n = 120 // more than one page of 99
	want := make([]string, 0, n)
	for range n {
		a, _, err := e.Sim.CreateAddress(provisiontest.APIKey, vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"other-tool"}})
		require.NoError(t, err)
		want = append(want, a)
	}
	var calls atomic.Int64
	r := e.reconciler(reconcile.Config{})
	r.Call = func(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
		calls.Add(1)
		return true, fn(ctx)
	}
	before := e.Sim.State().Requests
	rep := e.run(r, false)
	require.Equal(t, n+1, rep.Listed)
	require.ElementsMatch(t, want, rep.Foreign)
	require.NotContains(t, rep.Foreign, addrs["v1"])
	counts := e.Counts()
	require.Equal(t, int64(2), counts["list"], "two pages")
	require.Equal(t, e.Sim.State().Requests-before, calls.Load(), "every request, each page included, went through Call")
}

func TestOrphanOfLostCreateIsAdopted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	orphan := e.loseCreate(key)
	require.Empty(t, e.Device("f", "v1").Address, "the answer was lost: the store has no address")
	require.Equal(t, []attempt{{"unknown", ""}}, e.attempts("f", "v1"))

	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.Equal(t, []string{"f/v1: " + orphan}, rep.Adopted)
	require.Empty(t, rep.DeletedOrphans)
	require.Empty(t, rep.Foreign)
	require.Empty(t, rep.Errors)
	v1 := e.Device("f", "v1")
	require.Equal(t, orphan, v1.Address)
	require.False(t, v1.HasPassword, "the orphan's password is unknown")
	require.NotEmpty(t, v1.Op, "the device owes work to get a password")
	require.Equal(t, rep.WorkKey, v1.WorkKey)
	require.Equal(t, "adopted an orphan address", v1.Drift)
	require.Equal(t, []attempt{{"adopted", orphan}}, e.attempts("f", "v1"))
	require.Equal(t, []provisiontest.EnqueueCall{{Key: rep.WorkKey, Devices: 1}}, e.Enq.All())

	e.Drain(rep.WorkKey)
	creds, err := e.Store.GetCredentials(e.Ctx, "f", "v1")
	require.NoError(t, err)
	require.Equal(t, "ready", creds.Status)
	require.Equal(t, orphan, creds.CloudAddress)
	require.Equal(t, e.Addresses()[orphan].Password, creds.CloudPassword, "the stored password is the one the cloud holds")
	require.Equal(t, int64(1), e.Sim.State().Accounts[provisiontest.APIKey].Creates, "no second address was made")

	requireNothingToDo(t, e.run(e.reconciler(reconcile.Config{}), false))
}

func TestOrphanOfLostCreateIsDeletedWhenTheRetryMadeAnother(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	orphan := e.loseCreate(key)
	require.Equal(t, 1, e.Step(key, 1, provisiontest.RetryNow), "the retry")
	v1 := e.Device("f", "v1")
	require.NotEmpty(t, v1.Address)
	require.NotEqual(t, orphan, v1.Address)

	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.Equal(t, []string{orphan}, rep.DeletedOrphans)
	require.Empty(t, rep.Adopted)
	require.Empty(t, rep.Foreign)
	require.Empty(t, rep.Errors)
	cloud := e.Addresses()
	require.NotContains(t, cloud, orphan)
	require.Contains(t, cloud, v1.Address)
	require.Len(t, cloud, 1)
	require.Equal(t, v1.Address, e.Device("f", "v1").Address, "the device keeps its own address")
	require.Equal(t, []attempt{{"discarded", orphan}, {"created", v1.Address}}, e.attempts("f", "v1"))
	require.Empty(t, e.Enq.All())
}

func TestAddressMadeAfterItsClaimWasLostIsDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	// A job claims v1 and its lease runs out before it sends; a second job claims v1
	// again. Both creates succeed, the first job's result arrives last.
	late, err := e.Store.ClaimWork(e.Ctx, key, 1, time.Microsecond, 0)
	require.NoError(t, err)
	require.Len(t, late, 1)
	current, err := e.Store.ClaimWork(e.Ctx, key, 1, time.Minute, 0)
	require.NoError(t, err)
	require.Len(t, current, 1, "the expired claim is claimable again")
	lateRes, currentRes := e.Perform(late[0]), e.Perform(current[0])
	e.Finish(currentRes)
	e.Finish(lateRes)
	surplus, mine := lateRes.Report.Address, currentRes.Report.Address
	require.Equal(t, mine, e.Device("f", "v1").Address)
	require.Equal(t, []attempt{{"unknown", surplus}, {"created", mine}}, e.attempts("f", "v1"))

	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.Equal(t, []string{surplus}, rep.DeletedOrphans)
	require.Empty(t, rep.Adopted)
	require.Empty(t, rep.Foreign)
	cloud := e.Addresses()
	require.NotContains(t, cloud, surplus)
	require.Contains(t, cloud, mine)
	require.Equal(t, []attempt{{"discarded", surplus}, {"created", mine}}, e.attempts("f", "v1"))
}

func TestUnansweredCreateThatMadeNothingIsDiscarded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	// 503 without doing anything: to vncfleet the outcome is unknown.
	e.Sim.SetFaults(sim.Faults{FailRate: 1})
	require.Equal(t, 1, e.Step(key, 1, provisiontest.RetryNow))
	e.Sim.SetFaults(sim.Faults{})
	require.Empty(t, e.Addresses())
	require.Equal(t, []attempt{{"unknown", ""}}, e.attempts("f", "v1"))

	rep := e.run(e.reconciler(reconcile.Config{}), false)
	requireNothingToDo(t, rep)
	require.Equal(t, []attempt{{"discarded", ""}}, e.attempts("f", "v1"), "a complete listing shows it made nothing")
	v1 := e.Device("f", "v1")
	require.Empty(t, v1.Address)
	require.Equal(t, "create", v1.Op, "the device's own retry still creates it")
}

func TestDryRunReportsEverythingAndChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\nv2,connect,line-b,,,\n")
	orphan := e.loseCreate(e.Ingest("g", provisiontest.Header+"v3,connect,line-c,,,\n"))
	require.NoError(t, e.Sim.ForceDelete(provisiontest.APIKey, addrs["v1"]))
	require.NoError(t, e.Sim.ForceSpec(provisiontest.APIKey, addrs["v2"], vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"intruders"}}))
	foreign, _, err := e.Sim.CreateAddress(provisiontest.APIKey, vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"someone-else"}})
	require.NoError(t, err)

	db, cloud, counts := e.snapshot(), e.Addresses(), e.Counts()
	cfg := reconcile.Config{DeleteForeign: true}
	dry := e.run(e.reconciler(cfg), true)
	require.Equal(t, []string{"f/v1"}, dry.Vanished)
	require.Equal(t, []string{"f/v2"}, dry.Drifted)
	require.Equal(t, []string{"g/v3: " + orphan}, dry.Adopted)
	require.Equal(t, []string{foreign}, dry.Foreign)
	require.Empty(t, dry.DeletedOrphans)
	require.Empty(t, dry.Errors)
	require.Zero(t, dry.Rescheduled)

	require.Equal(t, db, e.snapshot(), "no row changed")
	require.Equal(t, cloud, e.Addresses(), "no address changed")
	after := e.Counts()
	for _, op := range []string{"create", "update", "reset", "delete"} {
		require.Equal(t, counts[op], after[op], "%s calls", op)
	}
	require.Empty(t, e.Enq.All(), "no work started")

	// The same run for real does what the dry run said it would.
	real := e.run(e.reconciler(cfg), false)
	require.Equal(t, dry.Vanished, real.Vanished)
	require.Equal(t, dry.Drifted, real.Drifted)
	require.Equal(t, dry.Adopted, real.Adopted)
	require.Equal(t, dry.Foreign, real.Foreign)
	require.Equal(t, []string{foreign}, real.DeletedForeign)
	require.NotEqual(t, db, e.snapshot())
	require.Len(t, e.Enq.All(), 1)
}

func TestFailedCheckIsReportedNotTakenAsVanished(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\nv2,connect,line-a,,,\n")
	require.NoError(t, e.Sim.ForceDelete(provisiontest.APIKey, addrs["v1"]))

	// The listing succeeds; every request after it is answered 503.
	var calls atomic.Int64
	r := e.reconciler(reconcile.Config{})
	r.Call = func(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
		if calls.Add(1) == 2 {
			e.Sim.SetFaults(sim.Faults{FailRate: 1})
		}
		return true, fn(ctx)
	}
	r.Config.Backoff = quickRetries
	db := e.snapshot()
	rep := e.run(r, false)
	require.False(t, rep.Converged)
	require.Equal(t, int64(1+3*reconcile.DefaultAttempts), calls.Load(), "each GET was made DefaultAttempts times")
	require.Empty(t, rep.Vanished, "a failed GET says nothing about the address")
	require.Zero(t, rep.Checked)
	require.Len(t, rep.Errors, 3, "%q", rep.Errors)
	joined := strings.Join(rep.Errors, "\n")
	require.Contains(t, joined, "check v1 ("+addrs["v1"]+")")
	require.Contains(t, joined, "check drift of v1")
	require.Contains(t, joined, "check drift of v2")
	require.Equal(t, db, e.snapshot())
	require.Empty(t, e.Enq.All())

	e.Sim.SetFaults(sim.Faults{})
	rep = e.run(e.reconciler(reconcile.Config{}), false)
	require.Equal(t, []string{"f/v1"}, rep.Vanished)
	require.Empty(t, rep.Errors)
	require.True(t, rep.Converged)
}

func TestListingFailureFailsTheRunAndChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	require.NoError(t, e.Sim.ForceDelete(provisiontest.APIKey, addrs["v1"]))
	e.Sim.SetFaults(sim.Faults{FailRate: 1})
	db := e.snapshot()

	rep, err := e.reconciler(reconcile.Config{Backoff: quickRetries}).Run(e.Ctx, false)
	require.ErrorContains(t, err, "list cloud addresses")
	require.ErrorIs(t, err, vnccloud.ErrServiceUnavailable)
	var withStatus interface{ HTTPStatus() int }
	require.ErrorAs(t, err, &withStatus)
	require.Equal(t, 502, withStatus.HTTPStatus(), "the API answers Bad Gateway: VNC Cloud failed, not vncfleet")
	require.Equal(t, int64(reconcile.DefaultAttempts), e.Counts()["list"], "the page was asked for again before giving up")
	require.Nil(t, rep)
	require.Equal(t, db, e.snapshot(), "an incomplete listing must not mark anything vanished")
	require.Empty(t, e.Enq.All())
}

func TestOwedWorkWithoutAJobIsRescheduled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Ingest("f", provisiontest.Header+"v1,connect,line-a,,,\n")
	// The row owes a create but says so nowhere (its op was lost): the rows' own state
	// decides, not the op column.
	_, err := e.Pool.Exec(e.Ctx, `UPDATE devices SET op = NULL, work_key = NULL`)
	require.NoError(t, err)

	rep := e.run(e.reconciler(reconcile.Config{}), false)
	require.Equal(t, 1, rep.Rescheduled)
	v1 := e.Device("f", "v1")
	require.Equal(t, "create", v1.Op)
	require.Equal(t, rep.WorkKey, v1.WorkKey)
	require.Equal(t, []provisiontest.EnqueueCall{{Key: rep.WorkKey, Devices: 1}}, e.Enq.All())

	e.Drain(rep.WorkKey)
	v1 = e.Device("f", "v1")
	require.Equal(t, "ready", v1.Status)
	require.Contains(t, e.Addresses(), v1.Address)
}
