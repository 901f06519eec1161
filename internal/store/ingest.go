package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

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
	// Enqueue inserts the jobs that carry out the plan, in the upload's transaction, so
	// that an upload is stored with its jobs or not at all.
	Enqueue func(ctx context.Context, tx pgx.Tx, workKey string, devices int) error
	// EnqueueConsoleURLs inserts the Zenlayer console URL jobs, in the same transaction.
	EnqueueConsoleURLs func(ctx context.Context, tx pgx.Tx, wanted []ConsoleURLWanted) error
}

// Plan is what an upload changes.
type Plan struct {
	Creates    int          `json:"creates"`
	Updates    int          `json:"updates"`
	Deletes    int          `json:"deletes"`
	Unchanged  int          `json:"unchanged"`
	CreateIDs  []string     `json:"createIds"`
	UpdateList []PlanUpdate `json:"updateList"`
	DeleteIDs  []string     `json:"deleteIds"`
	// MaxDeletions is the replace guard's limit for this upload (replace mode only).
	MaxDeletions int `json:"maxDeletions,omitempty"`
}

// PlanUpdate is a device whose desired spec changes, and which fields change.
type PlanUpdate struct {
	DeviceID string   `json:"deviceId"`
	Fields   []string `json:"fields"`
}

// Changes reports whether the plan would touch the cloud.
func (p Plan) Changes() bool { return p.Creates+p.Updates+p.Deletes > 0 }

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
}

// IngestResult is the outcome of a valid upload.
type IngestResult struct {
	Manifest  *Manifest // nil for a dry run
	Plan      Plan
	Unchanged bool // identical to the fleet's latest manifest: nothing stored
	WorkKey   string
}

// DeletionGuardError refuses a replace upload that deletes more than allowed.
type DeletionGuardError struct {
	Plan         Plan
	MaxDeletions int
}

func (e *DeletionGuardError) Error() string {
	return fmt.Sprintf("replace would delete %d devices, more than the allowed %d", e.Plan.Deletes, e.MaxDeletions)
}

// WorkKeyForManifest names the work queue of a manifest's devices.
func WorkKeyForManifest(id int64) string { return fmt.Sprintf("manifest:%d", id) }

// Ingest validates a manifest and, unless it is a dry run, stores it and enqueues its
// jobs in one transaction. An invalid manifest returns *fleet.Problems and leaves no
// trace. The body is streamed into a temporary table with COPY, so memory does not
// grow with the manifest; the checks that span rows (duplicates, allow_devices) run in
// SQL over that table.
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
		if err == nil && req.DryRun {
			return errDryRun
		}
		return err
	})
	if errors.Is(err, errDryRun) {
		return result, nil
	}
	if err != nil {
		return nil, err
	}
	return result, nil
}

// errDryRun rolls the transaction back after a dry run has computed its plan.
var errDryRun = errors.New("dry run")

func (s *Store) ingestTx(ctx context.Context, tx pgx.Tx, req IngestRequest) (*IngestResult, error) {
	hash := sha256.New()
	reader, err := fleet.NewReader(io.TeeReader(req.Body, hash), fleet.ReaderOptions{})
	if err != nil {
		return nil, err
	}
	cols := reader.Columns()

	var fleetID int64
	if err := tx.QueryRow(ctx, `
		INSERT INTO fleets (name) VALUES ($1)
		ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
		RETURNING id`, req.Fleet).Scan(&fleetID); err != nil {
		return nil, fmt.Errorf("lock fleet %q: %w", req.Fleet, err)
	}
	// The upsert above holds the fleet row lock until commit, so uploads to one fleet
	// are serialized and a replace never races another upload.

	if _, err := tx.Exec(ctx, `
		CREATE TEMP TABLE staging (
			line integer NOT NULL,
			device_id text NOT NULL,
			action text NOT NULL,
			groups text[],
			allow_groups text[],
			allow_devices text[],
			state text NOT NULL,
			zenlayer_instance_id text,
			metadata jsonb,
			spec_hash bytea NOT NULL,
			meta_hash bytea,
			sort_key text NOT NULL
		) ON COMMIT DROP`); err != nil {
		return nil, fmt.Errorf("create staging table: %w", err)
	}
	src := newRowSource(reader)
	rows, err := tx.CopyFrom(ctx, pgx.Identifier{"staging"}, stagingColumns, src)
	src.close()
	if err != nil {
		if src.err != nil {
			return nil, src.err
		}
		return nil, fmt.Errorf("copy manifest rows: %w", err)
	}
	problems := reader.Problems()
	if problems.Len() > 0 {
		return nil, problems
	}
	if _, err := tx.Exec(ctx, `CREATE INDEX ON staging (device_id); ANALYZE staging`); err != nil {
		return nil, fmt.Errorf("index staging table: %w", err)
	}
	if err := crossRowProblems(ctx, tx, fleetID, req.Mode, cols, problems); err != nil {
		return nil, err
	}
	if problems.Len() > 0 {
		return nil, problems
	}

	plan, err := computePlan(ctx, tx, fleetID, req.Mode)
	if err != nil {
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

	m := Manifest{Fleet: req.Fleet, Mode: string(req.Mode), Rows: int(rows), SHA256: hex.EncodeToString(sum), Uploader: req.Uploader}
	if err := tx.QueryRow(ctx, `
		INSERT INTO manifests (fleet_id, sha256, uploader, mode, row_count, creates, updates, deletes, unchanged)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		RETURNING id, uploaded_at`,
		fleetID, sum, req.Uploader, string(req.Mode), rows, plan.Creates, plan.Updates, plan.Deletes, plan.Unchanged).
		Scan(&m.ID, &m.UploadedAt); err != nil {
		return nil, fmt.Errorf("store manifest: %w", err)
	}
	key := WorkKeyForManifest(m.ID)
	if err := applyStaging(ctx, tx, fleetID, m.ID, key, req.Mode); err != nil {
		return nil, err
	}
	if plan.Changes() && req.Enqueue != nil {
		if err := req.Enqueue(ctx, tx, key, plan.Creates+plan.Updates+plan.Deletes); err != nil {
			return nil, fmt.Errorf("enqueue jobs: %w", err)
		}
	}
	if req.EnqueueConsoleURLs != nil {
		wanted, err := consoleURLsWanted(ctx, tx, m.ID)
		if err != nil {
			return nil, err
		}
		if len(wanted) > 0 {
			if err := req.EnqueueConsoleURLs(ctx, tx, wanted); err != nil {
				return nil, fmt.Errorf("enqueue console URL jobs: %w", err)
			}
		}
	}
	return &IngestResult{Manifest: &m, Plan: plan, WorkKey: key}, nil
}

var stagingColumns = []string{
	"line", "device_id", "action", "groups", "allow_groups", "allow_devices", "state",
	"zenlayer_instance_id", "metadata", "spec_hash", "meta_hash", "sort_key",
}

// rowSource feeds validated manifest rows to COPY. Parsing, validating and hashing
// run in a goroutine of their own, a batch ahead, so that they overlap with COPY's
// encoding and sending: on two cores that halves the time to stream a large file.
type rowSource struct {
	batches <-chan rowBatch
	stop    chan struct{}
	cur     rowBatch
	i       int
	err     error
}

type rowBatch struct {
	rows [][]any
	err  error
}

const rowBatchSize = 512

func newRowSource(reader *fleet.Reader) *rowSource {
	batches := make(chan rowBatch, 8)
	stop := make(chan struct{})
	go func() {
		defer close(batches)
		for {
			b := rowBatch{rows: make([][]any, 0, rowBatchSize)}
			for len(b.rows) < rowBatchSize {
				d, err := reader.Next()
				if err == io.EOF {
					break
				}
				if err == nil {
					var row []any
					row, err = copyRow(d)
					b.rows = append(b.rows, row)
				}
				if err != nil {
					b.err = err
					break
				}
			}
			if len(b.rows) == 0 && b.err == nil {
				return
			}
			select {
			case batches <- b:
			case <-stop:
				return
			}
			if b.err != nil || len(b.rows) < rowBatchSize {
				return
			}
		}
	}()
	return &rowSource{batches: batches, stop: stop}
}

// close stops the producer if COPY gave up early.
func (r *rowSource) close() { close(r.stop) }

func (r *rowSource) Next() bool {
	for r.i >= len(r.cur.rows) {
		if r.cur.err != nil {
			r.err = r.cur.err
			return false
		}
		b, ok := <-r.batches
		if !ok {
			return false
		}
		r.cur, r.i = b, 0
	}
	r.i++
	return true
}

func (r *rowSource) Values() ([]any, error) { return r.cur.rows[r.i-1], nil }
func (r *rowSource) Err() error             { return r.err }

// copyRow is one staging row.
func copyRow(d fleet.Device) ([]any, error) {
	var meta []byte
	if len(d.Metadata) > 0 {
		obj := make(map[string]string, len(d.Metadata))
		for _, f := range d.Metadata {
			obj[f.Name] = f.Value
		}
		var err error
		if meta, err = json.Marshal(obj); err != nil {
			return nil, fmt.Errorf("line %d: metadata: %w", d.Line, err)
		}
	}
	var zen any
	if d.ZenlayerInstanceID != "" {
		zen = d.ZenlayerInstanceID
	}
	return []any{d.Line, d.DeviceID, string(d.Action), nilIfEmpty(d.Groups), nilIfEmpty(d.AllowGroups), nilIfEmpty(d.AllowDevices),
		string(d.State), zen, nilIfNoBytes(meta), d.SpecHash(), nilIfNoBytes(d.MetadataHash()), sortKey(d)}, nil
}

// sortKey orders a manifest's work: connect devices first (the listen devices that
// name them need their addresses), then by first group, so a factory line is
// provisioned together.
func sortKey(d fleet.Device) string {
	first := ""
	switch {
	case len(d.Groups) > 0:
		first = d.Groups[0]
	case len(d.AllowGroups) > 0:
		first = d.AllowGroups[0]
	}
	if d.Action == "listen" {
		return "1" + first
	}
	return "0" + first
}

func nilIfEmpty(s []string) any {
	if len(s) == 0 {
		return nil
	}
	return s
}

func nilIfNoBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// crossRowProblems adds the problems that need more than one row to see: duplicate
// device_ids, allow_devices that do not name a present connect device, and absent
// devices that a remaining listen device still names.
func crossRowProblems(ctx context.Context, tx pgx.Tx, fleetID int64, mode fleet.Mode, cols map[string]int, problems *fleet.Problems) error {
	type check struct {
		column string
		sql    string
		args   []any
		reason func(a, b string) string
	}
	checks := []check{{
		column: "device_id",
		sql: `SELECT line, device_id, first::text FROM (
				SELECT line, device_id, min(line) OVER (PARTITION BY device_id) AS first FROM staging) d
			WHERE line <> first ORDER BY line LIMIT $1`,
		args: []any{problemCap},
		reason: func(id, first string) string {
			return fmt.Sprintf("device_id %q is a duplicate of line %s", id, first)
		},
	}, {
		column: "allow_devices",
		// A name is fine when the manifest lists it as a present connect device, or, in
		// merge mode, when the manifest leaves it alone and the fleet has it as one.
		sql: `SELECT s.line, dep, '' FROM staging s, unnest(s.allow_devices) AS dep
			WHERE NOT EXISTS (SELECT 1 FROM staging c WHERE c.device_id = dep AND c.action = 'connect' AND c.state = 'present')
			  AND NOT ($2 = 'merge'
			       AND NOT EXISTS (SELECT 1 FROM staging x WHERE x.device_id = dep)
			       AND EXISTS (SELECT 1 FROM devices d WHERE d.fleet_id = $1 AND d.device_id = dep AND d.action = 'connect' AND d.desired_state = 'present'))
			ORDER BY s.line LIMIT $3`,
		args: []any{fleetID, string(mode), problemCap},
		reason: func(dep, _ string) string {
			return fmt.Sprintf("allow_devices names %q, which is not a present connect device of this manifest or fleet", dep)
		},
	}, {
		column: "state",
		sql: `SELECT s.line, s.device_id, d.device_id FROM staging s
			JOIN devices d ON d.fleet_id = $1 AND s.device_id = ANY (d.allow_devices) AND d.desired_state = 'present'
			WHERE s.state = 'absent' AND $2 = 'merge'
			  AND NOT EXISTS (SELECT 1 FROM staging x WHERE x.device_id = d.device_id)
			ORDER BY s.line LIMIT $3`,
		args: []any{fleetID, string(mode), problemCap},
		reason: func(id, listener string) string {
			return fmt.Sprintf("device %q is marked absent but listen device %q still names it in allow_devices", id, listener)
		},
	}}
	for _, c := range checks {
		rows, err := tx.Query(ctx, c.sql, c.args...)
		if err != nil {
			return fmt.Errorf("check manifest (%s): %w", c.column, err)
		}
		for rows.Next() {
			var line int
			var a, b string
			if err := rows.Scan(&line, &a, &b); err != nil {
				rows.Close()
				return fmt.Errorf("check manifest (%s): %w", c.column, err)
			}
			problems.Add(fleet.Problem{Line: line, Column: cols[c.column], ColumnName: c.column, Reason: c.reason(a, b)})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("check manifest (%s): %w", c.column, err)
		}
	}
	return nil
}

// problemCap bounds each cross-row query; fleet.Problems caps the list it keeps anyway.
const problemCap = 1000

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
func computePlan(ctx context.Context, tx pgx.Tx, fleetID int64, mode fleet.Mode) (Plan, error) {
	var p Plan
	// A row is a create when the fleet has no present device by that id, an update
	// when its desired spec differs, a delete when it marks a present device absent.
	err := tx.QueryRow(ctx, `
		SELECT
		  count(*) FILTER (WHERE s.state = 'present' AND (d.id IS NULL OR d.desired_state = 'absent')),
		  count(*) FILTER (WHERE s.state = 'present' AND d.desired_state = 'present' AND d.spec_hash <> s.spec_hash),
		  count(*) FILTER (WHERE s.state = 'absent' AND d.desired_state = 'present'),
		  count(*) FILTER (WHERE (s.state = 'present' AND d.desired_state = 'present' AND d.spec_hash = s.spec_hash)
		                      OR (s.state = 'absent' AND (d.id IS NULL OR d.desired_state = 'absent')))
		FROM staging s LEFT JOIN devices d ON d.fleet_id = $1 AND d.device_id = s.device_id`, fleetID).
		Scan(&p.Creates, &p.Updates, &p.Deletes, &p.Unchanged)
	if err != nil {
		return p, fmt.Errorf("plan: %w", err)
	}
	if mode == fleet.ModeReplace {
		var omitted int
		if err := tx.QueryRow(ctx, `
			SELECT count(*) FROM devices d
			WHERE d.fleet_id = $1 AND d.desired_state = 'present'
			  AND NOT EXISTS (SELECT 1 FROM staging s WHERE s.device_id = d.device_id)`, fleetID).Scan(&omitted); err != nil {
			return p, fmt.Errorf("plan: %w", err)
		}
		p.Deletes += omitted
	}

	p.CreateIDs, err = collectStrings(ctx, tx, `
		SELECT s.device_id FROM staging s LEFT JOIN devices d ON d.fleet_id = $1 AND d.device_id = s.device_id
		WHERE s.state = 'present' AND (d.id IS NULL OR d.desired_state = 'absent')
		ORDER BY s.line LIMIT $2`, fleetID, planListCap)
	if err != nil {
		return p, err
	}
	p.DeleteIDs, err = collectStrings(ctx, tx, `
		SELECT s.device_id FROM staging s JOIN devices d ON d.fleet_id = $1 AND d.device_id = s.device_id
		WHERE s.state = 'absent' AND d.desired_state = 'present'
		UNION ALL
		SELECT d.device_id FROM devices d
		WHERE $3 AND d.fleet_id = $1 AND d.desired_state = 'present'
		  AND NOT EXISTS (SELECT 1 FROM staging s WHERE s.device_id = d.device_id)
		LIMIT $2`, fleetID, math.MaxInt32, mode == fleet.ModeReplace)
	if err != nil {
		return p, err
	}
	rows, err := tx.Query(ctx, `
		SELECT s.device_id, array_remove(ARRAY[
		    CASE WHEN d.action <> s.action THEN 'action' END,
		    CASE WHEN d.groups IS DISTINCT FROM s.groups THEN 'groups' END,
		    CASE WHEN d.allow_groups IS DISTINCT FROM s.allow_groups THEN 'allow_groups' END,
		    CASE WHEN d.allow_devices IS DISTINCT FROM s.allow_devices THEN 'allow_devices' END,
		    CASE WHEN d.zenlayer_instance_id IS DISTINCT FROM s.zenlayer_instance_id THEN 'zenlayer_instance_id' END
		  ], NULL)
		FROM staging s JOIN devices d ON d.fleet_id = $1 AND d.device_id = s.device_id
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

func collectStrings(ctx context.Context, tx pgx.Tx, sql string, args ...any) ([]string, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	return out, nil
}

// applyStaging writes the staged manifest into devices. Each device's pending
// operation is recomputed from its desired and actual state (nextOpSQL), except while
// a job holds a claim on it: that job recomputes it when it finishes, seeing the new
// spec_version, so no change is lost and no device is worked on twice at once.
func applyStaging(ctx context.Context, tx pgx.Tx, fleetID, manifestID int64, key string, mode fleet.Mode) error {
	// Devices the fleet has: take the new desired state. Two statements rather than
	// one INSERT .. ON CONFLICT, because the speculative insertion of ON CONFLICT costs
	// a third more for the common case of a manifest of new devices.
	_, err := tx.Exec(ctx, `
		UPDATE devices d SET
		    action = s.action,
		    groups = s.groups,
		    allow_groups = s.allow_groups,
		    allow_devices = s.allow_devices,
		    desired_state = s.state,
		    zenlayer_instance_id = s.zenlayer_instance_id,
		    metadata = s.metadata,
		    meta_hash = s.meta_hash,
		    spec_hash = s.spec_hash,
		    sort_key = s.sort_key,
		    manifest_id = $2,
		    line = s.line,
		    spec_version = d.spec_version + (d.spec_hash <> s.spec_hash OR d.desired_state <> s.state)::int,
		    -- A failed device is tried again when its row changes; an unchanged row
		    -- leaves it failed until an explicit retry.
		    status = CASE WHEN d.status = 'failed' AND (d.spec_hash <> s.spec_hash OR d.desired_state <> s.state)
		                  THEN 'pending' ELSE d.status END,
		    updated_at = now()
		FROM staging s
		WHERE d.fleet_id = $1 AND d.device_id = s.device_id`, fleetID, manifestID)
	if err != nil {
		return fmt.Errorf("store devices: %w", err)
	}
	// New devices, inserted with the operation they owe.
	_, err = tx.Exec(ctx, `
		INSERT INTO devices (fleet_id, device_id, action, groups, allow_groups, allow_devices, desired_state,
		    zenlayer_instance_id, metadata, spec_hash, meta_hash, manifest_id, line, sort_key, status, op, work_key)
		SELECT $1, s.device_id, s.action, s.groups, s.allow_groups, s.allow_devices, s.state,
		    s.zenlayer_instance_id, s.metadata, s.spec_hash, s.meta_hash, $2, s.line, s.sort_key,
		    CASE WHEN s.state = 'present' THEN 'pending' ELSE 'deleted' END,
		    CASE WHEN s.state = 'present' THEN 'create' END,
		    CASE WHEN s.state = 'present' THEN $3 END
		FROM staging s
		WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.fleet_id = $1 AND d.device_id = s.device_id)`,
		fleetID, manifestID, key)
	if err != nil {
		return fmt.Errorf("store devices: %w", err)
	}
	if mode == fleet.ModeReplace {
		_, err = tx.Exec(ctx, `
			UPDATE devices d SET desired_state = 'absent', spec_version = spec_version + 1,
			    manifest_id = $2, updated_at = now()
			WHERE d.fleet_id = $1 AND d.desired_state = 'present'
			  AND NOT EXISTS (SELECT 1 FROM staging s WHERE s.device_id = d.device_id)`, fleetID, manifestID)
		if err != nil {
			return fmt.Errorf("schedule replace deletions: %w", err)
		}
	}
	// Recompute the owed operation of every device this manifest changed. Rows created
	// by this transaction (created_at = now(), the transaction's start) were inserted
	// with their operation already: rewriting a million of them again would cost more
	// than the whole COPY.
	_, err = tx.Exec(ctx, `
		UPDATE devices d SET `+scheduleOpSQL+`, work_key = $3
		WHERE d.fleet_id = $1 AND d.manifest_id = $2 AND d.applied_version < d.spec_version
		  AND d.created_at < now()
		  AND d.status <> 'failed' AND (d.claim_until IS NULL OR d.claim_until < now())`,
		fleetID, manifestID, key)
	if err != nil {
		return fmt.Errorf("schedule device work: %w", err)
	}
	return nil
}
