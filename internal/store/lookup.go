package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// CheckFleet returns nil when the fleet exists, an error wrapping ErrNotFound when
// it does not: a misspelt --fleet must not read as an empty fleet.
func (s *Store) CheckFleet(ctx context.Context, name string) error {
	var one int
	err := s.pool.QueryRow(ctx, `SELECT 1 FROM fleets WHERE name = $1`, name).Scan(&one)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("fleet %q: %w", name, ErrNotFound)
	case err != nil:
		return fmt.Errorf("fleet %q: %w", name, err)
	}
	return nil
}
