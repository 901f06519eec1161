package store

import "context"

// FleetStatusCounts is how many devices each fleet has in each status (fleet name →
// status → devices).
//
// Temporary: this counts with a GROUP BY over every device, a full scan that costs
// about a second at a million devices, so callers must cache it (internal/metrics
// refreshes it in the background, never per scrape). The exact O(1) counters of the
// console work replace this function with the same signature.
func (s *Store) FleetStatusCounts(ctx context.Context) (map[string]map[string]int64, error) {
	return s.nestedCounts(ctx, "fleet status counts", `
		SELECT f.name, d.status, count(*) FROM devices d JOIN fleets f ON f.id = d.fleet_id
		GROUP BY f.name, d.status`)
}
