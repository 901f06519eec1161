package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrStillApplying refuses to cancel a manifest whose rows are still being applied to
// devices (a large upload, stage.go): its work is not all scheduled yet.
var ErrStillApplying = errors.New("manifest is still being applied to its devices; cancel it once it is applied")

// CancelResult says what cancelling a manifest did and where its devices stand.
type CancelResult struct {
	Manifest    int64     `json:"manifest"`
	CancelledAt time.Time `json:"cancelledAt"`
	// Cancelled counts the devices whose owed work this call dropped.
	Cancelled int `json:"cancelled"`
	// InFlight counts the devices whose call is being made now: it is not cut off, and
	// its result is recorded. Cancel again once they are done (InFlight 0) to drop what
	// such a result left owed (a transient failure's retry).
	InFlight int `json:"inFlight"`
	// ByStatus counts the manifest's devices afterwards: what was done and what not.
	ByStatus Counts `json:"byStatus"`
}

// CancelManifest is the one rule of cancelling: every device the manifest last set
// that owes a create, update or delete the manifest asked for, and that no live claim
// holds, owes nothing any more and says 'cancelled'. A claimed device is left to its
// in-flight call (no request is cut in the middle); devices already created, or
// awaiting readiness, keep what was done. Rotations are not the manifest's work and are
// left alone. It is idempotent: calling it again drops what in-flight calls left owed.
func (s *Store) CancelManifest(ctx context.Context, id int64, actor string) (*CancelResult, error) {
	res := &CancelResult{Manifest: id}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var applied *time.Time
		err := tx.QueryRow(ctx, `
			UPDATE manifests SET cancelled_at = coalesce(cancelled_at, now()), cancelled_by = coalesce(cancelled_by, $2)
			WHERE id = $1 RETURNING applied_at, cancelled_at`, id, actor).Scan(&applied, &res.CancelledAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("manifest %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("cancel manifest %d: %w", id, err)
		}
		if applied == nil {
			return fmt.Errorf("manifest %d: %w", id, ErrStillApplying)
		}
		// A row a claim holds is locked by the claiming transaction only briefly; once
		// that commits, the re-checked claim_until excludes it here.
		tag, err := tx.Exec(ctx, `
			UPDATE devices SET op = NULL, status = 'cancelled', work_key = NULL, next_attempt_at = NULL,
			    attempts = 0, updated_at = now()
			WHERE manifest_id = $1 AND op IN ('create', 'update', 'delete')
			  AND (claim_until IS NULL OR claim_until < now())`, id)
		if err != nil {
			return fmt.Errorf("cancel manifest %d: %w", id, err)
		}
		res.Cancelled = int(tag.RowsAffected())
		if err := tx.QueryRow(ctx, `
			SELECT count(*) FROM devices
			WHERE manifest_id = $1 AND op IN ('create', 'update', 'delete') AND claim_until >= now()`, id).Scan(&res.InFlight); err != nil {
			return fmt.Errorf("cancel manifest %d: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res.ByStatus, err = s.countedByStatus(ctx, id); err != nil {
		return nil, err
	}
	return res, nil
}

// ManifestOfWorkKey is the manifest whose work queue key is (WorkKeyForManifest).
func ManifestOfWorkKey(key string) (int64, bool) {
	rest, ok := strings.CutPrefix(key, "manifest:")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	return id, err == nil && id > 0
}

// ManifestCancelled reports whether the manifest was cancelled: running work checks
// it so that no call starts after a cancel.
func (s *Store) ManifestCancelled(ctx context.Context, id int64) (bool, error) {
	var yes bool
	err := s.pool.QueryRow(ctx, `SELECT cancelled_at IS NOT NULL FROM manifests WHERE id = $1`, id).Scan(&yes)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("manifest %d: %w", id, err)
	}
	return yes, nil
}
