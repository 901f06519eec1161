package fleet_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
)

func TestOwed(t *testing.T) {
	t.Parallel()
	base := fleet.State{Desired: fleet.StatePresent, Status: fleet.StatusReady, HasAddress: true, HasPassword: true}
	with := func(f func(*fleet.State)) fleet.State { s := base; f(&s); return s }
	tests := []struct {
		name   string
		state  fleet.State
		op     fleet.Op
		status fleet.Status
	}{
		{"settled", base, fleet.OpNone, fleet.StatusReady},
		{"absent with an address", with(func(s *fleet.State) { s.Desired = fleet.StateAbsent }), fleet.OpDelete, fleet.StatusDeleting},
		{"absent without one", with(func(s *fleet.State) { s.Desired, s.HasAddress = fleet.StateAbsent, false }), fleet.OpNone, fleet.StatusDeleted},
		{"no address", with(func(s *fleet.State) { s.HasAddress, s.HasPassword = false, false }), fleet.OpCreate, fleet.StatusPending},
		{"spec changed", with(func(s *fleet.State) { s.SpecBehind = true }), fleet.OpUpdate, fleet.StatusUpdating},
		{"spec changed comes before a rotation", with(func(s *fleet.State) { s.SpecBehind, s.RotationDue = true, true }), fleet.OpUpdate, fleet.StatusUpdating},
		{"password unknown", with(func(s *fleet.State) { s.HasPassword = false }), fleet.OpRotate, fleet.StatusRotating},
		{"rotation due keeps ready until sent", with(func(s *fleet.State) { s.RotationDue = true }), fleet.OpRotate, fleet.StatusReady},
		{"failed during rotation rotates again", with(func(s *fleet.State) { s.RotationDue, s.Status = true, fleet.StatusFailed }), fleet.OpRotate, fleet.StatusRotating},
		{"answered reset waits for readiness", with(func(s *fleet.State) {
			s.RotationDue, s.HasPending, s.Status = true, true, fleet.StatusAwaitingReady
		}), fleet.OpNone, fleet.StatusAwaitingReady},
		{"failed with nothing owed stays failed", with(func(s *fleet.State) { s.Status = fleet.StatusFailed }), fleet.OpNone, fleet.StatusFailed},
		{"cancelled before its create owes nothing", with(func(s *fleet.State) {
			s.HasAddress, s.HasPassword, s.Status = false, false, fleet.StatusCancelled
		}), fleet.OpNone, fleet.StatusCancelled},
		{"cancelled before its delete owes nothing", with(func(s *fleet.State) {
			s.Desired, s.Status = fleet.StateAbsent, fleet.StatusCancelled
		}), fleet.OpNone, fleet.StatusCancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, status := tt.state.Owed()
			require.Equal(t, tt.op, op)
			require.Equal(t, tt.status, status)
		})
	}
}

// Whatever the row, Owed keeps the promises the rest of the program relies on.
func TestOwedInvariants(t *testing.T) {
	t.Parallel()
	for _, s := range fleet.AllStates() {
		op, status := s.Owed()
		name := fmt.Sprintf("%+v", s)
		if s.Desired == fleet.StateAbsent {
			require.Contains(t, []fleet.Op{fleet.OpDelete, fleet.OpNone}, op, name)
		}
		if s.Status == fleet.StatusCancelled {
			// A cancelled device owes nothing until a manifest resumes it (TestResumed).
			require.Equal(t, fleet.OpNone, op, name)
			require.Equal(t, fleet.StatusCancelled, status, name)
			continue
		}
		if op == fleet.OpNone && s.Desired == fleet.StatePresent {
			require.True(t, s.HasAddress && !s.SpecBehind && (s.HasPassword || s.HasPending), name)
		}
		// Owed never makes a device ready: only a poll does, which promotes the
		// password (TestReadyMeansTheCloudsPassword). And a device whose password is
		// not known is never left ready.
		if status == fleet.StatusReady {
			require.Equal(t, fleet.StatusReady, s.Status, name)
			require.True(t, s.HasPassword || s.HasPending, name)
		}
		// A failed device with something owed is not shown failed (retry recomputes it).
		if op != fleet.OpNone {
			require.NotEqual(t, fleet.StatusFailed, status, name)
		}
		require.Contains(t, fleet.Statuses, status, name)
	}
}

// A cancelled device named again by a manifest takes up what is left of its work;
// with nothing left, a readiness check confirms it. Other devices are unchanged.
func TestResumed(t *testing.T) {
	t.Parallel()
	for _, s := range fleet.AllStates() {
		name := fmt.Sprintf("%+v", s)
		r := s.Resumed()
		if s.Status != fleet.StatusCancelled {
			require.Equal(t, s, r, name)
			continue
		}
		op, status := r.Owed()
		require.NotEqual(t, fleet.StatusCancelled, status, name)
		require.NotEqual(t, fleet.StatusReady, status, name+": only a poll makes a device ready")
		cancelledCopy := s
		cancelledCopy.Status = fleet.StatusPending
		wantOp, _ := cancelledCopy.Owed()
		require.Equal(t, wantOp, op, name+": resumed, it owes what it owed before the cancel")
	}
}

// Every (operation, outcome) pair, with attempts left and without.
func TestDecide(t *testing.T) {
	t.Parallel()
	type want struct {
		effect  string // the one effect that characterises the outcome
		attempt string
	}
	cases := map[fleet.Op]map[fleet.Outcome]want{
		fleet.OpCreate: {
			fleet.Created: {"set address", "created"}, fleet.Refused: {"fail", "failed"},
			fleet.Retryable: {"retry", "unknown"}, fleet.Unknown: {"retry", "unknown"}, fleet.NotSent: {"release", "discarded"},
		},
		fleet.OpUpdate: {
			fleet.Applied: {"applied", ""}, fleet.Vanished: {"forget address", ""}, fleet.Refused: {"fail", ""},
			fleet.Retryable: {"retry", ""}, fleet.Unknown: {"retry", ""}, fleet.NotSent: {"release", ""},
		},
		fleet.OpDelete: {
			fleet.Deleted: {"forget address", ""}, fleet.Vanished: {"forget address", ""}, fleet.Refused: {"fail", ""},
			fleet.Retryable: {"retry", ""}, fleet.Unknown: {"retry", ""}, fleet.NotSent: {"release", ""},
		},
		fleet.OpRotate: {
			fleet.Rotated: {"set pending", ""}, fleet.Vanished: {"forget address", ""}, fleet.Refused: {"fail", ""},
			fleet.Retryable: {"retry", ""}, fleet.Unknown: {"retry, forget password", ""}, fleet.NotSent: {"release", ""},
		},
		fleet.OpPoll: {
			fleet.Ready: {"promote", ""}, fleet.Pending: {"poll again", ""}, fleet.Vanished: {"forget address", ""},
			fleet.Refused: {"fail", ""}, fleet.Retryable: {"poll again", ""}, fleet.Unknown: {"poll again", ""},
			fleet.NotSent: {"release", ""},
		},
	}
	for op, byOutcome := range cases {
		for _, o := range fleet.Outcomes {
			w, possible := byOutcome[o]
			e := fleet.Decide(op, o, true)
			name := fmt.Sprintf("%s/%s", op, o)
			if !possible {
				require.Equal(t, fleet.Effect{Release: true}, e, "%s cannot happen: the claim is only released", name)
				continue
			}
			require.Equal(t, w.effect, describe(e), name)
			require.Equal(t, w.attempt, e.Attempt, name)

			// Out of attempts, what would be tried again fails the device instead, and
			// a reset of unknown outcome still forgets the password.
			last := fleet.Decide(op, o, false)
			switch {
			case e.Retry || (op == fleet.OpPoll && (o == fleet.Pending || o == fleet.Retryable || o == fleet.Unknown)):
				require.True(t, last.Fail, name)
				require.Equal(t, "device.failed", last.Webhook, name)
				require.Equal(t, e.ForgetPassword, last.ForgetPassword, name)
			default:
				require.Equal(t, e, last, "%s does not depend on attempts", name)
			}
		}
	}
}

// describe names an effect by its defining field.
func describe(e fleet.Effect) string {
	switch {
	case e.Release:
		return "release"
	case e.Fail:
		return "fail"
	case e.Retry && e.ForgetPassword:
		return "retry, forget password"
	case e.Retry:
		return "retry"
	case e.SetAddress:
		return "set address"
	case e.ForgetAddress:
		return "forget address"
	case e.SetPending:
		return "set pending"
	case e.PromotePending:
		return "promote"
	case e.PollAgain:
		return "poll again"
	case e.Applied:
		return "applied"
	}
	return fmt.Sprintf("%+v", e)
}

// The promise of issue 8: whatever happens to a reset, a device is ready only with
// the password the cloud holds. Walk every outcome of a rotation, then every outcome
// of the poll that follows, and check the stored password is never stale when ready.
func TestReadyMeansTheCloudsPassword(t *testing.T) {
	t.Parallel()
	start := fleet.State{Desired: fleet.StatePresent, Status: fleet.StatusRotating, HasAddress: true, HasPassword: true, RotationDue: true}
	for _, o := range fleet.Outcomes {
		for _, left := range []bool{true, false} {
			e := fleet.Decide(fleet.OpRotate, o, left)
			s, op, status := fleet.Next(start, fleet.OpRotate, e)
			// The stored password may be stale exactly when the reset may have happened
			// but its password was not learned.
			stale := o == fleet.Unknown
			if stale {
				require.False(t, s.HasPassword, "%s: a password the cloud may no longer hold is forgotten", o)
				if status != fleet.StatusFailed {
					require.Equal(t, fleet.OpRotate, op, "%s: another reset is owed", o)
				}
				// And `retry` of the failed device rotates again.
				s.Status = fleet.StatusFailed
				retryOp, _ := s.Owed()
				require.Equal(t, fleet.OpRotate, retryOp, "%s: retry rotates again", o)
			}
			if o == fleet.Refused {
				s.Status = fleet.StatusFailed
				retryOp, _ := s.Owed()
				require.Equal(t, fleet.OpRotate, retryOp, "retry of a refused rotation rotates again")
			}
			require.NotEqual(t, fleet.StatusReady, status, "%s: not ready before a poll", o)
		}
	}
}
