// Package tracing turns on OpenTelemetry traces when, and only when, the standard
// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: spans
// go by OTLP over HTTP, configured by the SDK's own OTEL_* variables (headers,
// timeout, sampler...). Unset, the global tracer stays OpenTelemetry's no-op and
// spans cost next to nothing.
//
// The instrumented places start spans from the global tracer provider through Tracer,
// so that they need not know whether tracing is on.
package tracing

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Name is the instrumentation scope of vncfleet's own spans.
const Name = "github.com/vncfleet/vncfleet"

// Tracer is vncfleet's tracer, from the global provider.
func Tracer() trace.Tracer { return otel.Tracer(Name) }

// TracerIfEnabled is Tracer when getenv names an OTLP endpoint, else nil: for code
// that makes a span of every call, where a span of the no-op provider still costs
// its allocation (vnccloud.Config.Tracer).
func TracerIfEnabled(getenv func(string) string) trace.Tracer {
	if !Enabled(getenv) {
		return nil
	}
	return Tracer()
}

// Enabled reports whether getenv names an OTLP endpoint.
func Enabled(getenv func(string) string) bool {
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Start installs the exporting tracer provider when an endpoint is set and returns
// the function that flushes and stops it (a no-op otherwise). version names the
// build in the service.version resource attribute.
func Start(ctx context.Context, version string) (shutdown func(context.Context) error, err error) {
	if !Enabled(os.Getenv) {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, read last, win over these.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", "vncfleet"), attribute.String("service.version", version)),
		resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp.Shutdown, nil
}
