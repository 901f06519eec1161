package fleet

// A device's life, decided here once. The store records what these functions decide
// and the jobs carry it out; neither makes a decision of its own. The diagram is in
// docs/device-life.md.
//
// Work is level-triggered: what a device owes the cloud next (Owed) follows from its
// row alone, whatever happened before. After every operation, the outcome of its
// calls (Outcome) changes the row in one of a few ways (Decide's Effect), and the
// owed operation is computed again from the row as the effect leaves it.

// Op is an operation a device can owe VNC Cloud.
type Op string

const (
	OpNone   Op = ""
	OpCreate Op = "create" // POST: a new address and its password
	OpUpdate Op = "update" // GET for the ETag, then PUT of the desired spec
	OpDelete Op = "delete" // GET for the ETag, then DELETE
	OpRotate Op = "rotate" // GET for the ETag, then a password reset
	// OpPoll is a readiness check. It is never owed in a row: a device awaiting
	// readiness has a poll due instead.
	OpPoll Op = "poll"
)

// Ops lists the operations a row can owe.
var Ops = []Op{OpCreate, OpUpdate, OpDelete, OpRotate}

// Outcome is what the calls of one operation came to, as far as the device's life
// is concerned.
type Outcome string

const (
	Created  Outcome = "created"  // create answered with an address and its password
	Applied  Outcome = "applied"  // update: the desired spec was PUT
	Deleted  Outcome = "deleted"  // delete answered, or the address was already gone (404)
	Vanished Outcome = "vanished" // update, rotate or poll: 404, the address no longer exists
	Rotated  Outcome = "rotated"  // reset answered with the new password
	Ready    Outcome = "ready"    // poll: the cloud has applied every change
	Pending  Outcome = "pending"  // poll: changes still pending
	// Refused is a definite refusal: the cloud did not act and will not on a retry
	// (a 4xx, a spec the API rejects, a listen device whose named devices have none).
	Refused Outcome = "refused"
	// Retryable: the cloud did not act, and may on a later try (429).
	Retryable Outcome = "retryable"
	// Unknown: the cloud may have acted (a 5xx, a timeout, the connection lost, a 2xx
	// whose body could not be read). A create of unknown outcome may have made an
	// address; a reset of unknown outcome may have changed the password.
	Unknown Outcome = "unknown"
	// NotSent: nothing left the process (shutdown, the claim running short, the
	// limiter unreachable); the claim is given back as if never taken.
	NotSent Outcome = "not_sent"
)

// Outcomes lists every outcome.
var Outcomes = []Outcome{Created, Applied, Deleted, Vanished, Rotated, Ready, Pending, Refused, Retryable, Unknown, NotSent}

// State is what the rules read of a device's row.
type State struct {
	Desired    DesiredState
	Status     Status
	HasAddress bool
	// SpecBehind: the desired spec is newer than the one the cloud holds.
	SpecBehind bool
	// HasPassword: a stored password the cloud holds (or held until a reset that
	// was answered, whose password is pending).
	HasPassword bool
	// HasPending: a reset's answered password waits to be promoted on readiness.
	HasPending bool
	// RotationDue: a rotation was asked for (scheduled, manual or retried) and no
	// reset has been answered with a password yet.
	RotationDue bool
}

// AllStates enumerates every State the rules tell apart, each status included: the
// domain the tests of Owed, Decide and their SQL counterparts walk.
func AllStates() []State {
	var out []State
	for _, desired := range []DesiredState{StatePresent, StateAbsent} {
		for _, status := range Statuses {
			for bits := 0; bits < 1<<5; bits++ {
				out = append(out, State{
					Desired: desired, Status: status,
					HasAddress: bits&1 != 0, SpecBehind: bits&2 != 0, HasPassword: bits&4 != 0,
					HasPending: bits&8 != 0, RotationDue: bits&16 != 0,
				})
			}
		}
	}
	return out
}

// Owed is the operation the device owes the cloud now, and the status it shows. It
// is the single definition of "what is left to do" (the store's SQL function
// vncfleet_owed_op/vncfleet_owed_status states the same rule, and a test requires
// them to agree on every state).
func (s State) Owed() (Op, Status) {
	switch {
	case s.Status == StatusCancelled:
		// Its manifest was cancelled: nothing is owed until a manifest names it
		// again (Resumed).
		return OpNone, StatusCancelled
	case s.Desired == StateAbsent && s.HasAddress:
		return OpDelete, StatusDeleting
	case s.Desired == StateAbsent:
		return OpNone, StatusDeleted
	case !s.HasAddress:
		return OpCreate, StatusPending
	case s.SpecBehind:
		return OpUpdate, StatusUpdating
	case !s.HasPassword && !s.HasPending:
		// An address whose password is not known (adopted, or a reset of unknown
		// outcome) gets one by a reset; until then it is not ready.
		return OpRotate, StatusRotating
	case s.RotationDue && !s.HasPending:
		if s.Status == StatusFailed {
			return OpRotate, StatusRotating
		}
		// The stored password is still the cloud's until the reset is sent.
		return OpRotate, s.Status
	}
	return OpNone, s.Status
}

// Resumed is the state of a device when a newly applied manifest names it: a
// cancelled device is resumed, and Owed then says what is left of its work. When
// nothing is left to send, a readiness check confirms it before it is called ready
// (a reset answered before the cancel may still wait to be promoted), so a resumed
// device shows awaiting_ready with a poll due. Other devices are unchanged: a
// failed one waits for a change of its row or an explicit retry.
func (s State) Resumed() State {
	if s.Status == StatusCancelled {
		s.Status = StatusAwaitingReady
	}
	return s
}

// Effect is what one outcome does to a device's row. After it, the owed operation is
// Owed of the row as the effect leaves it, unless the effect retries, fails or
// releases the device.
type Effect struct {
	// SetAddress: the create's address and password become the device's, and the
	// spec it was created with is the applied one.
	SetAddress bool
	// ForgetAddress: the address is gone (deleted, or vanished from the cloud); so
	// is every password of it.
	ForgetAddress bool
	// Applied: the spec the claim carried is the cloud's now.
	Applied bool
	// SetPending: the reset's password is kept pending until the address is ready.
	SetPending bool
	// ForgetPassword: a reset of unknown outcome may have changed the password, so
	// the stored one can no longer be called the cloud's: another reset is owed.
	ForgetPassword bool
	// AwaitReady: the cloud has changes pending; a readiness poll is due (when the
	// row owes nothing else by then).
	AwaitReady bool
	// PromotePending: ready; a pending password becomes the stored one.
	PromotePending bool
	// PollAgain: still pending; poll again after the readiness backoff.
	PollAgain bool
	// Retry: try the same operation again after a backoff; the status stays.
	Retry bool
	// Fail: the device is failed and owes nothing until `retry`.
	Fail bool
	// Release: the claim is given back and nothing else changes.
	Release bool
	// Attempt is what a create's recorded attempt becomes: created, failed,
	// unknown (it may have made an address: reconciliation settles it) or
	// discarded (never sent). Empty for other operations.
	Attempt string
	// Webhook is the event announced, if any.
	Webhook string
}

// Decide says what an outcome of op does to the device. attemptsLeft is false when
// this was the last transient failure the retry policy allows (for a poll: when the
// device has waited for readiness as long as it may).
//
// What is decided here, once:
//   - a create of unknown outcome keeps its attempt open for reconciliation, which
//     adopts or deletes the address it may have made;
//   - a reset of unknown outcome owes another reset (the stored password is
//     forgotten): ready always means the stored password is the cloud's;
//   - a 404 on update, rotate or poll means the address vanished: it is created
//     again; on delete it means done;
//   - a refusal fails the device at once; transient failures are retried until the
//     policy's attempts run out, then fail it.
func Decide(op Op, o Outcome, attemptsLeft bool) Effect {
	var e Effect
	switch o {
	case NotSent:
		e.Release = true
		if op == OpCreate {
			e.Attempt = "discarded"
		}
		return e
	case Refused:
		e.Fail = true
		if op == OpCreate {
			e.Attempt = "failed"
		}
	case Retryable, Unknown:
		if op == OpCreate {
			e.Attempt = "unknown"
		}
		if op == OpRotate && o == Unknown {
			e.ForgetPassword = true
		}
		switch {
		case !attemptsLeft:
			e.Fail = true
		case op == OpPoll:
			e.PollAgain = true // a failed read changed nothing: poll on schedule
			return e
		default:
			e.Retry = true
		}
	case Pending:
		if !attemptsLeft {
			e.Fail = true // gave up waiting for readiness
		}
	}
	if e.Fail {
		e.Webhook = "device.failed"
		return e
	}
	if e.Retry {
		return e
	}
	switch {
	case op == OpCreate && o == Created:
		e.SetAddress, e.Applied, e.AwaitReady, e.Attempt = true, true, true, "created"
	case op == OpUpdate && o == Applied:
		e.Applied, e.AwaitReady = true, true
	case op == OpDelete && (o == Deleted || o == Vanished):
		e.ForgetAddress, e.Applied, e.Webhook = true, true, "device.deleted"
	case op == OpRotate && o == Rotated:
		e.SetPending, e.AwaitReady = true, true
	case (op == OpUpdate || op == OpRotate || op == OpPoll) && o == Vanished:
		e.ForgetAddress = true
	case op == OpPoll && o == Ready:
		e.PromotePending = true
	case op == OpPoll && o == Pending:
		e.PollAgain = true
	default:
		// An outcome the operation cannot have (a create "rotated"): a bug, not a
		// device's fault, but the device must not be left claimed.
		e.Release = true
	}
	return e
}

// Next is the row after effect e of an outcome of op, and what it owes then: the
// state machine in one call. s is the row as it is when the outcome is recorded, its
// Status the one the claim showed, and its SpecBehind whether the desired spec is
// newer than the one the operation carried (a manifest changed it meanwhile).
func Next(s State, op Op, e Effect) (State, Op, Status) {
	switch {
	case e.Release:
		return s, opOwedByClaim(s, op), s.Status
	case e.Fail:
		if e.ForgetPassword {
			s.HasPassword = false
		}
		s.Status = StatusFailed
		return s, OpNone, StatusFailed
	case e.Retry:
		if e.ForgetPassword {
			s.HasPassword = false
		}
		return s, op, s.Status
	}
	if e.SetAddress {
		s.HasAddress, s.HasPassword, s.HasPending = true, true, false
	}
	if e.ForgetAddress {
		s.HasAddress, s.HasPassword, s.HasPending = false, false, false
	}
	if e.SetPending {
		s.HasPending, s.RotationDue = true, false
	}
	if e.PromotePending {
		if s.HasPending {
			s.HasPassword, s.HasPending = true, false
		}
		s.RotationDue = false
		s.Status = StatusReady
	}
	if e.AwaitReady {
		s.Status = StatusAwaitingReady
	}
	owed, status := s.Owed()
	if e.PollAgain {
		status = StatusAwaitingReady
	}
	s.Status = status
	return s, owed, status
}

// opOwedByClaim is what a released claim leaves owed: the same operation (a poll is
// owed by its schedule, not by the row).
func opOwedByClaim(_ State, op Op) Op {
	if op == OpPoll {
		return OpNone
	}
	return op
}
