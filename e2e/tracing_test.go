package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is a minimal OTLP/HTTP trace endpoint: it keeps every span's name and
// string or integer attributes.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []map[string]string // "name" and the attributes
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				span := map[string]string{"name": s.Name}
				for _, a := range s.Attributes {
					span[a.Key] = a.Value.GetStringValue()
					if a.Value.GetStringValue() == "" {
						span[a.Key] = a.Value.String()
					}
				}
				o.spans = append(o.spans, span)
			}
		}
	}
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (o *otlpReceiver) names() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]int{}
	for _, s := range o.spans {
		out[s["name"]]++
	}
	return out
}

// TestTracesAreExportedWhenAnEndpointIsSet: with OTEL_EXPORTER_OTLP_ENDPOINT set, a
// serve process exports spans of the upload, of River's jobs (otelriver), of the work
// batches and of each VNC Cloud request, with the manifest as an attribute and no
// cloud address anywhere.
func TestTracesAreExportedWhenAnEndpointIsSet(t *testing.T) {
	t.Parallel()
	rec := &otlpReceiver{}
	collector := httptest.NewServer(rec)
	t.Cleanup(collector.Close)
	c := newCluster(t, clusterOpts{extra: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL, "OTEL_BSP_SCHEDULE_DELAY=200"}})
	c.startServe()
	devices := factoryManifest(2, 2, 2)
	out, errOut, code := c.run("upload", "--wait", writeFile(t, "fleet.csv", manifestCSV(devices)))
	require.Equal(t, 0, code, "upload --wait: %s\n%s", out, errOut)

	eventually(t, 30*time.Second, "the spans of the upload, its jobs and its calls", func() bool {
		n := rec.names()
		return n["upload"] > 0 && n["work.batch"] > 0 && n["vnccloud.create"] >= len(devices) && n["vnccloud.ready"] > 0 && n["river.work"] > 0
	})
	addresses := c.addresses()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var upload, batch map[string]string
	for _, s := range rec.spans {
		switch s["name"] {
		case "upload":
			upload = s
		case "work.batch":
			batch = s
		}
		for k, v := range s {
			_, isAddress := addresses[v]
			require.False(t, isAddress, "span %s attribute %s holds a cloud address", s["name"], k)
		}
	}
	require.Equal(t, "default", upload["vncfleet.fleet"])
	require.NotEmpty(t, upload["vncfleet.manifest"])
	require.Equal(t, upload["vncfleet.manifest"], batch["vncfleet.manifest"], "the work batch names its manifest")
}
