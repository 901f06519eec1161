package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ConsoleSession is a signed-in operator of the console, as every `serve` process on
// the database sees it. Only hashes of the session id and of its CSRF token are kept;
// TokenName names the configured bearer token the session acts as.
type ConsoleSession struct {
	IDHash     []byte
	CSRFHash   []byte
	TokenName  string
	Roles      []string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	LastSeenAt time.Time
}

// CreateConsoleSession stores a new session, and in the same transaction deletes the
// sessions expired by its creation time and the oldest beyond max (max <= 0: no
// bound). It returns how many it deleted.
func (s *Store) CreateConsoleSession(ctx context.Context, sess ConsoleSession, max int) (pruned int, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM console_sessions WHERE expires_at <= $1`, sess.CreatedAt)
		if err != nil {
			return err
		}
		pruned = int(tag.RowsAffected())
		if max > 0 {
			tag, err = tx.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash IN (
				SELECT id_hash FROM console_sessions ORDER BY created_at DESC, id_hash OFFSET $1)`, max-1)
			if err != nil {
				return err
			}
			pruned += int(tag.RowsAffected())
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO console_sessions (id_hash, csrf_hash, token_name, roles, created_at, expires_at, last_seen_at)
			VALUES ($1, $2, $3, $4, $5, $6, $5)`,
			sess.IDHash, sess.CSRFHash, sess.TokenName, sess.Roles, sess.CreatedAt, sess.ExpiresAt)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("create console session: %w", err)
	}
	return pruned, nil
}

// ConsoleSessionSeenEvery is how stale a session's last_seen_at may get: a request
// writes it only when it is older, so reading pages costs no write each.
const ConsoleSessionSeenEvery = time.Minute

// ConsoleSession is the live session whose id hashes to idHash at now, with its
// last_seen_at brought up to now (at most once per ConsoleSessionSeenEvery). A
// session expired at now is deleted; both it and an unknown one are ErrNotFound.
func (s *Store) ConsoleSession(ctx context.Context, idHash []byte, now time.Time) (*ConsoleSession, error) {
	sess := &ConsoleSession{IDHash: idHash}
	err := s.pool.QueryRow(ctx, `
		SELECT csrf_hash, token_name, roles, created_at, expires_at, last_seen_at
		FROM console_sessions WHERE id_hash = $1`, idHash).
		Scan(&sess.CSRFHash, &sess.TokenName, &sess.Roles, &sess.CreatedAt, &sess.ExpiresAt, &sess.LastSeenAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("console session: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("console session: %w", err)
	}
	if !now.Before(sess.ExpiresAt) {
		if err := s.DeleteConsoleSession(ctx, idHash); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("console session expired: %w", ErrNotFound)
	}
	if now.Sub(sess.LastSeenAt) >= ConsoleSessionSeenEvery {
		if _, err := s.pool.Exec(ctx, `UPDATE console_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2`,
			idHash, now); err != nil {
			return nil, fmt.Errorf("console session: %w", err)
		}
		sess.LastSeenAt = now
	}
	return sess, nil
}

// DeleteConsoleSession ends a session (sign-out); an unknown one is no error.
func (s *Store) DeleteConsoleSession(ctx context.Context, idHash []byte) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, idHash); err != nil {
		return fmt.Errorf("delete console session: %w", err)
	}
	return nil
}
