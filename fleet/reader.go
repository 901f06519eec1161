package fleet

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// Manifest columns, as named in the header (case-insensitively, surrounding spaces
// ignored).
const (
	ColDeviceID     = "device_id"
	ColAction       = "action"
	ColGroups       = "groups"
	ColAllowGroups  = "allow_groups"
	ColAllowDevices = "allow_devices"
	ColState        = "state"
	ColZenlayer     = "zenlayer_instance_id"
)

// knownColumns are the columns with a meaning; every other column is metadata.
var knownColumns = []string{ColDeviceID, ColAction, ColGroups, ColAllowGroups, ColAllowDevices, ColState, ColZenlayer}

// Limits of the manifest's own fields (the API's limits come from vnccloud).
const (
	MaxDeviceIDChars = 128
	// MaxZenlayerIDChars bounds zenlayer_instance_id, which must be made of ASCII
	// letters, digits, '-' and '_': Zenlayer's instance ids are short opaque tokens of
	// that alphabet, and anything else would only fail later, at the Zenlayer API.
	MaxZenlayerIDChars = 64
)

// ReaderOptions tunes a Reader.
type ReaderOptions struct {
	// MaxProblems caps the problems listed (Problems.List); Problems.Total still
	// counts every one. Defaults to DefaultMaxProblems (1000): enough to fix a file
	// in one go, while a million bad rows cannot exhaust memory.
	MaxProblems int
	// OnRejected, when set, is told the device_id cell of each row rejected for its
	// own problems, so that a caller checking rules across rows need not report a
	// second problem for a row that names it (the first problem is the cause).
	OnRejected func(line int, deviceID string)
}

// Reader streams the rows of a manifest, validating each; its memory does not grow
// with the file (only Problems does, up to its cap). A row with problems is recorded
// in Problems and skipped, so one pass lists every problem. Rules that span rows
// (duplicates, allow_devices naming other rows) are the caller's: the server checks
// them in SQL, CheckCrossRows checks them in memory for small files.
//
// Problem locations: Line is the physical line where the record starts (a quoted
// field may span lines), Column the 1-based position of the header field, ColumnName
// the column's canonical name for the known columns and the header text otherwise.
// A CSV syntax error is located at the line and byte column encoding/csv reports.
//
// Normalisation: action and state are case-insensitive and surrounding spaces are
// ignored (they are keywords, read back lower-case); device_id, group names and
// allow_devices entries are taken exactly as written, because a space there makes a
// different, lookalike name, so device_id rejects surrounding whitespace outright.
type Reader struct {
	csv        *csv.Reader
	header     []string
	headerLine int
	names      []string       // per field: canonical name of a known column, else the header text
	columns    map[string]int // known column name -> 1-based position; shared with every Device
	idx        [7]int         // knownColumns order -> 0-based field index, -1 when absent
	metaCols   []int          // field indexes of the metadata columns, in header order
	badUTF8    []bool         // reused per row: fields that are not valid UTF-8 or hold a NUL
	problems   *Problems
	onRejected func(line int, deviceID string)
	done       bool
}

// Field indexes into Reader.idx, in knownColumns order.
const (
	iDeviceID = iota
	iAction
	iGroups
	iAllowGroups
	iAllowDevices
	iState
	iZenlayer
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// NewReader reads and checks the header. Header problems (missing required columns,
// duplicate or empty column names, a CSV syntax error) end the read at once and are
// returned as *Problems; an error of r itself is returned wrapped.
func NewReader(r io.Reader, opts ReaderOptions) (*Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if bom, err := br.Peek(len(utf8BOM)); err == nil && bytes.Equal(bom, utf8BOM) {
		_, _ = br.Discard(len(utf8BOM))
	}
	c := csv.NewReader(br)
	c.FieldsPerRecord = -1 // a row of the wrong width is a located problem, not the end
	c.ReuseRecord = true   // the fields are fresh strings anyway; only the slice is reused
	rd := &Reader{csv: c, columns: map[string]int{}, problems: &Problems{Cap: opts.MaxProblems}, onRejected: opts.OnRejected}
	for i := range rd.idx {
		rd.idx[i] = -1
	}

	header, err := c.Read()
	if err != nil {
		var pe *csv.ParseError
		switch {
		case errors.Is(err, io.EOF):
			rd.problems.Add(Problem{Line: 1, Column: 1, Reason: "the manifest is empty: a header row is required"})
		case errors.As(err, &pe):
			rd.problems.Add(syntaxProblem(pe))
		default:
			return nil, fmt.Errorf("read manifest header: %w", err)
		}
		return nil, rd.problems
	}
	rd.headerLine, _ = c.FieldPos(0)
	rd.header = make([]string, len(header))
	rd.names = make([]string, len(header))
	rd.badUTF8 = make([]bool, len(header))
	copy(rd.header, header)
	// A map, not a scan of the earlier names: a hostile header of a million columns
	// must cost linear time. It is dropped once the header is checked.
	seen := make(map[string]int, len(header))
	for i, h := range rd.header {
		name := strings.ToLower(strings.TrimSpace(h))
		rd.names[i] = h
		switch {
		case !utf8.ValidString(h):
			rd.problems.Add(Problem{Line: rd.headerLine, Column: i + 1, Reason: "column name is not valid UTF-8"})
			continue
		case strings.IndexByte(h, 0) >= 0:
			rd.problems.Add(Problem{Line: rd.headerLine, Column: i + 1, Reason: "column name contains a NUL character"})
			continue
		case name == "":
			rd.problems.Add(Problem{Line: rd.headerLine, Column: i + 1, Reason: "column name is empty"})
			continue
		}
		known := knownIndex(name)
		if known >= 0 {
			rd.names[i] = name
		}
		if prev, dup := seen[name]; dup {
			rd.problems.Add(Problem{Line: rd.headerLine, Column: i + 1, ColumnName: rd.names[i],
				Reason: fmt.Sprintf("column %q appears twice (also column %d)", clip(name), prev+1)})
			continue
		}
		seen[name] = i
		if known >= 0 {
			rd.idx[known] = i
			rd.columns[name] = i + 1
		} else {
			rd.metaCols = append(rd.metaCols, i)
		}
	}
	for _, required := range []int{iDeviceID, iAction} {
		if rd.idx[required] < 0 {
			rd.problems.Add(Problem{Line: rd.headerLine, Column: 1,
				Reason: fmt.Sprintf("required column %q is missing", knownColumns[required])})
		}
	}
	if rd.problems.Len() > 0 {
		return nil, rd.problems
	}
	return rd, nil
}

func knownIndex(name string) int {
	for i, k := range knownColumns {
		if k == name {
			return i
		}
	}
	return -1
}

func syntaxProblem(pe *csv.ParseError) Problem {
	reason := "CSV syntax: " + pe.Err.Error()
	if pe.StartLine != pe.Line {
		reason += fmt.Sprintf(" (in the record that starts on line %d)", pe.StartLine)
	}
	return Problem{Line: max(pe.Line, 1), Column: max(pe.Column, 1), Reason: reason}
}

// Header is the header row as written.
func (r *Reader) Header() []string { return r.header }

// Columns maps each known column present in the header (canonical lower-case name)
// to its 1-based position. Every Device the reader returns shares this map: it must
// not be modified.
func (r *Reader) Columns() map[string]int { return r.columns }

// Column is the 1-based position of a known column, 0 when the header lacks it.
func (r *Reader) Column(name string) int { return r.columns[name] }

// Problems are the problems found so far; after io.EOF, all of them.
func (r *Reader) Problems() *Problems { return r.problems }

// Next returns the next valid row, io.EOF at the end. Invalid rows are recorded in
// Problems and skipped. A CSV syntax error is recorded too and ends the read: past it,
// fields cannot be told apart reliably. Other errors come from the underlying reader.
func (r *Reader) Next() (Device, error) {
	for !r.done {
		record, err := r.csv.Read()
		if err != nil {
			r.done = true
			var pe *csv.ParseError
			switch {
			case errors.Is(err, io.EOF):
			case errors.As(err, &pe):
				r.problems.Add(syntaxProblem(pe))
			default:
				return Device{}, fmt.Errorf("read manifest: %w", err)
			}
			break
		}
		line, _ := r.csv.FieldPos(0)
		if d, ok := r.parseRow(record, line); ok {
			return d, nil
		}
	}
	return Device{}, io.EOF
}

// rowCheck accumulates the problems of one row.
type rowCheck struct {
	r    *Reader
	line int
	bad  bool
}

func (c *rowCheck) problem(col int, reason string) {
	c.bad = true
	i := c.r.idx[col]
	c.r.problems.Add(Problem{Line: c.line, Column: i + 1, ColumnName: c.r.names[i], Reason: reason})
}

// cell is the value of a known column: "" when the header lacks it or the field is
// not valid UTF-8 (already reported).
func (c *rowCheck) cell(record []string, col int) string {
	i := c.r.idx[col]
	if i < 0 || c.r.badUTF8[i] {
		return ""
	}
	return record[i]
}

func (r *Reader) parseRow(record []string, line int) (Device, bool) {
	c := rowCheck{r: r, line: line}
	if n, want := len(record), len(r.header); n != want {
		p := Problem{Line: line, Column: min(n, want) + 1, Reason: fmt.Sprintf("row has %d fields, the header has %d", n, want)}
		if n < want {
			p.ColumnName = r.names[n] // the first missing one
		}
		r.problems.Add(p)
		return Device{}, false
	}
	for i, v := range record {
		reason := ""
		switch {
		case !utf8.ValidString(v):
			reason = "not valid UTF-8"
		case strings.IndexByte(v, 0) >= 0:
			// PostgreSQL's text cannot hold it, in any column.
			reason = "contains a NUL character"
		}
		r.badUTF8[i] = reason != ""
		if r.badUTF8[i] {
			c.bad = true
			r.problems.Add(Problem{Line: line, Column: i + 1, ColumnName: r.names[i], Reason: reason})
		}
	}
	// Go on with the other fields, so that the row's every problem is listed.
	d := Device{Line: line, Columns: r.columns}

	d.DeviceID = c.cell(record, iDeviceID)
	if !r.badUTF8[r.idx[iDeviceID]] {
		if reason := deviceIDProblem(d.DeviceID); reason != "" {
			c.problem(iDeviceID, reason)
		}
	}

	if i := r.idx[iAction]; !r.badUTF8[i] {
		switch action := keyword(record[i]); vnccloud.Action(action) {
		case vnccloud.ActionConnect, vnccloud.ActionListen:
			d.Action = vnccloud.Action(action)
		case "":
			c.problem(iAction, "action is required: connect or listen")
		default:
			c.problem(iAction, fmt.Sprintf("action must be connect or listen, not %q", clip(action)))
		}
	}

	d.Groups = c.groupList(iGroups, c.cell(record, iGroups), vnccloud.MaxConnectGroups)
	d.AllowGroups = c.groupList(iAllowGroups, c.cell(record, iAllowGroups), vnccloud.MaxACLGroups)
	d.AllowDevices = c.deviceList(c.cell(record, iAllowDevices), d.DeviceID)
	// A cell is checked against the action only when it is well-formed, so that one
	// cell yields one problem.
	if d.Action == vnccloud.ActionListen && d.Groups != nil {
		c.problem(iGroups, "groups is for connect devices; a listen device names who may connect in allow_groups and allow_devices")
	}
	if d.Action == vnccloud.ActionConnect && d.AllowGroups != nil {
		c.problem(iAllowGroups, "allow_groups is for listen devices; a connect device joins groups")
	}
	if d.Action == vnccloud.ActionConnect && d.AllowDevices != nil {
		c.problem(iAllowDevices, "allow_devices is for listen devices; a connect device joins groups")
	}

	d.State = StatePresent
	if i := r.idx[iState]; i >= 0 && !r.badUTF8[i] {
		switch state := keyword(record[i]); state {
		case "", string(StatePresent):
		case string(StateAbsent):
			d.State = StateAbsent
		default:
			c.problem(iState, fmt.Sprintf("state must be present or absent, not %q", clip(state)))
		}
	}

	d.ZenlayerInstanceID = c.cell(record, iZenlayer)
	if id := d.ZenlayerInstanceID; id != "" && !validZenlayerID(id) {
		c.problem(iZenlayer, fmt.Sprintf("zenlayer_instance_id %q must be 1..%d characters of ASCII letters, digits, '-' and '_'", clip(id), MaxZenlayerIDChars))
	}
	if c.bad {
		if r.onRejected != nil {
			r.onRejected(line, d.DeviceID)
		}
		return Device{}, false
	}

	if len(r.metaCols) > 0 {
		d.Metadata = make([]Field, len(r.metaCols))
		for j, i := range r.metaCols {
			d.Metadata[j] = Field{Name: r.header[i], Value: record[i]}
		}
	}
	return d, true
}

// keyword normalises an enumerated cell (action, state): case and surrounding spaces
// do not matter. It allocates only when the cell is not already lower-case.
func keyword(cell string) string {
	return strings.ToLower(strings.TrimSpace(cell))
}

// splitCell splits a multi-valued cell after checking the count, so that an absurd
// cell (a million separators) is refused before it is allocated.
func (c *rowCheck) splitCell(col int, cell, what string, limit int) []string {
	if n := strings.Count(cell, ListSeparator) + 1; n > limit {
		c.problem(col, fmt.Sprintf("%d %s, at most %d are allowed", n, what, limit))
		return nil
	}
	return strings.Split(cell, ListSeparator)
}

// groupList parses a cell of group names (groups or allow_groups); nil when empty or
// invalid.
func (c *rowCheck) groupList(col int, cell string, limit int) []string {
	if cell == "" {
		return nil
	}
	names := c.splitCell(col, cell, "groups", limit)
	for k, n := range names {
		if err := vnccloud.ValidateGroupName(n); err != nil {
			hint := ""
			if n == "" {
				hint = " (';' goes only between names)"
			}
			c.problem(col, fmt.Sprintf("group %d of %d: %v%s", k+1, len(names), err, hint))
			return nil
		}
		if j := indexBefore(names, k); j >= 0 {
			c.problem(col, fmt.Sprintf("group %q is listed twice", clip(n)))
			return nil
		}
	}
	return names
}

// deviceList parses allow_devices; nil when empty or invalid.
func (c *rowCheck) deviceList(cell, self string) []string {
	if cell == "" {
		return nil
	}
	ids := c.splitCell(iAllowDevices, cell, "devices", vnccloud.MaxACLCloudAddresses)
	for k, id := range ids {
		if reason := deviceIDProblem(id); reason != "" {
			c.problem(iAllowDevices, fmt.Sprintf("device %d of %d: %s", k+1, len(ids), reason))
			return nil
		}
		if id == self {
			c.problem(iAllowDevices, "a device cannot allow itself")
			return nil
		}
		if indexBefore(ids, k) >= 0 {
			c.problem(iAllowDevices, fmt.Sprintf("device %q is listed twice", clip(id)))
			return nil
		}
	}
	return ids
}

// indexBefore finds list[k] among list[:k]. Lists hold at most 24 entries, so the
// quadratic scan is cheaper than a map per row.
func indexBefore(list []string, k int) int {
	for j := 0; j < k; j++ {
		if list[j] == list[k] {
			return j
		}
	}
	return -1
}

// deviceIDProblem explains what is wrong with a device_id (valid UTF-8 assumed), or
// returns "".
func deviceIDProblem(id string) string {
	if id == "" {
		return "device_id is empty"
	}
	n, control, separator := 0, false, false
	for _, r := range id {
		n++
		control = control || unicode.IsControl(r)
		separator = separator || r == ';'
	}
	first, _ := utf8.DecodeRuneInString(id)
	last, _ := utf8.DecodeLastRuneInString(id)
	switch {
	case n > MaxDeviceIDChars:
		return fmt.Sprintf("device_id has %d characters, at most %d are allowed", n, MaxDeviceIDChars)
	case unicode.IsSpace(first) || unicode.IsSpace(last):
		// Not trimmed silently: "v1 " and "v1" would be two devices that look alike.
		return fmt.Sprintf("device_id %q has leading or trailing whitespace", clip(id))
	case control:
		return fmt.Sprintf("device_id %q contains a control character", clip(id))
	case separator:
		return fmt.Sprintf("device_id %q contains %q, the list separator of allow_devices", clip(id), ListSeparator)
	}
	return ""
}

func validZenlayerID(id string) bool {
	if id == "" || len(id) > MaxZenlayerIDChars {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// clip shortens a value quoted in a message, on a rune boundary.
func clip(s string) string {
	const n = 40
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
