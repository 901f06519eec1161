package lifecycle_test

import (
	"context"
	"errors"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// password is a device's current password as the store gives it out.
func (e *env) password(fleetName, id string) string {
	e.T.Helper()
	c, err := e.Store.GetCredentials(e.Ctx, fleetName, id)
	require.NoError(e.T, err)
	return c.CloudPassword
}

// age makes a device's password look set that long ago. The database clock cannot
// be moved, so the row's timestamp is.
func (e *env) age(fleetName, id string, d time.Duration) {
	e.T.Helper()
	tag, err := e.Pool.Exec(e.Ctx, `UPDATE devices d SET password_set_at = now() - $3::interval
		FROM fleets f WHERE f.id = d.fleet_id AND f.name = $1 AND d.device_id = $2`, fleetName, id, d)
	require.NoError(e.T, err)
	require.EqualValues(e.T, 1, tag.RowsAffected())
}

// rotating lists the devices that owe a rotation under key, as fleet/device_id.
func (e *env) rotating(key string) []string {
	e.T.Helper()
	rows, err := e.Pool.Query(e.Ctx, `SELECT f.name || '/' || d.device_id FROM devices d JOIN fleets f ON f.id = d.fleet_id
		WHERE d.op = 'rotate' AND d.work_key = $1 ORDER BY 1`, key)
	require.NoError(e.T, err)
	var out []string
	for rows.Next() {
		var s string
		require.NoError(e.T, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(e.T, rows.Err())
	return out
}

func TestRotateAllStagesEveryReadyDeviceOfTheFleet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("a", provisiontest.Header+"a1,connect,g,,,\na2,connect,g,,,\na3,listen,,g,,\n")
	other := e.Provision("b", provisiontest.Header+"b1,connect,g,,,\n")
	old := map[string]string{}
	for id := range addrs {
		old[id] = e.password("a", id)
	}
	bVersion := e.Addresses()[other["b1"]].Version

	l, _ := e.lifecycle(e.Pool, lifecycle.Config{}, nil)
	n, key, err := l.Rotate(e.Ctx, "a", true)
	require.NoError(t, err)
	require.Equal(t, 3, n, "all: fresh passwords too")
	require.True(t, strings.HasPrefix(key, "rotate:"), key)
	require.Equal(t, []string{"a/a1", "a/a2", "a/a3"}, e.rotating(key))
	require.Empty(t, e.Device("b", "b1").Op, "another fleet is not touched")
	var later int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT count(*) FROM devices WHERE work_key = $1 AND next_attempt_at > now()`, key).Scan(&later))
	require.Zero(t, later, "rotations asked for by hand start at once")
	require.Equal(t, []provisiontest.EnqueueCall{{Key: key, Devices: 3}}, e.Enq.All())

	// The reset's password is staged: the store keeps handing out the old one until
	// the address is ready with the new one.
	require.Equal(t, 3, e.Step(key, 100, provisiontest.RetryNow))
	cloud := e.Addresses()
	for id, addr := range addrs {
		d := e.Device("a", id)
		require.Equal(t, "awaiting_ready", d.Status, id)
		require.Equal(t, old[id], e.password("a", id), "%s: still the old password", id)
		require.NotEqual(t, old[id], cloud[addr].Password, "%s: the cloud was reset", id)
	}
	require.Equal(t, 3, e.Poll())
	cloud = e.Addresses()
	for id, addr := range addrs {
		require.Equal(t, "ready", e.Device("a", id).Status, id)
		require.Equal(t, cloud[addr].Password, e.password("a", id), "%s: the new password is promoted once ready", id)
	}
	require.Equal(t, bVersion, e.Addresses()[other["b1"]].Version, "b1 was not reset")
	remaining, _, err := e.Store.PendingWork(e.Ctx, key)
	require.NoError(t, err)
	require.Zero(t, remaining)
}

func TestRotateWithoutAllTakesOnlyPasswordsPastMaxAge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Provision("a", provisiontest.Header+"d1,connect,g,,,\nd2,connect,g,,,\nd3,connect,g,,,\n")
	e.age("a", "d1", 40*24*time.Hour)
	e.age("a", "d2", 10*24*time.Hour)

	// The default maximum age is 30 days.
	l, _ := e.lifecycle(e.Pool, lifecycle.Config{}, nil)
	n, key, err := l.Rotate(e.Ctx, "a", false)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, []string{"a/d1"}, e.rotating(key))

	// A week: d2 is due as well; d1 already owes its rotation and is not taken twice.
	l, _ = e.lifecycle(e.Pool, lifecycle.Config{MaxAge: 7 * 24 * time.Hour}, nil)
	n, key2, err := l.Rotate(e.Ctx, "a", false)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NotEqual(t, key, key2)
	require.Equal(t, []string{"a/d2"}, e.rotating(key2))
	require.Empty(t, e.Device("a", "d3").Op, "a fresh password is not due")
	require.Equal(t, []provisiontest.EnqueueCall{{Key: key, Devices: 1}, {Key: key2, Devices: 1}}, e.Enq.All())

	// Nothing due: nothing scheduled, no job.
	n, _, err = l.Rotate(e.Ctx, "a", false)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Len(t, e.Enq.All(), 2)
}

func TestScheduledRotationSpreadsDueDevicesOverTheWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	due := []string{"d1", "d2", "d3", "d4"}
	e.Provision("a", provisiontest.Header+"d1,connect,g,,,\nd2,connect,g,,,\nd3,connect,g,,,\nd4,connect,g,,,\n")
	for _, id := range due {
		e.age("a", id, 31*24*time.Hour)
	}
	e.Provision("b", provisiontest.Header+"b1,connect,g,,,\n") // fresh: not due
	e.Ingest("c", provisiontest.Header+"c1,connect,g,,,\n")    // not provisioned yet: nothing to rotate
	l, logs := e.lifecycle(e.Pool, lifecycle.Config{Window: time.Hour}, nil)

	require.NoError(t, l.ScheduledRotation(e.Ctx))
	calls := e.Enq.All()
	require.Len(t, calls, 1)
	require.Equal(t, 4, calls[0].Devices)
	key := calls[0].Key
	require.Equal(t, []string{"a/d1", "a/d2", "a/d3", "a/d4"}, e.rotating(key), "every fleet's due devices, and only those")
	require.Empty(t, e.Device("b", "b1").Op)
	require.Equal(t, "create", e.Device("c", "c1").Op)

	rows, err := e.Pool.Query(e.Ctx, `SELECT extract(epoch FROM next_attempt_at - min(next_attempt_at) OVER ())::float8
		FROM devices WHERE work_key = $1`, key)
	require.NoError(t, err)
	var offsets []float64
	for rows.Next() {
		var s float64
		require.NoError(t, rows.Scan(&s))
		offsets = append(offsets, s)
	}
	require.NoError(t, rows.Err())
	sort.Float64s(offsets)
	want := []float64{0, 15 * 60, 30 * 60, 45 * 60}
	require.Len(t, offsets, len(want))
	for i := range want {
		require.LessOrEqual(t, math.Abs(offsets[i]-want[i]), 0.001, "start times %v spread evenly over the hour", offsets)
	}
	require.Contains(t, logs.String(), "rotations scheduled")
	require.Contains(t, logs.String(), "devices=4")

	// Run again: the due devices owe their rotation already, nothing else is due.
	require.NoError(t, l.ScheduledRotation(e.Ctx))
	require.Len(t, e.Enq.All(), 1)
}

func TestOverlappingReconciliationIsBusy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,g,,,\nv2,connect,g,,,\n")
	require.NoError(t, e.Sim.ForceDelete(provisiontest.APIKey, addrs["v1"]))

	// The first reconciliation stops inside its first API call until released.
	entered, release := make(chan struct{}), make(chan struct{})
	var enter sync.Once
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	first, _ := e.lifecycle(e.Pool, lifecycle.Config{}, func(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
		enter.Do(func() {
			close(entered)
			<-release
		})
		return true, fn(ctx)
	})
	type outcome struct {
		report any
		err    error
	}
	done := make(chan outcome, 1)
	go func() {
		rep, err := first.Reconcile(e.Ctx, false)
		done <- outcome{rep, err}
	}()
	select {
	case <-entered:
	case o := <-done:
		t.Fatalf("the first reconciliation ended early: %v", o.err)
	}

	// Meanwhile another process, and this one, ask for a reconciliation.
	requests := e.Sim.State().Requests
	second, secondLogs := e.lifecycle(e.otherProcess(), lifecycle.Config{}, nil)
	rep, err := second.Reconcile(e.Ctx, true)
	require.ErrorIs(t, err, lifecycle.ErrReconcileRunning)
	var withStatus interface{ HTTPStatus() int }
	require.True(t, errors.As(err, &withStatus))
	require.Equal(t, 409, withStatus.HTTPStatus(), "the API answers 409 Conflict")
	busyReport, _ := rep.(*reconcile.Report)
	require.Nil(t, busyReport, "no report from a refused run")
	_, err = first.Reconcile(e.Ctx, false)
	require.ErrorIs(t, err, lifecycle.ErrReconcileRunning, "one process's second request is refused too")
	require.NoError(t, second.ScheduledReconcile(e.Ctx), "a scheduled run that finds one in progress is not an error")
	require.NotContains(t, secondLogs.String(), "reconciled")
	require.Equal(t, requests, e.Sim.State().Requests, "the refused runs made no API call")
	require.Equal(t, addrs["v1"], e.Device("f", "v1").Address, "and changed nothing")

	releaseOnce()
	o := <-done
	require.NoError(t, o.err)
	report, ok := o.report.(*reconcile.Report)
	require.True(t, ok, "%T", o.report)
	require.Equal(t, []string{"f/v1"}, report.Vanished)
	require.Equal(t, "create", e.Device("f", "v1").Op)

	// The lock went with the first run: the other process may reconcile now.
	rep, err = second.Reconcile(e.Ctx, true)
	require.NoError(t, err)
	require.True(t, rep.(*reconcile.Report).DryRun)
}

func TestFailedReconciliationReleasesTheLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Provision("f", provisiontest.Header+"v1,connect,g,,,\n")
	l, logs := e.lifecycle(e.Pool, lifecycle.Config{}, nil)

	e.Sim.SetFaults(sim.Faults{FailRate: 1})
	_, err := l.Reconcile(e.Ctx, false)
	require.ErrorContains(t, err, "list cloud addresses")
	require.NotErrorIs(t, err, lifecycle.ErrReconcileRunning)
	require.ErrorIs(t, l.ScheduledReconcile(e.Ctx), vnccloud.ErrServiceUnavailable, "a scheduled run's failure is not swallowed")
	require.NotContains(t, logs.String(), "reconciled")

	var held int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&held))
	require.Zero(t, held, "no advisory lock is left behind")

	e.Sim.SetFaults(sim.Faults{})
	second, _ := e.lifecycle(e.otherProcess(), lifecycle.Config{}, nil)
	rep, err := second.Reconcile(e.Ctx, false)
	require.NoError(t, err)
	require.Equal(t, 1, rep.(*reconcile.Report).Listed)
}

func TestScheduledReconcileRepairsAndLogs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("f", provisiontest.Header+"v1,connect,line-a,,,\nv2,connect,line-a,,,\n")
	require.NoError(t, e.Sim.ForceSpec(provisiontest.APIKey, addrs["v2"], vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"intruders"}}))
	l, logs := e.lifecycle(e.Pool, lifecycle.Config{}, nil)

	require.NoError(t, l.ScheduledReconcile(e.Ctx))
	v2 := e.Device("f", "v2")
	require.Equal(t, "update", v2.Op)
	require.Equal(t, "spec changed outside vncfleet", v2.Drift)
	calls := e.Enq.All()
	require.Len(t, calls, 1)
	require.Equal(t, 1, calls[0].Devices)
	require.Equal(t, v2.WorkKey, calls[0].Key)
	require.Contains(t, logs.String(), "msg=reconciled")
	require.Contains(t, logs.String(), "drifted=1")

	e.Drain(calls[0].Key)
	require.Equal(t, []string{"line-a"}, e.Addresses()[addrs["v2"]].Groups, "the spec is put back")
}
