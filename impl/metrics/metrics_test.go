package metrics

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics contract: every series is exposed with its # TYPE line from start-up.
var contract = map[string]string{
	"tasks_enqueued_total": "counter", "tasks_started_total": "counter", "tasks_canceled_total": "counter",
	"tasks_rejected_total": "counter", "queue_depth": "gauge", "kv_cache_usage_ratio": "gauge",
	"gpu_utilization": "gauge", "vram_used_bytes": "gauge", "latency_first_token_ms": "histogram",
	"latency_decode_ms": "histogram", "tokens_in_total": "counter", "tokens_out_total": "counter",
	"admission_backpressure_events_total": "counter", "catalog_verifications_total": "counter",
	"model_state": "gauge", "placement_decisions_total": "counter", "placement_candidates_considered": "gauge",
	"http_connections_open": "gauge", "http_connections_waited_total": "counter",
}

func TestTypeLinesFromStartup(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.TasksEnqueued.WithLabelValues("llamacpp", "", "p", "r0", "interactive").Inc()
	var buf bytes.Buffer
	if err := m.WriteText(&buf, reg); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for name, typ := range contract {
		if n := strings.Count(out, "# TYPE "+name+" "+typ+"\n"); n != 1 {
			t.Errorf("# TYPE %s %s appears %d times", name, typ, n)
		}
	}
	if !strings.Contains(out, `tasks_enqueued_total{engine="llamacpp",engine_version="",pool_id="p",priority="interactive",replica_id="r0"} 1`) {
		t.Errorf("sample missing:\n%s", out)
	}
}
