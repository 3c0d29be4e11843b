// Package tracing sets up OpenTelemetry tracing for orchestratord: a tracer provider that
// exports over OTLP/HTTP when the standard OTEL_* environment variables ask for it, and is a
// no-op otherwise, and a slog handler that adds the trace and span ids to log records made
// with a context that carries a span.
//
// Tracing is off by default. It is on when OTEL_TRACES_EXPORTER is "otlp", or when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set and
// OTEL_TRACES_EXPORTER is not "none"; OTEL_SDK_DISABLED=true turns it off whatever else is
// set. The exporter itself reads the other standard variables (OTEL_EXPORTER_OTLP_HEADERS,
// _TIMEOUT, _COMPRESSION, _INSECURE, the _TRACES_ variants), the resource reads
// OTEL_SERVICE_NAME (default "orchestratord") and OTEL_RESOURCE_ATTRIBUTES, and the sampler
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default: parentbased_always_on).
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Enabled reports whether the environment (read through getenv) asks for OTLP trace export.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "otlp":
		return true
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	default: // "none", or an exporter this build does not have
		return false
	}
}

// Setup returns the tracer provider the daemon uses and a function that flushes and stops it.
// When Enabled(getenv) is false it returns a no-op provider. version is recorded as
// service.version.
func Setup(ctx context.Context, getenv func(string) string, version string) (trace.TracerProvider, func(context.Context) error, error) {
	if !Enabled(getenv) {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	if exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp != "" && exp != "otlp" {
		return nil, nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: this build exports traces with otlp only", exp)
	}
	if p := getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: this build exports over http/protobuf only", p)
	}
	exp, err := otlptracehttp.New(ctx) // reads OTEL_EXPORTER_OTLP_* itself
	if err != nil {
		return nil, nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(Resource(ctx, version)))
	return tp, tp.Shutdown, nil
}

// Resource describes the daemon: service.name orchestratord and service.version, overridden by
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
func Resource(ctx context.Context, version string) *resource.Resource {
	r, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("orchestratord"), semconv.ServiceVersion(version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil { // a malformed OTEL_RESOURCE_ATTRIBUTES: keep what parsed
		return resource.NewSchemaless(semconv.ServiceName("orchestratord"), semconv.ServiceVersion(version))
	}
	return r
}

// LogHandler wraps h so that records logged with a context carrying a valid span get
// trace_id and span_id attributes.
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (l logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return l.Handler.Handle(ctx, r)
}

func (l logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logHandler{l.Handler.WithAttrs(as)}
}

func (l logHandler) WithGroup(name string) slog.Handler { return logHandler{l.Handler.WithGroup(name)} }
