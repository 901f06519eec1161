package store

import (
	"cmp"

	"github.com/vncfleet/vncfleet/fleet"
)

// Operations a device can owe, as the op column holds them.
const (
	OpCreate = string(fleet.OpCreate)
	OpUpdate = string(fleet.OpUpdate)
	OpDelete = string(fleet.OpDelete)
	OpRotate = string(fleet.OpRotate)
)

// rowStateArgs is fleet.State of a device row d, whose status the rules read as the SQL
// expression status, as the arguments of the SQL functions vncfleet_owed_op and
// vncfleet_owed_status (migrations 0015, 0023) take it.
func rowStateArgs(status string) string {
	return `d.desired_state, d.cloud_address IS NOT NULL, d.applied_version < d.spec_version,
	d.password_ct IS NOT NULL, d.pending_password_ct IS NOT NULL,
	(d.op IS NOT DISTINCT FROM 'rotate' OR (d.rotation_started_at IS NOT NULL AND d.pending_password_ct IS NULL)),
	` + status
}

// scheduleSQL is the SET list that recomputes a device's owed operation and visible
// status by fleet.State.Owed's rule (vncfleet_owed_op and vncfleet_owed_status state
// it for SQL), the row's status read as the expression status. A device left owing
// nothing keeps its poll due (only a device awaiting readiness has one:
// devices_due_poll_idx), or gets one at nextPoll when that is not empty. (In an
// UPDATE all expressions see the row as it was before the statement.)
func scheduleSQL(status, nextPoll string) string {
	state := rowStateArgs(status)
	return `
	op = vncfleet_owed_op(` + state + `),
	status = vncfleet_owed_status(` + state + `),
	applied_version = CASE WHEN d.desired_state = 'absent' AND d.cloud_address IS NULL THEN d.spec_version ELSE d.applied_version END,
	next_poll_at = CASE WHEN vncfleet_owed_op(` + state + `) IS NULL THEN ` + cmp.Or(nextPoll, "d.next_poll_at") + ` END,
	next_attempt_at = NULL,
	attempts = 0,
	updated_at = now()`
}

// scheduleOpSQL recomputes what a device owes from its row as it is. It is used after
// an upload and after every finished operation, which is what makes the work
// level-triggered: whatever happened before, the next step follows from the row.
var scheduleOpSQL = scheduleSQL("d.status", "")

// resumeOpSQL is scheduleOpSQL for a device a newly applied manifest names: a
// cancelled one is resumed (fleet.State.Resumed, vncfleet_resumed_status), and when
// nothing is left to send a readiness check is due at once to confirm it.
var resumeOpSQL = scheduleSQL("vncfleet_resumed_status(d.status)",
	"CASE WHEN d.status = 'cancelled' THEN now() ELSE d.next_poll_at END")
