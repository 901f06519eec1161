package dbtest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/migrations"
)

func TestNewGivesAMigratedDatabaseOfItsOwn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, urlA := New(t)
	b, urlB := New(t)
	require.NotEqual(t, urlA, urlB)

	names, err := migrations.Names()
	require.NoError(t, err)
	for _, pool := range []interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}{a, b} {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM vncfleet_migrations`).Scan(&n))
		require.Equal(t, len(names), n, "every own migration applied")
		var river bool
		require.NoError(t, pool.QueryRow(ctx, `SELECT to_regclass('river_job') IS NOT NULL`).Scan(&river))
		require.True(t, river, "River's tables are there")
	}

	// A table written in one database is not seen in the other.
	_, err = a.Exec(ctx, `CREATE TABLE only_in_a (x int)`)
	require.NoError(t, err)
	var seen bool
	require.NoError(t, b.QueryRow(ctx, `SELECT to_regclass('only_in_a') IS NOT NULL`).Scan(&seen))
	require.False(t, seen)

	// The URL works for another client (another process, in the end-to-end tests).
	conn, err := pgx.Connect(ctx, urlA)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass('only_in_a') IS NOT NULL`).Scan(&seen))
	require.True(t, seen, "the URL names the pool's database")
}

func TestDatabaseIsDroppedWhenTheTestEnds(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("inner", func(t *testing.T) {
		pool, u := New(t)
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&name))
		require.Contains(t, u, name)
		// An open connection from "another process" does not keep it alive.
		conn, err := pgx.Connect(context.Background(), u)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
	})
	require.NotEmpty(t, name)
	require.False(t, databaseExists(t, name), "dropped in cleanup")
}

func TestManyParallelClones(t *testing.T) {
	t.Parallel()
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			pool, _ := New(t)
			ctx := context.Background()
			_, err := pool.Exec(ctx, `CREATE TABLE mine (i int)`)
			require.NoError(t, err, "each clone is fresh")
			_, err = pool.Exec(ctx, `INSERT INTO mine VALUES ($1)`, i)
			require.NoError(t, err)
			var n int
			require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM mine`).Scan(&n))
			require.Equal(t, 1, n)
		})
	}
}

func TestNewEmptyIsUnmigrated(t *testing.T) {
	t.Parallel()
	conn, err := pgx.Connect(context.Background(), NewEmpty(t))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var migrated bool
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT to_regclass('vncfleet_migrations') IS NOT NULL`).Scan(&migrated))
	require.False(t, migrated)
}

// fatalRecorder is a testing.TB whose Fatalf records the message and stops the
// goroutine, as the real one does, so a failing New can be observed.
type fatalRecorder struct {
	testing.TB
	mu       sync.Mutex
	fatal    string
	cleanups []func()
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatal = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}
func (r *fatalRecorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func runRecorded(t *testing.T, f func(tb testing.TB)) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	return r.fatal
}

// Not parallel: it changes TEST_DATABASE_URL for the process.
func TestUnreachableServerFailsClearly(t *testing.T) {
	t.Setenv("TEST_DATABASE_URL", "postgres://tester:hunter2@127.0.0.1:1/postgres?connect_timeout=2")
	msg := runRecorded(t, func(tb testing.TB) { NewEmpty(tb) })
	require.Contains(t, msg, "PostgreSQL is not reachable")
	require.Contains(t, msg, "TEST_DATABASE_URL")
	require.NotContains(t, msg, "hunter2", "no password in the message")
}

// Not parallel: it changes TEST_DATABASE_URL for the process.
func TestKeyValueDSN(t *testing.T) {
	t.Setenv("TEST_DATABASE_URL", "host=/var/run/postgresql user=postgres dbname=postgres")
	u := NewEmpty(t)
	require.True(t, strings.HasPrefix(u, "host="), u)
	conn, err := pgx.Connect(context.Background(), u)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var db string
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT current_database()`).Scan(&db))
	require.True(t, strings.HasPrefix(db, testPrefix), db)
}

func TestWithDatabaseAndRedact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{DefaultURL, "postgres:///test_x?host=/var/run/postgresql&user=postgres"},
		{"postgres://u:p@db:5432/app?sslmode=disable", "postgres://u:p@db:5432/test_x?sslmode=disable"},
		{"postgresql://db/?dbname=app", "postgresql://db/test_x"},
		{"host=db user=u dbname=app", "host=db user=u dbname=app dbname='test_x'"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := withDatabase(tc.in, "test_x")
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			cfg, err := pgx.ParseConfig(got)
			require.NoError(t, err)
			require.Equal(t, "test_x", cfg.Database)
		})
	}
	for _, in := range []string{
		"postgres://u:hunter2@db/app",
		"postgres://db/app?password=hunter2",
		"host=db password=hunter2 user=u",
	} {
		require.NotContains(t, redact(in), "hunter2", in)
	}
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	ctx := context.Background()
	admin, err := connectAdmin(ctx)
	require.NoError(t, err)
	defer admin.Close(ctx)
	var ok bool
	require.NoError(t, admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok))
	return ok
}
