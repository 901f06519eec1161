package store

import (
	"github.com/jackc/pgx/v5"
)

// The hot path of provisioning records a few rows per device: its events, its create
// attempt, its new state. One statement per row made the database the bottleneck
// (each statement is parsed, planned and executed on its own), so results that share
// a shape are written with one statement over arrays instead: unnest turns the arrays
// back into rows. Rare outcomes keep their per-row statements.

// eventLog collects device events for one INSERT.
type eventLog struct {
	pks                           []int64
	operations, outcomes, message []string
	statuses, codes               []int32
}

func (l *eventLog) add(pk int64, ev Event, outcomeSuffix string) {
	l.pks = append(l.pks, pk)
	l.operations = append(l.operations, ev.Operation)
	l.outcomes = append(l.outcomes, ev.Outcome+outcomeSuffix)
	l.statuses = append(l.statuses, int32(ev.HTTPStatus))
	l.codes = append(l.codes, int32(ev.ErrorCode))
	l.message = append(l.message, ev.Message)
}

// queue adds the INSERT to b; the events keep their order.
func (l *eventLog) queue(b *pgx.Batch) {
	if len(l.pks) == 0 {
		return
	}
	b.Queue(`INSERT INTO device_events (device_pk, operation, outcome, http_status, error_code, message)
		SELECT e.pk, e.operation, e.outcome, nullif(e.status, 0), nullif(e.code, 0), nullif(e.message, '')
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::int[], $6::text[]) WITH ORDINALITY
		    AS e(pk, operation, outcome, status, code, message, n)
		ORDER BY e.n`,
		l.pks, l.operations, l.outcomes, l.statuses, l.codes, l.message)
}

// createdRows collects successful creates whose claim still held.
type createdRows struct {
	pks, attempts []int64
	addresses     []string
	ciphertexts   [][]byte
	keyIDs        []string
	versions      []int32
}

func (c *createdRows) add(w WorkItem, address string, ct []byte, keyID string) {
	c.pks = append(c.pks, w.PK)
	c.attempts = append(c.attempts, w.AttemptID)
	c.addresses = append(c.addresses, address)
	c.ciphertexts = append(c.ciphertexts, ct)
	c.keyIDs = append(c.keyIDs, keyID)
	c.versions = append(c.versions, int32(w.SpecVersion))
}

// queue adds the device and attempt updates to b. Each device now has its address and
// password and waits for readiness; the version it was created with is applied. What
// is owed next is scheduleOpSQL's answer for the row as this statement leaves it,
// written out here so that the row is updated once, not twice: a delete if the device
// was marked absent meanwhile, an update if its spec changed, else nothing.
func (c *createdRows) queue(b *pgx.Batch, policy RetryPolicy) {
	if len(c.pks) == 0 {
		return
	}
	b.Queue(`UPDATE devices d SET cloud_address = r.address, password_ct = r.ct, password_key_id = r.key_id,
		    password_set_at = now(), etag = NULL, awaiting_since = now(), polls = 0,
		    applied_version = r.version, claim_until = NULL, next_attempt_at = NULL, attempts = 0,
		    op = CASE WHEN d.desired_state = 'absent' THEN 'delete'
		              WHEN r.version < d.spec_version THEN 'update' END,
		    status = CASE WHEN d.desired_state = 'absent' THEN 'deleting'
		                  WHEN r.version < d.spec_version THEN 'updating' ELSE 'awaiting_ready' END,
		    next_poll_at = CASE WHEN d.desired_state = 'present' AND r.version >= d.spec_version
		                        THEN `+firstPollSQL("$7", "$6", "d.id")+` END,
		    `+clearErrorSQL+`, updated_at = now()
		FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[], $5::int[]) AS r(pk, address, ct, key_id, version)
		WHERE d.id = r.pk`,
		c.pks, c.addresses, c.ciphertexts, c.keyIDs, c.versions, policy.PollAfter, policy.ReadinessAccount)
	b.Queue(`UPDATE create_attempts a SET outcome = 'created', cloud_address = r.address, resolved_at = now(), `+attemptEndedSQL+`
		FROM unnest($1::bigint[], $2::text[]) AS r(id, address)
		WHERE a.id = r.id`,
		c.attempts, c.addresses)
}

// queueSchedule recomputes the owed operation of the devices pks, in one statement.
func queueSchedule(b *pgx.Batch, pks []int64) {
	if len(pks) == 0 {
		return
	}
	b.Queue(`UPDATE devices d SET `+scheduleOpSQL+` WHERE d.id = ANY ($1) AND d.status <> 'failed'`, pks)
}

// pollRows collects readiness polls by outcome: the ones ready, and the ones to poll
// again after a delay.
type pollRows struct {
	ready      []int64
	again      []int64
	againAfter []float64 // seconds
}

func (p *pollRows) queue(b *pgx.Batch) {
	if len(p.ready) > 0 {
		b.Queue(`UPDATE devices SET status = 'ready', ready_at = now(), claim_until = NULL, next_poll_at = NULL,
			    polls = polls + 1,
			    password_ct = coalesce(pending_password_ct, password_ct),
			    password_key_id = coalesce(pending_key_id, password_key_id),
			    password_set_at = CASE WHEN pending_password_ct IS NOT NULL THEN now() ELSE password_set_at END,
			    pending_password_ct = NULL, pending_key_id = NULL, rotation_started_at = NULL,
			    `+clearErrorSQL+`, updated_at = now()
			WHERE id = ANY ($1) AND status = 'awaiting_ready'`, p.ready)
		// A manifest that changed a device while its poll held the claim left the
		// new operation to be decided here (the upload does not touch claimed rows).
		b.Queue(`UPDATE devices d SET `+scheduleOpSQL+`, work_key = coalesce(d.work_key, 'repair')
			WHERE d.id = ANY ($1) AND (d.applied_version < d.spec_version OR d.desired_state = 'absent')
			  AND d.status <> 'failed'`, p.ready)
	}
	if len(p.again) > 0 {
		b.Queue(`UPDATE devices d SET polls = d.polls + 1, next_poll_at = now() + r.after * interval '1 second', claim_until = NULL
			FROM unnest($1::bigint[], $2::float8[]) AS r(pk, after)
			WHERE d.id = r.pk`, p.again, p.againAfter)
	}
}
