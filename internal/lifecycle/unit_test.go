package lifecycle_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/store"
)

// These tests hold the lifecycle's decisions (what a run schedules, with what age and
// window, when reconciliation runs at all) to a store and a reconciler of their own:
// no database. The SQL behind them has its tests in internal/store, and the tests
// with PostgreSQL in this package run the whole.

// fakeStore is a lifecycle.Store in memory.
type fakeStore struct {
	mu        sync.Mutex
	scheduled int   // ScheduleRotations' answer
	err       error // ScheduleRotations' error
	calls     []rotationCall
	locked    bool // someone holds the reconcile lock
	lockErr   error
	released  int
	recorded  []store.ReconcileRun // RecordReconcileRun's
	recordErr error
}

func (s *fakeStore) RecordReconcileRun(_ context.Context, run store.ReconcileRun) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recordErr != nil {
		return 0, s.recordErr
	}
	s.recorded = append(s.recorded, run)
	return int64(len(s.recorded)), nil
}

type rotationCall struct {
	fleet          string
	all            bool
	maxAge, window time.Duration
	key            string
}

func (s *fakeStore) ScheduleRotations(_ context.Context, fleetName string, all bool, maxAge, window time.Duration, key string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, rotationCall{fleetName, all, maxAge, window, key})
	return s.scheduled, s.err
}

func (s *fakeStore) TryLock(context.Context, int64) (func(), bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lockErr != nil || s.locked {
		return nil, false, s.lockErr
	}
	s.locked = true
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.locked = false
		s.released++
	}, true, nil
}

// fakeReconciler is a lifecycle.Reconciler that records its runs.
type fakeReconciler struct {
	runs   []bool // dryRun of each
	store  *fakeStore
	held   []bool // whether the lock was held during each run
	report *reconcile.Report
	err    error
}

func (r *fakeReconciler) Run(_ context.Context, dryRun bool) (*reconcile.Report, error) {
	r.runs = append(r.runs, dryRun)
	r.store.mu.Lock()
	r.held = append(r.held, r.store.locked)
	r.store.mu.Unlock()
	return r.report, r.err
}

// recorder is an Enqueue and an Observer that remember what they were told.
type recorder struct {
	enqueued  []string
	enqueueN  []int
	enqErr    error
	rotations []int
	rotErrs   []error
	reconcile []*reconcile.Report
	recErrs   []error
}

func (r *recorder) Enqueue(_ context.Context, key string, n int) error {
	r.enqueued, r.enqueueN = append(r.enqueued, key), append(r.enqueueN, n)
	return r.enqErr
}
func (r *recorder) RotationRun(n int, err error) {
	r.rotations, r.rotErrs = append(r.rotations, n), append(r.rotErrs, err)
}
func (r *recorder) ReconcileRun(rep *reconcile.Report, err error) {
	r.reconcile, r.recErrs = append(r.reconcile, rep), append(r.recErrs, err)
}

func newUnit(cfg lifecycle.Config) (*lifecycle.Lifecycle, *fakeStore, *fakeReconciler, *recorder) {
	st := &fakeStore{}
	rec := &fakeReconciler{store: st, report: &reconcile.Report{Converged: true}}
	obs := &recorder{}
	return &lifecycle.Lifecycle{Store: st, Reconciler: rec, Config: cfg, Enqueue: obs.Enqueue, Observe: obs}, st, rec, obs
}

func TestScheduledRotationTakesTheDefaultsAndSpreadsOverTheWindow(t *testing.T) {
	t.Parallel()
	l, st, _, obs := newUnit(lifecycle.Config{})
	st.scheduled = 7
	require.NoError(t, l.ScheduledRotation(context.Background()))
	require.Len(t, st.calls, 1)
	c := st.calls[0]
	require.Equal(t, rotationCall{"", false, lifecycle.DefaultMaxAge, lifecycle.DefaultWindow, c.key}, c)
	require.Regexp(t, `^rotate:\d+$`, c.key)
	require.Equal(t, []string{c.key}, obs.enqueued, "the scheduled devices get work jobs under the run's key")
	require.Equal(t, []int{7}, obs.enqueueN)
	require.Equal(t, []int{7}, obs.rotations)
}

func TestRotationByHandStartsAtOnceWithTheConfiguredAge(t *testing.T) {
	t.Parallel()
	l, st, _, obs := newUnit(lifecycle.Config{MaxAge: 48 * time.Hour, Window: 3 * time.Hour})
	st.scheduled = 2
	n, key, err := l.Rotate(context.Background(), "line-a", true)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, []rotationCall{{"line-a", true, 48 * time.Hour, 0, key}}, st.calls, "no window: by hand is now")
	require.Equal(t, []string{key}, obs.enqueued)
}

func TestRotationThatSchedulesNothingEnqueuesNothing(t *testing.T) {
	t.Parallel()
	l, st, _, obs := newUnit(lifecycle.Config{})
	require.NoError(t, l.ScheduledRotation(context.Background()))
	require.Len(t, st.calls, 1)
	require.Empty(t, obs.enqueued)
	require.Equal(t, []int{0}, obs.rotations)
}

func TestRotationFailuresAreReturnedAndObserved(t *testing.T) {
	t.Parallel()
	l, st, _, obs := newUnit(lifecycle.Config{})
	st.err = errors.New("database gone")
	require.ErrorIs(t, l.ScheduledRotation(context.Background()), st.err)
	require.Empty(t, obs.enqueued)

	st.err, st.scheduled = nil, 3
	obs.enqErr = errors.New("river gone")
	_, _, err := l.Rotate(context.Background(), "", false)
	require.ErrorIs(t, err, obs.enqErr)
	require.ErrorIs(t, obs.rotErrs[1], obs.enqErr, "the observer hears of the failed run")
}

func TestReconcileRunsUnderTheLockAndReleasesIt(t *testing.T) {
	t.Parallel()
	l, st, rec, obs := newUnit(lifecycle.Config{})
	rep, err := l.Reconcile(context.Background(), false)
	require.NoError(t, err)
	require.Same(t, rec.report, rep)
	require.Equal(t, []bool{false}, rec.runs)
	require.Equal(t, []bool{true}, rec.held, "the run held the cluster-wide lock")
	require.Equal(t, 1, st.released)
	require.Equal(t, []*reconcile.Report{rec.report}, obs.reconcile)

	// A failed run releases the lock too, and a dry run is not observed.
	rec.err = errors.New("listing failed")
	_, err = l.Reconcile(context.Background(), true)
	require.ErrorIs(t, err, rec.err)
	require.Equal(t, 2, st.released)
	require.Len(t, obs.reconcile, 1, "dry runs are not counted")

	// Both are recorded, the dry run and the failed one too; a run whose record
	// fails is still the run its caller gets.
	require.Len(t, st.recorded, 2)
	require.Equal(t, store.ReconcileByRequest, st.recorded[0].Trigger)
	require.True(t, st.recorded[0].Converged)
	require.NotNil(t, st.recorded[0].Report)
	require.True(t, st.recorded[1].DryRun)
	require.Nil(t, st.recorded[1].Report)
	require.Equal(t, "the run failed; the server's log has the cause", st.recorded[1].Error, "no database detail in the history")
	rec.err, st.recordErr = nil, errors.New("database gone")
	rep, err = l.Reconcile(context.Background(), false)
	require.NoError(t, err)
	require.Same(t, rec.report, rep)
}

func TestReconcileWhileAnotherRunsIsBusyAndTheScheduleSkipsIt(t *testing.T) {
	t.Parallel()
	l, st, rec, obs := newUnit(lifecycle.Config{})
	st.locked = true // another process reconciles
	_, err := l.Reconcile(context.Background(), false)
	require.ErrorIs(t, err, lifecycle.ErrReconcileRunning)
	require.NoError(t, l.ScheduledReconcile(context.Background()), "the schedule's run is simply not needed")
	require.Empty(t, rec.runs)
	require.Empty(t, obs.reconcile, "no run, nothing observed")
	require.Empty(t, st.recorded, "and nothing recorded")
	require.Zero(t, st.released, "not ours to release")

	st.locked, st.lockErr = false, errors.New("no connection")
	err = l.ScheduledReconcile(context.Background())
	require.ErrorIs(t, err, st.lockErr)
	require.Empty(t, rec.runs)
	require.Len(t, st.recorded, 1, "a scheduled run that could not start is recorded as failed")
	require.Equal(t, store.ReconcileBySchedule, st.recorded[0].Trigger)
}
