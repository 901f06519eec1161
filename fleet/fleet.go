// Package fleet is vncfleet's domain: devices as a manifest describes them, the rules
// a manifest row must follow, and a device's life — its statuses, what it owes the
// cloud next (State.Owed) and what each outcome of an operation does to it (Decide) —
// decided here once (life.go; drawn in docs/device-life.md). The store records what
// these rules decide and the jobs carry it out. It knows nothing of PostgreSQL, HTTP or
// River; the rules that are the VNC Cloud API's own come from package vnccloud, so the
// manifest validator and the server agree by construction.
package fleet

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// Status is where a device is in its life, as export and status show it.
type Status string

const (
	StatusPending       Status = "pending"        // owed a create, not started
	StatusCreating      Status = "creating"       // create in flight or being retried
	StatusAwaitingReady Status = "awaiting_ready" // created or changed, cloud not ready yet
	StatusReady         Status = "ready"          // the cloud holds the desired spec and the stored password
	StatusUpdating      Status = "updating"       // owed or doing a PUT of a changed spec
	StatusRotating      Status = "rotating"       // password reset in flight
	StatusDeleting      Status = "deleting"       // owed or doing a DELETE
	StatusDeleted       Status = "deleted"        // absent by request; no cloud address
	StatusFailed        Status = "failed"         // a permanent error, or too many transient ones
	StatusCancelled     Status = "cancelled"      // its manifest was cancelled before this device's work was done
)

// Statuses lists every status in life order.
var Statuses = []Status{StatusPending, StatusCreating, StatusAwaitingReady, StatusReady, StatusUpdating,
	StatusRotating, StatusDeleting, StatusDeleted, StatusFailed, StatusCancelled}

// Settled reports whether the device needs no more work for `upload --wait`.
func (s Status) Settled() bool {
	return s == StatusReady || s == StatusDeleted || s == StatusFailed || s == StatusCancelled
}

// ParseStatus accepts the names of Statuses.
func ParseStatus(s string) (Status, error) {
	if slices.Contains(Statuses, Status(s)) {
		return Status(s), nil
	}
	return "", fmt.Errorf("unknown status %q", s)
}

// DesiredState is the manifest's state column.
type DesiredState string

const (
	StatePresent DesiredState = "present"
	StateAbsent  DesiredState = "absent"
)

// Mode says what happens to the fleet's devices a manifest does not list.
type Mode string

const (
	ModeMerge   Mode = "merge"   // they are left alone
	ModeReplace Mode = "replace" // they are deleted
)

// ParseMode accepts merge (the default when empty) and replace.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "", string(ModeMerge):
		return ModeMerge, nil
	case string(ModeReplace):
		return ModeReplace, nil
	}
	return "", fmt.Errorf("mode must be merge or replace, not %q", s)
}

// OverDeletionLimit is the replace guard's finding in the words every surface uses
// (the API's answer, the CLI's refusal and its dry-run note): "this replace would
// delete 60 devices, more than the 50 allowed". How to allow it is each surface's to
// say, in its own terms: the CLI has a flag, the API a parameter.
func OverDeletionLimit(deletes, limit int) string {
	return fmt.Sprintf("this replace would delete %s, more than the %d allowed", Plural(deletes, "device"), limit)
}

// Field is one unknown manifest column, kept as device metadata.
type Field struct{ Name, Value string }

// Device is one validated manifest row.
type Device struct {
	Line               int             // physical line where the record starts (the header is line 1 normally)
	DeviceID           string          // exactly as written
	Action             vnccloud.Action // connect or listen
	Groups             []string        // connect only; nil when the cell is empty
	AllowGroups        []string        // listen only; nil when the cell is empty
	AllowDevices       []string        // listen only: device_ids of connect devices; nil when the cell is empty
	State              DesiredState    // present when the cell is empty
	ZenlayerInstanceID string          // "" when the cell is empty
	Metadata           []Field         // the unknown columns in header order, names as written; nil when none

	// Columns maps the known columns of the manifest's header (canonical names such
	// as ColDeviceID) to their 1-based positions, for problems found after reading
	// (CheckCrossRows, the server's SQL checks). Every Device of one Reader shares the
	// same map, so it costs nothing per row; it must not be modified. Nil for a Device
	// built by hand, which then counts as laid out in docs/contract.md's column order.
	Columns map[string]int
}

// Column is the 1-based position of a known column in the device's manifest.
func (d Device) Column(name string) int {
	if d.Columns != nil {
		return d.Columns[name]
	}
	return knownIndex(name) + 1
}

// ErrUnresolved is wrapped by Device.Spec when an allow_devices entry has no cloud
// address yet: the caller can wait for that device's create rather than fail.
var ErrUnresolved = errors.New("allowed device has no cloud address")

// Spec is the cloud address spec of the device, allow_devices resolved to cloud
// addresses by resolve (called once per entry, in order). The spec is checked with
// vnccloud's rules, so a nil error means the API would accept it; an unresolved
// device wraps ErrUnresolved, a rule broken wraps *vnccloud.ValidationError.
func (d Device) Spec(resolve func(deviceID string) (string, bool)) (vnccloud.Spec, error) {
	spec := vnccloud.Spec{Action: d.Action}
	switch {
	case d.Action == vnccloud.ActionConnect:
		spec.Groups = d.Groups
	case len(d.AllowGroups) > 0 || len(d.AllowDevices) > 0:
		// Without either list the ACL is omitted: every connect address may connect.
		acl := &vnccloud.AccessControl{Groups: d.AllowGroups}
		if len(d.AllowDevices) > 0 {
			acl.CloudAddresses = make([]string, 0, len(d.AllowDevices))
		}
		for _, id := range d.AllowDevices {
			addr, ok := resolve(id)
			if !ok {
				return vnccloud.Spec{}, fmt.Errorf("device %q: allow_devices %q: %w", d.DeviceID, id, ErrUnresolved)
			}
			acl.CloudAddresses = append(acl.CloudAddresses, addr)
		}
		spec.AccessControl = acl
	}
	if err := spec.Validate(); err != nil {
		return vnccloud.Spec{}, fmt.Errorf("device %q: %w", d.DeviceID, err)
	}
	return spec, nil
}

// SpecHash identifies what the device asks of VNC Cloud: action, state and the sorted
// groups, allow_groups and allow_devices (their order does not matter to the server).
// A re-uploaded row with the same SpecHash needs no VNC Cloud call. It is 32 bytes of
// SHA-256 over length-prefixed fields, so no name, whatever bytes it holds, can make
// two different rows hash alike.
//
// zenlayer_instance_id and metadata are deliberately left out: changing them must not
// cost a VNC Cloud update (the console URL is refetched when the instance id changes,
// compared on its own).
func (d Device) SpecHash() []byte {
	// Encoded on the stack and hashed in one go: ingest hashes every row of a
	// million-row manifest, so this allocates only the result in the common case.
	var stack [512]byte
	b := appendStr(stack[:0], "vncfleet spec v1")
	b = appendStr(b, string(d.Action))
	b = appendStr(b, string(d.State))
	for _, list := range [...][]string{d.Groups, d.AllowGroups, d.AllowDevices} {
		if !slices.IsSorted(list) {
			list = slices.Sorted(slices.Values(list))
		}
		b = binary.AppendUvarint(b, uint64(len(list)))
		for _, s := range list {
			b = appendStr(b, s)
		}
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// appendStr appends s length-prefixed, so that no two sequences of strings encode
// alike.
func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// ExportHeader is the export CSV's header (docs/contract.md).
var ExportHeader = []string{"device_id", "action", "status", "cloud_address", "cloud_password", "groups",
	"allow_groups", "allow_devices", "vnc_url", "last_error"}

// ListSeparator separates the values of a multi-valued cell.
const ListSeparator = ";"

// TrimValue is the manifest's one whitespace rule, for every id and every list value
// (device_id, groups, allow_groups, allow_devices, zenlayer_instance_id): spaces
// around a cell and around each ';'-separated value are dropped, because a
// spreadsheet adds them unseen and nobody means a group " line-01 "; spaces inside
// are kept. The values sent to the cloud, stored and shown in a plan are the trimmed
// ones, so " v5 " and "v5" are one device. Metadata values are kept as written.
func TrimValue(s string) string { return strings.TrimSpace(s) }

// SplitValues splits a multi-valued manifest cell and applies TrimValue to each
// value; an empty cell is nil. An empty value stays, to be reported.
func SplitValues(cell string) []string {
	values := SplitList(cell)
	for i, v := range values {
		values[i] = TrimValue(v)
	}
	return values
}

// FormulaStart lists the characters that make a spreadsheet read a cell as a
// formula when it begins with them (formula injection: a CSV opened in Excel runs
// "=HYPERLINK(...)" or worse). A device_id may not begin with one; SpreadsheetSafe
// defuses the other cells of the CSV answers.
const FormulaStart = "=+-@"

// SpreadsheetSafe prefixes a cell that begins like a formula (FormulaStart, or a tab
// or carriage return, which some spreadsheets skip before looking) with an
// apostrophe, which spreadsheets take as "this is text" and do not show. It is for
// cells whose content comes from users or remote errors; cloud addresses, passwords
// and URLs are machine-made and pass unchanged, since altering them would break them.
func SpreadsheetSafe(cell string) string {
	if cell != "" && strings.ContainsRune(FormulaStart+"\t\r", rune(cell[0])) {
		return "'" + cell
	}
	return cell
}

// SpreadsheetSafeList renders a multi-valued cell with SpreadsheetSafe.
func SpreadsheetSafeList(values []string) string { return SpreadsheetSafe(JoinList(values)) }

// JoinList renders a multi-valued cell.
func JoinList(values []string) string { return strings.Join(values, ListSeparator) }

// SplitList parses a multi-valued cell; an empty cell is nil.
func SplitList(cell string) []string {
	if cell == "" {
		return nil
	}
	return strings.Split(cell, ListSeparator)
}
