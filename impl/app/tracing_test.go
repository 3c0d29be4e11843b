package app_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/app"
)

// TestTracing runs a task through the daemon with the SDK's in-memory exporter: the request's
// server span (named after the route) parents the task's placement, admission, queue-wait and
// engine spans, all in one trace; with no X-Correlation-Id the daemon answers with the trace
// id, and a client's traceparent makes the request part of the client's trace.
func TestTracing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	d := startFakeDaemonWith(t, "", fake.Options{}, nil, app.Options{TracerProvider: tp})

	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	tests := []struct {
		name            string
		header          map[string]string
		wantCorrelation string // "" : the trace id
		wantTrace       string // "" : any new trace id
	}{
		{name: "new trace, no correlation id"},
		{name: "client's trace", header: map[string]string{"traceparent": "00-" + clientTrace + "-00f067aa0ba902b7-01"},
			wantTrace: clientTrace},
		{name: "correlation id given", header: map[string]string{"X-Correlation-Id": "my-request-1"},
			wantCorrelation: "my-request-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp.Reset()
			id := uuid.New()
			req, err := http.NewRequest("POST", "http://"+d.addr+"/v1/tasks", strings.NewReader(taskBody(id, 4)))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-API-Key", testKey)
			req.Header.Set("Content-Type", "application/json")
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			res, err := d.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = res.Body.Close()
			if res.StatusCode != http.StatusAccepted {
				t.Fatalf("submit: %d", res.StatusCode)
			}
			// The task.engine span ends when the generation does.
			eventually(t, "the engine span ended", func() bool { return findSpan(exp.GetSpans(), "task.engine") != nil })

			spans := exp.GetSpans()
			server := findSpan(spans, "POST /v1/tasks")
			if server == nil {
				t.Fatalf("no server span named after the route; spans: %v", spanNames(spans))
			}
			traceID := server.SpanContext.TraceID().String()
			if tt.wantTrace != "" && traceID != tt.wantTrace {
				t.Errorf("trace id %s, want the client's %s", traceID, tt.wantTrace)
			}
			want := tt.wantCorrelation
			if want == "" {
				want = traceID
			}
			if got := res.Header.Get("X-Correlation-Id"); got != want {
				t.Errorf("X-Correlation-Id %q, want %q", got, want)
			}
			if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(traceID) {
				t.Errorf("trace id %q", traceID)
			}
			for _, name := range []string{"task.placement", "task.admission", "task.queue_wait", "task.engine"} {
				sp := findSpan(spans, name)
				if sp == nil {
					t.Errorf("no span %s; spans: %v", name, spanNames(spans))
					continue
				}
				if sp.SpanContext.TraceID() != server.SpanContext.TraceID() || sp.Parent.SpanID() != server.SpanContext.SpanID() {
					t.Errorf("span %s: trace %s parent %s, want a child of the server span %s/%s", name,
						sp.SpanContext.TraceID(), sp.Parent.SpanID(), traceID, server.SpanContext.SpanID())
				}
				if !sp.EndTime.After(sp.StartTime) && !sp.EndTime.Equal(sp.StartTime) {
					t.Errorf("span %s ends before it starts", name)
				}
			}
			if eng := findSpan(spans, "task.engine"); eng != nil && len(eng.Events) == 0 {
				t.Errorf("task.engine has no first-token event")
			}
		})
	}
}

func findSpan(spans tracetest.SpanStubs, name string) *tracetest.SpanStub {
	for i := range spans {
		if spans[i].Name == name {
			return &spans[i]
		}
	}
	return nil
}

func spanNames(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

// TestTracingOff: with tracing off (no otelhttp on the handler) the correlation id is still the
// client's trace id when it sends a traceparent, and a new UUID when it sends none.
func TestTracingOff(t *testing.T) {
	d := startFakeDaemon(t, "", fake.Options{}, nil)
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tt := range []struct {
		name        string
		traceparent string
		want        *regexp.Regexp
	}{
		{"client's trace", "00-" + clientTrace + "-00f067aa0ba902b7-01", regexp.MustCompile("^" + clientTrace + "$")},
		{"no trace", "", regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)},
		{"ill-formed traceparent", "00-zz-00f067aa0ba902b7-01", regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("POST", "http://"+d.addr+"/v1/tasks", strings.NewReader(taskBody(uuid.New(), 1)))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-API-Key", testKey)
			req.Header.Set("Content-Type", "application/json")
			if tt.traceparent != "" {
				req.Header.Set("traceparent", tt.traceparent)
			}
			res, err := d.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = res.Body.Close()
			if res.StatusCode != http.StatusAccepted {
				t.Fatalf("submit: %d", res.StatusCode)
			}
			if got := res.Header.Get("X-Correlation-Id"); !tt.want.MatchString(got) {
				t.Errorf("X-Correlation-Id %q, want %v", got, tt.want)
			}
		})
	}
}

// TestTracingHijackedStream: a stream on a connection taken over from net/http records a
// task.stream span, a child of the request's span, that lasts until the stream's end (the
// request's span ends when the connection is taken over).
func TestTracingHijackedStream(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	d := startFakeDaemonWith(t, "", fake.Options{}, nil, app.Options{TracerProvider: tp})
	c, _, _ := d.streamOnConn(t, 4)
	defer c.Close()
	eventually(t, "the stream span ended", func() bool { return findSpan(exp.GetSpans(), "task.stream") != nil })
	spans := exp.GetSpans()
	st := findSpan(spans, "task.stream")
	var server *tracetest.SpanStub
	for i := range spans {
		if strings.HasPrefix(spans[i].Name, "GET /v1/tasks/") {
			server = &spans[i]
		}
	}
	if server == nil {
		t.Fatalf("no server span for the stream's request; spans: %v", spanNames(spans))
	}
	if st.Parent.SpanID() != server.SpanContext.SpanID() || st.SpanContext.TraceID() != server.SpanContext.TraceID() {
		t.Errorf("task.stream is not a child of %s", server.Name)
	}
	if st.EndTime.Before(server.EndTime) {
		t.Errorf("task.stream ended at %v, before its request's span (%v)", st.EndTime, server.EndTime)
	}
	complete := false
	for _, kv := range st.Attributes {
		if kv.Key == "sse.complete" {
			complete = kv.Value.AsBool()
		}
	}
	if !complete {
		t.Errorf("task.stream attributes %v: want sse.complete true", st.Attributes)
	}
}
