package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/progress"
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
	Staged   int    `json:"staged,omitempty"`
	ByStatus Counts `json:"byStatus"`
	// GroupPage is the page of groups that was asked for (GroupQuery); nil, and
	// absent from the answer, when none was.
	*GroupPage
	// CallsOwed is the VNC Cloud calls the manifest's devices still owe at the least
	// (progress.CallsOwed): what its ETA divides by the rate.
	CallsOwed int `json:"callsOwed"`
	// Cloud is what the cloud answered lately and who waits for it (cloudstate.go).
	Cloud *CloudState `json:"cloud,omitempty"`
}

// settledSQL is the set of statuses that end a device's work for --wait, as a SQL
// list: fleet.Status.Settled's, stated there once.
var settledSQL = func() string {
	var names []string
	for _, st := range fleet.Statuses {
		if st.Settled() {
			names = append(names, "'"+string(st)+"'")
		}
	}
	return "(" + strings.Join(names, ", ") + ")"
}()

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
// status and, when groups is not nil, the page of their groups it selects (as a
// status does: GroupQuery), from the status counters (counts.go). A factory manifest
// of a million rows has a hundred thousand groups: a page of them costs the same as
// the first, and a waiting client that draws only a progress bar asks for none.
func (s *Store) ManifestProgress(ctx context.Context, id int64, groups *GroupQuery) (*Progress, error) {
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
	if p.ByStatus, err = s.countedByStatus(ctx, id); err != nil {
		return nil, err
	}
	if groups != nil {
		if p.GroupPage, err = s.groupPage(ctx, groupScope{manifest: id}, *groups); err != nil {
			return nil, err
		}
	}
	for status, n := range p.ByStatus {
		p.Total += n
		if fleet.Status(status).Settled() {
			p.Settled += n
		}
	}
	p.Total += p.Staged
	p.Failed = p.ByStatus["failed"]
	p.Done = p.Settled == p.Total
	p.CallsOwed = progress.CallsPerStatus["staged"]*p.Staged + progress.CallsOwed(p.ByStatus)
	if !p.Done {
		if p.Cloud, err = s.ManifestCloudState(ctx, id); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// workCounts counts the devices of a work queue (a rotation or retry run), which has no
// counters, by status and by group and status, counting in every group as the
// counters do.
func (s *Store) workCounts(ctx context.Context, key string) (Counts, map[string]Counts, error) {
	byStatus, err := statusCounts(s.pool.Query(ctx, `SELECT status, count(*) FROM devices WHERE work_key = $1 GROUP BY 1`, key))
	if err != nil {
		return nil, nil, err
	}
	byGroup, err := groupCounts(s.pool.Query(ctx, `
		SELECT g, d.status, count(*) FROM devices d, unnest(vncfleet_count_groups(d.action, d.groups, d.allow_groups)) AS g
		WHERE d.work_key = $1 GROUP BY 1, 2`, key))
	return byStatus, byGroup, err
}

// FleetStatus is the fleet-wide view of `vncfleet status`: the fleet's totals and
// manifests always, and a page of its groups (a factory of a million devices has a
// hundred thousand of them).
type FleetStatus struct {
	Total      int              `json:"total"`
	ByStatus   Counts           `json:"byStatus"`
	ByManifest []ManifestCounts `json:"byManifest"`
	GroupPage
}

// GroupPage is a page of groups (GroupQuery's) with the counts of their devices by
// status, and what a client needs to page on: how many groups there are and where
// the next page starts.
type GroupPage struct {
	ByGroup map[string]Counts `json:"byGroup"`
	// Groups counts the groups with devices, whether ByGroup shows them or not.
	Groups int `json:"groups"`
	// GroupsCountedAt, when set, is when Groups was counted: a fleet or manifest of
	// 10,000 groups or more has its count kept for up to a minute (counts.go).
	GroupsCountedAt *time.Time `json:"groupsCountedAt,omitempty"`
	// NextGroupsAfter, when set, is the groups_after of the next page of groups: the
	// last group of this one. Absent on the last page.
	NextGroupsAfter *string `json:"nextGroupsAfter,omitempty"`
}

// ManifestCounts are the status counts of one manifest's devices.
type ManifestCounts struct {
	Manifest int64  `json:"manifest"`
	Fleet    string `json:"fleet"`
	ByStatus Counts `json:"byStatus"`
}

// StatusQuery selects a fleet's status and the page of its groups it shows.
type StatusQuery struct {
	Fleet string // "" for every fleet
	GroupQuery
}

// GroupQuery selects a page of groups, of a fleet's status or of a manifest's
// progress alike: the groups in name order, "(no group)" (named "") first.
type GroupQuery struct {
	// Groups is how many groups the page shows at most: 0 for DefaultStatusGroups,
	// negative for none (their count only). At most MaxStatusGroups.
	Groups int
	// GroupsAfter starts the page after this group name (the previous page's
	// NextGroupsAfter); nil for the first page.
	GroupsAfter *string
	// Group, when set, shows that group alone (a name, or "" with OnlyGroup for the
	// devices in no group); Groups and GroupsAfter are then ignored.
	Group     string
	OnlyGroup bool
}

const (
	// DefaultStatusGroups is how many groups a status shows unless asked: every group
	// of a fleet of that many or fewer, so that a small fleet's status is unchanged.
	DefaultStatusGroups = 100
	// MaxStatusGroups bounds one page of groups: a page's cost grows with its size.
	MaxStatusGroups = 10_000
)

// Status counts a fleet's devices (every fleet's when fleetName is ""), from the
// status counters (counts.go), with the first DefaultStatusGroups groups.
func (s *Store) Status(ctx context.Context, fleetName string) (*FleetStatus, error) {
	return s.StatusOf(ctx, StatusQuery{Fleet: fleetName})
}

// StatusOf counts the devices q selects by status and manifest, and counts and pages
// their groups, from the status counters (counts.go).
func (s *Store) StatusOf(ctx context.Context, q StatusQuery) (*FleetStatus, error) {
	page, err := s.groupPage(ctx, groupScope{fleet: q.Fleet}, q.GroupQuery)
	if err != nil {
		return nil, err
	}
	st := &FleetStatus{ByStatus: Counts{}, GroupPage: *page}
	rows, err := s.pool.Query(ctx, `
		SELECT c.manifest_id, f.name, c.status, sum(c.devices)::bigint
		FROM device_counts c JOIN fleets f ON f.id = c.fleet_id
		WHERE $1 = '' OR f.name = $1
		GROUP BY 1, 2, 3 HAVING sum(c.devices) <> 0 ORDER BY 1 DESC, 2`, q.Fleet)
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
		st.ByStatus[status] += n
		st.Total += n
		if id == 0 { // devices no manifest set
			continue
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
	VNCURL       string // the Zenlayer console URL, when the row names an instance and secrets were asked for
}

// Report streams the per-row results of a manifest, in manifest line order, a page at
// a time (see paged). With secrets, each console URL is decrypted.
func (s *Store) Report(ctx context.Context, id int64, secrets bool) iter.Seq2[ReportRow, error] {
	if secrets && s.keys == nil {
		return func(yield func(ReportRow, error) bool) { yield(ReportRow{}, ErrNoKey) }
	}
	var afterLine, afterID int64
	return paged(ctx, s.pool, "report", func(q pagedQuerier) ([]ReportRow, bool, error) {
		var page []ReportRow
		rows, err := q.Query(ctx, `
			SELECT id, coalesce(line, 0), device_id, status, coalesce(cloud_address, ''),
			       coalesce(last_error, vnc_url_error, ''), `+consoleURLColumnsOf("devices")+`
			FROM devices WHERE manifest_id = $1 AND (coalesce(line, 0), id) > ($2, $3)
			ORDER BY coalesce(line, 0), id LIMIT $4`, id, afterLine, afterID, pageRows)
		if err != nil {
			return nil, false, err
		}
		defer rows.Close()
		for rows.Next() {
			var r ReportRow
			var url sealedURL
			if err := rows.Scan(&afterID, &afterLine, &r.DeviceID, &r.Status, &r.CloudAddress, &r.Error,
				&url.ct, &url.keyID, &url.legacy); err != nil {
				return page, false, err
			}
			if secrets {
				if r.VNCURL, err = s.openConsoleURL(afterID, url); err != nil {
					return page, false, err
				}
			}
			page = append(page, r)
		}
		return page, len(page) == pageRows, rows.Err()
	})
}

// pageRows is how many rows a streamed answer reads at a time.
const pageRows = 1000

// pageTimeout bounds the query of one page (an index range scan): this long means the
// database is in trouble, and the answer is aborted rather than left hanging.
const pageTimeout = 30 * time.Second

// pagedQuerier is what a page's query runs on: a pooled connection, held only while
// the page is read.
type pagedQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// paged yields the rows of a streamed answer page by page. Each page is read whole and
// its connection returned to the pool before any of its rows is yielded, so a slow
// client holds no database connection while it reads: the pool, which the workers
// share, is never starved by readers. next reads the page after the last one it
// returned (it keeps its own cursor) and says whether more may follow; the rows it
// read before an error are yielded before the error.
//
// The next page is read while the caller handles this one (one page ahead, by a
// goroutine that ends with the iteration), so that the database and the writer of
// the answer work at once: a million-row export otherwise spends its time waiting on
// one or the other in turn.
func paged[R any](ctx context.Context, pool *pgxpool.Pool, what string, next func(pagedQuerier) ([]R, bool, error)) iter.Seq2[R, error] {
	type result struct {
		page []R
		err  error
	}
	return func(yield func(R, error) bool) {
		pages := make(chan result) // unbuffered: one page ahead, no more
		stop, done := make(chan struct{}), make(chan struct{})
		defer func() {
			// A page being read is finished rather than cancelled, so that its
			// connection goes back to the pool usable: next is never running once
			// the iteration has returned.
			close(stop)
			<-done
		}()
		go func() {
			defer close(done)
			defer close(pages)
			for more := true; more; {
				var page []R
				err := func() error {
					qctx, cancel := context.WithTimeout(ctx, pageTimeout)
					defer cancel()
					conn, err := pool.Acquire(qctx)
					if err != nil {
						return err
					}
					defer conn.Release()
					page, more, err = next(&ctxQuerier{conn: conn, ctx: qctx})
					return err
				}()
				select {
				case pages <- result{page, err}:
				case <-stop:
					return
				}
				if err != nil {
					return
				}
			}
		}()
		for res := range pages {
			for _, r := range res.page {
				if !yield(r, nil) {
					return
				}
			}
			if res.err != nil {
				var zero R
				yield(zero, fmt.Errorf("%s: %w", what, res.err))
				return
			}
		}
	}
}

// ctxQuerier runs queries under the page's deadline rather than the caller's context.
type ctxQuerier struct {
	conn *pgxpool.Conn
	ctx  context.Context
}

func (q *ctxQuerier) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	return q.conn.Query(q.ctx, sql, args...)
}

// ExportRow is one device in the export format of docs/contract.md.
type ExportRow struct {
	Fleet         string
	DeviceID      string
	Action        string
	Status        string
	CloudAddress  string
	CloudPassword string // only when asked for with secrets
	// The list cells, joined with fleet.ListSeparator as the export writes them.
	Groups       string
	AllowGroups  string
	AllowDevices string
	VNCURL       string
	LastError    string
	Metadata     map[string]string // the manifest's metadata columns, only when asked for
}

// ExportQuery selects the devices of an export and what it shows of them.
type ExportQuery struct {
	Fleet    string   // "" for every fleet
	Statuses []string // nil for every status
	Secrets  bool     // decrypt each current password
	Metadata bool     // include the manifest's metadata columns
}

// exportWhere is the filter of an export; its arguments are $1 (fleet) and $2 (statuses).
const exportWhere = `($1 = '' OR f.name = $1) AND ($2::text[] IS NULL OR d.status = ANY ($2))`

// ExportMetadataColumns lists the metadata column names of the devices q selects, in
// name order: the export's extra columns.
func (s *Store) ExportMetadataColumns(ctx context.Context, q ExportQuery) ([]string, error) {
	return column[string](ctx, s.pool, "export metadata columns", `
		SELECT DISTINCT k FROM devices d JOIN fleets f ON f.id = d.fleet_id, jsonb_object_keys(d.metadata) AS k
		WHERE d.metadata IS NOT NULL AND `+exportWhere+` ORDER BY k`, q.Fleet, q.Statuses)
}

// Export streams the devices q selects, in fleet and device_id order, a page at a time
// (see paged). With secrets, each current password and console URL is decrypted; one
// that cannot be ends the export with an error.
func (s *Store) Export(ctx context.Context, q ExportQuery) iter.Seq2[ExportRow, error] {
	if q.Secrets && s.keys == nil {
		return func(yield func(ExportRow, error) bool) { yield(ExportRow{}, ErrNoKey) }
	}
	type fleetRef struct {
		ID   int64
		Name string
	}
	var fleets []fleetRef // in name order, read with the first page
	var at int            // the fleet being read
	var afterDevice string
	return paged(ctx, s.pool, "export", func(pq pagedQuerier) ([]ExportRow, bool, error) {
		if fleets == nil {
			rows, err := pq.Query(ctx, `SELECT id, name FROM fleets WHERE $1 = '' OR name = $1 ORDER BY name`, q.Fleet)
			if err != nil {
				return nil, false, err
			}
			if fleets, err = pgx.CollectRows(rows, pgx.RowToStructByPos[fleetRef]); err != nil {
				return nil, false, err
			}
		}
		if at == len(fleets) {
			return nil, false, nil
		}
		f := fleets[at]
		// One fleet's devices in device_id order: a range of its unique index.
		rows, err := pq.Query(ctx, exportPageSQL, f.ID, afterDevice, pageRows, q.Statuses, q.Metadata, q.Secrets, fleet.ListSeparator)
		if err != nil {
			return nil, false, err
		}
		defer rows.Close()
		// The sealed columns must arrive as bytes, not as text's hex escapes.
		for _, i := range []int{5, 10} {
			if fd := rows.FieldDescriptions(); len(fd) <= i || fd[i].Format != pgtype.BinaryFormatCode {
				return nil, false, fmt.Errorf("export: column %d is not in binary format", i)
			}
		}
		page := make([]ExportRow, 0, pageRows)
		var scanned int
		for rows.Next() {
			scanned++
			r, err := s.exportRow(f.Name, rows.RawValues(), q)
			if err != nil {
				return page, false, err
			}
			afterDevice = r.DeviceID
			page = append(page, r)
		}
		if err := rows.Err(); err != nil {
			return page, false, err
		}
		if scanned < pageRows {
			at, afterDevice = at+1, ""
		}
		return page, true, nil
	})
}

// exportPageSQL reads a page of one fleet's export: $1 the fleet, $2 the last device
// of the page before, $3 the page's size, $4 the statuses (NULL for all), $5 with
// metadata, $6 with secrets, $7 the list separator. Every column is text but the
// sealed ones (bytea), so that a row is read from its raw values (exportRow) without
// a decoder per column: at a million rows the decoding was most of the export's CPU.
// What the export does not show is not sent: the sealed columns without secrets.
const exportPageSQL = `
	SELECT d.id::text, d.device_id, d.action, d.status, coalesce(d.cloud_address, ''),
	       CASE WHEN $6 THEN d.password_ct END, CASE WHEN $6 THEN d.password_key_id END,
	       coalesce(array_to_string(d.groups, $7), ''), coalesce(array_to_string(d.allow_groups, $7), ''),
	       coalesce(array_to_string(d.allow_devices, $7), ''),
	       CASE WHEN $6 THEN d.vnc_url_ct END, CASE WHEN $6 THEN d.vnc_url_key_id END, CASE WHEN $6 THEN d.vnc_url END,
	       coalesce(d.last_error, ''), CASE WHEN $5 THEN d.metadata::text END
	FROM devices d WHERE d.fleet_id = $1 AND d.device_id > $2
	  AND ($4::text[] IS NULL OR d.status = ANY ($4))
	ORDER BY d.device_id LIMIT $3`

// exportRow builds an export row from the raw values of an exportPageSQL row (text
// columns are their UTF-8 bytes in either format; the bytea ones are read in binary),
// decrypting its password and console URL when q asks for secrets.
func (s *Store) exportRow(fleetName string, v [][]byte, q ExportQuery) (ExportRow, error) {
	if len(v) != 15 {
		return ExportRow{}, fmt.Errorf("export: %d columns, want 15", len(v))
	}
	pk, err := strconv.ParseInt(string(v[0]), 10, 64)
	if err != nil {
		return ExportRow{}, fmt.Errorf("export: device id %q: %w", v[0], err)
	}
	r := ExportRow{Fleet: fleetName, DeviceID: string(v[1]), Action: interned(v[2]), Status: interned(v[3]),
		CloudAddress: string(v[4]), Groups: string(v[7]), AllowGroups: string(v[8]), AllowDevices: string(v[9]),
		LastError: string(v[13])}
	if q.Metadata && v[14] != nil {
		if err := json.Unmarshal(v[14], &r.Metadata); err != nil {
			return r, fmt.Errorf("export: metadata of device %d: %w", pk, err)
		}
	}
	if !q.Secrets {
		return r, nil
	}
	if v[5] != nil && v[6] != nil && r.CloudAddress != "" {
		if r.CloudPassword, err = s.open(pk, v[5], string(v[6])); err != nil {
			return r, err
		}
	}
	url := sealedURL{ct: v[10], keyID: optString(v[11]), legacy: optString(v[12])}
	if r.VNCURL, err = s.openConsoleURL(pk, url); err != nil {
		return r, err
	}
	return r, nil
}

// interned returns the string of b without allocating when it is one of the few
// values of an enumerated column (an action, a status).
func interned(b []byte) string {
	if s, ok := internedValues[string(b)]; ok {
		return s
	}
	return string(b)
}

var internedValues = func() map[string]string {
	m := map[string]string{}
	for _, st := range fleet.Statuses {
		m[string(st)] = string(st)
	}
	for _, a := range []string{"connect", "listen"} {
		m[a] = a
	}
	return m
}()

func optString(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

// Credentials is one device's current cloud identity.
type Credentials struct {
	DeviceID      string `json:"deviceId"`
	Status        string `json:"status"`
	CloudAddress  string `json:"cloudAddress"`
	CloudPassword string `json:"cloudPassword"`
	VNCURL        string `json:"vncUrl,omitempty"` // the Zenlayer console URL, when there is one
}

// GetCredentials decrypts one device's current password and console URL.
func (s *Store) GetCredentials(ctx context.Context, fleetName, deviceID string) (Credentials, error) {
	c := Credentials{DeviceID: deviceID}
	var pk int64
	var ct []byte
	var keyID, addr *string
	var url sealedURL
	err := s.pool.QueryRow(ctx, `
		SELECT d.id, d.status, d.cloud_address, d.password_ct, d.password_key_id, `+consoleURLColumnsOf("d")+`
		FROM devices d JOIN fleets f ON f.id = d.fleet_id WHERE f.name = $1 AND d.device_id = $2`,
		fleetName, deviceID).Scan(&pk, &c.Status, &addr, &ct, &keyID, &url.ct, &url.keyID, &url.legacy)
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
	if c.CloudPassword, err = s.open(pk, ct, *keyID); err != nil {
		return c, err
	}
	c.VNCURL, err = s.openConsoleURL(pk, url)
	return c, err
}

// RetryFailed schedules the failed devices of a fleet (or of one manifest) again, in
// tx, under a new work key; enqueue inserts its jobs in the same transaction. With
// now, the devices waiting out a backoff (an owed call after transient errors, or a
// readiness poll) are due at once too: those owing a call move to the new key, whose
// job is enqueued now, since their own job sleeps until the backoff ends. A device
// claimed by a job is left to it.
func (s *Store) RetryFailed(ctx context.Context, fleetName string, manifestID int64, now bool,
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
		if now {
			tag, err := tx.Exec(ctx, `
				UPDATE devices d SET next_attempt_at = NULL, work_key = $3
				FROM fleets f
				WHERE f.id = d.fleet_id AND d.op IS NOT NULL AND d.next_attempt_at > now()
				  AND (d.claim_until IS NULL OR d.claim_until <= now())
				  AND ($1 = '' OR f.name = $1) AND ($2 = 0 OR d.manifest_id = $2)`,
				fleetName, manifestID, key)
			if err != nil {
				return fmt.Errorf("retry: %w", err)
			}
			n += int(tag.RowsAffected())
			tag, err = tx.Exec(ctx, `
				UPDATE devices d SET next_poll_at = now()
				FROM fleets f
				WHERE f.id = d.fleet_id AND d.status = 'awaiting_ready' AND d.next_poll_at > now()
				  AND ($1 = '' OR f.name = $1) AND ($2 = 0 OR d.manifest_id = $2)`,
				fleetName, manifestID)
			if err != nil {
				return fmt.Errorf("retry: %w", err)
			}
			n += int(tag.RowsAffected())
		}
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

// WorkFleets names the fleets of the devices under a work key, so that a
// fleet-limited token is shown only the work of its fleets.
func (s *Store) WorkFleets(ctx context.Context, key string) ([]string, error) {
	return column[string](ctx, s.pool, "work fleets", `
		SELECT DISTINCT f.name FROM devices d JOIN fleets f ON f.id = d.fleet_id WHERE d.work_key = $1`, key)
}

// WorkProgress counts the devices of a work queue (a rotation or retry run) by status.
func (s *Store) WorkProgress(ctx context.Context, key string) (*Progress, error) {
	byStatus, byGroup, err := s.workCounts(ctx, key)
	if err != nil {
		return nil, err
	}
	p := &Progress{ByStatus: byStatus, GroupPage: &GroupPage{ByGroup: byGroup, Groups: len(byGroup)}}
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
	p.CallsOwed = progress.CallsOwed(p.ByStatus)
	if !p.Done {
		// A work queue's devices span manifests: only the cluster-wide limiter's part
		// of the cloud state is theirs.
		p.Cloud = &CloudState{}
		if err := s.limiterCloud(ctx, p.Cloud); err != nil {
			return nil, err
		}
	}
	return p, nil
}
