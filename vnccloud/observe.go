package vnccloud

import (
	"context"
	"net/http"
	"time"
)

// Observer is told of every HTTP request the client sends, at the transport: each
// retry, each list page and each redirect followed is one call, so that a count of
// them equals what the API received. status is 0 when no answer arrived; elapsed runs
// from sending to the answer's headers. It must be fast and safe for concurrent use.
type Observer func(op string, status int, elapsed time.Duration)

type opKey struct{}

// withOp tells the observing transport which operation a request belongs to.
func withOp(ctx context.Context, op string) context.Context {
	return context.WithValue(ctx, opKey{}, op)
}

// observingTransport reports every round trip to observe.
type observingTransport struct {
	next    http.RoundTripper
	observe Observer
}

func (t observingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	op, _ := req.Context().Value(opKey{}).(string)
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	t.observe(op, status, time.Since(start))
	return resp, err
}

// observed returns a copy of hc whose transport reports to observe; hc itself, which
// the caller may share, is left alone.
func observed(hc *http.Client, observe Observer) *http.Client {
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c := *hc
	c.Transport = observingTransport{next: next, observe: observe}
	return &c
}
