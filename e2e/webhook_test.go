package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/webhook"
)

// TestWebhooksSignedAndRetried: every device.ready event arrives signed, and a
// receiver that fails at first gets it again later.
func TestWebhooksSignedAndRetried(t *testing.T) {
	t.Parallel()
	const secret = "e2e-webhook-signing-secret-32-chars+"
	var mu sync.Mutex
	failures := 0
	ready := map[string]bool{}
	deliveries := map[string]int{}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(secret), r.Header, body, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, "bad signature: "+err.Error(), http.StatusUnauthorized)
			t.Errorf("unsigned or badly signed delivery: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		deliveries[r.Header.Get("X-Vncfleet-Delivery")]++
		if failures < 3 {
			failures++
			http.Error(w, "receiver down", http.StatusInternalServerError)
			return
		}
		var ev struct {
			Type string `json:"type"`
			Data struct {
				DeviceID string `json:"deviceId"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		if ev.Type == "device.ready" {
			ready[ev.Data.DeviceID] = true
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)

	c := newCluster(t, clusterOpts{rate: 80, simArgs: []string{"--ready-delay", "100ms"}, config: fastConfig + `
webhook:
  url: ` + receiver.URL + `
  rate: 50
  max_attempts: 10
`, extra: []string{"VNCFLEET_WEBHOOK_SECRET=" + secret}})
	c.startServe()
	devices := factoryManifest(2, 2, 2)
	out, errOut, code := c.run("upload", "--wait", "--fleet", "hooks", writeFile(t, "hooks.csv", manifestCSV(devices)))
	require.Equal(t, 0, code, "%s\n%s", out, errOut)

	eventually(t, time.Minute, "a device.ready webhook per device", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ready) == len(devices)
	})
	mu.Lock()
	defer mu.Unlock()
	retried := 0
	for _, n := range deliveries {
		if n > 1 {
			retried++
		}
	}
	require.Positive(t, retried, "the deliveries that failed were retried")
}
