package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
)

// Result is what became of one claimed WorkItem: cloudop.Perform's report.
type Result struct {
	Item   WorkItem
	Report cloudop.Report
}

// RetryPolicy decides when a transient failure is tried again and when it is final.
type RetryPolicy struct {
	MaxAttempts int                             // failed after this many transient failures in a row
	Backoff     func(attempt int) time.Duration // delay before attempt number `attempt` (1-based)
	PollAfter   time.Duration                   // first readiness poll after a create, change or reset, until one is learned
	// ReadinessAccount is the account whose learned first-poll delay (LearnReadiness)
	// replaces PollAfter once there is one; "" keeps PollAfter.
	ReadinessAccount string
}

func (p RetryPolicy) attemptsLeft(w WorkItem) bool { return w.Attempts+1 < p.MaxAttempts }

// eventsOf turns the calls of a report into event log rows.
func eventsOf(calls []cloudop.Call) []Event {
	out := make([]Event, 0, len(calls))
	for _, c := range calls {
		switch {
		case c.Err != nil:
			out = append(out, EventFromError(c.Operation, c.Err))
		case c.Pending:
			out = append(out, Event{Operation: c.Operation, Outcome: "pending"})
		default:
			out = append(out, Event{Operation: c.Operation, Outcome: "ok"})
		}
	}
	return out
}

// Finish records the results of claimed work in one transaction: passwords encrypted,
// attempts resolved, events appended, claims released and each device's next
// operation recomputed, as fleet.Decide says for each outcome.
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
		answers := answerCounts{}
		for _, r := range results {
			manifestID, _ := ManifestOfWorkKey(r.Item.WorkKey)
			answers.add(manifestID, r.Report.Calls)
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
		acc.created.queue(batch, policy)
		queueSchedule(batch, acc.schedule)
		answers.queue(batch)
		s.queueAnswersPrune(batch)
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
	for _, ev := range eventsOf(r.Report.Calls) {
		events.add(r.Item.PK, ev, " (claim lost)")
	}
	if r.Item.AttemptID == 0 {
		return
	}
	switch r.Report.Outcome {
	case fleet.Created:
		b.Queue(`UPDATE create_attempts SET outcome = 'unknown', cloud_address = $2, `+attemptEndedSQL+` WHERE id = $1`, r.Item.AttemptID, r.Report.Address)
	case fleet.NotSent:
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

// forgetAddressSQL forgets a device's address and everything that belongs to it.
const forgetAddressSQL = `cloud_address = NULL, password_ct = NULL, password_key_id = NULL,
	pending_password_ct = NULL, pending_key_id = NULL, etag = NULL, rotation_started_at = NULL`

// webhookEventSQL records one outbox event for device $1 of type $2, from its row as
// it is now. The payload never holds a password: receivers fetch it from the
// credentials endpoint.
const webhookEventSQL = `
	INSERT INTO webhook_events (event_type, payload)
	SELECT $2, jsonb_build_object('fleet', f.name, 'deviceId', d.device_id, 'cloudAddress', d.cloud_address,
	    'status', d.status, 'error', d.last_error)
	FROM devices d JOIN fleets f ON f.id = d.fleet_id WHERE d.id = $1`

func (s *Store) queueEvent(b *pgx.Batch, devicePK int64, eventType string) {
	if s.webhooks && eventType != "" {
		b.Queue(webhookEventSQL, devicePK, eventType)
	}
}

// queueResult records one result whose claim still holds, as fleet.Decide says:
// rare outcomes as statements of their own in b, the common ones into acc.
func (s *Store) queueResult(b *pgx.Batch, acc *finishRows, r Result, policy RetryPolicy) error {
	w := r.Item
	for _, ev := range eventsOf(r.Report.Calls) {
		acc.events.add(w.PK, ev, "")
	}
	left := policy.attemptsLeft(w)
	e := fleet.Decide(fleet.Op(w.Op), r.Report.Outcome, left)
	if w.AttemptID != 0 && e.Attempt != "" && e.Attempt != "created" {
		b.Queue(`UPDATE create_attempts SET outcome = $2, resolved_at = CASE WHEN $2 IN ('failed', 'discarded') THEN now() END, `+
			attemptEndedSQL+` WHERE id = $1`, w.AttemptID, e.Attempt)
	}
	switch {
	case e.Release:
		b.Queue(`UPDATE devices SET claim_until = NULL, claim_worker = NULL, updated_at = now() WHERE id = $1`, w.PK)
		return nil
	case e.Retry:
		delay := time.Second
		if policy.Backoff != nil {
			delay = policy.Backoff(w.Attempts + 1)
		}
		ev := EventFromError(w.Op, r.Report.Err)
		b.Queue(`UPDATE devices SET claim_until = NULL, claim_worker = NULL, attempts = attempts + 1, next_attempt_at = now() + $2::interval,
			    password_ct = CASE WHEN $6 THEN NULL ELSE password_ct END,
			    password_key_id = CASE WHEN $6 THEN NULL ELSE password_key_id END,
			    last_error = $3, last_error_status = nullif($4, 0), last_error_code = nullif($5, 0), updated_at = now()
			WHERE id = $1`, w.PK, delay, ev.Message, ev.HTTPStatus, ev.ErrorCode, e.ForgetPassword)
		return nil
	case e.Fail:
		ev := EventFromError(w.Op, failureCause(w.Op, r.Report, w.Attempts+1, left))
		b.Queue(`UPDATE devices SET status = 'failed', op = NULL, claim_until = NULL, claim_worker = NULL, next_poll_at = NULL,
			    attempts = attempts + 1,
			    password_ct = CASE WHEN $5 THEN NULL ELSE password_ct END,
			    password_key_id = CASE WHEN $5 THEN NULL ELSE password_key_id END,
			    last_error = $2, last_error_status = nullif($3, 0), last_error_code = nullif($4, 0), updated_at = now()
			WHERE id = $1`, w.PK, ev.Message, ev.HTTPStatus, ev.ErrorCode, e.ForgetPassword)
		s.queueEvent(b, w.PK, e.Webhook)
		return nil
	case e.SetAddress:
		ct, keyID, err := s.seal(w.PK, r.Report.Password)
		if err != nil {
			return err
		}
		acc.created.add(w, r.Report.Address, ct, keyID)
		return nil // its statement computes the next operation itself
	case e.ForgetAddress && fleet.Op(w.Op) == fleet.OpDelete:
		b.Queue(`UPDATE devices SET `+forgetAddressSQL+`, status = 'deleted',
			    applied_version = $2, claim_until = NULL, claim_worker = NULL, next_poll_at = NULL, `+clearErrorSQL+`, updated_at = now()
			WHERE id = $1`, w.PK, w.SpecVersion)
		s.queueEvent(b, w.PK, e.Webhook)
	case e.ForgetAddress:
		queueVanished(b, w.PK, w.FleetID, w.DeviceID, w.WorkKey)
	case e.SetPending:
		ct, keyID, err := s.seal(w.PK, r.Report.Password)
		if err != nil {
			return err
		}
		b.Queue(`UPDATE devices SET pending_password_ct = $2, pending_key_id = $3, status = 'awaiting_ready',
			    awaiting_since = now(), next_poll_at = `+firstPollSQL("$5", "$4", "$1")+`, polls = 0, claim_until = NULL, claim_worker = NULL,
			    op = NULL, `+clearErrorSQL+`, updated_at = now()
			WHERE id = $1`, w.PK, ct, keyID, policy.PollAfter, policy.ReadinessAccount)
	case e.Applied && e.AwaitReady:
		b.Queue(`UPDATE devices SET status = 'awaiting_ready', awaiting_since = now(), next_poll_at = `+firstPollSQL("$4", "$2", "$1")+`, polls = 0,
			    applied_version = $3, claim_until = NULL, claim_worker = NULL, drift = NULL, `+clearErrorSQL+`, updated_at = now()
			WHERE id = $1`, w.PK, policy.PollAfter, w.SpecVersion, policy.ReadinessAccount)
	default:
		return fmt.Errorf("device %d: %s of %s: no rule records it", w.PK, r.Report.Outcome, w.Op)
	}
	// Whatever changed meanwhile (a new manifest, an absent mark) is owed next.
	acc.schedule = append(acc.schedule, w.PK)
	return nil
}

// queueVanished forgets an address the cloud no longer has (create follows), and
// makes the listen devices that named it take the new address once it exists.
func queueVanished(b *pgx.Batch, pk, fleetID int64, deviceID, key string) {
	b.Queue(`UPDATE devices SET `+forgetAddressSQL+`, claim_until = NULL, claim_worker = NULL, next_poll_at = NULL,
		    drift = 'cloud address vanished', updated_at = now()
		WHERE id = $1`, pk)
	b.Queue(`UPDATE devices SET spec_version = spec_version + 1
		WHERE fleet_id = $1 AND $2 = ANY (allow_devices) AND desired_state = 'present'`, fleetID, deviceID)
	b.Queue(`UPDATE devices d SET `+scheduleOpSQL+`, work_key = coalesce($3, d.work_key, 'repair')
		WHERE d.fleet_id = $1 AND $2 = ANY (d.allow_devices) AND d.desired_state = 'present'
		  AND d.status <> 'failed' AND (d.claim_until IS NULL OR d.claim_until < now())`, fleetID, deviceID, nilIfEmpty(key))
}

func nilIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// failureCause is what a failed device's last_error says: the answer that failed it,
// and, when transient failures ran out, that it gave up after how many.
func failureCause(op string, rep cloudop.Report, attempts int, attemptsLeft bool) error {
	err := rep.Err
	if err == nil {
		err = errors.New("no error recorded")
	}
	if rep.Outcome == fleet.Refused || attemptsLeft {
		return err
	}
	if op == string(fleet.OpPoll) && rep.Outcome == fleet.Pending {
		return err
	}
	return &gaveUpError{op: op, attempts: attempts, last: err}
}

// gaveUpError names the run of transient failures that failed a device.
type gaveUpError struct {
	op       string
	attempts int
	last     error
}

func (e *gaveUpError) Error() string {
	return fmt.Sprintf("%s gave up after %s in a row that failed transiently; the last: %v", e.op, fleet.Plural(e.attempts, "attempt"), e.last)
}

func (e *gaveUpError) Unwrap() error { return e.last }

// PollResult is the outcome of one readiness poll.
type PollResult struct {
	Item   PollItem
	Report cloudop.Report
	// NextPoll is the delay before the next poll, when the device is polled again.
	NextPoll time.Duration
	// MayWait is false once the device has waited for readiness as long as it may:
	// a pending answer (or an error) then fails it.
	MayWait bool
	// Waited is how long the device had waited for readiness when the answer came.
	Waited time.Duration
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
		queuePollAnswers(batch, results)
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("record polls: %w", err)
		}
		if ready != nil && len(became) > 0 {
			return ready(ctx, tx, became)
		}
		return nil
	})
}

// pollBatch builds the statements recording polls, as fleet.Decide says; a poll whose
// claim was lost (another job holds the device now) leaves only its event.
func (s *Store) pollBatch(results []PollResult, owned map[int64]bool) (*pgx.Batch, []PollItem) {
	batch := &pgx.Batch{}
	var became []PollItem
	var events eventLog
	var polls pollRows
	for _, r := range results {
		suffix := ""
		if !owned[r.Item.PK] {
			suffix = " (claim lost)"
		}
		for _, ev := range eventsOf(r.Report.Calls) {
			events.add(r.Item.PK, ev, suffix)
		}
		if r.Report.Outcome == fleet.NotSent && len(r.Report.Calls) == 0 {
			events.add(r.Item.PK, Event{Operation: "ready", Outcome: "skipped", Message: "not sent: " + errText(r.Report.Err)}, suffix)
		}
		if !owned[r.Item.PK] {
			continue
		}
		e := fleet.Decide(fleet.OpPoll, r.Report.Outcome, r.MayWait)
		switch {
		case e.PromotePending:
			became = append(became, r.Item)
			polls.ready = append(polls.ready, r.Item.PK)
		case e.ForgetAddress:
			queueVanished(batch, r.Item.PK, r.Item.FleetID, r.Item.DeviceID, "")
			batch.Queue(`UPDATE devices d SET `+scheduleOpSQL+`, work_key = coalesce(d.work_key, 'repair')
				WHERE d.id = $1`, r.Item.PK)
		case e.Fail:
			fe := EventFromError("ready", pollFailure(r))
			batch.Queue(`UPDATE devices SET status = 'failed', claim_until = NULL, claim_worker = NULL, next_poll_at = NULL,
				    last_error = $2, last_error_status = nullif($3, 0), last_error_code = nullif($4, 0), updated_at = now()
				WHERE id = $1`, r.Item.PK, fe.Message, fe.HTTPStatus, fe.ErrorCode)
			s.queueEvent(batch, r.Item.PK, e.Webhook)
		case e.PollAgain:
			polls.again = append(polls.again, r.Item.PK)
			polls.againAfter = append(polls.againAfter, r.NextPoll.Seconds())
		default: // released without a request: due again on the usual schedule
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

// pollFailure is why a poll failed the device: the refusal itself, or that readiness
// was waited for as long as allowed, with the cloud's last answer.
func pollFailure(r PollResult) error {
	waited := r.Item.AwaitingFor.Round(time.Second)
	switch r.Report.Outcome {
	case fleet.Refused:
		return r.Report.Err
	case fleet.Pending:
		return fmt.Errorf("VNC Cloud still reported changes pending after %s of waiting for readiness", waited)
	}
	return &waitedError{waited: waited, last: r.Report.Err}
}

// waitedError: readiness was waited for as long as allowed, and the last poll failed.
type waitedError struct {
	waited time.Duration
	last   error
}

func (e *waitedError) Error() string {
	return fmt.Sprintf("gave up waiting for readiness after %s; the last poll failed: %v", e.waited, e.last)
}

func (e *waitedError) Unwrap() error { return e.last }

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
