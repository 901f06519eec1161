package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vncfleet/vncfleet/fleet"
)

// IngestRequest is one manifest upload.
type IngestRequest struct {
	Fleet    string     // fleet name; "default" when empty
	Mode     fleet.Mode // merge or replace
	DryRun   bool       // compute and return the plan, store nothing
	Uploader string     // who sent it (token name), recorded with the manifest
	// MaxDeletions bounds the deletions of a replace upload; negative means the
	// default: MaxDeletionsPercent of the fleet's present devices, at least MaxDeletionsMin.
	MaxDeletions        int
	MaxDeletionsPercent float64
	MaxDeletionsMin     int
	Body                io.Reader
	// Reader tunes the manifest reader: limits, separator, encoding (zero: the
	// contract's format with the default limits).
	Reader fleet.ReaderOptions
	// Enqueue inserts the jobs that carry out the plan, in the upload's transaction, so
	// that an upload is stored with its jobs or not at all.
	Enqueue func(ctx context.Context, tx pgx.Tx, workKey string, devices int) error
	// EnqueueConsoleURLs inserts the Zenlayer console URL jobs, in the transaction
	// that applies the manifest's rows.
	EnqueueConsoleURLs EnqueueConsoleURLsFunc
	// EnqueueApply inserts, in the upload's transaction, the job that applies a
	// manifest of more than InlineApplyRows rows to devices (ApplyStaged). When nil,
	// every manifest is applied inside its upload's transaction.
	EnqueueApply func(ctx context.Context, tx pgx.Tx, manifestID int64) error
	// InlineApplyRows overrides DefaultInlineApplyRows when positive.
	InlineApplyRows int
}

// EnqueueConsoleURLsFunc inserts Zenlayer console URL jobs in tx.
type EnqueueConsoleURLsFunc func(ctx context.Context, tx pgx.Tx, wanted []ConsoleURLWanted) error

// Plan is what an upload changes.
type Plan struct {
	Creates   int `json:"creates"`
	Updates   int `json:"updates"`
	Deletes   int `json:"deletes"`
	Unchanged int `json:"unchanged"`
	// Resumes counts the devices listed whose work an earlier cancel stopped: the
	// upload takes it up again (fleet.State.Resumed).
	Resumes    int          `json:"resumes"`
	CreateIDs  []string     `json:"createIds"`
	UpdateList []PlanUpdate `json:"updateList"`
	DeleteIDs  []string     `json:"deleteIds"`
	// MaxDeletions is the replace guard's limit for this upload (replace mode only).
	MaxDeletions int `json:"maxDeletions,omitempty"`
	// Warnings are what the upload may do but is likely not meant (warnings.go);
	// they never block it.
	Warnings []string `json:"warnings,omitempty"`
}

// PlanUpdate is a device whose desired spec changes, and which fields change.
type PlanUpdate struct {
	DeviceID string   `json:"deviceId"`
	Fields   []string `json:"fields"`
}

// Changes reports whether the plan would touch the cloud.
func (p Plan) Changes() bool { return p.Creates+p.Updates+p.Deletes+p.Resumes > 0 }

// planListCap bounds the create and update lists of a plan; the counts stay exact.
// Deletions are always listed in full: an operator must see every one.
const planListCap = 1000

// Manifest is a stored upload.
type Manifest struct {
	ID         int64     `json:"id"`
	Fleet      string    `json:"fleet"`
	Mode       string    `json:"mode"`
	Rows       int       `json:"rows"`
	SHA256     string    `json:"sha256"`
	Uploader   string    `json:"uploader"`
	UploadedAt time.Time `json:"uploadedAt"`
	// CancelledAt is when the manifest was cancelled (CancelManifest); nil if it was not.
	CancelledAt *time.Time `json:"cancelledAt,omitempty"`
}

// IngestResult is the outcome of a valid upload.
type IngestResult struct {
	Manifest  *Manifest // nil for a dry run
	Plan      Plan
	Unchanged bool // identical to the fleet's latest manifest: nothing stored
	WorkKey   string
	// Applied: the rows reached their devices inside the upload's transaction (a
	// manifest of up to InlineApplyRows rows); otherwise a job applies them.
	Applied bool
}

// DeletionGuardError refuses a replace upload that deletes more than allowed.
type DeletionGuardError struct {
	Plan         Plan
	MaxDeletions int
}

func (e *DeletionGuardError) Error() string {
	return fleet.OverDeletionLimit(e.Plan.Deletes, e.MaxDeletions)
}

// WorkKeyForManifest names the work queue of a manifest's devices.
func WorkKeyForManifest(id int64) string { return fmt.Sprintf("manifest:%d", id) }

// Ingest validates a manifest and, unless it is a dry run, stores it and enqueues its
// jobs in one transaction. An invalid manifest returns *fleet.Problems and leaves no
// trace; neither it nor a dry run uses up a manifest id.
//
// The upload happens in three steps, so that a slow or stalled client never holds the
// fleet: (1) stage: the body is streamed, validated row by row and stored with COPY
// into a table of the upload's own (stage.go), while the rules that span rows are
// checked with a compact index, so memory does not grow with the manifest beyond 16
// bytes per row; no lock is held but on that table. (2) lock the fleet, and under
// that lock settle the cross-row rules, compute the plan and (3) store the manifest,
// its jobs, and, when it is small, its rows' devices.
func (s *Store) Ingest(ctx context.Context, req IngestRequest) (*IngestResult, error) {
	if req.Fleet == "" {
		req.Fleet = "default"
	}
	if req.Mode == "" {
		req.Mode = fleet.ModeMerge
	}
	var result *IngestResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		result, err = s.ingestTx(ctx, tx, req)
		if err == nil && (req.DryRun || result.Unchanged) {
			// Nothing of it is kept: not the staged rows, not the manifest.
			return errRollback
		}
		return err
	})
	if errors.Is(err, errRollback) {
		return result, nil
	}
	if isLockTimeout(err) {
		return nil, fmt.Errorf("fleet %q: %w", req.Fleet, ErrFleetBusy)
	}
	if err != nil {
		return nil, err
	}
	return result, nil
}

// errRollback rolls back an upload that stores nothing: a dry run, or a manifest
// identical to the fleet's latest.
var errRollback = errors.New("rollback")

// ingestLockTimeout bounds how long an upload waits for its fleet's lock (and for any
// other lock it needs): the holder is another upload past its body, or a batch of a
// large manifest, which take seconds, so a wait this long means something is stuck,
// and the upload is answered "fleet busy" rather than waiting without end.
var ingestLockTimeout = time.Minute

// Bounds of the in-memory cross-row index (fleet.RowIndex): 64 MB at most. Beyond
// them the checks run in SQL over the staged rows, which is slower but exact.
// Variables so that tests can take the SQL path with small manifests.
var (
	indexMaxDevices = 4 << 20
	indexMaxPending = 1 << 20
)

// maxRejectedIDs bounds the device_ids of rejected rows remembered so that rows
// naming them are not reported a second time; beyond it they are (still correctly).
const maxRejectedIDs = 100_000

func (s *Store) ingestTx(ctx context.Context, tx pgx.Tx, req IngestRequest) (*IngestResult, error) {
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, ingestLockTimeout.Milliseconds())); err != nil {
		return nil, fmt.Errorf("ingest settings: %w", err)
	}
	// 1. Stage, holding nothing but the upload's own table.
	hash := sha256.New()
	rejected := map[string]bool{}
	readerOpts := req.Reader
	readerOpts.OnRejected = func(_ int, id string) {
		if len(rejected) < maxRejectedIDs {
			rejected[id] = true
		}
	}
	reader, err := fleet.NewReader(io.TeeReader(req.Body, hash), readerOpts)
	if err != nil {
		return nil, err
	}
	cols := reader.Columns()
	table := uploadTable()
	if err := createStagedTable(ctx, tx, table); err != nil {
		return nil, err
	}
	index := fleet.NewRowIndex(indexMaxDevices, indexMaxPending, planListCap)
	rows, err := copyManifest(ctx, tx, table, reader, index)
	if err != nil {
		return nil, err
	}
	problems := reader.Problems()

	// 2. Lock the fleet. The upsert holds the fleet's row lock until commit, so the
	// checks, plans and applies of uploads to one fleet are serialized and a replace
	// never races another upload. Earlier manifests still being applied are finished
	// first: the plan compares with what they leave.
	var fleetID int64
	if err := tx.QueryRow(ctx, `
		INSERT INTO fleets (name) VALUES ($1)
		ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
		RETURNING id`, req.Fleet).Scan(&fleetID); err != nil {
		return nil, fmt.Errorf("lock fleet %q: %w", req.Fleet, err)
	}
	if err := applyStagedOfFleet(ctx, tx, fleetID, req.EnqueueConsoleURLs); err != nil {
		return nil, err
	}
	// Hash joins over a large manifest want more than the default 4 MB.
	if _, err := tx.Exec(ctx, `SET LOCAL work_mem = '64MB'`); err != nil {
		return nil, fmt.Errorf("ingest settings: %w", err)
	}
	var fleetEmpty bool
	if err := tx.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM devices WHERE fleet_id = $1)`, fleetID).Scan(&fleetEmpty); err != nil {
		return nil, fmt.Errorf("read fleet: %w", err)
	}
	// The rules across rows are checked even when rows have problems of their own,
	// so that one answer lists every problem; a row naming a rejected row is not
	// reported again (fixing the rejected row is what it needs).
	skip := func(deviceID string) bool { return rejected[deviceID] }
	if err := crossRowProblems(ctx, tx, table, fleetID, req.Mode, fleetEmpty, cols, index, skip, problems); err != nil {
		return nil, err
	}
	if problems.Len() > 0 {
		return nil, problems
	}

	var plan Plan
	if fleetEmpty {
		// Nothing to compare with: every present row is a create.
		plan = Plan{Creates: index.Present, Unchanged: index.Absent, CreateIDs: index.FirstPresent}
	} else if plan, err = computePlan(ctx, tx, table, fleetID, req.Mode); err != nil {
		return nil, err
	}
	if plan.Warnings, err = planWarnings(ctx, tx, table, fleetID, req.Mode); err != nil {
		return nil, err
	}
	if req.Mode == fleet.ModeReplace {
		limit, err := maxDeletions(ctx, tx, fleetID, req)
		if err != nil {
			return nil, err
		}
		plan.MaxDeletions = limit
		// A dry run shows the plan whatever the guard would say, and says it.
		if plan.Deletes > limit && !req.DryRun {
			return nil, &DeletionGuardError{Plan: plan, MaxDeletions: limit}
		}
	}
	sum := hash.Sum(nil)
	if req.DryRun {
		return &IngestResult{Plan: plan}, nil
	}

	// The same bytes as the fleet's latest manifest, with nothing left to change:
	// nothing is stored and no API call follows.
	var latest Manifest
	var latestSum []byte
	err = tx.QueryRow(ctx, `
		SELECT m.id, m.mode, m.row_count, m.sha256, m.uploader, m.uploaded_at
		FROM manifests m WHERE m.fleet_id = $1 ORDER BY m.id DESC LIMIT 1`, fleetID).
		Scan(&latest.ID, &latest.Mode, &latest.Rows, &latestSum, &latest.Uploader, &latest.UploadedAt)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("read latest manifest: %w", err)
	}
	if err == nil && string(latestSum) == string(sum) && latest.Mode == string(req.Mode) && !plan.Changes() {
		latest.Fleet = req.Fleet
		latest.SHA256 = hex.EncodeToString(latestSum)
		return &IngestResult{Manifest: &latest, Plan: plan, Unchanged: true, WorkKey: WorkKeyForManifest(latest.ID)}, nil
	}

	// 3. Store. Only a manifest that is stored takes an id (from the sequence, which
	// a later failure of this transaction cannot give back: a gap then is rare).
	m := Manifest{Fleet: req.Fleet, Mode: string(req.Mode), Rows: int(rows), SHA256: hex.EncodeToString(sum), Uploader: req.Uploader}
	if err := tx.QueryRow(ctx, `
		INSERT INTO manifests (fleet_id, sha256, uploader, mode, row_count, creates, updates, deletes, unchanged,
		    apply_progress_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, clock_timestamp())
		RETURNING id, uploaded_at`,
		fleetID, sum, req.Uploader, string(req.Mode), rows, plan.Creates, plan.Updates, plan.Deletes, plan.Unchanged).
		Scan(&m.ID, &m.UploadedAt); err != nil {
		return nil, fmt.Errorf("store manifest: %w", err)
	}
	if _, err := tx.Exec(ctx, `ALTER TABLE `+table+` RENAME TO `+pgx.Identifier{stagedTableName(m.ID)}.Sanitize()); err != nil {
		return nil, fmt.Errorf("store manifest rows: %w", err)
	}
	key := WorkKeyForManifest(m.ID)
	inline := int64(DefaultInlineApplyRows)
	if req.InlineApplyRows > 0 {
		inline = int64(req.InlineApplyRows)
	}
	applied := rows <= inline || req.EnqueueApply == nil
	if applied {
		staged := stagedManifest{ID: m.ID, FleetID: fleetID, Mode: req.Mode}
		if _, err := applyStep(ctx, tx, staged, 0, req.EnqueueConsoleURLs); err != nil {
			return nil, err
		}
	} else if err := req.EnqueueApply(ctx, tx, m.ID); err != nil {
		return nil, fmt.Errorf("enqueue manifest apply: %w", err)
	}
	if plan.Changes() && req.Enqueue != nil {
		if err := req.Enqueue(ctx, tx, key, plan.Creates+plan.Updates+plan.Deletes); err != nil {
			return nil, fmt.Errorf("enqueue jobs: %w", err)
		}
	}
	return &IngestResult{Manifest: &m, Plan: plan, WorkKey: key, Applied: applied}, nil
}

// isLockTimeout reports PostgreSQL's lock_not_available (55P03): lock_timeout expired.
func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// crossRowProblems adds to problems those that need more than one row to see:
// duplicate device_ids, allow_devices that do not name a present connect device, and
// absent devices that a remaining listen device still names. The index answers most
// of it while the rows stream; what it cannot decide alone is settled here, in SQL.
// An allow_devices entry for which skip is true is not reported.
func crossRowProblems(ctx context.Context, tx pgx.Tx, table string, fleetID int64, mode fleet.Mode, fleetEmpty bool,
	cols map[string]int, index *fleet.RowIndex, skip func(deviceID string) bool, problems *fleet.Problems) error {
	var checks []crossCheck
	if index.Overflowed() {
		checks = sqlCrossChecks(table, fleetID, mode)
	} else {
		var found fleet.Problems
		checks = indexCrossChecks(table, fleetID, mode, fleetEmpty, index, cols, skip, &found)
		problems.Merge(&found)
	}
	if index.Absent > 0 && mode == fleet.ModeMerge && !fleetEmpty {
		checks = append(checks, crossCheck{
			column: fleet.ColState,
			// The fleet's allow_devices are unnested first, so that the staged rows (no
			// index) are joined by hash on one name rather than searched with ANY.
			sql: `SELECT s.line, s.device_id, d.device_id
				FROM devices d CROSS JOIN LATERAL unnest(d.allow_devices) AS u (dep)
				JOIN ` + table + ` s ON s.device_id = u.dep
				WHERE d.fleet_id = $1 AND d.desired_state = 'present' AND s.state = 'absent'
				  AND NOT EXISTS (SELECT 1 FROM ` + table + ` x WHERE x.device_id = d.device_id)
				ORDER BY s.line`,
			args: []any{fleetID},
			reason: func(id, listener string) string {
				return fmt.Sprintf("device %q is marked absent but listen device %q still names it in allow_devices", id, listener)
			},
		})
	}
	if len(checks) == 0 {
		return nil
	}
	// The staged table has no index: nested loops over it would take quadratic time.
	if _, err := tx.Exec(ctx, `SET LOCAL enable_nestloop = off`); err != nil {
		return fmt.Errorf("check manifest: %w", err)
	}
	for _, c := range checks {
		if c.column == fleet.ColAllowDevices {
			c.skip = skip
		}
		var found fleet.Problems
		if err := c.run(ctx, tx, cols, &found); err != nil {
			return err
		}
		problems.Merge(&found)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL enable_nestloop = on`); err != nil {
		return fmt.Errorf("check manifest: %w", err)
	}
	return nil
}

// crossCheck is a query whose rows (line, a, b), in line order, are problems of one
// column; a row whose a is skipped is none.
type crossCheck struct {
	column string
	sql    string
	args   []any
	reason func(a, b string) string
	skip   func(a string) bool
}

func (c crossCheck) run(ctx context.Context, tx pgx.Tx, cols map[string]int, problems *fleet.Problems) error {
	rows, err := tx.Query(ctx, c.sql, c.args...)
	if err != nil {
		return fmt.Errorf("check manifest (%s): %w", c.column, err)
	}
	defer rows.Close()
	for rows.Next() {
		var line int
		var a, b string
		if err := rows.Scan(&line, &a, &b); err != nil {
			return fmt.Errorf("check manifest (%s): %w", c.column, err)
		}
		if c.skip != nil && c.skip(a) {
			continue
		}
		problems.Add(fleet.Problem{Line: line, Column: cols[c.column], ColumnName: c.column, Reason: c.reason(a, b)})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check manifest (%s): %w", c.column, err)
	}
	return nil
}

var (
	duplicateReason = func(id, first string) string {
		return fmt.Sprintf("device_id %q is a duplicate of line %s", id, first)
	}
	notConnectReason = func(dep, _ string) string {
		return fmt.Sprintf("allow_devices names %q, which is not a present connect device of this manifest or fleet", dep)
	}
)

// indexCrossChecks turns the index's findings into problems, and returns the checks
// that need the database: confirming duplicate candidates against the stored rows,
// and looking up in the fleet the allow_devices entries the manifest does not list.
func indexCrossChecks(table string, fleetID int64, mode fleet.Mode, fleetEmpty bool, index *fleet.RowIndex,
	cols map[string]int, skip func(string) bool, problems *fleet.Problems) []crossCheck {
	var checks []crossCheck
	if refs := index.DuplicateCandidates(); len(refs) > 0 {
		lines, ids := splitRefs(refs)
		checks = append(checks, crossCheck{
			column: fleet.ColDeviceID,
			sql: `SELECT c.line, c.id, min(t.line)::text FROM unnest($1::int[], $2::text[]) AS c (line, id)
				JOIN ` + table + ` t ON t.device_id = c.id AND t.line < c.line
				GROUP BY c.line, c.id ORDER BY c.line`,
			args:   []any{lines, ids},
			reason: duplicateReason,
		})
	}
	listed, unlisted := index.Unresolved()
	listed = slices.DeleteFunc(listed, func(r fleet.RowRef) bool { return skip(r.DeviceID) })
	unlisted = slices.DeleteFunc(unlisted, func(r fleet.RowRef) bool { return skip(r.DeviceID) })
	wrong := listed
	if mode == fleet.ModeReplace || fleetEmpty {
		// A replace upload deletes what it does not list; an empty fleet has nothing.
		wrong, unlisted = append(wrong, unlisted...), nil
		slices.SortStableFunc(wrong, func(a, b fleet.RowRef) int { return cmp.Compare(a.Line, b.Line) })
	}
	for _, ref := range wrong {
		problems.Add(fleet.Problem{Line: ref.Line, Column: cols[fleet.ColAllowDevices], ColumnName: fleet.ColAllowDevices,
			Reason: notConnectReason(ref.DeviceID, "")})
	}
	if len(unlisted) == 0 {
		return checks
	}
	lines, ids := splitRefs(unlisted)
	return append(checks, crossCheck{
		column: fleet.ColAllowDevices,
		sql: `SELECT u.line, u.id, '' FROM unnest($1::int[], $2::text[]) AS u (line, id)
			WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.fleet_id = $3 AND d.device_id = u.id
			                  AND d.action = 'connect' AND d.desired_state = 'present')
			ORDER BY u.line`,
		args:   []any{lines, ids, fleetID},
		reason: notConnectReason,
	})
}

func splitRefs(refs []fleet.RowRef) ([]int32, []string) {
	lines := make([]int32, len(refs))
	ids := make([]string, len(refs))
	for i, r := range refs {
		lines[i], ids[i] = int32(r.Line), r.DeviceID
	}
	return lines, ids
}

// sqlCrossChecks are the cross-row rules in SQL alone, for a manifest too large for
// the index.
func sqlCrossChecks(table string, fleetID int64, mode fleet.Mode) []crossCheck {
	return []crossCheck{{
		column: fleet.ColDeviceID,
		sql: `SELECT line, device_id, first::text FROM (
				SELECT line, device_id, min(line) OVER (PARTITION BY device_id) AS first FROM ` + table + `) d
			WHERE line <> first ORDER BY line`,
		reason: duplicateReason,
	}, {
		column: fleet.ColAllowDevices,
		// A name is fine when the manifest lists it as a present connect device, or, in
		// merge mode, when the manifest leaves it alone and the fleet has it as one.
		sql: `SELECT s.line, dep, '' FROM ` + table + ` s, unnest(string_to_array(s.allow_devices, ';')) AS dep
			WHERE NOT EXISTS (SELECT 1 FROM ` + table + ` c WHERE c.device_id = dep AND c.action = 'connect' AND c.state = 'present')
			  AND NOT ($2 = 'merge'
			       AND NOT EXISTS (SELECT 1 FROM ` + table + ` x WHERE x.device_id = dep)
			       AND EXISTS (SELECT 1 FROM devices d WHERE d.fleet_id = $1 AND d.device_id = dep AND d.action = 'connect' AND d.desired_state = 'present'))
			ORDER BY s.line`,
		args:   []any{fleetID, string(mode)},
		reason: notConnectReason,
	}}
}

// maxDeletions is the replace guard's limit for this upload.
func maxDeletions(ctx context.Context, tx pgx.Tx, fleetID int64, req IngestRequest) (int, error) {
	if req.MaxDeletions >= 0 {
		return req.MaxDeletions, nil
	}
	var present int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM devices WHERE fleet_id = $1 AND desired_state = 'present'`, fleetID).Scan(&present); err != nil {
		return 0, fmt.Errorf("count fleet: %w", err)
	}
	limit := int(math.Floor(float64(present) * req.MaxDeletionsPercent / 100))
	return max(limit, req.MaxDeletionsMin), nil
}

// computePlan compares the staged manifest with the fleet.
func computePlan(ctx context.Context, tx pgx.Tx, table string, fleetID int64, mode fleet.Mode) (Plan, error) {
	var p Plan
	// A row is a create when the fleet has no present device by that id, an update
	// when its desired spec differs, a delete when it marks a present device absent.
	err := tx.QueryRow(ctx, `
		SELECT
		  count(*) FILTER (WHERE s.state = 'present' AND (d.id IS NULL OR d.desired_state = 'absent')),
		  count(*) FILTER (WHERE s.state = 'present' AND d.desired_state = 'present' AND d.spec_hash <> s.spec_hash),
		  count(*) FILTER (WHERE s.state = 'absent' AND d.desired_state = 'present'),
		  count(*) FILTER (WHERE (s.state = 'present' AND d.desired_state = 'present' AND d.spec_hash = s.spec_hash)
		                      OR (s.state = 'absent' AND (d.id IS NULL OR d.desired_state = 'absent'))),
		  count(*) FILTER (WHERE d.status = 'cancelled')
		FROM `+table+` s LEFT JOIN devices d ON d.fleet_id = $1 AND d.device_id = s.device_id`, fleetID).
		Scan(&p.Creates, &p.Updates, &p.Deletes, &p.Unchanged, &p.Resumes)
	if err != nil {
		return p, fmt.Errorf("plan: %w", err)
	}
	if mode == fleet.ModeReplace {
		var omitted int
		if err := tx.QueryRow(ctx, `
			SELECT count(*) FROM devices d
			WHERE d.fleet_id = $1 AND d.desired_state = 'present'
			  AND NOT EXISTS (SELECT 1 FROM `+table+` s WHERE s.device_id = d.device_id)`, fleetID).Scan(&omitted); err != nil {
			return p, fmt.Errorf("plan: %w", err)
		}
		p.Deletes += omitted
	}

	// Each list below joins the manifest with the fleet again: only the ones the
	// counts say are not empty are read (a re-upload of a million rows changes little).
	if p.Creates == 0 && p.Deletes == 0 && p.Updates == 0 {
		return p, nil
	}
	if p.Creates > 0 {
		if p.CreateIDs, err = column[string](ctx, tx, "plan", `
		SELECT s.device_id FROM `+table+` s LEFT JOIN devices d ON d.fleet_id = $1 AND d.device_id = s.device_id
		WHERE s.state = 'present' AND (d.id IS NULL OR d.desired_state = 'absent')
		ORDER BY s.line LIMIT $2`, fleetID, planListCap); err != nil {
			return p, err
		}
	}
	if p.Deletes > 0 {
		if p.DeleteIDs, err = column[string](ctx, tx, "plan", `
		SELECT s.device_id FROM `+table+` s JOIN devices d ON d.fleet_id = $1 AND d.device_id = s.device_id
		WHERE s.state = 'absent' AND d.desired_state = 'present'
		UNION ALL
		SELECT d.device_id FROM devices d
		WHERE $3 AND d.fleet_id = $1 AND d.desired_state = 'present'
		  AND NOT EXISTS (SELECT 1 FROM `+table+` s WHERE s.device_id = d.device_id)
		LIMIT $2`, fleetID, math.MaxInt32, mode == fleet.ModeReplace); err != nil {
			return p, err
		}
	}
	if p.Updates == 0 {
		return p, nil
	}
	rows, err := tx.Query(ctx, `
		SELECT s.device_id, array_remove(ARRAY[
		    CASE WHEN d.action <> s.action THEN 'action' END,
		    CASE WHEN d.groups IS DISTINCT FROM string_to_array(s.groups, ';') THEN 'groups' END,
		    CASE WHEN d.allow_groups IS DISTINCT FROM string_to_array(s.allow_groups, ';') THEN 'allow_groups' END,
		    CASE WHEN d.allow_devices IS DISTINCT FROM string_to_array(s.allow_devices, ';') THEN 'allow_devices' END,
		    CASE WHEN d.zenlayer_instance_id IS DISTINCT FROM s.zenlayer_instance_id THEN 'zenlayer_instance_id' END
		  ], NULL)
		FROM `+table+` s JOIN devices d ON d.fleet_id = $1 AND d.device_id = s.device_id
		WHERE s.state = 'present' AND d.desired_state = 'present' AND d.spec_hash <> s.spec_hash
		ORDER BY s.line LIMIT $2`, fleetID, planListCap)
	if err != nil {
		return p, fmt.Errorf("plan updates: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u PlanUpdate
		if err := rows.Scan(&u.DeviceID, &u.Fields); err != nil {
			return p, fmt.Errorf("plan updates: %w", err)
		}
		p.UpdateList = append(p.UpdateList, u)
	}
	return p, rows.Err()
}
