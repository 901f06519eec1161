package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/fleet"
)

// A manifest is accepted in two steps. The upload validates it and stores its rows,
// as written, in a table of its own (stagedTable): one COPY, no index, so a
// million-row manifest is stored in about the time psql's \copy takes. Applying the
// rows to devices (upserting a million rows into a table with five indexes takes ten
// times longer) happens afterwards, in batches of table blocks, each in a
// transaction of its own that also advances the manifest's cursor: a River job does
// it for large manifests, the upload itself for small ones. Work can start on the
// devices of the first batch while later ones are applied.
//
// Uploads to one fleet (once their rows are staged) and the batches of its manifests
// all take the fleet's row lock, and an upload first applies whatever earlier manifest of the fleet is still
// staged, so an upload's plan is always computed against the fleet as every earlier
// manifest left it.

// DefaultInlineApplyRows is the largest manifest applied inside its upload's
// transaction unless IngestRequest.InlineApplyRows says otherwise.
const DefaultInlineApplyRows = 10_000

// applyBatchBlocks is how many table blocks one batch applies: about 8,000 rows.
const applyBatchBlocks = 128

// stagedColumns are the columns of a staged manifest table, in COPY order.
var stagedColumns = []string{
	"line", "device_id", "action", "groups", "allow_groups", "allow_devices", "state",
	"zenlayer_instance_id", "metadata", "spec_hash",
}

// stagedTable names (quoted) the table that holds a stored manifest's rows until
// they are applied.
func stagedTable(manifestID int64) string {
	return pgx.Identifier{stagedTableName(manifestID)}.Sanitize()
}

func stagedTableName(manifestID int64) string { return fmt.Sprintf("staged_manifest_%d", manifestID) }

// uploadTable names (quoted) a table for the rows of an upload that has no manifest id
// yet: ids go only to stored manifests, and the table is renamed to its stagedTable
// when the manifest is stored. Random, so that concurrent uploads never meet; the
// upload's transaction creates it, so nobody else ever sees it.
func uploadTable() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return pgx.Identifier{"staged_upload_" + hex.EncodeToString(b[:])}.Sanitize()
}

// createStagedTable creates table (quoted) for a manifest's rows, in stagedColumns.
func createStagedTable(ctx context.Context, tx pgx.Tx, table string) error {
	// Autovacuum has nothing to do on a table that is written once and dropped.
	_, err := tx.Exec(ctx, `CREATE TABLE `+table+` (
		line                 integer NOT NULL,
		device_id            text NOT NULL,
		action               text NOT NULL,
		groups               text, -- the cells as written: ';'-separated, NULL when empty
		allow_groups         text,
		allow_devices        text,
		state                text NOT NULL,
		zenlayer_instance_id text,
		metadata             jsonb, -- the metadata columns, checked by COPY: applying cannot fail on them
		spec_hash            bytea NOT NULL
	) WITH (autovacuum_enabled = false)`)
	if err != nil {
		return fmt.Errorf("create staged manifest table: %w", err)
	}
	return nil
}

// stagedManifest is a manifest whose rows are not all applied yet.
type stagedManifest struct {
	ID, FleetID int64
	Mode        fleet.Mode
	NextBlock   int64
}

// ErrFleetBusy: another transaction holds the fleet's lock; try the manifest later.
var ErrFleetBusy = errors.New("fleet busy")

// lockStaged locks the fleet of manifest id and reads its apply cursor; ok is false
// when the manifest is applied already (or does not exist), and the error is
// ErrFleetBusy when another transaction holds the fleet. The fleet's row lock is
// taken first and alone, as an upload takes it, so the two never wait on each other
// in opposite orders; every writer of a manifest's cursor holds it.
func lockStaged(ctx context.Context, tx pgx.Tx, id int64) (m stagedManifest, ok bool, err error) {
	m.ID = id
	err = tx.QueryRow(ctx, `SELECT fleet_id FROM manifests WHERE id = $1`, id).Scan(&m.FleetID)
	if err == nil {
		// SKIP LOCKED: a fleet locked by another transaction is busy with an upload
		// (which applies the manifest itself) or another batch; waiting for it would
		// only hold a connection and a worker.
		var locked int64
		err = tx.QueryRow(ctx, `SELECT id FROM fleets WHERE id = $1 FOR UPDATE SKIP LOCKED`, m.FleetID).Scan(&locked)
		if errors.Is(err, pgx.ErrNoRows) {
			return m, false, ErrFleetBusy
		}
	}
	var mode string
	if err == nil {
		err = tx.QueryRow(ctx, `SELECT mode, next_block FROM manifests WHERE id = $1 AND applied_at IS NULL`, id).
			Scan(&mode, &m.NextBlock)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("lock staged manifest %d: %w", id, err)
	}
	m.Mode = fleet.Mode(mode)
	return m, true, nil
}

// ApplyStaged applies the next batch of a staged manifest's rows in a transaction of
// its own, and finishes the manifest after its last batch. It reports whether the
// manifest is fully applied. Safe to call from several processes at once: the
// fleet's row lock serializes them, and a batch commits with its cursor.
func (s *Store) ApplyStaged(ctx context.Context, manifestID int64, consoleURLs EnqueueConsoleURLsFunc) (done bool, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		m, ok, err := lockStaged(ctx, tx, manifestID)
		if err != nil || !ok {
			done = err == nil
			return err
		}
		done, err = applyStep(ctx, tx, m, applyBatchBlocks, consoleURLs)
		return err
	})
	return done, err
}

// StalledManifests lists the manifests still being applied that have not advanced
// for stalledFor: their job died with its process, or was discarded.
func (s *Store) StalledManifests(ctx context.Context, stalledFor time.Duration) ([]int64, error) {
	return column[int64](ctx, s.pool, "stalled manifests", `
		SELECT id FROM manifests
		WHERE applied_at IS NULL AND coalesce(apply_progress_at, uploaded_at) < now() - $1::interval
		ORDER BY id`, stalledFor)
}

// applyStagedOfFleet applies, in tx, every staged manifest of a fleet whose row lock
// tx holds.
func applyStagedOfFleet(ctx context.Context, tx pgx.Tx, fleetID int64, consoleURLs EnqueueConsoleURLsFunc) error {
	ids, err := column[int64](ctx, tx, "staged manifests",
		`SELECT id FROM manifests WHERE fleet_id = $1 AND applied_at IS NULL ORDER BY id`, fleetID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		m, ok, err := lockStaged(ctx, tx, id)
		if err != nil {
			return err
		}
		if ok {
			if _, err := applyStep(ctx, tx, m, 0, consoleURLs); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyStep applies up to maxBlocks blocks of m's staged rows (all of them when
// maxBlocks is 0), and finishes m when none are left.
func applyStep(ctx context.Context, tx pgx.Tx, m stagedManifest, maxBlocks int64, consoleURLs EnqueueConsoleURLsFunc) (done bool, err error) {
	table := stagedTable(m.ID)
	var blocks int64
	if err := tx.QueryRow(ctx, `SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint`, table).Scan(&blocks); err != nil {
		return false, fmt.Errorf("size of staged manifest %d: %w", m.ID, err)
	}
	to := blocks
	if maxBlocks > 0 {
		to = min(blocks, m.NextBlock+maxBlocks)
	}
	key := WorkKeyForManifest(m.ID)
	if to > m.NextBlock {
		n, err := applyBlocks(ctx, tx, m, table, key, m.NextBlock, to)
		if err != nil {
			return false, err
		}
		if _, err := tx.Exec(ctx, `
			UPDATE manifests SET next_block = $2, applied_rows = applied_rows + $3, apply_progress_at = now()
			WHERE id = $1`,
			m.ID, to, n); err != nil {
			return false, fmt.Errorf("advance staged manifest %d: %w", m.ID, err)
		}
	}
	if to < blocks {
		return false, nil
	}
	return true, finishStaged(ctx, tx, m, table, key, consoleURLs)
}

// applyBlocks upserts the staged rows in blocks [from, to) into devices and returns
// how many it applied. One statement, driven by the (fleet_id, device_id) index
// whatever the planner believes of the tables' sizes; a device whose desired spec
// changed then gets its pending operation recomputed, unless a job holds a claim on
// it: that job recomputes it when it finishes, seeing the new spec_version, so no
// change is lost and no device is worked on twice at once.
func applyBlocks(ctx context.Context, tx pgx.Tx, m stagedManifest, table, key string, from, to int64) (int, error) {
	var n int
	var updated []int64
	err := tx.QueryRow(ctx, `
		WITH up AS (
		  INSERT INTO devices AS d (fleet_id, device_id, action, groups, allow_groups, allow_devices, desired_state,
		      zenlayer_instance_id, metadata, spec_hash, manifest_id, line, sort_key, status, op, work_key)
		  SELECT $1, s.device_id, s.action, string_to_array(s.groups, ';'), string_to_array(s.allow_groups, ';'),
		      string_to_array(s.allow_devices, ';'), s.state, s.zenlayer_instance_id, s.metadata, s.spec_hash,
		      $2, s.line,
		      -- Connect devices first (the listen devices that name them need their
		      -- addresses), then by first group, so a factory line is provisioned together.
		      CASE s.action WHEN 'listen' THEN '1' ELSE '0' END
		        || coalesce(split_part(s.groups, ';', 1), split_part(s.allow_groups, ';', 1), ''),
		      CASE WHEN s.state = 'present' THEN 'pending' ELSE 'deleted' END,
		      CASE WHEN s.state = 'present' THEN 'create' END,
		      CASE WHEN s.state = 'present' THEN $3 END
		  FROM `+table+` s
		  WHERE s.ctid >= format('(%s,0)', $4::bigint)::tid AND s.ctid < format('(%s,0)', $5::bigint)::tid
		  ON CONFLICT (fleet_id, device_id) DO UPDATE SET
		      action = EXCLUDED.action,
		      groups = EXCLUDED.groups,
		      allow_groups = EXCLUDED.allow_groups,
		      allow_devices = EXCLUDED.allow_devices,
		      desired_state = EXCLUDED.desired_state,
		      zenlayer_instance_id = EXCLUDED.zenlayer_instance_id,
		      metadata = EXCLUDED.metadata,
		      spec_hash = EXCLUDED.spec_hash,
		      sort_key = EXCLUDED.sort_key,
		      manifest_id = EXCLUDED.manifest_id,
		      line = EXCLUDED.line,
		      spec_version = d.spec_version
		          + (d.spec_hash <> EXCLUDED.spec_hash OR d.desired_state <> EXCLUDED.desired_state)::int,
		      -- A failed device is tried again when its row changes; an unchanged row
		      -- leaves it failed until an explicit retry.
		      status = CASE WHEN d.status = 'failed'
		                     AND (d.spec_hash <> EXCLUDED.spec_hash OR d.desired_state <> EXCLUDED.desired_state)
		                    THEN 'pending' ELSE d.status END,
		      updated_at = now()
		  -- xmax is 0 on a row this statement inserted, set on one it updated.
		  RETURNING d.id, d.xmax <> 0 AS updated
		)
		SELECT count(*), coalesce(array_agg(id) FILTER (WHERE updated), '{}') FROM up`,
		m.FleetID, m.ID, key, from, to).Scan(&n, &updated)
	if err != nil {
		return 0, fmt.Errorf("apply manifest %d: %w", m.ID, err)
	}
	return n, scheduleChanged(ctx, tx, updated, key)
}

// scheduleChanged recomputes the pending operation of the devices ids whose desired
// spec is ahead of the one applied, unless failed or claimed.
func scheduleChanged(ctx context.Context, tx pgx.Tx, ids []int64, key string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `
		UPDATE devices d SET `+resumeOpSQL+`, work_key = $2
		WHERE d.id = ANY ($1) AND d.applied_version < d.spec_version
		  AND d.status <> 'failed' AND (d.claim_until IS NULL OR d.claim_until < now())`, ids, key)
	if err != nil {
		return fmt.Errorf("schedule device work: %w", err)
	}
	return nil
}

// resumeCancelled resumes the devices the manifest names that an earlier cancel left
// cancelled (fleet.State.Resumed): uploading the manifest again is how an operator
// takes up cancelled work. Every device the manifest lists has its manifest_id by
// now; the status counters say at once whether any of them is cancelled, so a
// manifest without any costs one read of them.
func resumeCancelled(ctx context.Context, tx pgx.Tx, m stagedManifest, key string) error {
	var cancelled bool
	if err := tx.QueryRow(ctx, `
		SELECT coalesce(sum(devices), 0) > 0 FROM device_counts
		WHERE fleet_id = $1 AND manifest_id = $2 AND status = 'cancelled'`, m.FleetID, m.ID).Scan(&cancelled); err != nil {
		return fmt.Errorf("resume cancelled devices: %w", err)
	}
	if !cancelled {
		return nil
	}
	if _, err := tx.Exec(ctx, `
		UPDATE devices d SET `+resumeOpSQL+`, work_key = $2
		WHERE d.manifest_id = $1 AND d.status = 'cancelled'`, m.ID, key); err != nil {
		return fmt.Errorf("resume cancelled devices: %w", err)
	}
	return nil
}

// finishStaged ends a manifest's apply: a replace manifest marks absent every device
// of the fleet it did not list, console URL jobs are enqueued, and the staged rows go.
func finishStaged(ctx context.Context, tx pgx.Tx, m stagedManifest, table, key string, consoleURLs EnqueueConsoleURLsFunc) error {
	if err := resumeCancelled(ctx, tx, m, key); err != nil {
		return err
	}
	if m.Mode == fleet.ModeReplace {
		// Every device the manifest lists now has its manifest_id.
		omitted, err := column[int64](ctx, tx, "schedule replace deletions", `
			UPDATE devices d SET desired_state = 'absent', spec_version = spec_version + 1,
			    manifest_id = $2, updated_at = now()
			WHERE d.fleet_id = $1 AND d.desired_state = 'present' AND d.manifest_id IS DISTINCT FROM $2
			RETURNING d.id`, m.FleetID, m.ID)
		if err != nil {
			return err
		}
		if err := scheduleChanged(ctx, tx, omitted, key); err != nil {
			return err
		}
	}
	if consoleURLs != nil {
		wanted, err := consoleURLsWanted(ctx, tx, m.ID)
		if err != nil {
			return err
		}
		if len(wanted) > 0 {
			if err := consoleURLs(ctx, tx, wanted); err != nil {
				return fmt.Errorf("enqueue console URL jobs: %w", err)
			}
		}
	}
	var applied int
	if err := tx.QueryRow(ctx, `UPDATE manifests SET applied_at = now() WHERE id = $1 RETURNING applied_rows`, m.ID).Scan(&applied); err != nil {
		return fmt.Errorf("finish manifest %d: %w", m.ID, err)
	}
	if applied > DefaultInlineApplyRows {
		// The table may have grown many times over since autovacuum last looked: plans
		// made on the old statistics (a few rows) scan where they should look up.
		// The counters too: a status read of its groups is planned on them.
		if _, err := tx.Exec(ctx, `ANALYZE devices, device_counts, device_group_counts`); err != nil {
			return fmt.Errorf("analyze devices: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, `DROP TABLE `+table); err != nil {
		return fmt.Errorf("drop staged manifest %d: %w", m.ID, err)
	}
	return nil
}
