package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// DeviceDetail is one device as an operator inspects it: its spec, where it stands,
// and the calls made for it. It holds no password.
type DeviceDetail struct {
	Fleet              string            `json:"fleet"`
	DeviceID           string            `json:"deviceId"`
	Action             string            `json:"action"`
	Groups             []string          `json:"groups"`
	AllowGroups        []string          `json:"allowGroups"`
	AllowDevices       []string          `json:"allowDevices"`
	State              string            `json:"state"`
	ZenlayerInstanceID string            `json:"zenlayerInstanceId,omitempty"`
	Metadata           map[string]string `json:"metadata,omitempty"`
	Status             string            `json:"status"`
	Op                 string            `json:"op,omitempty"`
	CloudAddress       string            `json:"cloudAddress,omitempty"`
	Manifest           int64             `json:"manifest,omitempty"`
	Line               int               `json:"line,omitempty"`
	LastError          string            `json:"lastError,omitempty"`
	LastErrorStatus    int               `json:"lastErrorStatus,omitempty"`
	LastErrorCode      int               `json:"lastErrorCode,omitempty"`
	// VNCURL is the Zenlayer console URL; the API shows it to the secrets role only.
	VNCURL        string     `json:"vncUrl,omitempty"`
	VNCURLError   string     `json:"vncUrlError,omitempty"`
	PasswordSetAt *time.Time `json:"passwordSetAt,omitempty"`
	// LastRotatedAt is when a password reset of the device last succeeded; absent when
	// its password is still the one its create gave it.
	LastRotatedAt *time.Time    `json:"lastRotatedAt,omitempty"`
	HasPassword   bool          `json:"hasPassword"`
	CreatedAt     time.Time     `json:"createdAt"`
	UpdatedAt     time.Time     `json:"updatedAt"`
	ReadyAt       *time.Time    `json:"readyAt,omitempty"`
	History       []DeviceEvent `json:"history"`
}

// DeviceEvent is one VNC Cloud call made for a device (the device_events log).
type DeviceEvent struct {
	At         time.Time `json:"at"`
	Operation  string    `json:"operation"`
	Outcome    string    `json:"outcome"`
	HTTPStatus int       `json:"httpStatus,omitempty"`
	ErrorCode  int       `json:"errorCode,omitempty"`
	Message    string    `json:"message,omitempty"`
}

// historyLimit bounds the events a device detail lists, newest first.
const historyLimit = 100

// GetDevice reads one device and its newest events.
func (s *Store) GetDevice(ctx context.Context, fleetName, deviceID string) (*DeviceDetail, error) {
	d := &DeviceDetail{Fleet: fleetName, DeviceID: deviceID}
	var pk int64
	var manifest *int64
	var line, errStatus, errCode *int
	var zl, op, addr, lastErr, url, urlErr *string
	var meta []byte
	err := s.pool.QueryRow(ctx, `
		SELECT d.id, d.action, d.groups, d.allow_groups, d.allow_devices, d.desired_state, d.zenlayer_instance_id,
		       d.metadata, d.status, d.op, d.cloud_address, d.manifest_id, d.line, d.last_error, d.last_error_status,
		       d.last_error_code, d.vnc_url, d.vnc_url_error, d.password_set_at, d.password_ct IS NOT NULL,
		       d.created_at, d.updated_at, d.ready_at,
		       (SELECT max(e.at) FROM device_events e WHERE e.device_pk = d.id AND e.operation = 'reset' AND e.outcome = 'ok')
		FROM devices d JOIN fleets f ON f.id = d.fleet_id WHERE f.name = $1 AND d.device_id = $2`,
		fleetName, deviceID).Scan(&pk, &d.Action, &d.Groups, &d.AllowGroups, &d.AllowDevices, &d.State, &zl,
		&meta, &d.Status, &op, &addr, &manifest, &line, &lastErr, &errStatus, &errCode, &url, &urlErr,
		&d.PasswordSetAt, &d.HasPassword, &d.CreatedAt, &d.UpdatedAt, &d.ReadyAt, &d.LastRotatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("device %q of fleet %q: %w", deviceID, fleetName, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("device %q: %w", deviceID, err)
	}
	d.ZenlayerInstanceID, d.Op, d.CloudAddress, d.LastError = deref(zl), deref(op), deref(addr), deref(lastErr)
	d.VNCURL, d.VNCURLError = deref(url), deref(urlErr)
	d.Manifest, d.Line, d.LastErrorStatus, d.LastErrorCode = deref(manifest), deref(line), deref(errStatus), deref(errCode)
	if meta != nil {
		if err := json.Unmarshal(meta, &d.Metadata); err != nil {
			return nil, fmt.Errorf("device %q metadata: %w", deviceID, err)
		}
	}
	rows, err := s.pool.Query(ctx, `
		SELECT at, operation, outcome, coalesce(http_status, 0), coalesce(error_code, 0), coalesce(message, '')
		FROM device_events WHERE device_pk = $1 ORDER BY id DESC LIMIT $2`, pk, historyLimit)
	if err != nil {
		return nil, fmt.Errorf("device %q history: %w", deviceID, err)
	}
	d.History, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (DeviceEvent, error) {
		var e DeviceEvent
		err := row.Scan(&e.At, &e.Operation, &e.Outcome, &e.HTTPStatus, &e.ErrorCode, &e.Message)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("device %q history: %w", deviceID, err)
	}
	return d, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// Failure is a failed device of a manifest with the API's answer that failed it.
type Failure struct {
	DeviceID   string `json:"deviceId"`
	Line       int    `json:"line"`
	HTTPStatus int    `json:"httpStatus,omitempty"`
	ErrorCode  int    `json:"errorCode,omitempty"`
	Message    string `json:"message"`
}

// failuresSQL reads a manifest's ($1) first $2 failed devices in line order: a range
// of devices_failed_idx (migration 0028), whose order it is.
const failuresSQL = `
	SELECT device_id, coalesce(line, 0), coalesce(last_error_status, 0), coalesce(last_error_code, 0), coalesce(last_error, '')
	FROM devices WHERE manifest_id = $1 AND status = 'failed' ORDER BY coalesce(line, 0), id LIMIT $2`

// Failures lists the failed devices of a manifest in line order, at most limit.
func (s *Store) Failures(ctx context.Context, manifestID int64, limit int) ([]Failure, error) {
	rows, err := s.pool.Query(ctx, failuresSQL, manifestID, limit)
	if err != nil {
		return nil, fmt.Errorf("failures of manifest %d: %w", manifestID, err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Failure, error) {
		var f Failure
		err := row.Scan(&f.DeviceID, &f.Line, &f.HTTPStatus, &f.ErrorCode, &f.Message)
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("failures of manifest %d: %w", manifestID, err)
	}
	return list, nil
}

// FixupColumns are the manifest columns of a fix-up CSV, before the metadata columns
// and the error column.
var FixupColumns = []string{"device_id", "action", "groups", "allow_groups", "allow_devices", "state", "zenlayer_instance_id"}

// FixupMetadataColumns names the metadata columns of a manifest's failed rows, sorted.
func (s *Store) FixupMetadataColumns(ctx context.Context, manifestID int64) ([]string, error) {
	cols, err := column[string](ctx, s.pool, "fix-up columns", `
		SELECT DISTINCT k FROM devices, jsonb_object_keys(metadata) AS k
		WHERE manifest_id = $1 AND status = 'failed' AND metadata IS NOT NULL`, manifestID)
	slices.Sort(cols)
	return cols, err
}

// FixupRow is a failed device as its manifest row said it, and why it failed.
type FixupRow struct {
	Device DeviceDetail // the spec fields and metadata only
	Error  string
}

// FixupRows streams the failed devices of a manifest in line order, as rows to
// correct and upload again.
func (s *Store) FixupRows(ctx context.Context, manifestID int64) iter.Seq2[FixupRow, error] {
	return func(yield func(FixupRow, error) bool) {
		rows, err := s.pool.Query(ctx, `
			SELECT device_id, action, groups, allow_groups, allow_devices, desired_state,
			       coalesce(zenlayer_instance_id, ''), metadata, coalesce(last_error, '')
			FROM devices WHERE manifest_id = $1 AND status = 'failed' ORDER BY coalesce(line, 0), id`, manifestID)
		if err != nil {
			yield(FixupRow{}, fmt.Errorf("fix-up rows: %w", err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var r FixupRow
			var meta []byte
			d := &r.Device
			if err := rows.Scan(&d.DeviceID, &d.Action, &d.Groups, &d.AllowGroups, &d.AllowDevices, &d.State,
				&d.ZenlayerInstanceID, &meta, &r.Error); err != nil {
				yield(FixupRow{}, fmt.Errorf("fix-up rows: %w", err))
				return
			}
			if meta != nil {
				if err := json.Unmarshal(meta, &d.Metadata); err != nil {
					yield(FixupRow{}, fmt.Errorf("fix-up rows: %w", err))
					return
				}
			}
			if !yield(r, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(FixupRow{}, fmt.Errorf("fix-up rows: %w", err))
		}
	}
}
