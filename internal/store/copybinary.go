package store

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/fleet"
)

// copyManifest streams the valid rows of reader into table (stagedColumns) with COPY
// in PostgreSQL's binary format, adding each to index, and returns how many it sent.
//
// The rows are encoded by hand rather than handed to pgx as []any: boxing a dozen
// values per row cost four times what psql's \copy of the same file costs, most of it
// in the allocator. The binary format spares the server parsing and unescaping every
// field, which made it the bottleneck with the text format. Parsing, validating and
// encoding run in a goroutine of their own that writes into a pipe, so they overlap
// with PostgreSQL storing the rows.
func copyManifest(ctx context.Context, tx pgx.Tx, table string, reader *fleet.Reader, index *fleet.RowIndex) (int64, error) {
	pr, pw := io.Pipe()
	produced := make(chan error, 1)
	go func() {
		err := encodeManifest(pw, reader, index)
		// Closing with the error makes COPY fail with it; nil closes cleanly.
		pw.CloseWithError(err)
		produced <- err
	}()
	sql := "COPY " + table + " (" + columnList(stagedColumns) + ") FROM STDIN (FORMAT binary)"
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, pr, sql)
	// Unblock the producer if COPY stopped reading early.
	pr.CloseWithError(io.ErrClosedPipe)
	perr := <-produced
	switch {
	case perr != nil && !errors.Is(perr, io.ErrClosedPipe):
		return 0, perr // the body's own error (too large, cut off): the cause
	case err != nil:
		return 0, fmt.Errorf("copy manifest rows: %w", err) // the server's refusal
	case perr != nil:
		return 0, perr
	}
	return tag.RowsAffected(), nil
}

func columnList(cols []string) string {
	out := ""
	for i, c := range cols {
		if i > 0 {
			out += ", "
		}
		out += pgx.Identifier{c}.Sanitize()
	}
	return out
}

// copyBinarySignature starts a binary COPY stream, followed by 32-bit flags and
// header extension length, both zero.
var copyBinarySignature = []byte("PGCOPY\n\xff\r\n\x00")

// encodeManifest writes a binary COPY stream of the valid rows of reader.
func encodeManifest(w io.Writer, reader *fleet.Reader, index *fleet.RowIndex) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	header := binary.BigEndian.AppendUint32(append([]byte(nil), copyBinarySignature...), 0)
	header = binary.BigEndian.AppendUint32(header, 0)
	if _, err := bw.Write(header); err != nil {
		return err
	}
	var row []byte
	for {
		d, err := reader.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		index.Add(d)
		row = appendCopyRow(row[:0], d)
		if _, err := bw.Write(row); err != nil {
			return err
		}
	}
	// The trailer: a field count of -1.
	if _, err := bw.Write([]byte{0xff, 0xff}); err != nil {
		return err
	}
	return bw.Flush()
}

// appendCopyRow appends one staged row as a binary COPY tuple, in stagedColumns
// order. The lists are stored as their cells were written (';'-separated): the
// reader has checked that no name holds the separator, and the database splits them
// when the row is applied.
func appendCopyRow(b []byte, d fleet.Device) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(stagedColumns)))
	b = binary.BigEndian.AppendUint32(b, 4)
	b = binary.BigEndian.AppendUint32(b, uint32(d.Line))
	b = appendField(b, d.DeviceID)
	b = appendField(b, string(d.Action))
	for _, list := range [...][]string{d.Groups, d.AllowGroups, d.AllowDevices} {
		b = appendList(b, list)
	}
	b = appendField(b, string(d.State))
	if d.ZenlayerInstanceID == "" {
		b = appendNull(b)
	} else {
		b = appendField(b, d.ZenlayerInstanceID)
	}
	b = appendMetadata(b, d.Metadata)
	return appendField(b, string(d.SpecHash()))
}

// appendField appends a field's length and bytes (text and bytea alike).
func appendField(b []byte, v string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func appendNull(b []byte) []byte { return binary.BigEndian.AppendUint32(b, 0xffffffff) }

// appendList appends a list as its ';'-separated cell, or NULL when empty.
func appendList(b []byte, list []string) []byte {
	if len(list) == 0 {
		return appendNull(b)
	}
	at := len(b)
	b = append(b, 0, 0, 0, 0)
	for i, s := range list {
		if i > 0 {
			b = append(b, fleet.ListSeparator...)
		}
		b = append(b, s...)
	}
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

// appendMetadata appends the metadata columns as a jsonb object, or NULL. jsonb's
// binary form is a version byte (1) and the JSON text, which the server parses.
func appendMetadata(b []byte, fields []fleet.Field) []byte {
	if len(fields) == 0 {
		return appendNull(b)
	}
	at := len(b)
	b = append(b, 0, 0, 0, 0, 1, '{')
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, f.Name)
		b = append(b, ':')
		b = appendJSONString(b, f.Value)
	}
	b = append(b, '}')
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

// appendJSONString appends s as a JSON string. The reader has checked that s is
// valid UTF-8 and holds no NUL, which PostgreSQL's jsonb cannot store.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
