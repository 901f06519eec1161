// Package dbtest gives each test a fresh, fully migrated PostgreSQL database of its
// own, so tests run in parallel, and twice in a row, without seeing each other's rows.
//
// Migrating takes a second or so; cloning a database takes a few milliseconds. So the
// migrations run once into a template database named after migrations.Fingerprint
// (a schema change makes a new template), and each test gets CREATE DATABASE ...
// TEMPLATE. Test binaries of several packages run at once, so building the template is
// guarded by an advisory lock on the server, and a template only gets its final name
// once it is complete.
//
// The server is TEST_DATABASE_URL, default DefaultURL. Its user must be allowed to
// create databases. A server that cannot be reached fails the test: a skipped
// database test would pass silently.
package dbtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/migrations"
)

// DefaultURL is the server the tests use unless TEST_DATABASE_URL says otherwise: the
// local cluster over its Unix socket, as the superuser (trust authentication).
const DefaultURL = "postgres:///postgres?host=/var/run/postgresql&user=postgres"

// Prefixes of the databases this package creates, so leftovers are recognisable.
const (
	templatePrefix = "vncfleet_tmpl_"
	testPrefix     = "vncfleet_test_"
)

// staleAge: templates of other fingerprints and test databases untouched for this long
// are dropped. Far longer than any test binary runs, so none is robbed of its template
// or its database.
const staleAge = 3 * time.Hour

// connectTimeout bounds reaching the server, so a wrong TEST_DATABASE_URL fails the
// test promptly instead of hanging it.
const connectTimeout = 10 * time.Second

// BaseURL is the server the tests use: TEST_DATABASE_URL, or DefaultURL.
func BaseURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// New creates a migrated database for the test and drops it when the test ends (other
// processes still connected to it are disconnected). The URL names the same database
// and may be handed to other processes, such as a `vncfleet serve` under test.
func New(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	tmpl, err := template()
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	u := create(t, tmpl)
	pool := open(t, u)
	return pool, u
}

// NewEmpty creates an empty, unmigrated database for the test (for testing the
// migrations themselves) and drops it when the test ends. It returns its URL.
func NewEmpty(t testing.TB) string {
	t.Helper()
	return create(t, "")
}

// create makes a database (a clone of tmpl, or empty) with t.Cleanup dropping it.
func create(t testing.TB, tmpl string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := connectAdmin(ctx)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	defer admin.Close(context.Background())

	name := testPrefix + randomHex(8)
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if tmpl != "" {
		stmt += " TEMPLATE " + pgx.Identifier{tmpl}.Sanitize()
	}
	if err := createDatabase(ctx, admin, stmt); err != nil {
		t.Fatalf("dbtest: %s: %v", stmt, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := dropDatabase(ctx, name); err != nil {
			t.Logf("dbtest: database %s left behind: %v", name, err)
		}
	})
	u, err := withDatabase(BaseURL(), name)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	return u
}

// open connects a pool to u, closed when the test ends (before the database is
// dropped, as cleanups run last-registered first).
func open(t testing.TB, u string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		t.Fatalf("dbtest: connect to the test database: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// createDatabase runs a CREATE DATABASE, retrying while the template is briefly in
// use: a backend that just disconnected from it may take a moment to exit.
func createDatabase(ctx context.Context, admin *pgx.Conn, stmt string) error {
	for {
		_, err := admin.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" { // object_in_use
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func dropDatabase(ctx context.Context, name string) error {
	admin, err := connectAdmin(ctx)
	if err != nil {
		return err
	}
	defer admin.Close(context.Background())
	_, err = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

func connectAdmin(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, BaseURL())
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL is not reachable at %s: %w\n"+
			"\tdatabase tests need a server: set TEST_DATABASE_URL, or start the local one with\n"+
			"\tpg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start", redact(BaseURL()), err)
	}
	return conn, nil
}

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// template returns the name of the migrated template for the embedded migrations,
// building it if this is the first test binary to need it.
func template() (string, error) {
	templateOnce.Do(func() {
		fp, err := migrations.Fingerprint()
		if err != nil {
			templateErr = err
			return
		}
		templateName = templatePrefix + fp[:16]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		templateErr = ensureTemplate(ctx, templateName)
	})
	return templateName, templateErr
}

// templateLockKey serialises template builds across test binaries.
var templateLockKey = func() int64 {
	sum := sha256.Sum256([]byte("vncfleet.dbtest.template"))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}()

func ensureTemplate(ctx context.Context, name string) error {
	admin, err := connectAdmin(ctx)
	if err != nil {
		return err
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock($1)`, templateLockKey); err != nil {
		return fmt.Errorf("template lock: %w", err)
	}
	// Closing the session (deferred above) would release it too; this is the tidy way.
	defer admin.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, templateLockKey) //nolint:errcheck

	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		dropStale(ctx, admin, name)
		return nil
	}
	// Built under another name and renamed when complete, so a template left half-built
	// by a killed test binary is never cloned; the next build starts it over.
	building := name + "_build"
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{building}.Sanitize()+" WITH (FORCE)"); err != nil {
		return err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	u, err := withDatabase(BaseURL(), building)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		return err
	}
	_, err = migrations.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	pool.Close()
	if err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	// The migration pool's backends exit asynchronously after Close; renaming (and
	// cloning) needs them gone.
	if err := waitNoConnections(ctx, admin, building); err != nil {
		return err
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("rename template: %w", err)
	}
	// Nobody may connect to the template: a stray session would make every clone fail.
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("seal template: %w", err)
	}
	dropStale(ctx, admin, name)
	return nil
}

func waitNoConnections(ctx context.Context, admin *pgx.Conn, db string) error {
	for {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, db).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("template %s still has %d connections: %w", db, n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dropStale removes, best effort, what earlier runs left on a developer's server:
// templates of other fingerprints (each schema change makes one) and test databases of
// killed test binaries, once their files have not changed for staleAge. The age comes
// from pg_stat_file, which needs a superuser; without one, nothing is dropped. No
// FORCE: a database somebody is connected to stays.
func dropStale(ctx context.Context, admin *pgx.Conn, keep string) {
	rows, err := admin.Query(ctx, `
		SELECT datname FROM pg_database
		WHERE (datname LIKE $1 OR datname LIKE $2) AND datname <> $3
		  AND (pg_stat_file('base/' || oid)).modification < now() - make_interval(secs => $4)`,
		likePrefix(templatePrefix), likePrefix(testPrefix), keep, staleAge.Seconds())
	if err != nil {
		return
	}
	stale, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, name := range stale {
		// A clone in progress holds a lock on its template that makes this wait for it.
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize())
	}
}

func likePrefix(p string) string { return strings.ReplaceAll(p, "_", `\_`) + "%" }

// withDatabase returns the connection string raw (a URL or a key=value DSN) pointing
// at database name instead.
func withDatabase(raw, name string) (string, error) {
	if strings.HasPrefix(raw, "postgres://") || strings.HasPrefix(raw, "postgresql://") {
		u, err := url.Parse(raw)
		if err != nil {
			return "", fmt.Errorf("TEST_DATABASE_URL is not a valid URL")
		}
		u.Path = "/" + name
		u.RawPath = ""
		q := u.Query()
		if q.Has("dbname") {
			q.Del("dbname")
			u.RawQuery = q.Encode()
		}
		return u.String(), nil
	}
	// A later dbname overrides an earlier one in a DSN.
	return strings.TrimSpace(raw) + " dbname='" + name + "'", nil
}

// redact hides a password in a connection string for error messages.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Scheme != "" {
		if q := u.Query(); q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	fields := strings.Fields(raw)
	for i, f := range fields {
		if strings.HasPrefix(f, "password=") {
			fields[i] = "password=xxxxx"
		}
	}
	return strings.Join(fields, " ")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics rather than return an error)
	return hex.EncodeToString(b)
}
