package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// KnownDevice is a device that holds a cloud address, as reconciliation sees it.
type KnownDevice struct {
	PK           int64
	Fleet        string
	DeviceID     string
	CloudAddress string
	Status       string
	Busy         bool // an operation is owed or claimed: leave it to the work jobs
}

// OpenAttempt is a create whose outcome is not known: it may have made an address.
type OpenAttempt struct {
	ID       int64
	DevicePK int64
	Fleet    string
	DeviceID string
	Spec     vnccloud.Spec
	// SentAt is when the attempt was recorded, just before its request was sent
	// (database clock): it cannot have made an address listed before then.
	SentAt time.Time
	// Young: its request may still be in progress at the server (in_flight_until has
	// not passed on the database's clock). An address it may have made is neither
	// ours nor foreign yet.
	Young bool
	// DeviceWantsAddress: the device is present, has no address and nobody holds a
	// claim on it, so an orphan of this attempt can be adopted for it. It is a snapshot:
	// AdoptAddress decides for good.
	DeviceWantsAddress bool
	// MadeAddress is the address the attempt is known to have made (its answer came
	// after its claim was lost); "" when unknown.
	MadeAddress string
}

// OpenAttempts lists every create that got no definite answer: answered with a
// retryable error, still "sent" from a process that died, or still in flight.
func (s *Store) OpenAttempts(ctx context.Context) ([]OpenAttempt, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT a.id, a.device_pk, f.name, d.device_id, a.spec, a.sent_at, `+attemptInFlightSQL+`, a.cloud_address,
		       d.desired_state = 'present' AND d.cloud_address IS NULL AND coalesce(d.claim_until < now(), true)
		FROM create_attempts a JOIN devices d ON d.id = a.device_pk JOIN fleets f ON f.id = d.fleet_id
		WHERE a.outcome IN ('sent', 'unknown')
		ORDER BY a.cloud_address IS NULL, a.id`)
	if err != nil {
		return nil, fmt.Errorf("open attempts: %w", err)
	}
	var out []OpenAttempt
	for rows.Next() {
		var a OpenAttempt
		var spec []byte
		var made *string
		if err := rows.Scan(&a.ID, &a.DevicePK, &a.Fleet, &a.DeviceID, &spec, &a.SentAt, &a.Young, &made, &a.DeviceWantsAddress); err != nil {
			rows.Close()
			return nil, fmt.Errorf("open attempts: %w", err)
		}
		var w wireSpecJSON
		if err := json.Unmarshal(spec, &w); err != nil || len(w.AllowedActions) != 1 {
			rows.Close()
			return nil, fmt.Errorf("open attempt %d: stored spec unreadable", a.ID)
		}
		a.Spec = vnccloud.Spec{Action: vnccloud.Action(w.AllowedActions[0]), Groups: w.Groups, AccessControl: w.AccessControl}
		if made != nil {
			a.MadeAddress = *made
		}
		out = append(out, a)
	}
	rows.Close()
	return out, rows.Err()
}

// attemptInFlightSQL says whether create attempt a's request can still be in
// progress at the server, on the database's clock. A NULL in_flight_until (a row
// from before it existed, which its migration filled) counts as not in flight.
const attemptInFlightSQL = `coalesce(a.in_flight_until > now(), false)`

// CreatesInFlight is what CreatesInFlight found.
type CreatesInFlight struct {
	// Count is how many open create attempts may still be in progress at the server.
	Count int
	// Remaining is how long until the last of them can no longer be (database clock).
	Remaining time.Duration
	// Now is the database's time of the reading.
	Now time.Time
}

// CreatesInFlight counts the open create attempts recorded at or before sentBefore
// (every one when it is zero) whose request may still be in progress at the server.
func (s *Store) CreatesInFlight(ctx context.Context, sentBefore time.Time) (CreatesInFlight, error) {
	var c CreatesInFlight
	var remaining float64
	err := s.pool.QueryRow(ctx, `
		SELECT count(*), coalesce(extract(epoch FROM max(a.in_flight_until) - now()), 0)::float8, now()
		FROM create_attempts a
		WHERE a.outcome IN ('sent', 'unknown') AND `+attemptInFlightSQL+`
		  AND ($1::timestamptz IS NULL OR a.sent_at <= $1)`, nullTime(sentBefore)).Scan(&c.Count, &remaining, &c.Now)
	if err != nil {
		return CreatesInFlight{}, fmt.Errorf("creates in flight: %w", err)
	}
	c.Remaining = time.Duration(remaining * float64(time.Second))
	return c, nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// FirstSeen returns when each of addrs (listed addresses the store does not know)
// was first listed, on the database's clock; an address never listed before is
// first seen now. With record, the sightings are stored, and the rows of addresses
// not among addrs are removed: addrs must then be every unknown address of a
// complete listing. Without record nothing is written (a dry run).
func (s *Store) FirstSeen(ctx context.Context, addrs []string, record bool) (map[string]time.Time, error) {
	seen := make(map[string]time.Time, len(addrs))
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		query := `SELECT u.address, coalesce(s.first_seen_at, now())
			FROM unnest($1::text[]) AS u(address) LEFT JOIN seen_addresses s ON s.address = u.address`
		if record {
			if _, err := tx.Exec(ctx, `DELETE FROM seen_addresses WHERE address <> ALL (coalesce($1::text[], '{}'))`, addrs); err != nil {
				return err
			}
			query = `INSERT INTO seen_addresses (address) SELECT unnest($1::text[])
				ON CONFLICT (address) DO UPDATE SET last_seen_at = now()
				RETURNING address, first_seen_at`
		}
		rows, err := tx.Query(ctx, query, addrs)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var addr string
			var at time.Time
			if err := rows.Scan(&addr, &at); err != nil {
				return err
			}
			seen[addr] = at
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("first sightings of unknown addresses: %w", err)
	}
	return seen, nil
}

// AdoptAddress gives a device without an address the orphan its lost create made.
// The password is unknown, so the device is scheduled for a reset (and an update
// first, when the orphan's spec is not the desired one any more). It returns false,
// changing nothing, when the device no longer wants an address.
func (s *Store) AdoptAddress(ctx context.Context, attemptID, devicePK int64, address string, key string) (bool, error) {
	var adopted bool
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			UPDATE devices SET cloud_address = $2, password_ct = NULL, password_key_id = NULL,
			    applied_version = 0, claim_until = NULL, status = 'rotating', drift = 'adopted an orphan address', updated_at = now()
			WHERE id = $1 AND desired_state = 'present' AND cloud_address IS NULL
			  AND (claim_until IS NULL OR claim_until < now())`, devicePK, address)
		if err != nil {
			return fmt.Errorf("adopt %s: %w", address, err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		adopted = true
		if _, err := tx.Exec(ctx, `UPDATE create_attempts SET outcome = 'adopted', cloud_address = $2, resolved_at = now() WHERE id = $1`,
			attemptID, address); err != nil {
			return fmt.Errorf("adopt %s: %w", address, err)
		}
		_, err = tx.Exec(ctx, `UPDATE devices d SET `+scheduleOpSQL+`, work_key = $2 WHERE d.id = $1`, devicePK, key)
		if err != nil {
			return fmt.Errorf("adopt %s: %w", address, err)
		}
		return nil
	})
	return adopted, err
}

// ResolveAttempt records what became of an open attempt: "discarded" when its orphan
// was deleted or when it made no address at all.
func (s *Store) ResolveAttempt(ctx context.Context, attemptID int64, outcome, address string) error {
	_, err := s.pool.Exec(ctx, `UPDATE create_attempts SET outcome = $2, cloud_address = nullif($3, ''), resolved_at = now()
		WHERE id = $1 AND outcome IN ('sent', 'unknown')`, attemptID, outcome, address)
	if err != nil {
		return fmt.Errorf("resolve attempt %d: %w", attemptID, err)
	}
	return nil
}

// MarkVanished forgets a device's address that the cloud no longer has: it is created
// again, and the listen devices that named it are updated with the new address. It
// acts only while the device still holds address, still wants it, owes nothing and
// nobody holds a live claim on it; otherwise the row changed since address was found
// missing (a job replaced it, or is at work on the device and meets the 404 itself)
// and it returns false, changing nothing.
func (s *Store) MarkVanished(ctx context.Context, devicePK int64, address string, key string) (bool, error) {
	var marked bool
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var fleetID int64
		var deviceID string
		err := tx.QueryRow(ctx, `
			UPDATE devices SET cloud_address = NULL, password_ct = NULL, password_key_id = NULL,
			    pending_password_ct = NULL, pending_key_id = NULL, etag = NULL, next_poll_at = NULL,
			    drift = 'cloud address vanished', updated_at = now()
			WHERE id = $1 AND cloud_address = $2 AND desired_state = 'present' AND op IS NULL
			  AND (claim_until IS NULL OR claim_until < now())
			RETURNING fleet_id, device_id`, devicePK, address).Scan(&fleetID, &deviceID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("mark vanished: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE devices SET spec_version = spec_version + 1
			WHERE fleet_id = $1 AND $2 = ANY (allow_devices) AND desired_state = 'present'`, fleetID, deviceID); err != nil {
			return fmt.Errorf("mark vanished: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE devices d SET `+scheduleOpSQL+`, work_key = $3
			WHERE (d.id = $1 OR (d.fleet_id = $2 AND $4 = ANY (d.allow_devices) AND d.desired_state = 'present'))
			  AND (d.claim_until IS NULL OR d.claim_until < now())`, devicePK, fleetID, key, deviceID); err != nil {
			return fmt.Errorf("mark vanished: %w", err)
		}
		marked = true
		return nil
	})
	return marked, err
}

// DriftCandidate is a settled device whose cloud spec should be compared with the
// desired one.
type DriftCandidate struct {
	WorkItem
	Fleet string // the fleet's name
}

// DriftCandidates returns up to limit ready devices, the least recently checked first.
func (s *Store) DriftCandidates(ctx context.Context, limit int) ([]DriftCandidate, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT d.id, d.fleet_id, d.device_id, d.action, d.groups, d.allow_groups, d.allow_devices,
		       ARRAY(SELECT p.cloud_address FROM unnest(d.allow_devices) WITH ORDINALITY AS u(dep, n)
		             JOIN devices p ON p.fleet_id = d.fleet_id AND p.device_id = u.dep
		             WHERE p.cloud_address IS NOT NULL AND p.desired_state = 'present' ORDER BY u.n),
		       d.spec_version, d.cloud_address, f.name
		FROM devices d JOIN fleets f ON f.id = d.fleet_id
		WHERE d.status = 'ready' AND d.op IS NULL AND d.cloud_address IS NOT NULL AND d.desired_state = 'present'
		  AND (d.claim_until IS NULL OR d.claim_until < now())
		ORDER BY d.checked_at NULLS FIRST, d.id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("drift candidates: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (DriftCandidate, error) {
		var c DriftCandidate
		var action string
		err := row.Scan(&c.PK, &c.FleetID, &c.DeviceID, &action, &c.Groups, &c.AllowGroups, &c.AllowDevices,
			&c.ACLAddresses, &c.SpecVersion, &c.CloudAddress, &c.Fleet)
		c.Action = vnccloud.Action(action)
		return c, err
	})
}

// MarkChecked records a drift check; with drift set, the desired spec is scheduled
// to be put back.
func (s *Store) MarkChecked(ctx context.Context, devicePK int64, specVersion int, drift string, key string) error {
	if drift == "" {
		_, err := s.pool.Exec(ctx, `UPDATE devices SET checked_at = now() WHERE id = $1`, devicePK)
		if err != nil {
			return fmt.Errorf("mark checked: %w", err)
		}
		return nil
	}
	// Only if nothing changed the device since it was read: otherwise the work in
	// flight or owed puts the desired spec there anyway.
	_, err := s.pool.Exec(ctx, `
		UPDATE devices d SET checked_at = now(), drift = $3, applied_version = d.spec_version - 1,
		    op = 'update', status = 'updating', work_key = $4, next_attempt_at = NULL, attempts = 0, updated_at = now()
		WHERE d.id = $1 AND d.spec_version = $2 AND d.op IS NULL AND (d.claim_until IS NULL OR d.claim_until < now())`,
		devicePK, specVersion, drift, key)
	if err != nil {
		return fmt.Errorf("mark drift: %w", err)
	}
	return nil
}

// Reschedule recomputes the owed operation of every device that is neither failed, cancelled nor
// claimed and owes nothing according to its row, under key. It is the level-triggered
// backstop: whatever was lost, the rows say what must happen. It returns how many
// devices now owe an operation they did not before.
func (s *Store) Reschedule(ctx context.Context, key string) (int, error) {
	tag, err := s.pool.Exec(ctx, `
		UPDATE devices d SET `+scheduleOpSQL+`, work_key = $1
		WHERE d.op IS NULL AND d.status NOT IN ('failed', 'awaiting_ready', 'cancelled')
		  AND (d.claim_until IS NULL OR d.claim_until < now())
		  AND ((d.desired_state = 'absent' AND d.cloud_address IS NOT NULL)
		    OR (d.desired_state = 'present' AND (d.cloud_address IS NULL OR d.applied_version < d.spec_version
		        OR (d.password_ct IS NULL AND d.pending_password_ct IS NULL))))`, key)
	if err != nil {
		return 0, fmt.Errorf("reschedule: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// OwedUnder counts the devices owing an operation under key.
func (s *Store) OwedUnder(ctx context.Context, key string) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM devices WHERE work_key = $1 AND op IS NOT NULL`, key).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("owed work: %w", err)
	}
	return n, nil
}

// ScheduleRotations marks devices for a password reset under key: every ready device
// (all), or those whose password is older than maxAge. Each gets a start time spread
// evenly over window, so a nightly run does not spend the whole rate budget at once.
func (s *Store) ScheduleRotations(ctx context.Context, fleetName string, all bool, maxAge, window time.Duration, key string) (int, error) {
	tag, err := s.pool.Exec(ctx, `
		WITH due AS (
			SELECT d.id, row_number() OVER (ORDER BY d.password_set_at NULLS FIRST, d.id) AS n, count(*) OVER () AS total
			FROM devices d JOIN fleets f ON f.id = d.fleet_id
			WHERE d.status = 'ready' AND d.op IS NULL AND d.desired_state = 'present' AND d.cloud_address IS NOT NULL
			  AND ($1 = '' OR f.name = $1)
			  AND ($2 OR d.password_set_at IS NULL OR d.password_set_at < now() - $3::interval)
			  AND (d.claim_until IS NULL OR d.claim_until < now()))
		UPDATE devices d SET op = 'rotate', work_key = $5, attempts = 0, updated_at = now(),
		    next_attempt_at = now() + $4::interval * ((due.n - 1)::float8 / greatest(due.total, 1))
		FROM due WHERE d.id = due.id`, fleetName, all, maxAge, window, key)
	if err != nil {
		return 0, fmt.Errorf("schedule rotations: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
