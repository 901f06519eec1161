package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/migrations"
)

// countsEnv is a database with three fleets of two manifests each, whose devices the
// tests write directly, as any statement of the store might.
type countsEnv struct {
	ctx       context.Context
	pool      *pgxpool.Pool
	st        *store.Store
	manifests map[int64]int64 // manifest id → fleet id
}

func newCountsEnv(t *testing.T) *countsEnv {
	pool, _ := dbtest.New(t)
	e := &countsEnv{ctx: context.Background(), pool: pool, st: store.New(pool, nil), manifests: map[int64]int64{}}
	for _, name := range []string{"north", "south", "west"} {
		var fleetID int64
		require.NoError(t, pool.QueryRow(e.ctx, `INSERT INTO fleets (name) VALUES ($1) RETURNING id`, name).Scan(&fleetID))
		for range 2 {
			var id int64
			require.NoError(t, pool.QueryRow(e.ctx, `
				INSERT INTO manifests (fleet_id, sha256, uploader, mode, row_count) VALUES ($1, '\x00', 'test', 'merge', 0)
				RETURNING id`, fleetID).Scan(&id))
			e.manifests[id] = fleetID
		}
	}
	// Statuses are not listed anywhere in the counters: one this schema does not know
	// yet is counted like the others.
	_, err := pool.Exec(e.ctx, `ALTER TABLE devices DROP CONSTRAINT devices_status_check`)
	require.NoError(t, err)
	return e
}

// someManifest is one of the manifests.
func (e *countsEnv) someManifest() int64 {
	var some int64
	for id := range e.manifests {
		some = max(some, id)
	}
	return some
}

func (e *countsEnv) requireExact(t *testing.T) {
	t.Helper()
	drift, err := e.st.CountsDrift(e.ctx)
	require.NoError(t, err)
	require.Empty(t, drift)
}

var countedStatuses = []string{"pending", "creating", "awaiting_ready", "ready", "failed", "deleted", "cancelled"}

// randomChange is one statement of the kinds the store runs: inserts (plain and
// upserts, as ingest's), updates of status, manifest, groups or action, updates
// that change nothing counted, and deletes.
func randomChange(r *rand.Rand, manifests []int64, fleetOf map[int64]int64) (string, []any) {
	m := manifests[r.IntN(len(manifests))]
	status := countedStatuses[r.IntN(len(countedStatuses))]
	groups := [][]string{nil, {}, {"line-1"}, {"line-1", "ops"}, {"line-2"}, {"ops", "line-3"}}[r.IntN(6)]
	mod := 1 + r.IntN(5)
	// Rows of m's fleet: a manifest only ever sets devices of its own fleet.
	pick := fmt.Sprintf(`SELECT id FROM devices WHERE fleet_id = %d AND id %% %d = %d ORDER BY id LIMIT %d FOR UPDATE SKIP LOCKED`,
		fleetOf[m], mod, r.IntN(mod), 1+r.IntN(40))
	switch r.IntN(9) {
	case 0, 1:
		return `INSERT INTO devices (fleet_id, device_id, action, groups, allow_groups, spec_hash, manifest_id, status)
			SELECT $1, 'd-' || $2::text || '-' || i, CASE WHEN i % 3 = 0 THEN 'listen' ELSE 'connect' END,
			       CASE WHEN i % 3 <> 0 THEN $3::text[] END, CASE WHEN i % 3 = 0 THEN $3::text[] END, '\x00',
			       CASE WHEN i % 7 = 0 THEN NULL ELSE $4::bigint END, $5
			FROM generate_series(1, $6::int) AS i`,
			[]any{fleetOf[m], fmt.Sprint(r.Int64()), groups, m, status, 1 + r.IntN(60)}
	case 2:
		// An upsert: rows of an earlier insert move to manifest m with new groups.
		return `INSERT INTO devices AS d (fleet_id, device_id, action, groups, spec_hash, manifest_id)
			SELECT fleet_id, device_id, 'connect', $2::text[], '\x00', $1 FROM devices WHERE id IN (` + pick + `)
			ON CONFLICT (fleet_id, device_id) DO UPDATE SET manifest_id = EXCLUDED.manifest_id, groups = EXCLUDED.groups,
			    action = EXCLUDED.action, status = CASE WHEN d.status = 'failed' THEN 'pending' ELSE d.status END`,
			[]any{m, groups}
	case 3, 4:
		return `UPDATE devices SET status = $1 WHERE id IN (` + pick + `)`, []any{status}
	case 5:
		return `UPDATE devices SET manifest_id = $1, allow_groups = $2 WHERE id IN (` + pick + `)`, []any{m, groups}
	case 6:
		return `UPDATE devices SET action = CASE action WHEN 'connect' THEN 'listen' ELSE 'connect' END,
			    groups = allow_groups, allow_groups = groups WHERE id IN (` + pick + `)`, nil
	case 7:
		return `UPDATE devices SET next_poll_at = now(), polls = polls + 1 WHERE id IN (` + pick + `)`, nil
	default:
		return `DELETE FROM devices WHERE id IN (` + pick + `)`, nil
	}
}

// Many random transactions, several at once (more than there are shards, so some
// share one), some rolled back whole or to a savepoint: afterwards every counter
// equals a full count, and so do the readers that use them.
func TestCountersEqualAFullCountAfterConcurrentRandomChanges(t *testing.T) {
	t.Parallel()
	e := newCountsEnv(t)
	var manifests []int64
	for id := range e.manifests {
		manifests = append(manifests, id)
	}
	const workers, txPerWorker = 20, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var mu sync.Mutex
	committed, retried := 0, 0
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 12))
			for range txPerWorker {
				err := pgx.BeginFunc(e.ctx, e.pool, func(tx pgx.Tx) error {
					for range 1 + r.IntN(4) {
						sql, args := randomChange(r, manifests, e.manifests)
						if r.IntN(6) == 0 { // a statement rolled back to its savepoint
							sp, err := tx.Begin(e.ctx)
							if err != nil {
								return err
							}
							if _, err := sp.Exec(e.ctx, sql, args...); err != nil {
								return err
							}
							if err := sp.Rollback(e.ctx); err != nil {
								return err
							}
							continue
						}
						if _, err := tx.Exec(e.ctx, sql, args...); err != nil {
							return err
						}
					}
					if r.IntN(5) == 0 {
						return errRollback
					}
					return nil
				})
				var pgErr *pgconn.PgError
				switch {
				case err == nil:
					mu.Lock()
					committed++
					mu.Unlock()
				case errors.Is(err, errRollback):
				case errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "23505"):
					// Two transactions' device rows (or two inserts of one device id)
					// crossed: rolled back, which the counters must follow too.
					mu.Lock()
					retried++
					mu.Unlock()
				default:
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("%d transactions committed, %d rolled back by the database", committed, retried)
	require.Greater(t, committed, workers*txPerWorker/2)

	var devices int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM devices`).Scan(&devices))
	require.Positive(t, devices)
	e.requireExact(t)
	e.requireReadersMatchFullCounts(t)
}

var errRollback = errors.New("rolled back on purpose")

// requireReadersMatchFullCounts compares what progress, status and the metrics read
// with counts of the devices made here, group rule written out.
func (e *countsEnv) requireReadersMatchFullCounts(t *testing.T) {
	t.Helper()
	full := func(sql string, args ...any) map[string]map[string]int {
		rows, err := e.pool.Query(e.ctx, sql, args...)
		require.NoError(t, err)
		out := map[string]map[string]int{}
		for rows.Next() {
			var k, status string
			var n int
			require.NoError(t, rows.Scan(&k, &status, &n))
			if out[k] == nil {
				out[k] = map[string]int{}
			}
			out[k][status] = n
		}
		require.NoError(t, rows.Err())
		return out
	}
	const groupsOf = `unnest(CASE WHEN cardinality(CASE WHEN d.action = 'connect' THEN d.groups ELSE d.allow_groups END) > 0
		THEN CASE WHEN d.action = 'connect' THEN d.groups ELSE d.allow_groups END ELSE '{""}' END) AS g`

	byFleet := full(`SELECT f.name, d.status, count(*) FROM devices d JOIN fleets f ON f.id = d.fleet_id GROUP BY 1, 2`)
	got, err := e.st.FleetStatusCounts(e.ctx)
	require.NoError(t, err)
	require.Len(t, got, len(byFleet))
	for name, want := range byFleet {
		for status, n := range want {
			require.EqualValues(t, n, got[name][status], "fleet %s status %s", name, status)
		}
		require.Len(t, got[name], len(want))
	}

	for id := range e.manifests {
		p, err := e.st.ManifestProgress(e.ctx, id, &store.GroupQuery{Groups: store.MaxStatusGroups})
		require.NoError(t, err)
		byStatus := full(`SELECT '', status, count(*) FROM devices WHERE manifest_id = $1 GROUP BY 1, 2`, id)
		require.Equal(t, byStatus[""], map[string]int(p.ByStatus), "manifest %d", id)
		byGroup := full(`SELECT g, d.status, count(*) FROM devices d, `+groupsOf+` WHERE d.manifest_id = $1 GROUP BY 1, 2`, id)
		require.Len(t, p.ByGroup, len(byGroup), "manifest %d", id)
		for g, want := range byGroup {
			require.Equal(t, want, map[string]int(p.ByGroup[g]), "manifest %d group %q", id, g)
		}
	}

	st, err := e.st.Status(e.ctx, "south")
	require.NoError(t, err)
	require.Equal(t, byFleet["south"], map[string]int(st.ByStatus))
	byGroup := full(`SELECT g, d.status, count(*) FROM devices d JOIN fleets f ON f.id = d.fleet_id, ` + groupsOf + `
		WHERE f.name = 'south' GROUP BY 1, 2`)
	require.Len(t, st.ByGroup, len(byGroup))
	for g, want := range byGroup {
		require.Equal(t, want, map[string]int(st.ByGroup[g]), "group %q", g)
	}
	byManifest := full(`SELECT d.manifest_id::text, d.status, count(*) FROM devices d JOIN fleets f ON f.id = d.fleet_id
		WHERE f.name = 'south' AND d.manifest_id IS NOT NULL GROUP BY 1, 2`)
	require.Len(t, st.ByManifest, len(byManifest))
	for _, mc := range st.ByManifest {
		require.Equal(t, byManifest[fmt.Sprint(mc.Manifest)], map[string]int(mc.ByStatus), "manifest %d", mc.Manifest)
	}
}

// A device counts in every group it belongs to: a connect device in each of its
// groups, a listen device in each group allowed to connect to it, either without
// any under "".
func TestCountersCountEveryGroupOfADevice(t *testing.T) {
	t.Parallel()
	e := newCountsEnv(t)
	m := e.someManifest()
	_, err := e.pool.Exec(e.ctx, `
		INSERT INTO devices (fleet_id, device_id, action, groups, allow_groups, spec_hash, manifest_id, status) VALUES
		($1, 'viewer', 'connect', '{line-1,ops}', NULL, '\x00', $2, 'ready'),
		($1, 'server', 'listen', NULL, '{line-1,line-2}', '\x00', $2, 'pending'),
		($1, 'loner', 'connect', '{}', NULL, '\x00', $2, 'pending'),
		($1, 'open', 'listen', NULL, NULL, '\x00', $2, 'failed')`, e.manifests[m], m)
	require.NoError(t, err)
	p, err := e.st.ManifestProgress(e.ctx, m, &store.GroupQuery{})
	require.NoError(t, err)
	require.Equal(t, store.Counts{"ready": 1, "pending": 2, "failed": 1}, p.ByStatus)
	require.Equal(t, 4, p.Total, "each device once in the total")
	require.Equal(t, map[string]store.Counts{
		"line-1": {"ready": 1, "pending": 1},
		"ops":    {"ready": 1},
		"line-2": {"pending": 1},
		"":       {"pending": 1, "failed": 1},
	}, p.ByGroup)

	// Regrouping moves the counts; the emptied counter rows go.
	_, err = e.pool.Exec(e.ctx, `UPDATE devices SET groups = '{line-9}' WHERE device_id = 'viewer'`)
	require.NoError(t, err)
	p, err = e.st.ManifestProgress(e.ctx, m, &store.GroupQuery{})
	require.NoError(t, err)
	require.Equal(t, store.Counts{"ready": 1}, p.ByGroup["line-9"])
	require.Equal(t, store.Counts{"pending": 1}, p.ByGroup["line-1"])
	require.NotContains(t, p.ByGroup, "ops")
	var zeroRows int
	require.NoError(t, e.pool.QueryRow(e.ctx, `
		SELECT (SELECT count(*) FROM device_counts WHERE devices = 0) + (SELECT count(*) FROM device_group_counts WHERE devices = 0)`).Scan(&zeroRows))
	require.Zero(t, zeroRows)
	e.requireExact(t)
}

// Concurrent transactions each add to a shard of their own, so none waits for
// another's uncommitted counter rows; the readers sum the shards.
func TestConcurrentTransactionsAddToShardsOfTheirOwn(t *testing.T) {
	t.Parallel()
	e := newCountsEnv(t)
	m := e.someManifest()
	insert := `INSERT INTO devices (fleet_id, device_id, action, groups, spec_hash, manifest_id)
		SELECT $1, $2 || i, 'connect', '{line-1}', '\x00', $3 FROM generate_series(1, 5) i`
	first, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	defer first.Rollback(e.ctx) //nolint:errcheck
	_, err = first.Exec(e.ctx, insert, e.manifests[m], "a", m)
	require.NoError(t, err)
	// While first holds its counter rows uncommitted, second counts the same
	// (manifest, status, group) without waiting.
	second, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	defer second.Rollback(e.ctx) //nolint:errcheck
	_, err = second.Exec(e.ctx, `SET LOCAL lock_timeout = '2s'`)
	require.NoError(t, err)
	_, err = second.Exec(e.ctx, insert, e.manifests[m], "b", m)
	require.NoError(t, err, "the second transaction did not wait for the first's counter rows")
	require.NoError(t, second.Commit(e.ctx))
	require.NoError(t, first.Commit(e.ctx))

	var shards int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(DISTINCT shard) FROM device_counts WHERE manifest_id = $1`, m).Scan(&shards))
	require.Equal(t, 2, shards)
	p, err := e.st.ManifestProgress(e.ctx, m, &store.GroupQuery{})
	require.NoError(t, err)
	require.Equal(t, store.Counts{"pending": 10}, p.ByStatus)
	require.Equal(t, store.Counts{"pending": 10}, p.ByGroup["line-1"])
}

// An update that changes no counted column of any row (a poll's claim, a
// rescheduling) leaves the counters alone before taking a counter shard (0024);
// one that changes a counted column of a single row among many still counts it.
func TestUpdatesChangingNothingCountedTakeNoShard(t *testing.T) {
	t.Parallel()
	e := newCountsEnv(t)
	m := e.someManifest()
	_, err := e.pool.Exec(e.ctx, `
		INSERT INTO devices (fleet_id, device_id, action, groups, spec_hash, manifest_id, status)
		SELECT $1, 'd' || i, 'connect', '{line-1}', '\x00', $2, 'awaiting_ready' FROM generate_series(1, 50) i`, e.manifests[m], m)
	require.NoError(t, err)
	shardLocks := func(tx pgx.Tx) int {
		var n int
		require.NoError(t, tx.QueryRow(e.ctx, `
			SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND classid = 1986356019 AND pid = pg_backend_pid()`).Scan(&n))
		return n
	}
	counterRows := func() int {
		var n int
		require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM device_counts WHERE manifest_id = $1`, m).Scan(&n))
		return n
	}
	before := counterRows()

	tx, err := e.pool.Begin(e.ctx)
	require.NoError(t, err)
	defer tx.Rollback(e.ctx) //nolint:errcheck
	_, err = tx.Exec(e.ctx, `UPDATE devices SET claim_until = now() + interval '1 minute', claim_token = 7, polls = polls + 1
		WHERE manifest_id = $1`, m)
	require.NoError(t, err)
	require.Zero(t, shardLocks(tx), "an update that changes nothing counted takes no counter shard")
	// Setting a counted column to the value it has is no change either.
	_, err = tx.Exec(e.ctx, `UPDATE devices SET status = status, groups = groups WHERE manifest_id = $1`, m)
	require.NoError(t, err)
	require.Zero(t, shardLocks(tx))

	_, err = tx.Exec(e.ctx, `UPDATE devices SET status = CASE WHEN device_id = 'd7' THEN 'ready' ELSE status END,
		next_poll_at = now() WHERE manifest_id = $1`, m)
	require.NoError(t, err)
	require.Equal(t, 1, shardLocks(tx), "one changed row among fifty is counted")
	require.NoError(t, tx.Commit(e.ctx))

	p, err := e.st.ManifestProgress(e.ctx, m, &store.GroupQuery{})
	require.NoError(t, err)
	require.Equal(t, store.Counts{"awaiting_ready": 49, "ready": 1}, p.ByStatus)
	require.Equal(t, store.Counts{"awaiting_ready": 49, "ready": 1}, p.ByGroup["line-1"])
	require.Equal(t, before+1, counterRows())
	e.requireExact(t)
}

// The migration fills the counters from the devices already there.
func TestCountersMigrationBackfillsExistingDevices(t *testing.T) {
	t.Parallel()
	e := newCountsEnv(t)
	// Devices written while the counting triggers are off: as before the migration.
	_, err := e.pool.Exec(e.ctx, `ALTER TABLE devices DISABLE TRIGGER USER`)
	require.NoError(t, err)
	for id, fleetID := range e.manifests {
		_, err := e.pool.Exec(e.ctx, `INSERT INTO devices (fleet_id, device_id, action, groups, spec_hash, manifest_id, status)
			SELECT $1, 'd' || $2::bigint || '-' || i, 'connect', ARRAY['line-' || (i % 4)], '\x00', $2::bigint, (ARRAY['ready', 'failed'])[1 + i % 2]
			FROM generate_series(1, 50) i`, fleetID, id)
		require.NoError(t, err)
	}
	_, err = e.pool.Exec(e.ctx, `ALTER TABLE devices ENABLE TRIGGER USER`)
	require.NoError(t, err)
	drift, err := e.st.CountsDrift(e.ctx)
	require.NoError(t, err)
	require.NotEmpty(t, drift, "uncounted devices are found out")

	own, err := migrations.Own()
	require.NoError(t, err)
	var counters *migrations.Migration
	for i := range own {
		if own[i].Version == "0008_status_counters" {
			counters = &own[i]
		}
	}
	require.NotNil(t, counters)
	require.NoError(t, pgx.BeginFunc(e.ctx, e.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(e.ctx, counters.SQL)
		return err
	}))
	e.requireExact(t)
}
