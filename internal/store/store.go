// Package store keeps vncfleet's state in PostgreSQL: fleets, manifests, devices with
// their encrypted cloud passwords, the create attempts and the per-device event log.
// Jobs and the HTTP server go through it; nothing else writes these tables.
package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/internal/secretbox"
)

// Store is the database layer. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	keys *secretbox.Keyring // nil: passwords can be neither stored nor read
	// webhooks: record device.* events in the webhook outbox.
	webhooks bool
	// answersPrunedAt is when this store last deleted old cloud answers (answers.go).
	answersPrunedAt atomic.Int64
	groups          *groupCountCache // the group counts of fleets and manifests with many groups (counts.go)
}

// EmitWebhookEvents makes the store record device.ready, device.rotated,
// device.failed and device.deleted in the webhook outbox, in the transaction that
// makes the change, so that no event is lost and none announces a rolled-back change.
func (s *Store) EmitWebhookEvents(on bool) { s.webhooks = on }

// New wraps a pool. keys may be nil for read-only uses that never touch passwords.
func New(pool *pgxpool.Pool, keys *secretbox.Keyring) *Store {
	return &Store{pool: pool, keys: keys, groups: &groupCountCache{byScope: map[groupScope]*groupCounted{}}}
}

// Pool is the underlying pool, for River and the rate limiter, which share it.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// ErrNoKey is returned when a password must be sealed or opened without a key.
var ErrNoKey = errors.New("no VNCFLEET_SECRET_KEY: cloud passwords cannot be stored or read")

// ErrNotFound is a fleet, manifest or device that does not exist.
var ErrNotFound = errors.New("not found")

// passwordAAD binds a ciphertext to its device row, so that a ciphertext copied into
// another row does not decrypt.
func passwordAAD(devicePK int64) []byte {
	return []byte("vncfleet/device/" + strconv.FormatInt(devicePK, 10))
}

func (s *Store) seal(devicePK int64, password string) ([]byte, string, error) {
	if s.keys == nil {
		return nil, "", ErrNoKey
	}
	ct, id, err := s.keys.Seal([]byte(password), passwordAAD(devicePK))
	if err != nil {
		return nil, "", fmt.Errorf("seal password of device %d: %w", devicePK, err)
	}
	return ct, id, nil
}

func (s *Store) open(devicePK int64, ct []byte, keyID string) (string, error) {
	if s.keys == nil {
		return "", ErrNoKey
	}
	pt, err := s.keys.Open(ct, keyID, passwordAAD(devicePK))
	if err != nil {
		return "", fmt.Errorf("open password of device %d: %w", devicePK, err)
	}
	return string(pt), nil
}

// inTx runs fn in a transaction, committing when it returns nil.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// Ping checks that the database answers and that the schema is migrated.
func (s *Store) Ping(ctx context.Context) error {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT to_regclass('devices') IS NOT NULL AND to_regclass('river_job') IS NOT NULL`).Scan(&ok)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	if !ok {
		return errors.New("database is not migrated: run vncfleet migrate")
	}
	return nil
}

// TryLock takes the session-level advisory lock key on a connection of its own, if
// no other session holds it. The lock lasts until release, or until the connection
// closes: a process that dies gives it up at once, which a job's row cannot do
// before River rescues the job.
func (s *Store) TryLock(ctx context.Context, key int64) (release func(), ok bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("advisory lock: %w", err)
	}
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil || !ok {
		conn.Release()
		if err != nil {
			return nil, false, fmt.Errorf("advisory lock: %w", err)
		}
		return nil, false, nil
	}
	return func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			// Unlocked or not, the session must not keep it: close the connection.
			_ = conn.Conn().Close(context.Background())
		}
		conn.Release()
	}, true, nil
}

// querier is what column needs of a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// column runs sql and returns its rows' single column; what names the query in errors.
func column[T any](ctx context.Context, q querier, what, sql string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[T])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
