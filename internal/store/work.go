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

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
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
	// LeaseEnds is when the claim ends, on this process's monotonic clock: the time
	// just before the claim was asked for, plus the lease. The database's claim_until
	// is on the database's clock and never compared with this one, so a skewed local
	// clock cannot make a call outlive its claim.
	LeaseEnds  time.Time
	ClaimToken int64
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
	leaseEnds := time.Now().Add(lease)
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
			    d.spec_version, coalesce(d.cloud_address, ''), d.attempts, d.work_key`,
			key, limit, lease, token, worker)
		if err != nil {
			return fmt.Errorf("claim work %s: %w", key, err)
		}
		for rows.Next() {
			var w WorkItem
			var action string
			if err := rows.Scan(&w.PK, &w.FleetID, &w.DeviceID, &w.Op, &action, &w.Groups, &w.AllowGroups, &w.AllowDevices,
				&w.ACLAddresses, &w.Unresolved, &w.SpecVersion, &w.CloudAddress, &w.Attempts, &w.WorkKey); err != nil {
				rows.Close()
				return fmt.Errorf("claim work %s: %w", key, err)
			}
			w.Action = vnccloud.Action(action)
			w.ClaimToken, w.LeaseEnds = token, leaseEnds
			items = append(items, w)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("claim work %s: %w", key, err)
		}
		return recordAttempts(ctx, tx, items, worker, lease)
	})
	if err != nil {
		return nil, err
	}
	return items, nil
}

// recordAttempts writes a create_attempts row for every claimed create whose spec can
// be sent (a listen device with unresolved names fails without a request), in one
// statement.
// An attempt may be in progress at the server until its claim ends (in_flight_until):
// now() + lease is the claim's claim_until, now() being the transaction's start in
// both statements.
func recordAttempts(ctx context.Context, tx pgx.Tx, items []WorkItem, worker int64, lease time.Duration) error {
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
		SELECT a.pk, a.spec::jsonb, nullif($3::bigint, 0), now() + $4::interval
		FROM unnest($1::bigint[], $2::text[]) AS a(pk, spec)
		RETURNING device_pk, id`, pks, specs, worker, lease)
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
	PK           int64
	FleetID      int64
	DeviceID     string
	CloudAddress string
	Polls        int
	// AwaitingFor is how long the device had been waiting for readiness when it was
	// claimed, measured by the database's clock alone.
	AwaitingFor time.Duration
	// ScheduledAfter is how long after the device began waiting this poll was due
	// (for a first poll, the delay the schedule chose).
	ScheduledAfter time.Duration
	// SinceUpload is how long before the claim the manifest that set the device was
	// uploaded, on the database's clock (0: no manifest): the time from upload to
	// ready, when this poll finds it ready.
	SinceUpload time.Duration
	Rotation    bool // a reset's password waits to be promoted
	ClaimToken  int64
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
		RETURNING d.id, d.fleet_id, d.device_id, d.cloud_address, d.polls,
		    extract(epoch FROM now() - coalesce(d.awaiting_since, now()))::float8,
		    extract(epoch FROM d.next_poll_at - coalesce(d.awaiting_since, d.next_poll_at))::float8,
		    coalesce(extract(epoch FROM now() - (SELECT m.uploaded_at FROM manifests m WHERE m.id = d.manifest_id))::float8, 0),
		    d.pending_password_ct IS NOT NULL`,
		limit, lease, token, worker)
	if err != nil {
		return nil, fmt.Errorf("claim polls: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (PollItem, error) {
		var p PollItem
		var waited, scheduled, sinceUpload float64
		err := row.Scan(&p.PK, &p.FleetID, &p.DeviceID, &p.CloudAddress, &p.Polls, &waited, &scheduled, &sinceUpload, &p.Rotation)
		p.AwaitingFor, p.ScheduledAfter, p.SinceUpload = seconds(waited), seconds(scheduled), seconds(sinceUpload)
		p.ClaimToken = token
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim polls: %w", err)
	}
	return items, nil
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

// Task is the operation the claim is for, as cloudop.Perform carries it out.
func (w WorkItem) Task() cloudop.Task {
	return cloudop.Task{Op: fleet.Op(w.Op), DeviceID: w.DeviceID, Spec: w.Spec(), CloudAddress: w.CloudAddress, Unresolved: w.Unresolved}
}

// Task is the readiness check the claim is for.
func (p PollItem) Task() cloudop.Task {
	return cloudop.Task{Op: fleet.OpPoll, DeviceID: p.DeviceID, CloudAddress: p.CloudAddress}
}
