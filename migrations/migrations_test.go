package migrations_test

import (
	"context"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/migrations"
)

func newPool(t *testing.T, u string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), u)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// allRiverVersions is what River would apply to an empty schema.
func allRiverVersions(t *testing.T) []int {
	t.Helper()
	m, err := rivermigrate.New(riverpgxv5.New(nil), &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	var vs []int
	for _, v := range m.AllVersions() {
		vs = append(vs, v.Version)
	}
	require.NotEmpty(t, vs)
	return vs
}

func ownVersions(t *testing.T) []string {
	t.Helper()
	own, err := migrations.Own()
	require.NoError(t, err)
	require.NotEmpty(t, own, "sql/ holds the project's migrations")
	var vs []string
	for _, m := range own {
		vs = append(vs, m.Version)
	}
	require.True(t, slices.IsSorted(vs), "applied in file-name order")
	return vs
}

func tableExists(t *testing.T, pool *pgxpool.Pool, name string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok))
	return ok
}

func TestFreshDatabaseGetsEverythingThenNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, dbtest.NewEmpty(t))

	res, err := migrations.Migrate(ctx, pool, nil)
	require.NoError(t, err)
	require.Equal(t, "public", res.Schema)
	require.Equal(t, allRiverVersions(t), res.River)
	require.Equal(t, ownVersions(t), res.Own)
	require.False(t, res.Empty())
	require.True(t, tableExists(t, pool, "public.river_job"))

	var recorded []string
	rows, err := pool.Query(ctx, `SELECT version FROM vncfleet_migrations WHERE applied_at <= now() ORDER BY version`)
	require.NoError(t, err)
	recorded, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, res.Own, recorded)

	again, err := migrations.Migrate(ctx, pool, nil)
	require.NoError(t, err)
	require.True(t, again.Empty(), "second run applies nothing: %v", again)
	require.Contains(t, again.String(), "up to date")
}

func TestConcurrentRunsApplyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := dbtest.NewEmpty(t)

	const processes = 4
	results := make([]migrations.Result, processes)
	errs := make([]error, processes)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range processes {
		pool := newPool(t, u) // a pool per "process"
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = migrations.Migrate(ctx, pool, nil)
		}()
	}
	close(start)
	wg.Wait()

	var river []int
	var own []string
	for i := range processes {
		require.NoError(t, errs[i], "process %d", i)
		river = append(river, results[i].River...)
		own = append(own, results[i].Own...)
	}
	slices.Sort(river)
	slices.Sort(own)
	require.Equal(t, allRiverVersions(t), river, "each River version applied exactly once")
	require.Equal(t, ownVersions(t), own, "each own migration applied exactly once")

	pool := newPool(t, u)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM vncfleet_migrations`).Scan(&n))
	require.Equal(t, len(ownVersions(t)), n)
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM river_migration`).Scan(&n))
	require.Equal(t, len(allRiverVersions(t)), n)
}

// withSearchPath sets the search_path connection parameter of URL u.
func withSearchPath(t *testing.T, u, schema string) string {
	t.Helper()
	p, err := url.Parse(u)
	require.NoError(t, err)
	q := p.Query()
	q.Set("search_path", schema)
	p.RawQuery = q.Encode()
	return p.String()
}

func TestTablesGoToThePoolsSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := dbtest.NewEmpty(t)
	_, err := newPool(t, u).Exec(ctx, `CREATE SCHEMA fleet_a; CREATE SCHEMA fleet_b`)
	require.NoError(t, err)

	for _, schema := range []string{"fleet_a", "fleet_b"} {
		pool := newPool(t, withSearchPath(t, u, schema))
		res, err := migrations.Migrate(ctx, pool, nil)
		require.NoError(t, err)
		require.Equal(t, schema, res.Schema)
		require.Equal(t, allRiverVersions(t), res.River, "each schema gets its own River tables")
		require.Equal(t, ownVersions(t), res.Own)
		require.True(t, tableExists(t, pool, schema+".river_job"))
		require.True(t, tableExists(t, pool, schema+".vncfleet_migrations"))
	}
	public := newPool(t, u)
	require.False(t, tableExists(t, public, "public.river_job"), "nothing lands in public")
	require.False(t, tableExists(t, public, "public.vncfleet_migrations"))
}

func TestSearchPathWithoutASchemaIsAnError(t *testing.T) {
	t.Parallel()
	pool := newPool(t, withSearchPath(t, dbtest.NewEmpty(t), "no_such_schema"))
	_, err := migrations.Migrate(context.Background(), pool, nil)
	require.ErrorIs(t, err, migrations.ErrNoSchema)
}

func TestSingleConnectionPool(t *testing.T) {
	t.Parallel()
	u := dbtest.NewEmpty(t)
	p, err := url.Parse(u)
	require.NoError(t, err)
	q := p.Query()
	q.Set("pool_max_conns", "1")
	p.RawQuery = q.Encode()
	pool := newPool(t, p.String())
	require.EqualValues(t, 1, pool.Config().MaxConns)
	// River needs the pool's only connection while the lock is held: this would
	// deadlock if the lock took it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := migrations.Migrate(ctx, pool, nil)
	require.NoError(t, err)
	require.Equal(t, ownVersions(t), res.Own)
}

func TestWaitsForTheLockAndGivesUpWithTheContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := dbtest.NewEmpty(t)
	holder, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	defer holder.Close(ctx)
	_, err = holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrations.LockKey)
	require.NoError(t, err)

	pool := newPool(t, u)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = migrations.Migrate(short, pool, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded, "blocked by the other holder")
	require.False(t, tableExists(t, pool, "river_job"), "nothing applied without the lock")

	// Once the other process is done, the run goes through.
	_, err = holder.Exec(ctx, `SELECT pg_advisory_unlock($1)`, migrations.LockKey)
	require.NoError(t, err)
	res, err := migrations.Migrate(ctx, pool, nil)
	require.NoError(t, err)
	require.NotEmpty(t, res.Own)

	// And the lock was released at the end: another session can take it at once.
	var got bool
	require.NoError(t, holder.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, migrations.LockKey).Scan(&got))
	require.True(t, got)
}

func TestAFailingFileIsRolledBackAndRetriedNextRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, dbtest.NewEmpty(t))
	good := migrations.Migration{Version: "0001_a", SQL: `CREATE TABLE a (id int)`}
	broken := migrations.Migration{Version: "0002_b", SQL: `CREATE TABLE b (id int); SELECT no_such_function()`}
	fixed := migrations.Migration{Version: "0002_b", SQL: `CREATE TABLE b (id int)`}
	later := migrations.Migration{Version: "0003_c", SQL: `CREATE TABLE c (id int); INSERT INTO c VALUES (1), (2)`}

	res, err := migrations.MigrateOwn(ctx, pool, nil, []migrations.Migration{good, broken, later})
	require.ErrorContains(t, err, "0002_b")
	require.Equal(t, []string{"0001_a"}, res.Own, "what applied before the failure is reported")
	require.True(t, tableExists(t, pool, "a"))
	require.False(t, tableExists(t, pool, "b"), "the failing file's own statements are rolled back")
	require.False(t, tableExists(t, pool, "c"), "nothing after the failing file runs")

	res, err = migrations.MigrateOwn(ctx, pool, nil, []migrations.Migration{good, fixed, later})
	require.NoError(t, err)
	require.Empty(t, res.River)
	require.Equal(t, []string{"0002_b", "0003_c"}, res.Own)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM c`).Scan(&n))
	require.Equal(t, 2, n, "multi-statement files run whole")
}

func TestFingerprintFollowsTheMigrations(t *testing.T) {
	t.Parallel()
	own, err := migrations.Own()
	require.NoError(t, err)
	embedded, err := migrations.Fingerprint()
	require.NoError(t, err)
	same, err := migrations.FingerprintOf(own)
	require.NoError(t, err)
	require.Equal(t, embedded, same, "stable")
	require.Len(t, embedded, 64)

	changed := slices.Clone(own)
	changed[0].SQL += "\n-- a comment is a change too"
	renamed := slices.Clone(own)
	renamed[0].Version += "x"
	seen := map[string]bool{embedded: true}
	for _, ms := range [][]migrations.Migration{changed, renamed, own[:len(own)-1], nil} {
		fp, err := migrations.FingerprintOf(ms)
		require.NoError(t, err)
		require.False(t, seen[fp], "a different set of migrations has a different fingerprint")
		seen[fp] = true
	}

	names, err := migrations.Names()
	require.NoError(t, err)
	for i, m := range own {
		require.Equal(t, "sql/"+m.Version+".sql", names[i])
	}
}
