package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"

	"github.com/jackc/pgx/v5"
)

// Counts maps a status to how many devices have it.
type Counts map[string]int

// Progress is how far the devices a manifest last set have come.
type Progress struct {
	Manifest Manifest `json:"manifest"`
	Total    int      `json:"total"`
	Settled  int      `json:"settled"`
	Failed   int      `json:"failed"`
	Done     bool     `json:"done"`
	// Staged counts the manifest's rows not yet applied to devices (stage.go): they
	// count in Total, as not settled, and appear in no status.
	Staged   int               `json:"staged,omitempty"`
	ByStatus Counts            `json:"byStatus"`
	ByGroup  map[string]Counts `json:"byGroup,omitempty"`
}

// settledSQL is the set of statuses that end a device's work for --wait.
const settledSQL = `('ready', 'deleted', 'failed', 'cancelled')`

// GetManifest reads one manifest.
func (s *Store) GetManifest(ctx context.Context, id int64) (Manifest, error) {
	var m Manifest
	var sum []byte
	err := s.pool.QueryRow(ctx, `
		SELECT m.id, f.name, m.mode, m.row_count, m.sha256, m.uploader, m.uploaded_at, m.cancelled_at
		FROM manifests m JOIN fleets f ON f.id = m.fleet_id WHERE m.id = $1`, id).
		Scan(&m.ID, &m.Fleet, &m.Mode, &m.Rows, &sum, &m.Uploader, &m.UploadedAt, &m.CancelledAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, fmt.Errorf("manifest %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("manifest %d: %w", id, err)
	}
	m.SHA256 = hex.EncodeToString(sum)
	return m, nil
}

// ListManifests returns a fleet's newest manifests (every fleet's when fleet is "").
func (s *Store) ListManifests(ctx context.Context, fleetName string, limit int) ([]Manifest, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT m.id, f.name, m.mode, m.row_count, m.sha256, m.uploader, m.uploaded_at, m.cancelled_at
		FROM manifests m JOIN fleets f ON f.id = m.fleet_id
		WHERE $1 = '' OR f.name = $1 ORDER BY m.id DESC LIMIT $2`, fleetName, limit)
	if err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Manifest, error) {
		var m Manifest
		var sum []byte
		err := row.Scan(&m.ID, &m.Fleet, &m.Mode, &m.Rows, &sum, &m.Uploader, &m.UploadedAt, &m.CancelledAt)
		m.SHA256 = hex.EncodeToString(sum)
		return m, err
	})
}

// ManifestProgress counts the devices whose desired state the manifest last set, by
// status and, with groups, by group too. Counting by group costs a third more and,
// for a factory manifest of a million rows, lists a hundred thousand groups: a
// waiting client that draws only a progress bar leaves it out.
func (s *Store) ManifestProgress(ctx context.Context, id int64, groups bool) (*Progress, error) {
	m, err := s.GetManifest(ctx, id)
	if err != nil {
		return nil, err
	}
	p := &Progress{Manifest: m}
	// Staged rows first, devices second: a batch applied in between is then counted
	// twice (done a poll later), never missed (done too early).
	if err := s.pool.QueryRow(ctx, `
		SELECT CASE WHEN applied_at IS NULL THEN row_count - applied_rows ELSE 0 END FROM manifests WHERE id = $1`, id).Scan(&p.Staged); err != nil {
		return nil, fmt.Errorf("manifest %d: %w", id, err)
	}
	p.ByStatus, p.ByGroup, err = s.counts(ctx, `devices d`, `d.manifest_id = $1`, groups, id)
	if err != nil {
		return nil, err
	}
	for status, n := range p.ByStatus {
		p.Total += n
		switch status {
		case "ready", "deleted", "failed", "cancelled":
			p.Settled += n
		}
	}
	p.Total += p.Staged
	p.Failed = p.ByStatus["failed"]
	p.Done = p.Settled == p.Total
	return p, nil
}

// counts groups the devices d of from matching where by status and, with groups, by
// group and status. A device counts under its first group (connect) or first allowed
// group (listen), or "" when it has none, so each device is counted once.
func (s *Store) counts(ctx context.Context, from, where string, groups bool, args ...any) (Counts, map[string]Counts, error) {
	group := `''`
	if groups {
		group = `coalesce(d.groups[1], d.allow_groups[1], '')`
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+group+`, d.status, count(*) FROM `+from+`
		WHERE `+where+` GROUP BY 1, 2`, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("count devices: %w", err)
	}
	defer rows.Close()
	byStatus := Counts{}
	var byGroup map[string]Counts
	if groups {
		byGroup = map[string]Counts{}
	}
	for rows.Next() {
		var group, status string
		var n int
		if err := rows.Scan(&group, &status, &n); err != nil {
			return nil, nil, fmt.Errorf("count devices: %w", err)
		}
		byStatus[status] += n
		if !groups {
			continue
		}
		if byGroup[group] == nil {
			byGroup[group] = Counts{}
		}
		byGroup[group][status] += n
	}
	return byStatus, byGroup, rows.Err()
}

// FleetStatus is the fleet-wide view of `vncfleet status`.
type FleetStatus struct {
	Total      int               `json:"total"`
	ByStatus   Counts            `json:"byStatus"`
	ByGroup    map[string]Counts `json:"byGroup"`
	ByManifest []ManifestCounts  `json:"byManifest"`
}

// ManifestCounts are the status counts of one manifest's devices.
type ManifestCounts struct {
	Manifest int64  `json:"manifest"`
	Fleet    string `json:"fleet"`
	ByStatus Counts `json:"byStatus"`
}

// Status counts a fleet's devices (every fleet's when fleetName is "").
func (s *Store) Status(ctx context.Context, fleetName string) (*FleetStatus, error) {
	st := &FleetStatus{}
	var err error
	st.ByStatus, st.ByGroup, err = s.counts(ctx, `devices d JOIN fleets f ON f.id = d.fleet_id`, `($1 = '' OR f.name = $1)`, true, fleetName)
	if err != nil {
		return nil, err
	}
	for _, n := range st.ByStatus {
		st.Total += n
	}
	rows, err := s.pool.Query(ctx, `
		SELECT d.manifest_id, f.name, d.status, count(*)
		FROM devices d JOIN fleets f ON f.id = d.fleet_id
		WHERE ($1 = '' OR f.name = $1) AND d.manifest_id IS NOT NULL
		GROUP BY 1, 2, 3 ORDER BY 1 DESC`, fleetName)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var fleetOf, status string
		var n int
		if err := rows.Scan(&id, &fleetOf, &status, &n); err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		if len(st.ByManifest) == 0 || st.ByManifest[len(st.ByManifest)-1].Manifest != id {
			st.ByManifest = append(st.ByManifest, ManifestCounts{Manifest: id, Fleet: fleetOf, ByStatus: Counts{}})
		}
		st.ByManifest[len(st.ByManifest)-1].ByStatus[status] = n
	}
	return st, rows.Err()
}

// ReportRow is one line of a manifest's per-row result report.
type ReportRow struct {
	DeviceID     string
	Status       string
	CloudAddress string
	Error        string
	VNCURL       string // the Zenlayer console URL, when the row names an instance
}

// Report streams the per-row results of a manifest, in manifest line order.
func (s *Store) Report(ctx context.Context, id int64) iter.Seq2[ReportRow, error] {
	return func(yield func(ReportRow, error) bool) {
		rows, err := s.pool.Query(ctx, `
			SELECT device_id, status, coalesce(cloud_address, ''),
			       coalesce(last_error, vnc_url_error, ''), coalesce(vnc_url, '')
			FROM devices WHERE manifest_id = $1 ORDER BY line, id`, id)
		if err != nil {
			yield(ReportRow{}, fmt.Errorf("report: %w", err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var r ReportRow
			if err := rows.Scan(&r.DeviceID, &r.Status, &r.CloudAddress, &r.Error, &r.VNCURL); err != nil {
				yield(ReportRow{}, fmt.Errorf("report: %w", err))
				return
			}
			if !yield(r, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(ReportRow{}, fmt.Errorf("report: %w", err))
		}
	}
}

// ExportRow is one device in the export format of CONTRACT.md.
type ExportRow struct {
	Fleet         string
	DeviceID      string
	Action        string
	Status        string
	CloudAddress  string
	CloudPassword string // only when asked for with secrets
	Groups        []string
	AllowGroups   []string
	AllowDevices  []string
	VNCURL        string
	LastError     string
}

// Export streams every device of a fleet (every fleet when fleetName is ""), in
// fleet and device_id order. With secrets, each current password is decrypted.
func (s *Store) Export(ctx context.Context, fleetName string, secrets bool) iter.Seq2[ExportRow, error] {
	return func(yield func(ExportRow, error) bool) {
		if secrets && s.keys == nil {
			yield(ExportRow{}, ErrNoKey)
			return
		}
		rows, err := s.pool.Query(ctx, `
			SELECT d.id, f.name, d.device_id, d.action, d.status, coalesce(d.cloud_address, ''),
			       d.password_ct, coalesce(d.password_key_id, ''), d.groups, d.allow_groups, d.allow_devices,
			       coalesce(d.vnc_url, ''), coalesce(d.last_error, '')
			FROM devices d JOIN fleets f ON f.id = d.fleet_id
			WHERE $1 = '' OR f.name = $1
			ORDER BY f.name, d.device_id`, fleetName)
		if err != nil {
			yield(ExportRow{}, fmt.Errorf("export: %w", err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var r ExportRow
			var pk int64
			var ct []byte
			var keyID string
			if err := rows.Scan(&pk, &r.Fleet, &r.DeviceID, &r.Action, &r.Status, &r.CloudAddress, &ct, &keyID,
				&r.Groups, &r.AllowGroups, &r.AllowDevices, &r.VNCURL, &r.LastError); err != nil {
				yield(ExportRow{}, fmt.Errorf("export: %w", err))
				return
			}
			if secrets && ct != nil && r.CloudAddress != "" {
				if r.CloudPassword, err = s.open(pk, ct, keyID); err != nil {
					yield(ExportRow{}, err)
					return
				}
			}
			if !yield(r, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(ExportRow{}, fmt.Errorf("export: %w", err))
		}
	}
}

// Credentials is one device's current cloud identity.
type Credentials struct {
	DeviceID      string `json:"deviceId"`
	Status        string `json:"status"`
	CloudAddress  string `json:"cloudAddress"`
	CloudPassword string `json:"cloudPassword"`
}

// GetCredentials decrypts one device's current password.
func (s *Store) GetCredentials(ctx context.Context, fleetName, deviceID string) (Credentials, error) {
	c := Credentials{DeviceID: deviceID}
	var pk int64
	var ct []byte
	var keyID, addr *string
	err := s.pool.QueryRow(ctx, `
		SELECT d.id, d.status, d.cloud_address, d.password_ct, d.password_key_id
		FROM devices d JOIN fleets f ON f.id = d.fleet_id WHERE f.name = $1 AND d.device_id = $2`,
		fleetName, deviceID).Scan(&pk, &c.Status, &addr, &ct, &keyID)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("device %q of fleet %q: %w", deviceID, fleetName, ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("credentials: %w", err)
	}
	if addr == nil || ct == nil || keyID == nil {
		return c, fmt.Errorf("device %q has no cloud address yet: %w", deviceID, ErrNotFound)
	}
	c.CloudAddress = *addr
	c.CloudPassword, err = s.open(pk, ct, *keyID)
	return c, err
}

// Audit appends to the audit log.
func (s *Store) Audit(ctx context.Context, actor, action string, detail map[string]any) error {
	js, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO audit_log (actor, action, detail) VALUES ($1, $2, $3)`, actor, action, js); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// RetryFailed schedules the failed devices of a fleet (or of one manifest) again, in
// tx, under a new work key; enqueue inserts its jobs in the same transaction.
func (s *Store) RetryFailed(ctx context.Context, fleetName string, manifestID int64,
	enqueue func(ctx context.Context, tx pgx.Tx, key string, devices int) error) (int, string, error) {
	var n int
	var key string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT 'retry:' || nextval('devices_id_seq')`).Scan(&key); err != nil {
			return fmt.Errorf("retry: %w", err)
		}
		tag, err := tx.Exec(ctx, `
			UPDATE devices d SET `+scheduleOpSQL+`, work_key = $3, `+clearErrorSQL+`
			FROM fleets f
			WHERE f.id = d.fleet_id AND d.status = 'failed' AND ($1 = '' OR f.name = $1) AND ($2 = 0 OR d.manifest_id = $2)`,
			fleetName, manifestID, key)
		if err != nil {
			return fmt.Errorf("retry: %w", err)
		}
		n = int(tag.RowsAffected())
		// A failed device with nothing owed (it failed waiting for readiness) polls again.
		if _, err := tx.Exec(ctx, `
			UPDATE devices SET status = 'awaiting_ready', awaiting_since = now(), next_poll_at = now(), polls = 0
			WHERE work_key = $1 AND op IS NULL AND status = 'failed' AND cloud_address IS NOT NULL`, key); err != nil {
			return fmt.Errorf("retry: %w", err)
		}
		if n > 0 && enqueue != nil {
			return enqueue(ctx, tx, key, n)
		}
		return nil
	})
	return n, key, err
}

// WorkProgress counts the devices of a work queue (a rotation or retry run) by status.
func (s *Store) WorkProgress(ctx context.Context, key string) (*Progress, error) {
	p := &Progress{}
	var err error
	p.ByStatus, p.ByGroup, err = s.counts(ctx, `devices d`, `d.work_key = $1`, true, key)
	if err != nil {
		return nil, err
	}
	var owed int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM devices WHERE work_key = $1 AND (op IS NOT NULL OR status NOT IN `+settledSQL+`)`, key).Scan(&owed); err != nil {
		return nil, fmt.Errorf("work progress: %w", err)
	}
	for _, n := range p.ByStatus {
		p.Total += n
	}
	p.Settled = p.Total - owed
	p.Failed = p.ByStatus["failed"]
	p.Done = owed == 0
	return p, nil
}
