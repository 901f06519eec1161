package fleet

import (
	"io"
)

// Input limits of a manifest, so that a hostile file cannot make the reader buffer
// without bound: encoding/csv holds a whole record in memory, so a cell or a record
// must be cut before it reaches it.
const (
	// DefaultMaxCellBytes bounds one cell (max_cell_bytes): 64 KiB, far above any
	// real cell (the longest valid known cell, 24 group names of 256 characters, is
	// under 25 KiB) and far below what would strain memory.
	DefaultMaxCellBytes = 64 << 10
	// DefaultMaxColumns bounds the header (max_columns): 256 columns, 7 known and
	// the rest metadata.
	DefaultMaxColumns = 256
)

// cutRecord is what limitReader cut from one record: the fields that were too long
// and, when the record had more fields than allowed, how many it had.
type cutRecord struct {
	csvLine    int   // the record's first line as encoding/csv counts it (the lines it was given)
	line       int   // the record's first physical line
	longFields []int // 0-based indexes of the fields cut at maxCell bytes
	fields     int   // the record's field count when above maxFields+1, else 0
	shiftAfter int   // physical minus csv line numbers after this record (newlines dropped so far)
}

// limitReader sits between the manifest and encoding/csv. It follows the CSV
// structure as bytes pass (quotes, separators, line ends, blank lines, exactly as
// encoding/csv reads them), passes the first maxCell bytes of each field and drops
// the rest, and drops the fields of a record beyond maxFields+1, so that encoding/csv
// never holds more than (maxFields+1)·maxCell bytes of one record. What it cut is
// queued, in order, for the Reader to report as problems of their line and column:
// a cut cell is never taken for a valid one.
//
// Newlines inside a dropped part of a quoted cell are dropped too (else a cell of
// newlines would still be buffered), so csv's line numbers fall behind the file's;
// cutRecord.shiftAfter says by how much.
type limitReader struct {
	src       io.Reader
	sep       byte
	maxCell   int
	maxFields int

	state      limitState
	csvLines   int // newlines passed on
	lines      int // newlines read
	field      int // index of the current field in its record
	n          int // content bytes of the current field
	cur        *cutRecord
	recCSVLine int  // the current record's first line, as csv counts
	recLine    int  // the current record's first physical line
	heldQuote  bool // a '"' inside a quoted field, not yet known to be a closing one or an escape
	dropRecord bool // past maxFields+1 fields: drop until the record ends

	cuts    []cutRecord
	out     []byte // the output buffer, reused
	pending []byte // what of out the caller has not read yet
	scratch []byte
	eof     bool
}

type limitState int

const (
	atRecordStart   limitState = iota // nothing of a record read yet
	atRecordStartCR                   // a '\r' at a record's start: a blank CRLF line or a field starting with '\r'
	atFieldStart                      // after a separator
	inUnquoted
	inQuoted
	afterQuoted // after the closing quote: only a separator or a line end is valid
)

func newLimitReader(src io.Reader, sep byte, maxCell, maxFields int) *limitReader {
	return &limitReader{src: src, sep: sep, maxCell: maxCell, maxFields: maxFields}
}

// nextCut pops the cuts of records before or at csvLine; it returns the cut of the
// record at csvLine, if any, and whether cuts of earlier records were left unclaimed
// (which would mean the reader and encoding/csv disagree on where records start).
func (l *limitReader) nextCut(csvLine int) (cut *cutRecord, stale bool) {
	for len(l.cuts) > 0 && l.cuts[0].csvLine < csvLine {
		l.cuts = l.cuts[1:]
		stale = true
	}
	if len(l.cuts) > 0 && l.cuts[0].csvLine == csvLine {
		c := l.cuts[0]
		l.cuts = l.cuts[1:]
		return &c, stale
	}
	return nil, stale
}

// lineShift is how far csv's line numbers are behind the file's so far.
func (l *limitReader) lineShift() int { return l.lines - l.csvLines }

func (l *limitReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(l.pending) == 0 {
		if l.eof {
			return 0, io.EOF
		}
		if cap(l.scratch) < len(p) {
			l.scratch = make([]byte, len(p))
		}
		n, err := l.src.Read(l.scratch[:len(p)])
		out := l.transform(l.out[:0], l.scratch[:n])
		if err == io.EOF {
			out = l.finish(out)
			l.eof = true
		}
		l.out, l.pending = out, out
		if err != nil && err != io.EOF {
			if len(out) == 0 {
				return 0, err
			}
			break // hand out what was read; the error comes again on the next read
		}
	}
	n := copy(p, l.pending)
	l.pending = l.pending[n:]
	return n, nil
}

// transform appends to out what csv is to see of in. Runs of plain content bytes,
// nearly all of a manifest, are copied in one go; structure bytes go through step.
func (l *limitReader) transform(out, in []byte) []byte {
	for i := 0; i < len(in); {
		if !l.heldQuote && !l.dropRecord && (l.state == inUnquoted || l.state == inQuoted) {
			room := l.maxCell - l.n
			j := i
			if l.state == inUnquoted {
				for j < len(in) && j-i < room {
					if c := in[j]; c == l.sep || c == '\n' || c == '\r' {
						break
					}
					j++
				}
			} else {
				for j < len(in) && j-i < room {
					if c := in[j]; c == '"' || c == '\n' {
						break
					}
					j++
				}
			}
			out = append(out, in[i:j]...)
			l.n += j - i
			if i = j; i == len(in) {
				break
			}
		}
		out = l.step(out, in[i])
		i++
	}
	return out
}

// step processes one byte, appending what csv is to see.
func (l *limitReader) step(out []byte, b byte) []byte {
	if l.heldQuote {
		l.heldQuote = false
		if b == '"' { // an escaped quote: one content byte
			return l.content(out, '"', '"')
		}
		l.state = afterQuoted
		out = l.emit(out, '"')
	}
	switch l.state {
	case atRecordStart:
		switch b {
		case '\n': // a blank line: csv skips it
			return l.newline(out)
		case '\r':
			l.state = atRecordStartCR
			return out
		}
		l.startRecord()
		return l.fieldStart(out, b)
	case atRecordStartCR:
		l.state = atRecordStart
		if b == '\n' { // a blank CRLF line
			return l.newline(append(out, '\r'))
		}
		l.startRecord()
		out = l.fieldStart(out, '\r')
		return l.step(out, b)
	case atFieldStart:
		return l.fieldStart(out, b)
	case inUnquoted, afterQuoted:
		switch b {
		case l.sep:
			return l.separator(out)
		case '\n':
			return l.endRecord(out)
		}
		if b == '\r' { // possibly the CR of a CRLF, which is not content
			return l.emit(out, b)
		}
		return l.content(out, b)
	case inQuoted:
		switch b {
		case '"':
			l.heldQuote = true
			return out
		case '\n':
			if l.cutting() {
				// Dropped with the rest of the cell, so that newlines cannot be used
				// to grow it; the line numbers are corrected by lineShift.
				l.lines++
				l.markLong()
				return out
			}
			l.n++
			return l.newline(out)
		}
		return l.content(out, b)
	}
	return out
}

func (l *limitReader) fieldStart(out []byte, b byte) []byte {
	switch b {
	case '"':
		l.state = inQuoted
		return l.emit(out, b)
	case l.sep:
		return l.separator(out)
	case '\n':
		return l.endRecord(out)
	}
	l.state = inUnquoted
	if b == '\r' {
		return l.emit(out, b)
	}
	return l.content(out, b)
}

func (l *limitReader) startRecord() {
	l.field, l.n, l.cur, l.dropRecord = 0, 0, nil, false
	l.recCSVLine, l.recLine = l.csvLines+1, l.lines+1
}

// cutting reports whether the current field's bytes are being dropped.
func (l *limitReader) cutting() bool { return l.dropRecord || l.n >= l.maxCell }

// content passes the content bytes of a field up to maxCell and records the cut.
func (l *limitReader) content(out []byte, bs ...byte) []byte {
	if l.dropRecord {
		return out
	}
	if l.n >= l.maxCell {
		l.markLong()
		return out
	}
	l.n++
	return append(out, bs...)
}

// markLong records that the current field is cut (once per field).
func (l *limitReader) markLong() {
	if l.dropRecord {
		return // the record is refused for its width already
	}
	c := l.record()
	if k := len(c.longFields); k == 0 || c.longFields[k-1] != l.field {
		c.longFields = append(c.longFields, l.field)
	}
}

func (l *limitReader) separator(out []byte) []byte {
	l.field++
	l.n = 0
	l.state = atFieldStart
	if l.field > l.maxFields {
		// The (maxFields+2)-th field and beyond are only counted: csv sees one field
		// too many, enough for the width problem, and the count comes from here.
		l.dropRecord = true
		return out
	}
	return l.emit(out, l.sep)
}

func (l *limitReader) endRecord(out []byte) []byte {
	l.closeRecord()
	l.state = atRecordStart
	return l.newline(out)
}

// closeRecord queues the current record's cut, if it had one.
func (l *limitReader) closeRecord() {
	if l.dropRecord {
		l.record().fields = l.field + 1
	}
	if l.cur != nil {
		l.cur.shiftAfter = l.lineShift()
		l.cuts = append(l.cuts, *l.cur)
		l.cur = nil
	}
}

// record is the cut of the current record, started on first use.
func (l *limitReader) record() *cutRecord {
	if l.cur == nil {
		l.cur = &cutRecord{csvLine: l.recCSVLine, line: l.recLine}
	}
	return l.cur
}

func (l *limitReader) newline(out []byte) []byte {
	l.lines++
	l.csvLines++
	return append(out, '\n')
}

func (l *limitReader) emit(out []byte, b byte) []byte {
	if l.dropRecord {
		return out
	}
	return append(out, b)
}

// finish handles the end of the input: a held quote closes its field, and a record
// without a final newline is closed.
func (l *limitReader) finish(out []byte) []byte {
	if l.heldQuote {
		l.heldQuote = false
		l.state = afterQuoted
		out = l.emit(out, '"')
	}
	if l.state == atRecordStartCR {
		l.startRecord()
		out = l.fieldStart(out, '\r')
	}
	if l.state != atRecordStart {
		l.closeRecord()
	}
	return out
}
