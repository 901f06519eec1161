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

// Manifest columns, as named in the header. A header name is matched after
// NormalizeColumnName: case, surrounding spaces, and spaces or hyphens for
// underscores do not matter ("Device ID" is device_id).
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

// ReaderOptions tunes a Reader. The zero value reads the contract's format (UTF-8,
// comma-separated) with the default limits.
type ReaderOptions struct {
	// MaxProblems caps the problems listed (Problems.List); Problems.Total still
	// counts every one. Defaults to DefaultMaxProblems (1000): enough to fix a file
	// in one go, while a million bad rows cannot exhaust memory.
	MaxProblems int
	// OnRejected, when set, is told the device_id cell of each row rejected for its
	// own problems, so that a caller checking rules across rows need not report a
	// second problem for a row that names it (the first problem is the cause).
	OnRejected func(line int, deviceID string)
	// MaxCellBytes bounds one cell; a longer one is a problem of its line and column,
	// found without buffering it. Defaults to DefaultMaxCellBytes (64 KiB).
	MaxCellBytes int
	// MaxColumns bounds the header; a wider one is a problem. Defaults to
	// DefaultMaxColumns (256).
	MaxColumns int
	// Separator separates the fields: ',' by default; ';' and tab for the files a
	// spreadsheet saves in some locales (see ParseSeparator).
	Separator rune
	// Encoding is the file's character encoding: UTF-8 by default, or
	// EncodingWindows1252, which is converted to UTF-8 as it is read.
	Encoding Encoding
}

func (o ReaderOptions) withDefaults() ReaderOptions {
	if o.MaxCellBytes <= 0 {
		o.MaxCellBytes = DefaultMaxCellBytes
	}
	if o.MaxColumns <= 0 {
		o.MaxColumns = DefaultMaxColumns
	}
	if o.Separator == 0 {
		o.Separator = ','
	}
	return o
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
// Normalisation: action and state are case-insensitive keywords, read back
// lower-case; every id and list value follows TrimValue (spaces around a cell and
// around each ';'-separated value are dropped, inner ones kept), so the values the
// reader returns are the ones sent to the cloud. Metadata values are kept as written.
type Reader struct {
	csv        *csv.Reader
	limit      *limitReader
	opts       ReaderOptions
	header     []string
	headerLine int
	lineShift  int            // physical minus csv line numbers, after dropped newlines
	names      []string       // per field: canonical name of a known column, else the header text
	columns    map[string]int // known column name -> 1-based position; shared with every Device
	idx        [7]int         // knownColumns order -> 0-based field index, -1 when absent
	metaCols   []int          // field indexes of the metadata columns, in header order
	reported   []bool         // reused per row: fields already reported (too long, not UTF-8, NUL)
	// encodingReported: the file was found not to be UTF-8 but Windows-1252; that is
	// said once, not again for every cell.
	encodingReported bool
	problems         *Problems
	onRejected       func(line int, deviceID string)
	done             bool
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
// duplicate, empty, secret-like or misspelt column names, a CSV syntax error) end the
// read at once and are returned as *Problems; an error of r itself is returned wrapped.
func NewReader(r io.Reader, opts ReaderOptions) (*Reader, error) {
	opts = opts.withDefaults()
	sep, err := separatorByte(opts.Separator)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(r, 64<<10)
	if bom, err := br.Peek(len(utf8BOM)); err == nil && bytes.Equal(bom, utf8BOM) {
		_, _ = br.Discard(len(utf8BOM))
	}
	src, err := opts.Encoding.decoder(br)
	if err != nil {
		return nil, err
	}
	limit := newLimitReader(src, sep, opts.MaxCellBytes, opts.MaxColumns)
	c := csv.NewReader(limit)
	c.Comma = opts.Separator
	c.FieldsPerRecord = -1 // a row of the wrong width is a located problem, not the end
	c.ReuseRecord = true   // the fields are fresh strings anyway; only the slice is reused
	rd := &Reader{csv: c, limit: limit, opts: opts, columns: map[string]int{}, problems: &Problems{Cap: opts.MaxProblems},
		onRejected: opts.OnRejected}
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
			rd.problems.Add(rd.syntaxProblem(pe))
		default:
			return nil, fmt.Errorf("read manifest header: %w", err)
		}
		return nil, rd.problems
	}
	csvLine, _ := c.FieldPos(0)
	headerLine, cut := rd.locate(csvLine)
	rd.headerLine = headerLine
	if width := cut.width(len(header)); width > opts.MaxColumns {
		rd.problems.Add(Problem{Line: rd.headerLine, Column: opts.MaxColumns + 1,
			Reason: fmt.Sprintf("the header has %s, at most %d %s allowed", Plural(width, "column"), opts.MaxColumns, Agree(opts.MaxColumns, "is", "are"))})
		return nil, rd.problems
	}
	rd.header = make([]string, len(header))
	rd.names = make([]string, len(header))
	rd.reported = make([]bool, len(header))
	copy(rd.header, header)
	for _, i := range cut.long() {
		rd.reported[i] = true
		rd.problems.Add(Problem{Line: rd.headerLine, Column: i + 1,
			Reason: "column name is longer than " + Plural(opts.MaxCellBytes, "byte")})
	}
	// A map, not a scan of the earlier names, so that the header costs linear time.
	seen := make(map[string]int, len(header))
	for i, h := range rd.header {
		name := NormalizeColumnName(h)
		rd.names[i] = h
		at := Problem{Line: rd.headerLine, Column: i + 1}
		switch {
		case rd.reported[i]:
			continue
		case !utf8.ValidString(h):
			if p := rd.encodingProblem(at, h, "column name is not valid UTF-8"); p.Reason != "" {
				rd.problems.Add(p)
			}
			continue
		case strings.IndexByte(h, 0) >= 0:
			at.Reason = "column name contains a NUL character"
			rd.problems.Add(at)
			continue
		case name == "":
			at.Reason = "column name is empty"
			rd.problems.Add(at)
			continue
		}
		known := knownIndex(name)
		if known >= 0 {
			rd.names[i] = name
		} else if reason := unknownColumnProblem(name); reason != "" {
			at.ColumnName, at.Reason = clip(h), reason
			rd.problems.Add(at)
			continue
		}
		if prev, dup := seen[name]; dup {
			at.ColumnName, at.Reason = rd.names[i], fmt.Sprintf("column %q appears twice (also column %d)", clip(name), prev+1)
			rd.problems.Add(at)
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
	missing := false
	for _, required := range []int{iDeviceID, iAction} {
		if rd.idx[required] < 0 {
			missing = true
			rd.problems.Add(Problem{Line: rd.headerLine, Column: 1,
				Reason: fmt.Sprintf("required column %q is missing", knownColumns[required])})
		}
	}
	if missing {
		if alt, ok := otherSeparator(rd.header, opts.Separator); ok {
			// One problem that says why, instead of "device_id is missing".
			rd.problems = &Problems{Cap: opts.MaxProblems}
			rd.problems.Add(Problem{Line: rd.headerLine, Column: 1, Reason: fmt.Sprintf(
				"this file is separated by %s, not %s: export it as CSV UTF-8, or upload it with --separator %s",
				SeparatorName(alt), SeparatorName(opts.Separator), separatorFlag(alt))})
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

func (r *Reader) syntaxProblem(pe *csv.ParseError) Problem {
	reason := "CSV syntax: " + pe.Err.Error()
	if pe.StartLine != pe.Line {
		reason += fmt.Sprintf(" (in the record that starts on line %d)", pe.StartLine+r.lineShift)
	}
	return Problem{Line: max(pe.Line+r.lineShift, 1), Column: max(pe.Column, 1), Reason: reason}
}

// locate turns the line where csv says a record starts into the file's line, and
// returns what the input limits cut from that record.
func (r *Reader) locate(csvLine int) (line int, cut *cutRecord) {
	line = csvLine + r.lineShift
	cut, stale := r.limit.nextCut(csvLine)
	if stale {
		// Never expected: the limiter and encoding/csv disagree on where a record
		// starts. A cut cell must not pass for a whole one, so the file is refused.
		r.problems.Add(Problem{Line: line, Column: 1,
			Reason: "a cell before this line is longer than " + Plural(r.opts.MaxCellBytes, "byte")})
	}
	if cut != nil {
		// Newlines dropped inside this record's cut cells move the later records.
		r.lineShift = cut.shiftAfter
	}
	return line, cut
}

// width is the record's field count: what the limiter counted when it passed only
// the first fields on, else seen, what csv returned.
func (c *cutRecord) width(seen int) int {
	if c != nil && c.fields > 0 {
		return c.fields
	}
	return seen
}

// long lists the fields cut at the cell limit (none for a nil cut).
func (c *cutRecord) long() []int {
	if c == nil {
		return nil
	}
	return c.longFields
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
				r.problems.Add(r.syntaxProblem(pe))
			default:
				return Device{}, fmt.Errorf("read manifest: %w", err)
			}
			break
		}
		csvLine, _ := r.csv.FieldPos(0)
		line, cut := r.locate(csvLine)
		if d, ok := r.parseRow(record, line, cut); ok {
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

// cell is the value of a known column after TrimValue: "" when the header lacks it
// or the field was already reported (too long, not valid UTF-8, a NUL).
func (c *rowCheck) cell(record []string, col int) string {
	i := c.r.idx[col]
	if i < 0 || c.r.reported[i] {
		return ""
	}
	return TrimValue(record[i])
}

func (r *Reader) parseRow(record []string, line int, cut *cutRecord) (Device, bool) {
	c := rowCheck{r: r, line: line}
	n, want := cut.width(len(record)), len(r.header)
	if n != want {
		p := Problem{Line: line, Column: min(n, want) + 1, Reason: fmt.Sprintf("row has %s, the header has %d", Plural(n, "field"), want)}
		if n < want {
			p.ColumnName = r.names[n] // the first missing one
		}
		r.problems.Add(p)
		return Device{}, false
	}
	clear(r.reported)
	for _, i := range cut.long() {
		r.reported[i] = true
		c.bad = true
		r.problems.Add(Problem{Line: line, Column: i + 1, ColumnName: r.names[i],
			Reason: fmt.Sprintf("cell is longer than %s, the limit", Plural(r.opts.MaxCellBytes, "byte"))})
	}
	for i, v := range record {
		if r.reported[i] {
			continue
		}
		at := Problem{Line: line, Column: i + 1, ColumnName: r.names[i]}
		switch {
		case !utf8.ValidString(v):
			r.reported[i], c.bad = true, true
			if p := r.encodingProblem(at, v, "not valid UTF-8"); p.Reason != "" {
				r.problems.Add(p)
			}
		case strings.IndexByte(v, 0) >= 0:
			// PostgreSQL's text cannot hold it, in any column.
			r.reported[i], c.bad = true, true
			at.Reason = "contains a NUL character"
			r.problems.Add(at)
		}
	}
	// Go on with the other fields, so that the row's every problem is listed.
	d := Device{Line: line, Columns: r.columns}

	d.DeviceID = c.cell(record, iDeviceID)
	if !r.reported[r.idx[iDeviceID]] {
		if reason := deviceIDProblem(d.DeviceID); reason != "" {
			c.problem(iDeviceID, reason)
		}
	}

	if i := r.idx[iAction]; !r.reported[i] {
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
	if i := r.idx[iState]; i >= 0 && !r.reported[i] {
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

// encodingProblem is the problem of a value that is not valid UTF-8. When it reads as
// Windows-1252 (what a spreadsheet saves as "CSV" on Windows), the file is said once
// to be in that encoding, and later cells are not reported again: the zero Problem
// (no Reason) says there is nothing more to add.
func (r *Reader) encodingProblem(at Problem, value, reason string) Problem {
	switch {
	case r.encodingReported:
		return Problem{}
	case isWindows1252(value):
		r.encodingReported = true
		at.Reason = "this file is not UTF-8 but reads as Windows-1252 (a spreadsheet's plain \"CSV\"): " +
			"export it as CSV UTF-8, or upload it with --encoding windows-1252"
		return at
	}
	at.Reason = reason
	return at
}

// keyword normalises an enumerated cell (action, state): case and surrounding spaces
// do not matter. It allocates only when the cell is not already lower-case.
func keyword(cell string) string {
	return strings.ToLower(strings.TrimSpace(cell))
}

// splitCell splits a multi-valued cell (SplitValues) after checking the count, so
// that an absurd cell (a million separators) is refused before it is allocated.
func (c *rowCheck) splitCell(col int, cell, what string, limit int) []string {
	if n := strings.Count(cell, ListSeparator) + 1; n > limit {
		c.problem(col, fmt.Sprintf("%d %s, at most %d are allowed", n, what, limit))
		return nil
	}
	return SplitValues(cell)
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

// deviceIDProblem explains what is wrong with a device_id (valid UTF-8 assumed,
// TrimValue applied), or returns "".
func deviceIDProblem(id string) string {
	if id == "" {
		return "device_id is empty"
	}
	n, control, format, separator := 0, false, false, false
	for i := 0; i < len(id); {
		if c := id[i]; c < utf8.RuneSelf { // ASCII, nearly every id: no format characters there
			n, i = n+1, i+1
			control = control || c < 0x20 || c == 0x7f
			separator = separator || c == ';'
			continue
		}
		r, size := utf8.DecodeRuneInString(id[i:])
		n, i = n+1, i+size
		control = control || unicode.IsControl(r)
		// Bidi controls and zero-width characters make an id that looks like another.
		format = format || unicode.Is(unicode.Cf, r)
	}
	switch {
	case n > MaxDeviceIDChars:
		return fmt.Sprintf("device_id has %d characters, at most %d are allowed", n, MaxDeviceIDChars)
	case strings.ContainsRune(FormulaStart, rune(id[0])):
		return fmt.Sprintf("device_id %q begins with %q, which a spreadsheet reads as a formula", clip(id), id[:1])
	case control:
		return fmt.Sprintf("device_id %q contains a control character", clip(id))
	case format:
		return fmt.Sprintf("device_id %+q contains an invisible formatting character (bidi control or zero-width)", clip(id))
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
