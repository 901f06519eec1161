package fleet

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
)

// manifestGen produces a manifest of n rows on the fly, so that a test can read far
// more than it keeps: half connect devices in two groups, half listen devices that
// allow a group and the connect device before them, and a metadata column.
type manifestGen struct {
	n, i int
	buf  []byte
}

const genHeader = "device_id,action,groups,allow_groups,allow_devices,zenlayer_instance_id,location\n"

func newManifestGen(n int) *manifestGen {
	return &manifestGen{n: n, buf: []byte(genHeader)}
}

func (g *manifestGen) Read(p []byte) (int, error) {
	for len(g.buf) < len(p) && g.i < g.n {
		i := g.i
		if i%2 == 0 {
			g.buf = fmt.Appendf(g.buf, "dev-%07d,connect,line-%04d;ops,,,,plant-%d\n", i, i/10, i%7)
		} else {
			g.buf = fmt.Appendf(g.buf, "dev-%07d,listen,,line-%04d,dev-%07d,zec-%d,plant-%d\n", i, i/10, i-1, i, i%7)
		}
		g.i++
	}
	if len(g.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, g.buf)
	g.buf = g.buf[:copy(g.buf, g.buf[n:])]
	return n, nil
}

func drain(tb testing.TB, r *Reader, each func(i int)) int {
	n := 0
	for {
		if _, err := r.Next(); err == io.EOF {
			return n
		} else if err != nil {
			tb.Fatal(err)
		}
		n++
		if each != nil {
			each(n)
		}
	}
}

// TestMemoryDoesNotGrowWithTheFile reads half a million rows (about 25 MB) and checks
// that the live heap at the end is about what it was early on. Not parallel: it
// measures the whole process's heap.
func TestMemoryDoesNotGrowWithTheFile(t *testing.T) {
	const rows = 500_000
	r, err := NewReader(newManifestGen(rows), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	var early uint64
	n := drain(t, r, func(i int) {
		if i == 10_000 {
			early = heap()
		}
	})
	if n != rows {
		t.Fatalf("read %d rows, want %d (problems: %v)", n, rows, r.Problems())
	}
	late := heap()
	runtime.KeepAlive(r)
	if late > early+2<<20 {
		t.Fatalf("live heap grew from %d to %d bytes over %d rows", early, late, rows)
	}
}

// BenchmarkReader reads a generated 100k-row manifest (kept in memory, so only the
// reader is measured) and reports the cost per row.
func BenchmarkReader(b *testing.B) {
	const rows = 100_000
	data, err := io.ReadAll(newManifestGen(rows))
	if err != nil {
		b.Fatal(err)
	}
	input := string(data)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		r, err := NewReader(strings.NewReader(input), ReaderOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if n := drain(b, r, nil); n != rows {
			b.Fatalf("read %d rows, want %d", n, rows)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	total := float64(b.N) * rows
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/row")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/total, "allocs/row")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/total, "B/row")
}

// BenchmarkReaderAndHashes adds what ingest computes per row besides reading.
func BenchmarkReaderAndHashes(b *testing.B) {
	const rows = 100_000
	data, err := io.ReadAll(newManifestGen(rows))
	if err != nil {
		b.Fatal(err)
	}
	input := string(data)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		r, err := NewReader(strings.NewReader(input), ReaderOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			d, err := r.Next()
			if err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
			if len(d.SpecHash()) != 32 {
				b.Fatal("bad hash")
			}
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	total := float64(b.N) * rows
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/row")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/total, "allocs/row")
}
