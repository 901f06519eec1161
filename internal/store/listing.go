package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A Listing holds what one reconciliation run compares: the addresses the store knew
// before the account was listed, and the addresses listed. Both live in temporary
// tables of a connection the Listing holds until Close, and the comparisons are
// queries, so that listing an account of a million addresses costs the process a
// page of them in memory, not the million (three maps of them took 850 MB).
type Listing struct {
	conn    *pgxpool.Conn
	pending []string // listed, not yet copied
	known   int
}

// AddressListing is what a reconciliation run compares (Listing is the store's);
// an interface so that a run can be tested with a listing of its own.
type AddressListing interface {
	Known() int
	Add(ctx context.Context, address string) error
	Done(ctx context.Context) (int, error)
	Unlisted(ctx context.Context) ([]KnownDevice, error)
	Unknown(ctx context.Context) ([]string, error)
	Close()
}

var _ AddressListing = (*Listing)(nil)

// listingFlush is how many listed addresses are copied to the database at a time.
const listingFlush = 10_000

// NewListing takes a connection of its own and the snapshot of the addresses the
// store holds now; Close gives the connection back.
func (s *Store) NewListing(ctx context.Context) (AddressListing, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing: %w", err)
	}
	l := &Listing{conn: conn}
	// Temporary tables are the connection's own: dropped first in case a run that
	// failed left them behind on this pooled connection.
	for _, q := range []string{
		`DROP TABLE IF EXISTS pg_temp.reconcile_known_before, pg_temp.reconcile_listed`,
		`CREATE TEMP TABLE reconcile_known_before AS
			SELECT cloud_address AS address FROM devices WHERE cloud_address IS NOT NULL`,
		`CREATE TEMP TABLE reconcile_listed (address text NOT NULL)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			l.Close()
			return nil, fmt.Errorf("listing: %w", err)
		}
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM reconcile_known_before`).Scan(&l.known); err != nil {
		l.Close()
		return nil, fmt.Errorf("listing: %w", err)
	}
	return l, nil
}

// Known is how many addresses the store held when the listing began.
func (l *Listing) Known() int { return l.known }

// Add records a listed address.
func (l *Listing) Add(ctx context.Context, address string) error {
	l.pending = append(l.pending, address)
	if len(l.pending) >= listingFlush {
		return l.flush(ctx)
	}
	return nil
}

func (l *Listing) flush(ctx context.Context) error {
	if len(l.pending) == 0 {
		return nil
	}
	_, err := l.conn.CopyFrom(ctx, pgx.Identifier{"reconcile_listed"}, []string{"address"},
		pgx.CopyFromSlice(len(l.pending), func(i int) ([]any, error) { return []any{l.pending[i]}, nil }))
	if err != nil {
		return fmt.Errorf("listing: %w", err)
	}
	l.pending = l.pending[:0]
	return nil
}

// Done ends the listing and returns how many distinct addresses were listed.
func (l *Listing) Done(ctx context.Context) (int, error) {
	if err := l.flush(ctx); err != nil {
		return 0, err
	}
	l.pending = nil
	var n int
	for _, q := range []string{`CREATE INDEX ON reconcile_listed (address)`, `ANALYZE reconcile_listed`, `ANALYZE reconcile_known_before`} {
		if _, err := l.conn.Exec(ctx, q); err != nil {
			return 0, fmt.Errorf("listing: %w", err)
		}
	}
	if err := l.conn.QueryRow(ctx, `SELECT count(DISTINCT address) FROM reconcile_listed`).Scan(&n); err != nil {
		return 0, fmt.Errorf("listing: %w", err)
	}
	return n, nil
}

// Unlisted returns the devices that held an address before the listing began, hold
// it still, and were not listed: the addresses that may have vanished. In address
// order.
func (l *Listing) Unlisted(ctx context.Context) ([]KnownDevice, error) {
	rows, err := l.conn.Query(ctx, `
		SELECT d.id, f.name, d.device_id, d.cloud_address, d.status,
		       d.op IS NOT NULL OR coalesce(d.claim_until > now(), false)
		FROM reconcile_known_before kb
		JOIN devices d ON d.cloud_address = kb.address
		JOIN fleets f ON f.id = d.fleet_id
		WHERE NOT EXISTS (SELECT 1 FROM reconcile_listed l WHERE l.address = kb.address)
		ORDER BY d.cloud_address`)
	if err != nil {
		return nil, fmt.Errorf("unlisted addresses: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[KnownDevice])
}

// Unknown returns the listed addresses that no device holds now, in address order.
func (l *Listing) Unknown(ctx context.Context) ([]string, error) {
	rows, err := l.conn.Query(ctx, `
		SELECT DISTINCT l.address FROM reconcile_listed l
		WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.cloud_address = l.address)
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("unknown addresses: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Close drops the listing's tables and gives its connection back. A connection that
// cannot drop them is closed instead, and its tables with it.
func (l *Listing) Close() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.conn.Exec(ctx, `DROP TABLE IF EXISTS pg_temp.reconcile_known_before, pg_temp.reconcile_listed`); err != nil {
		_ = l.conn.Conn().Close(ctx)
	}
	l.conn.Release()
	l.conn = nil
}
