package webhook_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/vncfleet/vncfleet/internal/webhook"
)

// A receiver checks every delivery's signature before acting on it, and answers 401
// to one it cannot trust (vncfleet retries it later, until the event is dead).
func ExampleVerify() {
	secret := []byte("shared-signing-secret")
	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		if err := webhook.Verify(secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
			if errors.Is(err, webhook.ErrStaleTimestamp) {
				fmt.Println("rejected: replayed or clock skew")
			} else {
				fmt.Println("rejected:", err)
			}
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		// Dedupe on the delivery id here: delivery is at least once.
		fmt.Println("accepted", r.Header.Get(webhook.HeaderEvent), "delivery", r.Header.Get(webhook.HeaderDelivery))
		w.WriteHeader(http.StatusNoContent)
	})

	post := func(key []byte, ts time.Time) {
		body := `{"id":42,"type":"device.ready","occurredAt":"2026-01-02T03:04:05Z","data":{"deviceId":"d1"}}`
		req := httptest.NewRequest(http.MethodPost, "/hooks", strings.NewReader(body))
		req.Header.Set(webhook.HeaderEvent, "device.ready")
		req.Header.Set(webhook.HeaderDelivery, "42")
		req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
		req.Header.Set(webhook.HeaderSignature, webhook.Sign(key, ts.Unix(), []byte(body)))
		receiver.ServeHTTP(httptest.NewRecorder(), req)
	}
	post(secret, time.Now())
	post([]byte("guessed"), time.Now())
	post(secret, time.Now().Add(-time.Hour))
	// Output:
	// accepted device.ready delivery 42
	// rejected: webhook: signature does not match
	// rejected: replayed or clock skew
}
