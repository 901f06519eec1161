package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// FleetRotation is where a fleet's passwords stand against the rotation age.
type FleetRotation struct {
	Fleet string `json:"fleet"`
	// Devices counts the devices holding a password.
	Devices int `json:"devices"`
	// Overdue counts those whose password is older than the maximum age.
	Overdue int `json:"overdue"`
	// NewestPasswordAt is when a password of the fleet was last set (a create or a
	// rotation); OldestPasswordAt when its oldest current one was.
	NewestPasswordAt *time.Time `json:"newestPasswordAt,omitempty"`
	OldestPasswordAt *time.Time `json:"oldestPasswordAt,omitempty"`
}

// RotationFailure is a failed password reset.
type RotationFailure struct {
	Fleet    string    `json:"fleet"`
	DeviceID string    `json:"deviceId"`
	At       time.Time `json:"at"`
	Message  string    `json:"message"`
}

// RotationFailuresListed bounds the recent failed resets RotationStatus lists.
const RotationFailuresListed = 20

// RotationStatus counts each fleet's passwords older than maxAge and lists the most
// recent failed resets.
func (s *Store) RotationStatus(ctx context.Context, maxAge time.Duration) ([]FleetRotation, []RotationFailure, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT f.name, count(*), count(*) FILTER (WHERE d.password_set_at < now() - $1::interval),
		       max(d.password_set_at), min(d.password_set_at)
		FROM devices d JOIN fleets f ON f.id = d.fleet_id
		WHERE d.password_ct IS NOT NULL
		GROUP BY f.name ORDER BY f.name`, maxAge)
	if err != nil {
		return nil, nil, fmt.Errorf("rotation status: %w", err)
	}
	fleets, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (FleetRotation, error) {
		var r FleetRotation
		err := row.Scan(&r.Fleet, &r.Devices, &r.Overdue, &r.NewestPasswordAt, &r.OldestPasswordAt)
		return r, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("rotation status: %w", err)
	}
	rows, err = s.pool.Query(ctx, `
		SELECT f.name, d.device_id, e.at, coalesce(e.message, '')
		FROM device_events e JOIN devices d ON d.id = e.device_pk JOIN fleets f ON f.id = d.fleet_id
		WHERE e.operation = 'reset' AND e.outcome LIKE 'error%'
		ORDER BY e.id DESC LIMIT $1`, RotationFailuresListed)
	if err != nil {
		return nil, nil, fmt.Errorf("rotation failures: %w", err)
	}
	failures, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (RotationFailure, error) {
		var f RotationFailure
		err := row.Scan(&f.Fleet, &f.DeviceID, &f.At, &f.Message)
		return f, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("rotation failures: %w", err)
	}
	return fleets, failures, nil
}
