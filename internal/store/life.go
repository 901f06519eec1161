package store

import "github.com/vncfleet/vncfleet/fleet"

// Operations a device can owe, as the op column holds them.
const (
	OpCreate = string(fleet.OpCreate)
	OpUpdate = string(fleet.OpUpdate)
	OpDelete = string(fleet.OpDelete)
	OpRotate = string(fleet.OpRotate)
)

// rowStateSQL is fleet.State of a device row d, as the arguments of the SQL functions
// vncfleet_owed_op and vncfleet_owed_status (migration 0015) take it.
const rowStateSQL = `d.desired_state, d.cloud_address IS NOT NULL, d.applied_version < d.spec_version,
	d.password_ct IS NOT NULL, d.pending_password_ct IS NOT NULL,
	(d.op IS NOT DISTINCT FROM 'rotate' OR (d.rotation_started_at IS NOT NULL AND d.pending_password_ct IS NULL))`

// scheduleOpSQL recomputes a device's owed operation and visible status from its row
// by fleet.State.Owed's rule (vncfleet_owed_op and vncfleet_owed_status state it
// for SQL). It is used after an upload and after every finished operation, which is
// what makes the work level-triggered: whatever happened before, the next step
// follows from the row. (In an UPDATE all expressions see the row as it was before
// the statement.)
const scheduleOpSQL = `
	op = vncfleet_owed_op(` + rowStateSQL + `),
	status = vncfleet_owed_status(` + rowStateSQL + `, d.status),
	applied_version = CASE WHEN d.desired_state = 'absent' AND d.cloud_address IS NULL THEN d.spec_version ELSE d.applied_version END,
	-- Only a device awaiting readiness with nothing else owed has a poll due
	-- (devices_due_poll_idx).
	next_poll_at = CASE WHEN vncfleet_owed_op(` + rowStateSQL + `) IS NULL THEN d.next_poll_at END,
	next_attempt_at = NULL,
	attempts = 0,
	updated_at = now()`
