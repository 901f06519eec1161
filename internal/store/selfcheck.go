package store

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// PasswordSample is what SamplePasswords found.
type PasswordSample struct {
	Sampled int      // stored passwords tried
	Opened  int      // of them, opened by the keyring
	KeyIDs  []string // the key ids of those it could not open (ids, not keys: not secret)
}

// SamplePasswords tries to open up to n stored passwords, the newest and the oldest
// halves, so that a key that opens none (the wrong VNCFLEET_SECRET_KEY) or only the
// recent ones (an old key dropped too early) shows. Read by primary key: cheap on a
// fleet of millions.
func (s *Store) SamplePasswords(ctx context.Context, n int) (PasswordSample, error) {
	var out PasswordSample
	if s.keys == nil {
		return out, ErrNoKey
	}
	rows, err := s.pool.Query(ctx, `
		(SELECT id, password_ct, password_key_id FROM devices WHERE password_ct IS NOT NULL ORDER BY id DESC LIMIT $1)
		UNION
		(SELECT id, password_ct, password_key_id FROM devices WHERE password_ct IS NOT NULL ORDER BY id LIMIT $1)`, (n+1)/2)
	if err != nil {
		return out, fmt.Errorf("sample passwords: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var pk int64
		var ct []byte
		var keyID *string
		if err := rows.Scan(&pk, &ct, &keyID); err != nil {
			return out, fmt.Errorf("sample passwords: %w", err)
		}
		out.Sampled++
		id := ""
		if keyID != nil {
			id = *keyID
		}
		if _, err := s.open(pk, ct, id); err == nil {
			out.Opened++
		} else if !slices.Contains(out.KeyIDs, id) {
			out.KeyIDs = append(out.KeyIDs, id)
		}
	}
	return out, rows.Err()
}

// ClockSkew is the database's clock minus this process's, measured at the middle of
// one round trip.
func (s *Store) ClockSkew(ctx context.Context) (time.Duration, error) {
	before := time.Now()
	var db time.Time
	if err := s.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&db); err != nil {
		return 0, fmt.Errorf("database clock: %w", err)
	}
	after := time.Now()
	local := before.Add(after.Sub(before) / 2)
	return db.Sub(local), nil
}
