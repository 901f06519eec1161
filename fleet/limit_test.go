package fleet

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func TestCellLimit(t *testing.T) {
	t.Parallel()
	opts := ReaderOptions{MaxCellBytes: 10}
	in := "device_id,action,notes\n" +
		"v1,connect,0123456789\n" + // 2: exactly the limit
		"v2,connect,0123456789A\n" + // 3: one byte over
		"v3,connect,\"01234\"\"56789\"\n" + // 4: an escaped quote is one byte: 11
		"v4,connect,\"0123456789\"\n" + // 5: quoted, exactly the limit
		"v5,connect,\"" + strings.Repeat("\n", 40) + "\"\n" + // 6-46: a cell of newlines, cut
		"v6,connectconnect,x\n" + // 47: the action cell too long
		"v7,connect,ok\n" // 48
	devices, problems := readWith(t, in, opts)
	require.Equal(t, []where{{3, 3, "notes"}, {4, 3, "notes"}, {6, 3, "notes"}, {47, 2, ColAction}}, locations(problems), problems)
	require.Equal(t, "cell is longer than 10 bytes, the limit", problems.List[0].Reason)
	require.Equal(t, []string{"v1", "v4", "v7"}, deviceIDs(devices))
	require.Equal(t, 48, devices[2].Line, "lines stay right after newlines dropped inside a cut cell")
	require.Equal(t, "0123456789", devices[0].Metadata[0].Value)

	_, problems = readWith(t, "device_id,action,"+strings.Repeat("n", 11)+"\n", opts)
	require.Equal(t, "line 1, column 3: column name is longer than 10 bytes", problems.List[0].Error())

	// CRLF line ends are not content: a cell at the limit before one is whole.
	devices, problems = readWith(t, "device_id,action\r\n0123456789,connect\r\n\r\nv2,connect\r\n", opts)
	require.Zero(t, problems.Len(), problems)
	require.Equal(t, []string{"0123456789", "v2"}, deviceIDs(devices))
	require.Equal(t, 4, devices[1].Line, "a blank CRLF line counts")
}

func deviceIDs(devices []Device) []string {
	var ids []string
	for _, d := range devices {
		ids = append(ids, d.DeviceID)
	}
	return ids
}

// repeatReader yields n copies of b.
type repeatReader struct {
	b byte
	n int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), r.n)
	for i := range p[:k] {
		p[i] = r.b
	}
	r.n -= k
	return int(k), nil
}

// TestHugeCellIsNotBuffered: a 64 MiB cell once cost about 490 MiB of memory. With
// the default limit it is a problem of its line and column, read in constant memory.
// Not parallel: it measures the process's allocations.
func TestHugeCellIsNotBuffered(t *testing.T) {
	const size = 64 << 20
	for _, quoted := range []bool{false, true} {
		q := ""
		if quoted {
			q = `"`
		}
		in := io.MultiReader(strings.NewReader("device_id,action,notes\nv1,connect,"+q),
			&repeatReader{b: 'x', n: size}, strings.NewReader(q+"\nv2,connect,fine\n"))
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r, err := NewReader(in, ReaderOptions{})
		require.NoError(t, err)
		var got []Device
		for {
			d, err := r.Next()
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			got = append(got, d)
		}
		runtime.ReadMemStats(&after)
		require.Equal(t, []where{{2, 3, "notes"}}, locations(r.Problems()))
		require.Equal(t, fmt.Sprintf("cell is longer than %d bytes, the limit", DefaultMaxCellBytes), r.Problems().List[0].Reason)
		require.Equal(t, []string{"v2"}, deviceIDs(got))
		require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8<<20), "quoted %v: allocated while reading a 64 MiB cell", quoted)
	}
}

func TestColumnLimit(t *testing.T) {
	t.Parallel()
	wide := func(n int) string {
		names := []string{"device_id", "action"}
		for i := len(names); i < n; i++ {
			names = append(names, fmt.Sprintf("m%d", i))
		}
		return strings.Join(names, ",")
	}
	_, problems := readWith(t, wide(DefaultMaxColumns)+"\n", ReaderOptions{})
	require.Zero(t, problems.Len(), "256 columns are allowed")
	_, problems = readWith(t, wide(DefaultMaxColumns+1)+"\n", ReaderOptions{})
	require.Equal(t, "line 1, column 257: the header has 257 columns, at most 256 are allowed", problems.Error()[strings.Index(problems.Error(), "\n")+1:])

	// A row of a million fields is counted, not buffered.
	row := "v1,connect" + strings.Repeat(",", 999_998)
	devices, problems := readWith(t, "device_id,action\n"+row+"\nv2,connect\n", ReaderOptions{})
	require.Equal(t, "line 2, column 3: row has 1000000 fields, the header has 2", problems.List[0].Error())
	require.Equal(t, []string{"v2"}, deviceIDs(devices))

	// At maxFields+1 fields exactly, csv's own count is the right one.
	devices, problems = readWith(t, "device_id,action\nv1,connect,x,y\nv2,connect\n", ReaderOptions{MaxColumns: 3})
	require.Equal(t, "line 2, column 3: row has 4 fields, the header has 2", problems.List[0].Error())
	require.Len(t, devices, 1)
}

// TestLimitReaderIsTransparent: under its limits, the limiter passes every byte
// unchanged, however the input is split into reads.
func TestLimitReaderIsTransparent(t *testing.T) {
	t.Parallel()
	in := header + "v1,connect,\"a\"\"b\nc\",,,,\r\n\r\n\n\"x\",listen,,,,,\r\n" + "\r" + "v2,connect,,,,,\n\"end\""
	for _, split := range []func(io.Reader) io.Reader{
		func(r io.Reader) io.Reader { return r },
		iotest.OneByteReader,
		iotest.HalfReader,
		iotest.DataErrReader,
	} {
		l := newLimitReader(split(strings.NewReader(in)), ',', 1<<20, 1<<20)
		out, err := io.ReadAll(l)
		require.NoError(t, err)
		require.Equal(t, in, string(out))
		require.Empty(t, l.cuts)
	}
}

// FuzzLimitReader: under its limits the limiter is transparent; under small limits
// the reader never returns a cell longer than the limit nor a record wider than the
// header, and every cut is reported.
func FuzzLimitReader(f *testing.F) {
	f.Add([]byte(header+"v1,connect,\"a\"\"b\nc\",,,,\r\n\r\nx,listen,,,,,\n"), uint8(4), uint8(3))
	f.Add([]byte("device_id,action,n\nv1,connect,\""+strings.Repeat("\n", 20)+"\"\nv2,connect,x\n"), uint8(2), uint8(8))
	f.Fuzz(func(t *testing.T, in []byte, cell, cols uint8) {
		l := newLimitReader(bytes.NewReader(in), ',', len(in)+1, len(in)+1)
		out, err := io.ReadAll(l)
		if err != nil || !bytes.Equal(out, in) || len(l.cuts) != 0 {
			t.Fatalf("not transparent under its limits: %q -> %q (%v), cuts %v", in, out, err, l.cuts)
		}
		opts := ReaderOptions{MaxCellBytes: int(cell%16) + 1, MaxColumns: int(cols%16) + 2, MaxProblems: 50}
		r, err := NewReader(bytes.NewReader(in), opts)
		if err != nil {
			return
		}
		for {
			d, err := r.Next()
			if err != nil {
				break
			}
			for _, v := range append([]string{d.DeviceID, d.ZenlayerInstanceID}, append(d.Groups, d.AllowGroups...)...) {
				if len(v) > opts.MaxCellBytes {
					t.Fatalf("a value of %d bytes passed the limit of %d", len(v), opts.MaxCellBytes)
				}
			}
			for _, m := range d.Metadata {
				if len(m.Value) > opts.MaxCellBytes {
					t.Fatalf("metadata of %d bytes passed the limit of %d", len(m.Value), opts.MaxCellBytes)
				}
			}
		}
	})
}
