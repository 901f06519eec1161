// Package migrations brings a database to the schema this binary expects: River's
// migrations first (rivermigrate), then vncfleet's own, the embedded sql/*.sql files
// in file-name order, each in its own transaction and recorded in the table
// vncfleet_migrations(version, applied_at).
//
// Migrate is idempotent and safe when several processes run it at once (several
// `serve` processes starting together, or `vncfleet migrate` during a rollout): the
// whole run holds a session-level advisory lock, so one process applies and the others
// wait, then find nothing left to do.
//
// Everything goes to the pool's current schema (the first existing schema of its
// search_path), River's tables included, so a deployment may keep vncfleet in a schema
// of its own by setting search_path in DATABASE_URL.
package migrations

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

//go:embed sql/*.sql
var embedded embed.FS

// LockKey is the pg_advisory_lock key every migrating process takes: the first 8 bytes
// of SHA-256("vncfleet.migrate"), so it cannot collide by accident with the small
// integers other code tends to pick. Advisory locks are per database.
var LockKey = lockKeyFor("vncfleet.migrate")

func lockKeyFor(name string) int64 {
	sum := sha256.Sum256([]byte(name))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// ErrNoSchema means the pool's search_path names no existing schema, so there is
// nowhere to create the tables.
var ErrNoSchema = errors.New("migrations: search_path names no existing schema")

// Result lists what one run applied; both lists are empty when the database was
// already up to date.
type Result struct {
	// Schema is where the tables are.
	Schema string
	// River lists River's migration versions applied, in order.
	River []int
	// Own lists vncfleet's migrations applied, by version (file name without .sql).
	Own []string
}

// Empty reports whether the run found nothing to do.
func (r Result) Empty() bool { return len(r.River) == 0 && len(r.Own) == 0 }

func (r Result) String() string {
	if r.Empty() {
		return fmt.Sprintf("migrations: schema %q already up to date", r.Schema)
	}
	river := "none"
	if len(r.River) > 0 {
		river = fmt.Sprint(r.River)
	}
	own := "none"
	if len(r.Own) > 0 {
		own = strings.Join(r.Own, ", ")
	}
	return fmt.Sprintf("migrations: schema %q: applied River versions %s; vncfleet migrations %s", r.Schema, river, own)
}

// Migration is one of vncfleet's own migrations.
type Migration struct {
	Version string // file name without .sql, e.g. "0001_schema"
	SQL     string
}

// Own returns vncfleet's embedded migrations in the order they apply.
func Own() ([]Migration, error) {
	return load(embedded)
}

func load(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "sql/*.sql")
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	slices.Sort(names)
	out := make([]Migration, 0, len(names))
	for _, name := range names {
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
		out = append(out, Migration{Version: strings.TrimSuffix(path.Base(name), ".sql"), SQL: string(body)})
	}
	return out, nil
}

// Names lists vncfleet's own migration files (sql/NAME.sql) in the order they apply.
func Names() ([]string, error) {
	own, err := Own()
	if err != nil {
		return nil, err
	}
	names := make([]string, len(own))
	for i, m := range own {
		names[i] = "sql/" + m.Version + ".sql"
	}
	return names, nil
}

// Fingerprint is a hex SHA-256 over everything Migrate would apply to an empty
// database (River's migrations and vncfleet's files, names and contents), so a test
// template database is rebuilt whenever either changes.
func Fingerprint() (string, error) {
	own, err := Own()
	if err != nil {
		return "", err
	}
	return fingerprint(own)
}

func fingerprint(own []Migration) (string, error) {
	h := sha256.New()
	// A nil pool is enough to list River's migrations; nothing is executed.
	migrator, err := rivermigrate.New(riverpgxv5.New(nil), &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", fmt.Errorf("river migrator: %w", err)
	}
	for _, m := range migrator.AllVersions() {
		fmt.Fprintf(h, "river\x00%d\x00%s\x00", m.Version, m.SQLUp)
	}
	for _, m := range own {
		fmt.Fprintf(h, "own\x00%s\x00%s\x00", m.Version, m.SQL)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Migrate applies what is missing and returns what it applied. A nil logger discards.
func Migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) (Result, error) {
	own, err := Own()
	if err != nil {
		return Result{}, err
	}
	return migrate(ctx, pool, logger, own)
}

func migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger, own []Migration) (Result, error) {
	var res Result
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var schema *string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return res, fmt.Errorf("migrations: current schema: %w", err)
	}
	if schema == nil {
		return res, ErrNoSchema
	}
	res.Schema = *schema

	unlock, err := lock(ctx, pool, logger)
	if err != nil {
		return res, err
	}
	defer unlock()

	// River's migrator runs on the pool while the lock connection waits: some of its
	// migrations must commit before the next can run (an enum value added, then used),
	// so they cannot share the lock connection's transaction.
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: logger, Schema: res.Schema})
	if err != nil {
		return res, fmt.Errorf("migrations: river migrator: %w", err)
	}
	riverRes, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return res, fmt.Errorf("migrations: river: %w", err)
	}
	for _, v := range riverRes.Versions {
		res.River = append(res.River, v.Version)
	}

	table := pgx.Identifier{res.Schema, "vncfleet_migrations"}.Sanitize()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (
		version    text PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return res, fmt.Errorf("migrations: create vncfleet_migrations: %w", err)
	}
	applied, err := appliedVersions(ctx, pool, table)
	if err != nil {
		return res, err
	}
	for _, m := range own {
		if applied[m.Version] {
			delete(applied, m.Version)
			continue
		}
		start := time.Now()
		// One transaction per file: a failing file leaves the ones before it applied
		// and itself not at all, and the next run starts again from it.
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO `+table+` (version) VALUES ($1)`, m.Version)
			return err
		})
		if err != nil {
			return res, fmt.Errorf("migrations: %s: %w", m.Version, err)
		}
		res.Own = append(res.Own, m.Version)
		logger.InfoContext(ctx, "applied migration", "version", m.Version, "schema", res.Schema, "duration", time.Since(start))
	}
	// Versions recorded but not embedded: the database was migrated by a newer
	// binary. Not an error (a rollback must still start), but worth saying.
	for v := range applied {
		logger.WarnContext(ctx, "database has a migration this binary does not know; it was migrated by a newer vncfleet", "version", v)
	}
	return res, nil
}

func appliedVersions(ctx context.Context, pool *pgxpool.Pool, table string) (map[string]bool, error) {
	rows, err := pool.Query(ctx, `SELECT version FROM `+table)
	if err != nil {
		return nil, fmt.Errorf("migrations: read vncfleet_migrations: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("migrations: read vncfleet_migrations: %w", err)
	}
	applied := make(map[string]bool, len(versions))
	for _, v := range versions {
		applied[v] = true
	}
	return applied, nil
}

// lock takes the migration lock on a connection held for the whole run and returns
// the function that releases it. An unlock that fails closes the connection instead,
// which ends the session and so releases the lock too; the run's outcome stands. The connection comes from the pool unless the pool
// has a single connection, which River's migrator needs for itself.
func lock(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) (func(), error) {
	var (
		conn    *pgx.Conn
		release func(broken bool)
	)
	if pool.Config().MaxConns < 2 {
		c, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
		if err != nil {
			return nil, fmt.Errorf("migrations: lock connection: %w", err)
		}
		conn = c
		release = func(bool) { _ = c.Close(context.Background()) }
	} else {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("migrations: lock connection: %w", err)
		}
		conn = c.Conn()
		release = func(broken bool) {
			if broken {
				// A session lock we could not release must not go back to the pool
				// with the connection: closing the session releases it.
				_ = c.Conn().Close(context.Background())
			}
			c.Release()
		}
	}

	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, LockKey).Scan(&got); err != nil {
		release(true)
		return nil, fmt.Errorf("migrations: lock: %w", err)
	}
	if !got {
		logger.InfoContext(ctx, "another process is migrating this database; waiting for it")
		// Blocks until the other run ends; ctx cancels the wait.
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, LockKey); err != nil {
			release(true)
			return nil, fmt.Errorf("migrations: wait for lock: %w", err)
		}
	}
	return func() {
		// Not ctx: the lock must be released even when the run was cancelled.
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var ok bool
		err := conn.QueryRow(uctx, `SELECT pg_advisory_unlock($1)`, LockKey).Scan(&ok)
		if err != nil || !ok {
			logger.Warn("migration lock not released cleanly; closing its connection", "error", err)
		}
		release(err != nil || !ok)
	}, nil
}
