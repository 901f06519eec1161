package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// WorkItem is a device claimed for one operation.
type WorkItem struct {
	PK           int64
	FleetID      int64
	DeviceID     string
	Op           string
	Action       vnccloud.Action
	Groups       []string
	AllowGroups  []string
	AllowDevices []string
	// ACLAddresses are the cloud addresses of AllowDevices, in order; Unresolved
	// names the ones that have no address (they failed or were deleted).
	ACLAddresses []string
	Unresolved   []string
	SpecVersion  int
	CloudAddress string
	Attempts     int
	AttemptID    int64 // the recorded create attempt, for OpCreate
	WorkKey      string
	ClaimUntil   time.Time
	ClaimToken   int64
}

// newClaimToken is a fresh fencing token for a claim.
func newClaimToken() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:]) >> 1)
}

// claim names one claimed device: its row and the fencing token its claim set.
type claim struct {
	pk    int64
	token int64
}

// stillClaimed locks the rows of results whose claim is still the one their token
// set, and returns them: only those may have results recorded. Another job may have
// claimed the rest after our lease ran out.
func stillClaimed[R any](ctx context.Context, tx pgx.Tx, results []R, claimOf func(R) claim) (map[int64]bool, error) {
	byToken := map[int64][]int64{}
	for _, r := range results {
		c := claimOf(r)
		byToken[c.token] = append(byToken[c.token], c.pk)
	}
	owned := map[int64]bool{}
	for token, ids := range byToken {
		rows, err := tx.Query(ctx, `SELECT id FROM devices WHERE id = ANY ($1) AND claim_token = $2 FOR UPDATE`, ids, token)
		if err != nil {
			return nil, fmt.Errorf("check claims: %w", err)
		}
		held, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return nil, fmt.Errorf("check claims: %w", err)
		}
		for _, id := range held {
			owned[id] = true
		}
	}
	return owned, nil
}

// Spec is the cloud address spec the device should have.
func (w WorkItem) Spec() vnccloud.Spec {
	spec := vnccloud.Spec{Action: w.Action}
	if w.Action == vnccloud.ActionConnect {
		spec.Groups = nilIfNone(w.Groups)
		return spec
	}
	if len(w.AllowGroups) > 0 || len(w.ACLAddresses) > 0 {
		spec.AccessControl = &vnccloud.AccessControl{Groups: nilIfNone(w.AllowGroups), CloudAddresses: nilIfNone(w.ACLAddresses)}
	}
	return spec
}

func nilIfNone(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// ClaimWork takes up to limit devices of a work queue that owe an operation and that
// no live claim holds, for lease. Connect devices come first, then by group. A listen
// device waits until every connect device it names has an address (or has failed,
// which fails it in turn), and until its fleet has no manifest still being applied. Create attempts are recorded in the same transaction,
// before any request is sent.
//
// worker is the Presence id the claim is made under (0: none), so that the claim is
// released as soon as that process is found dead.
func (s *Store) ClaimWork(ctx context.Context, key string, limit int, lease time.Duration, worker int64) ([]WorkItem, error) {
	var items []WorkItem
	token := newClaimToken()
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			WITH c AS (
				SELECT d.id FROM devices d
				WHERE d.work_key = $1 AND d.op IS NOT NULL
				  AND (d.claim_until IS NULL OR d.claim_until < now())
				  AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())
				  AND (d.action = 'connect' OR d.op NOT IN ('create', 'update') OR (
				    -- While a manifest of the fleet is still being applied, a device it names
				    -- may not have its row yet, or may still be on its way out: the ACL can
				    -- only be resolved once every row is in. (Checked first: cheap.)
				    NOT EXISTS (SELECT 1 FROM manifests m WHERE m.fleet_id = d.fleet_id AND m.applied_at IS NULL)
				    -- One lookup by the unique key per name, whatever the planner believes of
				    -- the table's size: as a join, stale statistics after a large upload made
				    -- it scan the whole fleet for every candidate.
				    AND NOT EXISTS (SELECT 1 FROM unnest(d.allow_devices) AS dep
				      WHERE (SELECT p.cloud_address IS NULL AND p.status <> 'failed' AND p.desired_state = 'present'
				             FROM devices p WHERE p.fleet_id = d.fleet_id AND p.device_id = dep))))
				ORDER BY d.sort_key, d.id
				LIMIT $2
				FOR UPDATE SKIP LOCKED)
			UPDATE devices d SET claim_until = now() + $3::interval, claim_token = $4, claim_worker = nullif($5::bigint, 0), updated_at = now(),
			    status = CASE d.op WHEN 'create' THEN 'creating' WHEN 'update' THEN 'updating'
			                       WHEN 'delete' THEN 'deleting' WHEN 'rotate' THEN 'rotating' END,
			    rotation_started_at = CASE WHEN d.op = 'rotate' THEN now() ELSE d.rotation_started_at END
			FROM c WHERE d.id = c.id
			RETURNING d.id, d.fleet_id, d.device_id, d.op, d.action, d.groups, d.allow_groups, d.allow_devices,
			    ARRAY(SELECT p.cloud_address FROM unnest(d.allow_devices) WITH ORDINALITY AS u(dep, n)
			          JOIN devices p ON p.fleet_id = d.fleet_id AND p.device_id = u.dep
			          WHERE p.cloud_address IS NOT NULL AND p.desired_state = 'present' ORDER BY u.n),
			    ARRAY(SELECT u.dep FROM unnest(d.allow_devices) AS u(dep)
			          LEFT JOIN devices p ON p.fleet_id = d.fleet_id AND p.device_id = u.dep
			          WHERE p.cloud_address IS NULL OR p.desired_state <> 'present'),
			    d.spec_version, coalesce(d.cloud_address, ''), d.attempts, d.work_key, d.claim_until`,
			key, limit, lease, token, worker)
		if err != nil {
			return fmt.Errorf("claim work %s: %w", key, err)
		}
		for rows.Next() {
			var w WorkItem
			var action string
			if err := rows.Scan(&w.PK, &w.FleetID, &w.DeviceID, &w.Op, &action, &w.Groups, &w.AllowGroups, &w.AllowDevices,
				&w.ACLAddresses, &w.Unresolved, &w.SpecVersion, &w.CloudAddress, &w.Attempts, &w.WorkKey, &w.ClaimUntil); err != nil {
				rows.Close()
				return fmt.Errorf("claim work %s: %w", key, err)
			}
			w.Action = vnccloud.Action(action)
			w.ClaimToken = token
			items = append(items, w)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("claim work %s: %w", key, err)
		}
		return recordAttempts(ctx, tx, items, worker)
	})
	if err != nil {
		return nil, err
	}
	return items, nil
}

// recordAttempts writes a create_attempts row for every claimed create whose spec can
// be sent (a listen device with unresolved names fails without a request), in one
// statement.
// An attempt may be in progress at the server until its claim ends (in_flight_until).
func recordAttempts(ctx context.Context, tx pgx.Tx, items []WorkItem, worker int64) error {
	var pks []int64
	var specs []string
	at := map[int64]int{}
	for i := range items {
		w := &items[i]
		if w.Op != OpCreate || len(w.Unresolved) > 0 {
			continue
		}
		spec, err := json.Marshal(wireSpec(w.Spec()))
		if err != nil {
			return fmt.Errorf("record attempt: %w", err)
		}
		pks = append(pks, w.PK)
		specs = append(specs, string(spec))
		at[w.PK] = i
	}
	if len(pks) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `
		INSERT INTO create_attempts (device_pk, spec, worker_id, in_flight_until)
		SELECT a.pk, a.spec::jsonb, nullif($3::bigint, 0), d.claim_until
		FROM unnest($1::bigint[], $2::text[]) AS a(pk, spec) JOIN devices d ON d.id = a.pk
		RETURNING device_pk, id`, pks, specs, worker)
	if err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	defer rows.Close()
	recorded := 0
	for rows.Next() {
		var pk, id int64
		if err := rows.Scan(&pk, &id); err != nil {
			return fmt.Errorf("record attempt: %w", err)
		}
		items[at[pk]].AttemptID = id
		recorded++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	if recorded != len(pks) {
		return fmt.Errorf("record attempt: %d of %d attempts recorded", recorded, len(pks))
	}
	return nil
}

// wireSpec is the spec as the API receives it; stored with each attempt so that
// reconciliation can recognise the address an unanswered attempt may have made.
type wireSpecJSON struct {
	AllowedActions []string                `json:"allowedActions"`
	Groups         []string                `json:"groups,omitempty"`
	AccessControl  *vnccloud.AccessControl `json:"accessControl,omitempty"`
}

func wireSpec(s vnccloud.Spec) wireSpecJSON {
	return wireSpecJSON{AllowedActions: []string{string(s.Action)}, Groups: s.Groups, AccessControl: s.AccessControl}
}

// Event is one VNC Cloud call made for a device, for the append-only event log.
type Event struct {
	Operation  string // create, get, update, reset, delete, ready
	Outcome    string // ok, pending, error
	HTTPStatus int
	ErrorCode  int
	Message    string
}

// EventFromError describes a failed call.
func EventFromError(op string, err error) Event {
	ev := Event{Operation: op, Outcome: "error", Message: err.Error()}
	var apiErr *vnccloud.APIError
	if errors.As(err, &apiErr) {
		ev.HTTPStatus = apiErr.StatusCode
		ev.ErrorCode = int(apiErr.Code)
	}
	return ev
}

// Result is what became of one claimed WorkItem. Exactly one of the outcome fields
// describes it; see Store.Finish.
type Result struct {
	Item   WorkItem
	Events []Event

	Created  *vnccloud.Created // create: the address and its password
	Applied  bool              // update: the spec was PUT
	Deleted  bool              // delete: the address is gone (204 or 404)
	Vanished bool              // update/rotate: the address no longer exists (404)
	Rotated  *vnccloud.Created // rotate: the reset's new password, kept pending until ready

	Err       error // failure; Retryable decides between retry and failed
	Retryable bool
	// Refused: the server definitely did not act (an error status, or no request at
	// all). Otherwise a failed create may still have made an address.
	Refused bool
	NotSent bool // released before any request was sent (shutdown, lease running out)
}

// RetryPolicy decides when a transient failure is tried again and when it is final.
type RetryPolicy struct {
	MaxAttempts int                             // failed after this many transient failures in a row
	Backoff     func(attempt int) time.Duration // delay before attempt number `attempt` (1-based)
	PollAfter   time.Duration                   // first readiness poll after a create, change or reset
}

// Finish records the results of claimed work in one transaction: passwords encrypted,
// attempts resolved, events appended, claims released and each device's next
// operation recomputed.
//
// A result whose claim was lost (the lease ran out and another job claimed the
// device) changes nothing of the device; only its create attempt is recorded, with
// the address it made, so that reconciliation deletes that surplus address.
func (s *Store) Finish(ctx context.Context, results []Result, policy RetryPolicy) error {
	if len(results) == 0 {
		return nil
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		owned, err := stillClaimed(ctx, tx, results, func(r Result) claim {
			return claim{pk: r.Item.PK, token: r.Item.ClaimToken}
		})
		if err != nil {
			return err
		}
		batch := &pgx.Batch{}
		var acc finishRows
		for _, r := range results {
			if !owned[r.Item.PK] {
				queueStale(batch, &acc.events, r)
				continue
			}
			if err := s.queueResult(batch, &acc, r, policy); err != nil {
				return err
			}
		}
		// The per-row statements of rare outcomes went first; then the common ones in
		// one statement each, and last the rescheduling of every device that needs it.
		acc.events.queue(batch)
		acc.created.queue(batch, policy.PollAfter)
		queueSchedule(batch, acc.schedule)
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("record results: %w", err)
		}
		return nil
	})
}

// finishRows gathers what Finish writes with one statement per kind.
type finishRows struct {
	events   eventLog
	created  createdRows
	schedule []int64 // devices whose next operation is recomputed at the end
}

// queueStale records what a result whose claim was lost leaves behind: its events
// and, for a create, the attempt with the address it made (a surplus address that
// reconciliation deletes).
func queueStale(b *pgx.Batch, events *eventLog, r Result) {
	for _, ev := range r.Events {
		events.add(r.Item.PK, ev, " (claim lost)")
	}
	if r.Item.AttemptID == 0 {
		return
	}
	switch {
	case r.Created != nil:
		b.Queue(`UPDATE create_attempts SET outcome = 'unknown', cloud_address = $2, `+attemptEndedSQL+` WHERE id = $1`, r.Item.AttemptID, r.Created.CloudAddress)
	case r.NotSent:
		b.Queue(`UPDATE create_attempts SET outcome = 'discarded', resolved_at = now(), `+attemptEndedSQL+` WHERE id = $1`, r.Item.AttemptID)
	default:
		b.Queue(`UPDATE create_attempts SET outcome = 'unknown', `+attemptEndedSQL+` WHERE id = $1`, r.Item.AttemptID)
	}
}

// attemptEndedSQL records that a create attempt's call has ended (answered, failed or
// never sent): whatever it did at the server is done, so reconciliation need not wait
// for it.
const attemptEndedSQL = `answered_at = now(), in_flight_until = least(in_flight_until, now())`

const clearErrorSQL = `last_error = NULL, last_error_status = NULL, last_error_code = NULL`

// webhookEventSQL records one outbox event for device $1 of type $2, from its row as
// it is now. The payload never holds a password: receivers fetch it from the
// credentials endpoint.
const webhookEventSQL = `
	INSERT INTO webhook_events (event_type, payload)
	SELECT $2, jsonb_build_object('fleet', f.name, 'deviceId', d.device_id, 'cloudAddress', d.cloud_address,
	    'status', d.status, 'error', d.last_error)
	FROM devices d JOIN fleets f ON f.id = d.fleet_id WHERE d.id = $1`

func (s *Store) queueEvent(b *pgx.Batch, devicePK int64, eventType string) {
	if s.webhooks {
		b.Queue(webhookEventSQL, devicePK, eventType)
	}
}

// queueResult records one result whose claim still holds: rare outcomes as
// statements of their own in b, the common ones into acc.
func (s *Store) queueResult(b *pgx.Batch, acc *finishRows, r Result, policy RetryPolicy) error {
	w := r.Item
	for _, ev := range r.Events {
		acc.events.add(w.PK, ev, "")
	}
	pollAfter := policy.PollAfter
	switch {
	case r.Created != nil:
		ct, keyID, err := s.seal(w.PK, r.Created.CloudPassword)
		if err != nil {
			return err
		}
		acc.created.add(w, r.Created.CloudAddress, ct, keyID)
		return nil // its statement computes the next operation itself
	case r.Applied:
		b.Queue(`UPDATE devices SET status = 'awaiting_ready', awaiting_since = now(), next_poll_at = now() + $2::interval, polls = 0,
			    applied_version = $3, claim_until = NULL, drift = NULL, `+clearErrorSQL+`, updated_at = now()
			WHERE id = $1`, w.PK, pollAfter, w.SpecVersion)
	case r.Deleted:
		b.Queue(`UPDATE devices SET cloud_address = NULL, password_ct = NULL, password_key_id = NULL,
			    pending_password_ct = NULL, pending_key_id = NULL, etag = NULL, status = 'deleted',
			    applied_version = $2, claim_until = NULL, next_poll_at = NULL, `+clearErrorSQL+`, updated_at = now()
			WHERE id = $1`, w.PK, w.SpecVersion)
		s.queueEvent(b, w.PK, "device.deleted")
	case r.Vanished:
		// The address is gone from the cloud: forget it (create follows), and make the
		// listen devices that named it take the new address once it exists.
		b.Queue(`UPDATE devices SET cloud_address = NULL, password_ct = NULL, password_key_id = NULL,
			    pending_password_ct = NULL, pending_key_id = NULL, etag = NULL, claim_until = NULL,
			    drift = 'cloud address vanished', updated_at = now()
			WHERE id = $1`, w.PK)
		b.Queue(`UPDATE devices SET spec_version = spec_version + 1
			WHERE fleet_id = $1 AND $2 = ANY (allow_devices) AND desired_state = 'present'`, w.FleetID, w.DeviceID)
		b.Queue(`UPDATE devices d SET `+scheduleOpSQL+`, work_key = $3
			WHERE d.fleet_id = $1 AND $2 = ANY (d.allow_devices) AND d.desired_state = 'present'
			  AND d.status <> 'failed' AND (d.claim_until IS NULL OR d.claim_until < now())`, w.FleetID, w.DeviceID, w.WorkKey)
	case r.Rotated != nil:
		ct, keyID, err := s.seal(w.PK, r.Rotated.CloudPassword)
		if err != nil {
			return err
		}
		b.Queue(`UPDATE devices SET pending_password_ct = $2, pending_key_id = $3, status = 'awaiting_ready',
			    awaiting_since = now(), next_poll_at = now() + $4::interval, polls = 0, claim_until = NULL,
			    op = NULL, `+clearErrorSQL+`, updated_at = now()
			WHERE id = $1`, w.PK, ct, keyID, pollAfter)
	case r.NotSent:
		b.Queue(`UPDATE devices SET claim_until = NULL, updated_at = now() WHERE id = $1`, w.PK)
		if w.AttemptID != 0 {
			b.Queue(`UPDATE create_attempts SET outcome = 'discarded', resolved_at = now(), `+attemptEndedSQL+` WHERE id = $1`, w.AttemptID)
		}
		return nil
	case r.Err != nil:
		if final := queueFailure(b, r, policy); final {
			s.queueEvent(b, w.PK, "device.failed")
		}
		return nil
	default:
		return fmt.Errorf("result for device %d records no outcome", w.PK)
	}
	// Whatever changed meanwhile (a new manifest, an absent mark) is owed next.
	acc.schedule = append(acc.schedule, w.PK)
	return nil
}

// queueFailure records a failed operation; final reports that the device is now failed.
func queueFailure(b *pgx.Batch, r Result, policy RetryPolicy) (final bool) {
	w := r.Item
	ev := EventFromError(w.Op, r.Err)
	if w.AttemptID != 0 {
		// A retryable answer to a create leaves its outcome unknown: the server may
		// have made the address and lost the reply. Reconciliation settles it.
		outcome := "failed"
		if r.Retryable || !r.Refused {
			outcome = "unknown"
		}
		b.Queue(`UPDATE create_attempts SET outcome = $2, resolved_at = CASE WHEN $2 = 'failed' THEN now() END, `+attemptEndedSQL+` WHERE id = $1`,
			w.AttemptID, outcome)
	}
	if r.Retryable && w.Attempts+1 < policy.MaxAttempts {
		delay := time.Second
		if policy.Backoff != nil {
			delay = policy.Backoff(w.Attempts + 1)
		}
		b.Queue(`UPDATE devices SET claim_until = NULL, attempts = attempts + 1, next_attempt_at = now() + $2::interval,
			    last_error = $3, last_error_status = nullif($4, 0), last_error_code = nullif($5, 0), updated_at = now()
			WHERE id = $1`, w.PK, delay, ev.Message, ev.HTTPStatus, ev.ErrorCode)
		return false
	}
	b.Queue(`UPDATE devices SET status = 'failed', op = NULL, claim_until = NULL, next_poll_at = NULL, attempts = attempts + 1,
		    last_error = $2, last_error_status = nullif($3, 0), last_error_code = nullif($4, 0), updated_at = now()
		WHERE id = $1`, w.PK, ev.Message, ev.HTTPStatus, ev.ErrorCode)
	return true
}

// PendingWork says whether a work queue still owes operations, and when the earliest
// of them that is not claimable now becomes claimable (a backoff or a claim ending).
func (s *Store) PendingWork(ctx context.Context, key string) (remaining int, next time.Time, err error) {
	// Rows of the key's manifest still staged become devices owing work soon. Read
	// before the devices: a batch applied in between is counted twice, never missed,
	// so no chain ends while work is on its way.
	var staged int
	var id int64
	if _, err := fmt.Sscanf(key, "manifest:%d", &id); err == nil {
		if err := s.pool.QueryRow(ctx, `
			SELECT coalesce(sum(row_count - applied_rows), 0) FROM manifests WHERE id = $1 AND applied_at IS NULL`, id).Scan(&staged); err != nil {
			return 0, time.Time{}, fmt.Errorf("pending work %s: %w", key, err)
		}
	}
	var nextAt *time.Time
	err = s.owedRowsTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `
			SELECT count(*), min(greatest(coalesce(next_attempt_at, now()), coalesce(claim_until, now())))
			FROM devices WHERE work_key = $1 AND op IS NOT NULL`, key).Scan(&remaining, &nextAt)
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("pending work %s: %w", key, err)
	}
	if nextAt != nil {
		next = *nextAt
	}
	if staged > 0 {
		remaining += staged
		next = time.Now()
	}
	return remaining, next, nil
}

// ClaimableKeys lists the work queues that have operations claimable now: the sweeper
// makes sure each has a job.
func (s *Store) ClaimableKeys(ctx context.Context) ([]string, error) {
	var keys []string
	err := s.owedRowsTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT DISTINCT work_key FROM devices
			WHERE op IS NOT NULL AND work_key IS NOT NULL
			  AND (claim_until IS NULL OR claim_until < now())
			  AND (next_attempt_at IS NULL OR next_attempt_at <= now())`)
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claimable work: %w", err)
	}
	return keys, nil
}

// owedRowsTx runs fn, whose queries look at the devices that owe an operation, in a
// read-only transaction that reads them through devices_work_idx (op IS NOT NULL).
// Statistics taken just after a large upload say every device owes one, and the
// planner then scans the whole table for the few that still do, many times a run.
func (s *Store) owedRowsTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
			return err
		}
		return fn(tx)
	})
}

// PollItem is a device claimed for a readiness poll.
type PollItem struct {
	PK            int64
	FleetID       int64
	DeviceID      string
	CloudAddress  string
	Polls         int
	AwaitingSince time.Time
	Rotation      bool // a reset's password waits to be promoted
	ClaimToken    int64
}

// ClaimPolls takes up to limit devices whose readiness poll is due.
func (s *Store) ClaimPolls(ctx context.Context, limit int, lease time.Duration, worker int64) ([]PollItem, error) {
	token := newClaimToken()
	rows, err := s.pool.Query(ctx, `
		WITH c AS (
			SELECT id FROM devices
			WHERE next_poll_at <= now() AND status = 'awaiting_ready'
			  AND (claim_until IS NULL OR claim_until < now())
			ORDER BY next_poll_at LIMIT $1
			FOR UPDATE SKIP LOCKED)
		UPDATE devices d SET claim_until = now() + $2::interval, claim_token = $3, claim_worker = nullif($4::bigint, 0)
		FROM c WHERE d.id = c.id
		RETURNING d.id, d.fleet_id, d.device_id, d.cloud_address, d.polls, coalesce(d.awaiting_since, now()), d.pending_password_ct IS NOT NULL`,
		limit, lease, token, worker)
	if err != nil {
		return nil, fmt.Errorf("claim polls: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (PollItem, error) {
		var p PollItem
		err := row.Scan(&p.PK, &p.FleetID, &p.DeviceID, &p.CloudAddress, &p.Polls, &p.AwaitingSince, &p.Rotation)
		p.ClaimToken = token
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim polls: %w", err)
	}
	return items, nil
}

// PollResult is the outcome of one readiness poll.
type PollResult struct {
	Item      PollItem
	Event     Event
	Ready     bool
	NextPoll  time.Duration // when not ready: the delay before the next poll
	Vanished  bool          // 404: the address is gone
	FailedErr error         // gave up waiting: the device is failed
}

// FinishPolls records readiness polls. A device that became ready has a pending
// rotation password promoted to current in the same statement, so "ready" always
// means the stored password is the one the cloud holds. ready receives, inside the
// transaction, the devices that just became ready (for follow-up jobs).
func (s *Store) FinishPolls(ctx context.Context, results []PollResult, ready func(ctx context.Context, tx pgx.Tx, became []PollItem) error) error {
	if len(results) == 0 {
		return nil
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		owned, err := stillClaimed(ctx, tx, results, func(r PollResult) claim {
			return claim{pk: r.Item.PK, token: r.Item.ClaimToken}
		})
		if err != nil {
			return err
		}
		batch, became := s.pollBatch(results, owned)
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("record polls: %w", err)
		}
		if ready != nil && len(became) > 0 {
			return ready(ctx, tx, became)
		}
		return nil
	})
}

// pollBatch builds the statements recording polls; a poll whose claim was lost
// (another job holds the device now) leaves only its event.
func (s *Store) pollBatch(results []PollResult, owned map[int64]bool) (*pgx.Batch, []PollItem) {
	batch := &pgx.Batch{}
	var became []PollItem
	var events eventLog
	var polls pollRows
	for _, r := range results {
		if !owned[r.Item.PK] {
			events.add(r.Item.PK, r.Event, " (claim lost)")
			continue
		}
		events.add(r.Item.PK, r.Event, "")
		switch {
		case r.Ready:
			became = append(became, r.Item)
			polls.ready = append(polls.ready, r.Item.PK)
		case r.Vanished:
			batch.Queue(`UPDATE devices SET cloud_address = NULL, password_ct = NULL, password_key_id = NULL,
				    pending_password_ct = NULL, pending_key_id = NULL, claim_until = NULL, next_poll_at = NULL,
				    drift = 'cloud address vanished', updated_at = now()
				WHERE id = $1`, r.Item.PK)
			batch.Queue(`UPDATE devices d SET `+scheduleOpSQL+`, work_key = coalesce(d.work_key, 'repair')
				WHERE d.id = $1`, r.Item.PK)
		case r.FailedErr != nil:
			fe := EventFromError("ready", r.FailedErr)
			batch.Queue(`UPDATE devices SET status = 'failed', claim_until = NULL, next_poll_at = NULL,
				    last_error = $2, last_error_status = nullif($3, 0), last_error_code = nullif($4, 0), updated_at = now()
				WHERE id = $1`, r.Item.PK, fe.Message, fe.HTTPStatus, fe.ErrorCode)
			s.queueEvent(batch, r.Item.PK, "device.failed")
		default:
			polls.again = append(polls.again, r.Item.PK)
			polls.againAfter = append(polls.againAfter, r.NextPoll.Seconds())
		}
	}
	events.queue(batch)
	polls.queue(batch)
	// The webhook events read the rows as they are now: ready.
	for _, it := range became {
		if it.Rotation {
			s.queueEvent(batch, it.PK, "device.rotated")
		} else {
			s.queueEvent(batch, it.PK, "device.ready")
		}
	}
	return batch, became
}

// NextPollAt is when the earliest readiness poll that no live claim holds is due;
// zero when none waits.
func (s *Store) NextPollAt(ctx context.Context) (time.Time, error) {
	var at *time.Time
	if err := s.pool.QueryRow(ctx, `
		SELECT min(next_poll_at) FROM devices
		WHERE next_poll_at IS NOT NULL AND status = 'awaiting_ready' AND (claim_until IS NULL OR claim_until < now())`).Scan(&at); err != nil {
		return time.Time{}, fmt.Errorf("next poll: %w", err)
	}
	if at == nil {
		return time.Time{}, nil
	}
	return *at, nil
}
