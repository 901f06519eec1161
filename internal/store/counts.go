package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The status counters (migrations/sql/0008_status_counters.sql) are kept by triggers
// on devices in the transactions that change them: the readers here sum a few counter
// rows (one per shard) instead of counting devices, so a progress read costs the same
// for ten devices as for a million. A device counts in every group it belongs to: a
// connect device in each of its groups, a listen device in each of its allow_groups;
// one with none under "".

// FleetStatusCounts is every fleet's devices by status: fleet name → status → devices.
// Fleets without devices are absent.
func (s *Store) FleetStatusCounts(ctx context.Context) (map[string]map[string]int64, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT f.name, c.status, sum(c.devices)
		FROM device_counts c JOIN fleets f ON f.id = c.fleet_id
		GROUP BY 1, 2 HAVING sum(c.devices) <> 0`)
	if err != nil {
		return nil, fmt.Errorf("fleet status counts: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]int64{}
	for rows.Next() {
		var fleetName, status string
		var n int64
		if err := rows.Scan(&fleetName, &status, &n); err != nil {
			return nil, fmt.Errorf("fleet status counts: %w", err)
		}
		if out[fleetName] == nil {
			out[fleetName] = map[string]int64{}
		}
		out[fleetName][status] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fleet status counts: %w", err)
	}
	return out, nil
}

// countedByStatus sums one manifest's counters by status.
func (s *Store) countedByStatus(ctx context.Context, manifestID int64) (Counts, error) {
	return statusCounts(s.pool.Query(ctx, `
		SELECT status, sum(devices) FROM device_counts
		WHERE fleet_id = (SELECT fleet_id FROM manifests WHERE id = $1) AND manifest_id = $1
		GROUP BY 1 HAVING sum(devices) <> 0`, manifestID))
}

// statusCounts collects rows of (status, devices).
func statusCounts(rows pgx.Rows, err error) (Counts, error) {
	if err != nil {
		return nil, fmt.Errorf("count devices: %w", err)
	}
	defer rows.Close()
	byStatus := Counts{}
	for rows.Next() {
		var status string
		var n int
		if err := rows.Scan(&status, &n); err != nil {
			return nil, fmt.Errorf("count devices: %w", err)
		}
		byStatus[status] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count devices: %w", err)
	}
	return byStatus, nil
}

// countedByGroup sums one manifest's group counters by group and status, in the
// order of their key.
func (s *Store) countedByGroup(ctx context.Context, manifestID int64) (map[string]Counts, error) {
	return groupCounts(s.pool.Query(ctx, `
		SELECT grp, status, sum(devices) FROM device_group_counts
		WHERE fleet_id = (SELECT fleet_id FROM manifests WHERE id = $1) AND manifest_id = $1
		GROUP BY 1, 2 HAVING sum(devices) <> 0 ORDER BY 1, 2`, manifestID))
}

// fleetCountedByGroup sums the group counters of every manifest of a fleet (of every
// fleet when fleetName is "") by group and status. The database sums per manifest, in
// the order of the counters' key (an index scan, where a hash table of 100,000 groups
// spilled to disk); the manifests are added up here.
func (s *Store) fleetCountedByGroup(ctx context.Context, fleetName string) (map[string]Counts, error) {
	return groupCounts(s.pool.Query(ctx, `
		SELECT grp, status, sum(devices) FROM device_group_counts
		WHERE $1 = '' OR fleet_id = (SELECT id FROM fleets WHERE name = $1)
		GROUP BY fleet_id, manifest_id, grp, status HAVING sum(devices) <> 0
		ORDER BY fleet_id, manifest_id, grp, status`, fleetName))
}

// groupCounts adds up rows of (group, status, devices).
func groupCounts(rows pgx.Rows, err error) (map[string]Counts, error) {
	if err != nil {
		return nil, fmt.Errorf("count devices by group: %w", err)
	}
	defer rows.Close()
	byGroup := map[string]Counts{}
	for rows.Next() {
		var group, status string
		var n int
		if err := rows.Scan(&group, &status, &n); err != nil {
			return nil, fmt.Errorf("count devices by group: %w", err)
		}
		if byGroup[group] == nil {
			byGroup[group] = Counts{}
		}
		byGroup[group][status] += n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count devices by group: %w", err)
	}
	return byGroup, nil
}

// CountsDrift compares every status counter with a full count of the devices and
// describes each difference, as "fleet 1 manifest 2 status ready: counted 9, devices
// 10" (or with "group g" for a group counter); none when the counters are exact. It
// reads the whole devices table, in one snapshot: for tests and diagnosis, not for
// the hot path.
func (s *Store) CountsDrift(ctx context.Context) ([]string, error) {
	var drift []string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`); err != nil {
			return err
		}
		var err error
		drift, err = column[string](ctx, tx, "compare counters", `
			WITH counted AS (
				SELECT fleet_id, manifest_id, false AS by_group, '' AS grp, status, sum(devices) AS n
				FROM device_counts GROUP BY 1, 2, 3, 4, 5
				UNION ALL
				SELECT fleet_id, manifest_id, true, grp, status, sum(devices) FROM device_group_counts GROUP BY 1, 2, 3, 4, 5),
			actual AS (
				SELECT fleet_id, coalesce(manifest_id, 0) AS manifest_id, false AS by_group, '' AS grp, status, count(*) AS n
				FROM devices GROUP BY 1, 2, 3, 4, 5
				UNION ALL
				SELECT fleet_id, coalesce(manifest_id, 0), true, g, status, count(*)
				FROM devices, unnest(vncfleet_count_groups(action, groups, allow_groups)) AS g GROUP BY 1, 2, 3, 4, 5)
			SELECT format('fleet %s manifest %s%s status %s: counted %s, devices %s',
			    fleet_id, manifest_id, CASE WHEN by_group THEN format(' group %L', grp) ELSE '' END,
			    status, coalesce(c.n, 0), coalesce(a.n, 0))
			FROM counted c FULL JOIN actual a USING (fleet_id, manifest_id, by_group, grp, status)
			WHERE coalesce(c.n, 0) <> coalesce(a.n, 0)
			ORDER BY 1`)
		return err
	})
	return drift, err
}
