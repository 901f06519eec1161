package migrations

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Pending lists vncfleet's own migrations the database at pool lacks, and reports
// whether River's tables are missing, without changing anything: what `vncfleet
// doctor` and `serve` check before they rely on the schema.
func Pending(ctx context.Context, pool *pgxpool.Pool) (own []string, riverMissing bool, err error) {
	var hasTable bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('river_job') IS NULL, to_regclass('vncfleet_migrations') IS NOT NULL`).
		Scan(&riverMissing, &hasTable); err != nil {
		return nil, false, fmt.Errorf("migrations: %w", err)
	}
	all, err := Own()
	if err != nil {
		return nil, false, err
	}
	applied := map[string]bool{}
	if hasTable {
		if applied, err = appliedVersions(ctx, pool, "vncfleet_migrations"); err != nil {
			return nil, false, err
		}
	}
	for _, m := range all {
		if !applied[m.Version] {
			own = append(own, m.Version)
		}
	}
	return own, riverMissing, nil
}
