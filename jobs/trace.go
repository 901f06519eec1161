package jobs

import (
	"context"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/vncfleet/vncfleet/internal/tracing"
)

// Spans of the jobs' units of work; River's own span per job (otelriver) encloses
// them, and each API call's span (package vnccloud) sits inside a work batch.

// tracedApplyBatch runs one batch of a staged manifest's apply in a span.
func tracedApplyBatch(ctx context.Context, manifestID int64, batch func(context.Context) (bool, error)) (bool, error) {
	ctx, span := tracing.Tracer().Start(ctx, "manifest.apply_batch", trace.WithAttributes(attribute.Int64("vncfleet.manifest", manifestID)))
	defer span.End()
	done, err := batch(ctx)
	if err != nil {
		span.RecordError(err)
	}
	return done, err
}

// startWorkBatch starts the span of one claimed batch of work under key, with the
// manifest when the key names one ("manifest:ID").
func startWorkBatch(ctx context.Context, key string, devices int) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{attribute.String("vncfleet.work_key", key), attribute.Int("vncfleet.devices", devices)}
	if id, ok := strings.CutPrefix(key, "manifest:"); ok {
		if n, err := strconv.ParseInt(id, 10, 64); err == nil {
			attrs = append(attrs, attribute.Int64("vncfleet.manifest", n))
		}
	}
	return tracing.Tracer().Start(ctx, "work.batch", trace.WithAttributes(attrs...))
}
