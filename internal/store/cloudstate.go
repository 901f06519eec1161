package store

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// CloudState is what a waiting operator needs to see of the cloud behind a
// manifest's progress: the errors it answered lately, the devices waiting out a
// backoff, and whether the cluster-wide limiter is paused by a Retry-After.
type CloudState struct {
	// Touched counts the manifest's devices worked on in the last minute; ErrorsLastMinute
	// how many of them the cloud last answered with an error, by HTTP status.
	Touched          int            `json:"touched"`
	ErrorsLastMinute map[string]int `json:"errorsLastMinute,omitempty"`
	// InBackoff counts devices owing a call that wait until NextRetryAt at the earliest.
	InBackoff   int        `json:"inBackoff"`
	NextRetryAt *time.Time `json:"nextRetryAt,omitempty"`
	// PausedUntil is set while a Retry-After pauses every process's calls.
	PausedUntil *time.Time `json:"pausedUntil,omitempty"`
}

// ManifestCloudState reads the cloud state of manifest id's devices.
func (s *Store) ManifestCloudState(ctx context.Context, id int64) (*CloudState, error) {
	c := &CloudState{}
	rows, err := s.pool.Query(ctx, `
		SELECT coalesce(last_error_status, 0), count(*) FROM devices
		WHERE manifest_id = $1 AND updated_at > now() - interval '1 minute' GROUP BY 1`, id)
	if err != nil {
		return nil, fmt.Errorf("cloud state: %w", err)
	}
	for rows.Next() {
		var status, n int
		if err := rows.Scan(&status, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("cloud state: %w", err)
		}
		c.Touched += n
		if status != 0 {
			if c.ErrorsLastMinute == nil {
				c.ErrorsLastMinute = map[string]int{}
			}
			c.ErrorsLastMinute[strconv.Itoa(status)] = n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cloud state: %w", err)
	}
	if err := s.pool.QueryRow(ctx, `
		SELECT count(*), min(next_attempt_at) FROM devices
		WHERE manifest_id = $1 AND op IS NOT NULL AND next_attempt_at > now()`, id).Scan(&c.InBackoff, &c.NextRetryAt); err != nil {
		return nil, fmt.Errorf("cloud state: %w", err)
	}
	var paused time.Time
	err = s.pool.QueryRow(ctx, `SELECT paused_until FROM rate_limits WHERE name = 'vnccloud' AND paused_until > now()`).Scan(&paused)
	if err == nil {
		c.PausedUntil = &paused
	}
	return c, nil
}
