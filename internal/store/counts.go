package store

import (
	"context"
	"fmt"
	"sync"
	"time"

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

// groupScope is whose groups a page reads: a fleet's (every fleet's when fleet is
// ""), or one manifest's when manifest is set.
type groupScope struct {
	fleet    string
	manifest int64
}

// keys is the CTE that names the scope's (fleet, manifest) pairs with counters, as
// keys, and its argument ($1): each pair is a range of the group counters' key.
func (sc groupScope) keys() (sql string, arg any) {
	if sc.manifest != 0 {
		return `
	WITH keys AS (SELECT fleet_id, id AS manifest_id FROM manifests WHERE id = $1)`, sc.manifest
	}
	return `
	WITH keys AS (
		SELECT DISTINCT fleet_id, manifest_id FROM device_counts
		WHERE $1 = '' OR fleet_id = (SELECT id FROM fleets WHERE name = $1))`, sc.fleet
}

// groupPage reads the page of groups q asks for, summed over the scope's (fleet,
// manifest) pairs, with the number of groups that have devices and the groups_after
// of the next page (nil on the last). The page is found in the counters' key order,
// one index range per pair that has counters, so it costs the same at the first
// group as at the hundred-thousandth; the count reads each group's rows once,
// without summing them.
func (s *Store) groupPage(ctx context.Context, scope groupScope, q GroupQuery) (*GroupPage, error) {
	limit := q.Groups
	switch {
	case limit == 0:
		limit = DefaultStatusGroups
	case limit < 0:
		limit = 0
	}
	limit = min(limit, MaxStatusGroups)
	page := &GroupPage{}
	var err error
	if page.Groups, page.GroupsCountedAt, err = s.groupCount(ctx, scope); err != nil {
		return nil, err
	}
	keysSQL, arg := scope.keys()
	err = func() error {
		if q.OnlyGroup {
			page.ByGroup, err = groupCounts(s.pool.Query(ctx, keysSQL+`
				SELECT $2::text, c.status, sum(c.devices) FROM keys k, LATERAL (
					SELECT c.status, c.devices FROM device_group_counts c
					WHERE c.fleet_id = k.fleet_id AND c.manifest_id = k.manifest_id AND c.grp = $2
					OFFSET 0) c
				GROUP BY 1, 2 HAVING sum(c.devices) <> 0`, arg, q.Group))
			return err
		}
		page.ByGroup = map[string]Counts{}
		if limit == 0 {
			return nil
		}
		// The first limit+1 groups after the cursor of each (fleet, manifest),
		// merged, then the first limit+1 of those: the page, and whether another
		// follows it, in which case its last group is the next page's cursor. Every
		// step is a range or a lookup of the counters' key, written as such: right
		// after a large apply the planner's statistics say the counters are a few rows,
		// and a join it chose on them read all 100,000 for a page (0.9 s).
		rows, err := s.pool.Query(ctx, keysSQL+`,
			ahead AS (
				SELECT DISTINCT g.grp FROM keys k, LATERAL (
					SELECT DISTINCT c.grp FROM device_group_counts c
					WHERE c.fleet_id = k.fleet_id AND c.manifest_id = k.manifest_id AND ($2::text IS NULL OR c.grp > $2)
					ORDER BY c.grp LIMIT $3 + 1) g
				ORDER BY 1 LIMIT $3 + 1),
			page AS (SELECT grp FROM ahead ORDER BY 1 LIMIT $3),
			bounds AS (SELECT (SELECT count(*) FROM ahead) AS n, (SELECT max(grp) FROM page) AS last)
			SELECT b.n, b.last, c.grp, c.status, c.devices
			FROM bounds b LEFT JOIN (
				SELECT p.grp, c.status, sum(c.devices) AS devices
				FROM keys k CROSS JOIN page p, LATERAL (
					SELECT c.status, c.devices FROM device_group_counts c
					WHERE c.fleet_id = k.fleet_id AND c.manifest_id = k.manifest_id AND c.grp = p.grp
					OFFSET 0) c -- a lookup per group: not flattened into a join
				GROUP BY 1, 2 HAVING sum(c.devices) <> 0) c ON true
			ORDER BY 3, 4`,
			arg, q.GroupsAfter, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ahead int
			var last, group, status *string
			var n *int
			if err := rows.Scan(&ahead, &last, &group, &status, &n); err != nil {
				return err
			}
			if ahead > limit {
				page.NextGroupsAfter = last
			}
			if group == nil {
				continue // an empty page
			}
			if page.ByGroup[*group] == nil {
				page.ByGroup[*group] = Counts{}
			}
			page.ByGroup[*group][*status] = *n
		}
		return rows.Err()
	}()
	if err != nil {
		return nil, fmt.Errorf("counts by group: %w", err)
	}
	return page, nil
}

// Counting a hundred thousand groups takes longer than the rest of a status read
// (0.2-0.4 s on two busy cores), and the number changes only when manifests add or
// regroup devices: a fleet or manifest with at least manyGroups groups has its count
// kept here for groupCountMaxAge, then served for as long again while a count afresh
// runs in the background, so it is never more than twice that old. Smaller ones are
// counted on every read, exactly.
const (
	manyGroups       = 10_000
	groupCountMaxAge = 30 * time.Second
	groupCountTime   = time.Minute // bounds a background count
)

// groupCountCache caches the group counts of fleets and manifests with many groups.
type groupCountCache struct {
	mu      sync.Mutex
	byScope map[groupScope]*groupCounted
}

type groupCounted struct {
	n          int
	at         time.Time
	refreshing bool
}

// groupCount counts the groups with devices of a scope: from the cache when it has
// many (with the time it was counted), afresh otherwise.
func (s *Store) groupCount(ctx context.Context, scope groupScope) (int, *time.Time, error) {
	c := s.groups
	c.mu.Lock()
	e := c.byScope[scope]
	// Fresh, it is served; older, it is served while counted afresh in the
	// background; older than twice the age (nobody asked meanwhile), it is counted
	// now.
	if e != nil && time.Since(e.at) <= 2*groupCountMaxAge {
		n, at := e.n, e.at
		if time.Since(at) > groupCountMaxAge && !e.refreshing {
			e.refreshing = true
			go s.recountGroups(scope, e)
		}
		c.mu.Unlock()
		return n, &at, nil
	}
	c.mu.Unlock()
	n, err := s.countGroups(ctx, scope)
	if err != nil || n < manyGroups {
		if err == nil {
			c.mu.Lock()
			delete(c.byScope, scope)
			c.mu.Unlock()
		}
		return n, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.byScope[scope] = &groupCounted{n: n, at: now}
	return n, &now, nil
}

// recountGroups counts a cached scope's groups afresh, in the background; one that
// has fewer than manyGroups now leaves the cache.
func (s *Store) recountGroups(scope groupScope, e *groupCounted) {
	ctx, cancel := context.WithTimeout(context.Background(), groupCountTime)
	defer cancel()
	at := time.Now()
	n, err := s.countGroups(ctx, scope)
	c := s.groups
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refreshing = false
	switch {
	case err != nil: // the stale count stays; the next read tries again
	case n < manyGroups:
		delete(c.byScope, scope)
	default:
		e.n, e.at = n, at
	}
}

// countGroups counts the groups with devices of a scope.
func (s *Store) countGroups(ctx context.Context, scope groupScope) (int, error) {
	var n int
	keysSQL, arg := scope.keys()
	err := s.pool.QueryRow(ctx, keysSQL+`
		SELECT count(DISTINCT c.grp) FROM keys k JOIN device_group_counts c USING (fleet_id, manifest_id)
		WHERE c.devices <> 0`, arg).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count groups: %w", err)
	}
	return n, nil
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
