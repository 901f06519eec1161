package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// nestedCounts runs sql, whose rows are (outer key, inner key, count), into a map of
// maps.
func (s *Store) nestedCounts(ctx context.Context, what, sql string, args ...any) (map[string]map[string]int64, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out := map[string]map[string]int64{}
	var outer, inner string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&outer, &inner, &n}, func() error {
		if out[outer] == nil {
			out[outer] = map[string]int64{}
		}
		out[outer][inner] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// RotationState is what the rotation gauges of one fleet show.
type RotationState struct {
	// Overdue are the ready devices whose password is older than the max age.
	Overdue int64
	// NewestPassword is when the fleet's newest password was set (by a create or a
	// promoted rotation); zero when the fleet has no ready device.
	NewestPassword time.Time
}

// RotationStates reads, for every fleet with ready devices, the overdue count and its
// newest password. It scans the fleet's ready devices (no index covers
// password_set_at: indexing on status would cost claims their HOT updates), so callers
// refresh it in the background, at most every few seconds.
func (s *Store) RotationStates(ctx context.Context, maxAge time.Duration) (map[string]RotationState, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT f.name, count(*) FILTER (WHERE d.password_set_at IS NULL OR d.password_set_at < now() - $1::interval),
		       coalesce(max(d.password_set_at), 'epoch')
		FROM devices d JOIN fleets f ON f.id = d.fleet_id
		WHERE d.status = 'ready'
		GROUP BY f.name`, maxAge)
	if err != nil {
		return nil, fmt.Errorf("rotation states: %w", err)
	}
	out := map[string]RotationState{}
	var name string
	var st RotationState
	_, err = pgx.ForEachRow(rows, []any{&name, &st.Overdue, &st.NewestPassword}, func() error {
		if st.NewestPassword.Unix() == 0 {
			st.NewestPassword = time.Time{}
		}
		out[name] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rotation states: %w", err)
	}
	return out, nil
}

// ManifestStates counts the stored manifests of each fleet by state: "applying" while
// rows are still staged, "applied" after. The table holds one row per upload.
func (s *Store) ManifestStates(ctx context.Context) (map[string]map[string]int64, error) {
	return s.nestedCounts(ctx, "manifest states", `
		SELECT f.name, CASE WHEN m.applied_at IS NULL THEN 'applying' ELSE 'applied' END, count(*)
		FROM manifests m JOIN fleets f ON f.id = m.fleet_id
		GROUP BY 1, 2`)
}

// JobCounts counts River's jobs by kind and state. River deletes finished jobs after
// a retention period, so the table stays small.
func (s *Store) JobCounts(ctx context.Context) (map[string]map[string]int64, error) {
	return s.nestedCounts(ctx, "job counts", `SELECT kind, state::text, count(*) FROM river_job GROUP BY 1, 2`)
}

// OldestAvailableJobs is, per kind, how long the oldest job that could run now has
// waited for a worker: a queue that is stuck shows as an age that keeps growing.
func (s *Store) OldestAvailableJobs(ctx context.Context) (map[string]time.Duration, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT kind, extract(epoch FROM now() - min(scheduled_at))::float8 FROM river_job
		WHERE state = 'available' AND scheduled_at <= now() GROUP BY kind`)
	if err != nil {
		return nil, fmt.Errorf("oldest available jobs: %w", err)
	}
	out := map[string]time.Duration{}
	var kind string
	var seconds float64
	_, err = pgx.ForEachRow(rows, []any{&kind, &seconds}, func() error {
		out[kind] = time.Duration(seconds * float64(time.Second))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("oldest available jobs: %w", err)
	}
	return out, nil
}

// WebhookBacklog is the outbox: events still to deliver and events given up on.
func (s *Store) WebhookBacklog(ctx context.Context) (pending, dead int64, err error) {
	err = s.pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE delivered_at IS NULL AND dead_at IS NULL), count(*) FILTER (WHERE dead_at IS NOT NULL)
		FROM webhook_events WHERE delivered_at IS NULL`).Scan(&pending, &dead)
	if err != nil {
		return 0, 0, fmt.Errorf("webhook backlog: %w", err)
	}
	return pending, dead, nil
}

// LatestManifestID is the newest manifest's id, 0 when there is none.
func (s *Store) LatestManifestID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM manifests`).Scan(&id); err != nil {
		return 0, fmt.Errorf("latest manifest: %w", err)
	}
	return id, nil
}

// ManifestsAfter are the ids of the manifests stored after id, oldest first.
func (s *Store) ManifestsAfter(ctx context.Context, id int64) ([]int64, error) {
	return column[int64](ctx, s.pool, "manifests after", `SELECT id FROM manifests WHERE id > $1 ORDER BY id`, id)
}

// SettledManifest is a manifest all of whose rows are settled: applied, and no device
// it last set still owes work or waits for readiness.
type SettledManifest struct {
	ID       int64
	Fleet    string
	Rows     int
	Took     time.Duration    // from upload to now
	ByStatus map[string]int64 // its devices by status
}

// SettledAmong returns those of the manifests ids that are settled now. An unsettled
// manifest costs an index probe that stops at its first device with work left.
func (s *Store) SettledAmong(ctx context.Context, ids []int64) ([]SettledManifest, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT m.id, f.name, m.row_count, extract(epoch FROM now() - m.uploaded_at)::float8,
		       (SELECT jsonb_object_agg(status, n) FROM (
		           SELECT d.status, count(*) AS n FROM devices d WHERE d.manifest_id = m.id GROUP BY d.status) c)
		FROM manifests m JOIN fleets f ON f.id = m.fleet_id
		WHERE m.id = ANY ($1) AND m.applied_at IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.manifest_id = m.id
		                  AND (d.op IS NOT NULL OR d.status NOT IN `+settledSQL+`))
		ORDER BY m.id`, ids)
	if err != nil {
		return nil, fmt.Errorf("settled manifests: %w", err)
	}
	var out []SettledManifest
	var m SettledManifest
	var seconds float64
	_, err = pgx.ForEachRow(rows, []any{&m.ID, &m.Fleet, &m.Rows, &seconds, &m.ByStatus}, func() error {
		m.Took = time.Duration(seconds * float64(time.Second))
		out = append(out, m)
		m.ByStatus = nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("settled manifests: %w", err)
	}
	return out, nil
}
