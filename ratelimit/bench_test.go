package ratelimit_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/vncfleet/vncfleet/ratelimit"
)

// BenchmarkClusterWait measures grants per second and database round trips per grant
// at a rate far above what VNC Cloud allows (50,000/s; the most the limiter may grant
// is 50,000/1.08 = 46,296/s), to show the limiter is not the bottleneck of 3,000
// devices a second. Each process is a pool of its own, the callers spread over them.
//
//	go test -run '^$' -bench ClusterWait -benchtime 5s ./ratelimit/
func BenchmarkClusterWait(b *testing.B) {
	for _, procs := range []int{1, 4} {
		b.Run(fmt.Sprintf("processes=%d", procs), func(b *testing.B) {
			ls := processes(b, schema(b), procs, ratelimit.Config{Rate: 50_000})
			var next atomic.Int64
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				l := ls[int(next.Add(1))%procs]
				for pb.Next() {
					if err := l.Wait(context.Background()); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			var leases int64
			for _, l := range ls {
				leases += l.Stats().Leases
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grants/s")
			b.ReportMetric(float64(leases)/float64(b.N), "roundtrips/grant")
			b.ReportMetric(float64(leases)/b.Elapsed().Seconds(), "roundtrips/s")
		})
	}
}
