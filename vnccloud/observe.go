package vnccloud

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Observer is told of every HTTP request the client sends, at the transport: each
// retry, each list page and each redirect followed is one call, so that a count of
// them equals what the API received. status is 0 when no answer arrived; elapsed runs
// from sending to the answer's headers. It must be fast and safe for concurrent use.
type Observer func(op string, status int, elapsed time.Duration)

type opKey struct{}

// withOp tells the instrumented transport which operation a request belongs to.
func withOp(ctx context.Context, op string) context.Context {
	return context.WithValue(ctx, opKey{}, op)
}

// instrumentedTransport makes an OpenTelemetry span of every round trip and reports
// it to observe.
type instrumentedTransport struct {
	next    http.RoundTripper
	observe Observer     // nil: none
	tracer  trace.Tracer // nil: no spans
}

func (t instrumentedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	op, _ := req.Context().Value(opKey{}).(string)
	var span trace.Span
	recording := false
	if t.tracer != nil {
		var ctx context.Context
		// The span names the operation, never the URL: its path holds a cloud address.
		ctx, span = t.tracer.Start(req.Context(), "vnccloud."+op, trace.WithSpanKind(trace.SpanKindClient))
		defer span.End()
		req = req.WithContext(ctx)
		// Sampled out, the span records nothing: attributes would cost each call for
		// nothing (measured: 3% of the worker's CPU at full speed).
		if recording = span.IsRecording(); recording {
			span.SetAttributes(attribute.String("vnccloud.operation", op), attribute.String("http.request.method", req.Method))
		}
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	elapsed := time.Since(start)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	if recording {
		if err != nil {
			span.SetStatus(codes.Error, "no answer")
		} else {
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
		}
	}
	if t.observe != nil {
		t.observe(op, status, elapsed)
	}
	return resp, err
}

// instrumented returns a copy of hc whose transport traces (by tracer, when not nil)
// and reports every request; hc itself, which the caller may share, is left alone.
func instrumented(hc *http.Client, observe Observer, tracer trace.Tracer) *http.Client {
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c := *hc
	c.Transport = instrumentedTransport{next: next, observe: observe, tracer: tracer}
	return &c
}
