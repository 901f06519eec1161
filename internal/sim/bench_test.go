package sim

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkCreate measures creates per second through the handler, in process, from
// parallel callers: the shape of the main job's load.
func BenchmarkCreate(b *testing.B) {
	s, err := New(Config{Accounts: []Account{{keyA, secretA}}})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	const body = `{"allowedActions":["listen"],"accessControl":{"groups":["line-1","support"]}}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, APIPrefix+"/static-address", strings.NewReader(body))
			req.SetBasicAuth(keyA, secretA)
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusCreated {
				b.Fatalf("create: %d %s", w.Code, w.Body)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

// BenchmarkCreateHTTP is the same over a loopback HTTP server.
func BenchmarkCreateHTTP(b *testing.B) {
	s, err := New(Config{Accounts: []Account{{keyA, secretA}}})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	tr := ts.Client().Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost = 64
	const body = `{"allowedActions":["connect"],"groups":["line-1"]}`
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, ts.URL+APIPrefix+"/static-address", strings.NewReader(body))
			req.SetBasicAuth(keyA, secretA)
			req.Header.Set("Content-Type", "application/json")
			resp, err := ts.Client().Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Fatalf("create: %d", resp.StatusCode)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}
