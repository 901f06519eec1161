package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/secretbox"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// The agreement tests: the rules of package fleet and the SQL that records them
// must give the same answer for every state and every outcome.

func newLifeStore(t *testing.T) (*Store, context.Context) {
	t.Helper()
	pool, _ := dbtest.New(t)
	key := make([]byte, secretbox.KeySize)
	_, _ = rand.Read(key)
	keys, err := secretbox.NewKeyring(key)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return New(pool, keys), ctx
}

// The SQL functions vncfleet_owed_op and vncfleet_owed_status state fleet.State.Owed.
func TestOwedSQLFunctionsAgreeWithFleet(t *testing.T) {
	t.Parallel()
	s, ctx := newLifeStore(t)
	states := fleet.AllStates()
	batch := &pgx.Batch{}
	for _, st := range states {
		batch.Queue(`SELECT coalesce(vncfleet_owed_op($1, $2, $3, $4, $5, $6, $7), ''), vncfleet_owed_status($1, $2, $3, $4, $5, $6, $7)`,
			string(st.Desired), st.HasAddress, st.SpecBehind, st.HasPassword, st.HasPending, st.RotationDue, string(st.Status))
	}
	br := s.pool.SendBatch(ctx, batch)
	defer br.Close()
	for _, st := range states {
		var op, status string
		require.NoError(t, br.QueryRow().Scan(&op, &status))
		wantOp, wantStatus := st.Owed()
		require.Equal(t, string(wantOp), op, "%+v", st)
		require.Equal(t, string(wantStatus), status, "%+v", st)
	}
}

// insertDevice writes a row in state st (its op and status as Owed says) and returns
// its id.
func insertDevice(t *testing.T, s *Store, ctx context.Context, n int, st fleet.State) int64 {
	t.Helper()
	op, status := st.Owed()
	var pk int64
	var addr, pw, pending any
	if st.HasAddress {
		addr = fmt.Sprintf("addr-%d", n)
	}
	if st.HasPassword {
		pw = []byte("sealed")
	}
	if st.HasPending {
		pending = []byte("sealed-pending")
	}
	applied := 1
	if st.SpecBehind {
		applied = 0
	}
	require.NoError(t, s.pool.QueryRow(ctx, `
		WITH f AS (INSERT INTO fleets (name) VALUES ('f') ON CONFLICT (name) DO UPDATE SET name = 'f' RETURNING id)
		INSERT INTO devices (fleet_id, device_id, action, groups, desired_state, spec_hash, spec_version, applied_version,
		    cloud_address, password_ct, password_key_id, pending_password_ct, pending_key_id,
		    rotation_started_at, op, status, work_key, next_poll_at)
		SELECT f.id, $1, 'connect', '{g}', $2, '\x00', 1, $3, $4, $5, 'k', $6, 'k',
		    CASE WHEN $7 THEN now() END, nullif($8, ''), $9, 'life', CASE WHEN $9 = 'awaiting_ready' THEN now() END
		FROM f RETURNING devices.id`,
		fmt.Sprintf("d%d", n), string(st.Desired), applied, addr, pw, pending, st.RotationDue, string(op), string(status)).Scan(&pk))
	return pk
}

// rowState reads a row back as the rules see it.
func rowState(t *testing.T, s *Store, ctx context.Context, pk int64) (fleet.State, fleet.Op) {
	t.Helper()
	var st fleet.State
	var desired, status, op string
	require.NoError(t, s.pool.QueryRow(ctx, `
		SELECT desired_state, status, coalesce(op, ''), cloud_address IS NOT NULL, applied_version < spec_version,
		       password_ct IS NOT NULL, pending_password_ct IS NOT NULL,
		       (op IS NOT DISTINCT FROM 'rotate' OR (rotation_started_at IS NOT NULL AND pending_password_ct IS NULL))
		FROM devices WHERE id = $1`, pk).Scan(&desired, &status, &op,
		&st.HasAddress, &st.SpecBehind, &st.HasPassword, &st.HasPending, &st.RotationDue))
	st.Desired, st.Status = fleet.DesiredState(desired), fleet.Status(status)
	return st, fleet.Op(op)
}

// requireRowIsNext returns a check that row pk is what fleet.Next said: status, owed
// operation, address and passwords.
func requireRowIsNext(t *testing.T, s *Store, ctx context.Context, pk int64, name string) func(fleet.State, fleet.Op, fleet.Status) {
	return func(want fleet.State, wantOp fleet.Op, wantStatus fleet.Status) {
		t.Helper()
		got, gotOp := rowState(t, s, ctx, pk)
		require.Equal(t, wantStatus, got.Status, name)
		require.Equal(t, wantOp, gotOp, name)
		require.Equal(t, want.HasAddress, got.HasAddress, name)
		require.Equal(t, want.HasPassword, got.HasPassword, name)
		require.Equal(t, want.HasPending, got.HasPending, name)
	}
}

// scheduleOpSQL over a row gives what Owed gives for the state the row is in.
func TestScheduleSQLAgreesWithOwed(t *testing.T) {
	t.Parallel()
	s, ctx := newLifeStore(t)
	for i, st := range fleet.AllStates() {
		if st.Status == fleet.StatusFailed {
			continue // the schedule leaves failed devices alone until retry
		}
		pk := insertDevice(t, s, ctx, i, st)
		// Scramble what the row owes, then let the schedule decide again.
		_, err := s.pool.Exec(ctx, `UPDATE devices SET op = NULL, status = $2 WHERE id = $1`, pk, string(st.Status))
		require.NoError(t, err)
		if st.RotationDue {
			_, err = s.pool.Exec(ctx, `UPDATE devices SET op = 'rotate' WHERE id = $1`, pk)
			require.NoError(t, err)
		}
		_, err = s.pool.Exec(ctx, `UPDATE devices d SET `+scheduleOpSQL+` WHERE d.id = $1`, pk)
		require.NoError(t, err)
		got, op := rowState(t, s, ctx, pk)
		wantOp, wantStatus := st.Owed()
		require.Equal(t, wantOp, op, "%+v", st)
		require.Equal(t, wantStatus, got.Status, "%+v", st)
	}
}

// resumeOpSQL over a row gives what Owed gives for the state Resumed makes of it, and
// a resumed device left owing nothing has its confirming readiness check due.
func TestResumeSQLAgreesWithResumed(t *testing.T) {
	t.Parallel()
	s, ctx := newLifeStore(t)
	for i, st := range fleet.AllStates() {
		if st.Status == fleet.StatusFailed {
			continue // as for scheduleOpSQL: failed devices are left to retry
		}
		pk := insertDevice(t, s, ctx, i, st)
		_, err := s.pool.Exec(ctx, `UPDATE devices SET next_poll_at = NULL WHERE id = $1 AND status = 'cancelled'`, pk)
		require.NoError(t, err)
		_, err = s.pool.Exec(ctx, `UPDATE devices d SET `+resumeOpSQL+` WHERE d.id = $1`, pk)
		require.NoError(t, err)
		got, op := rowState(t, s, ctx, pk)
		wantOp, wantStatus := st.Resumed().Owed()
		require.Equal(t, wantOp, op, "%+v", st)
		require.Equal(t, wantStatus, got.Status, "%+v", st)
		if st.Status == fleet.StatusCancelled && wantOp == fleet.OpNone {
			var pollDue bool
			require.NoError(t, s.pool.QueryRow(ctx, `SELECT next_poll_at <= now() FROM devices WHERE id = $1`, pk).Scan(&pollDue))
			require.True(t, pollDue, "%+v: a resumed device owing nothing is confirmed by a poll", st)
		}
	}
}

// Every outcome of every operation, recorded by the store, leaves the row as
// fleet.Next says: status, owed operation, address and passwords.
func TestRecordedOutcomesAgreeWithDecide(t *testing.T) {
	t.Parallel()
	s, ctx := newLifeStore(t)
	present := fleet.State{Desired: fleet.StatePresent, Status: fleet.StatusReady, HasAddress: true, HasPassword: true}
	starts := map[fleet.Op][]fleet.State{
		fleet.OpCreate: {{Desired: fleet.StatePresent, Status: fleet.StatusPending}},
		fleet.OpUpdate: {func() fleet.State { s := present; s.SpecBehind = true; return s }()},
		fleet.OpDelete: {func() fleet.State { s := present; s.Desired = fleet.StateAbsent; return s }()},
		fleet.OpRotate: {
			func() fleet.State { s := present; s.RotationDue = true; return s }(),
			func() fleet.State { s := present; s.HasPassword = false; return s }(), // adopted: password unknown
		},
	}
	claimStatus := map[fleet.Op]fleet.Status{fleet.OpCreate: fleet.StatusCreating, fleet.OpUpdate: fleet.StatusUpdating,
		fleet.OpDelete: fleet.StatusDeleting, fleet.OpRotate: fleet.StatusRotating}
	n := 0
	for _, op := range fleet.Ops {
		for _, start := range starts[op] {
			for _, o := range fleet.Outcomes {
				for _, left := range []bool{true, false} {
					for _, changedMeanwhile := range []bool{false, true} {
						n++
						name := fmt.Sprintf("%s from %+v: %s, attempts left %v, spec changed meanwhile %v", op, start, o, left, changedMeanwhile)
						pk := insertDevice(t, s, ctx, 10000+n, start)
						key := fmt.Sprintf("life:%d", n)
						_, err := s.pool.Exec(ctx, `UPDATE devices SET work_key = $2 WHERE id = $1`, pk, key)
						require.NoError(t, err)
						items, err := s.ClaimWork(ctx, key, 1, time.Minute, 0)
						require.NoError(t, err, name)
						require.Len(t, items, 1, name)
						require.Equal(t, string(op), items[0].Op, name)
						if changedMeanwhile {
							_, err = s.pool.Exec(ctx, `UPDATE devices SET spec_version = spec_version + 1 WHERE id = $1`, pk)
							require.NoError(t, err)
						}
						rep := cloudop.Report{Outcome: o, Err: &vnccloud.APIError{StatusCode: 503}}
						if o == fleet.Created || o == fleet.Rotated {
							rep.Address, rep.Password, rep.Err = fmt.Sprintf("made-%d", n), "new-password", nil
						}
						policy := RetryPolicy{MaxAttempts: 10, PollAfter: time.Second}
						if !left {
							policy.MaxAttempts = 1
						}
						require.NoError(t, s.Finish(ctx, []Result{{Item: items[0], Report: rep}}, policy), name)

						at := start
						at.Status = claimStatus[op]
						if op == fleet.OpUpdate || op == fleet.OpCreate {
							at.SpecBehind = changedMeanwhile // behind what the operation carried
						} else {
							at.SpecBehind = at.SpecBehind || changedMeanwhile
						}
						requireRowIsNext(t, s, ctx, pk, name)(fleet.Next(at, op, fleet.Decide(op, o, left)))
					}
				}
			}
		}
	}
}

// Every outcome of a readiness poll, likewise.
func TestRecordedPollsAgreeWithDecide(t *testing.T) {
	t.Parallel()
	s, ctx := newLifeStore(t)
	starts := []fleet.State{
		{Desired: fleet.StatePresent, Status: fleet.StatusAwaitingReady, HasAddress: true, HasPassword: true},
		{Desired: fleet.StatePresent, Status: fleet.StatusAwaitingReady, HasAddress: true, HasPassword: true, HasPending: true, RotationDue: true},
	}
	n := 0
	for _, start := range starts {
		for _, o := range fleet.Outcomes {
			for _, mayWait := range []bool{true, false} {
				n++
				name := fmt.Sprintf("poll from %+v: %s, may wait %v", start, o, mayWait)
				pk := insertDevice(t, s, ctx, 20000+n, start)
				// Only this device is due.
				_, err := s.pool.Exec(ctx, `UPDATE devices SET next_poll_at = CASE WHEN id = $1 THEN now() - interval '1 second' END
					WHERE next_poll_at IS NOT NULL OR id = $1`, pk)
				require.NoError(t, err)
				items, err := s.ClaimPolls(ctx, 10, time.Minute, 0)
				require.NoError(t, err, name)
				require.Len(t, items, 1, name)
				rep := cloudop.Report{Outcome: o, Err: errors.New("503 Service Unavailable")}
				require.NoError(t, s.FinishPolls(ctx, []PollResult{{Item: items[0], Report: rep, MayWait: mayWait, NextPoll: time.Second}}, nil), name)

				requireRowIsNext(t, s, ctx, pk, name)(fleet.Next(start, fleet.OpPoll, fleet.Decide(fleet.OpPoll, o, mayWait)))
			}
		}
	}
}
