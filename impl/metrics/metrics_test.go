package metrics

// The exposition is checked as a whole against golden files in testdata/: every family's name,
// type, help and label names (exposition.golden, one sample per family), and the # HELP/# TYPE
// lines /metrics shows from start-up, before any sample exists (startup.golden), and after one
// sample (one-task.golden).
//
// Adding, renaming or relabelling a metric changes them on purpose: add the family to the table
// in metrics.go, then regenerate the golden files and review their diff with the change:
//
//	go test ./impl/metrics -run 'TestExposition|TestWriteText' -update

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/orchestratord/orchestratord/engine"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The metrics contract: the series the product documents. The golden files may grow, never
// lose one of these.
var contract = map[string]string{
	"tasks_enqueued_total": "counter", "tasks_started_total": "counter", "tasks_canceled_total": "counter",
	"tasks_rejected_total": "counter", "queue_depth": "gauge", "kv_cache_usage_ratio": "gauge",
	"gpu_utilization": "gauge", "vram_used_bytes": "gauge", "latency_first_token_ms": "histogram",
	"latency_decode_ms": "histogram", "decode_tokens_total": "counter", "tokens_in_total": "counter", "tokens_out_total": "counter",
	"admission_backpressure_events_total": "counter", "admission_outcomes_total": "counter", "catalog_verifications_total": "counter",
	"model_state": "gauge", "placement_decisions_total": "counter", "placement_candidates_considered": "gauge",
	"http_connections_open": "gauge", "http_connections_waited_total": "counter",
	"artifacts_stored": "gauge", "artifacts_stored_bytes": "gauge",
}

func TestContractInTable(t *testing.T) {
	m := New(prometheus.NewRegistry())
	types := map[string]string{}
	for _, f := range m.families {
		if _, dup := types[f.name]; dup {
			t.Errorf("family %s is declared twice", f.name)
		}
		types[f.name] = f.into.typ
	}
	for name, typ := range contract {
		if types[name] != typ {
			t.Errorf("contract series %s: type %q in the table, want %q", name, types[name], typ)
		}
	}
}

// TestExposition puts one sample in every family (each label set to its own name) and compares
// the whole gathered exposition with testdata/exposition.golden.
func TestExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SetEngineConns([]EngineConns{{Engine: "engine", EngineVersion: "engine_version", Pool: "pool_id", Replica: "replica_id",
		ConnStats: engine.ConnStats{Dialed: 1, Reused: 1, Retried: 1, Fallbacks: 1, LateEnds: 1, Idle: 1, OnePerGeneration: true}}})
	for _, f := range m.families {
		switch c := f.c.(type) {
		case *sampledVec: // sampled from SetEngineConns above
		case *prometheus.CounterVec:
			c.WithLabelValues(f.labels...).Inc()
		case *prometheus.GaugeVec:
			c.WithLabelValues(f.labels...).Set(1)
		case *prometheus.HistogramVec:
			c.WithLabelValues(f.labels...).Observe(1)
		case prometheus.Histogram:
			c.Observe(1)
		case prometheus.Gauge: // before Counter: a Gauge also has Inc and Add
			c.Set(1)
		case prometheus.Counter:
			c.Inc()
		default:
			t.Fatalf("family %s: no sample for a %T", f.name, c)
		}
	}
	golden := filepath.Join("testdata", "exposition.golden")
	if *update {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
				t.Fatal(err)
			}
		}
		writeGolden(t, golden, buf.Bytes())
	}
	want, err := os.Open(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	defer want.Close()
	if err := testutil.GatherAndCompare(reg, want); err != nil {
		t.Fatalf("exposition differs from %s (if the change is intended, run with -update):\n%v", golden, err)
	}
}

// TestWriteText compares what /metrics shows with golden files: before any sample exists (the
// # HELP/# TYPE lines of every family, in table order), and with one family sampled (its
// samples, then the other families' lines).
func TestWriteText(t *testing.T) {
	tests := []struct {
		name   string
		sample func(m *Metrics)
		golden string
	}{
		{"start-up", func(*Metrics) {}, "startup.golden"},
		{"one task enqueued", func(m *Metrics) {
			m.TasksEnqueued.WithLabelValues("llamacpp", "", "p", "p/0", "interactive").Inc()
		}, "one-task.golden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := New(reg)
			tt.sample(m)
			var buf bytes.Buffer
			if err := m.WriteText(&buf, reg); err != nil {
				t.Fatal(err)
			}
			parser := expfmt.NewTextParser(model.UTF8Validation)
			if _, err := parser.TextToMetricFamilies(bytes.NewReader(buf.Bytes())); err != nil {
				t.Fatalf("WriteText is not valid text exposition: %v\n%s", err, buf.Bytes())
			}
			golden := filepath.Join("testdata", tt.golden)
			if *update {
				writeGolden(t, golden, buf.Bytes())
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("exposition differs from %s (if the change is intended, run with -update):\n%s", golden, buf.Bytes())
			}
		})
	}
}

func writeGolden(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestEngineConns: each engine_connection family shows its own count of each replica handed
// over, and a replica left out of the next hand-over (a reload replaced it) has no series.
func TestEngineConns(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SetEngineConns([]EngineConns{
		{Engine: "vllm", EngineVersion: "0.9", Pool: "p", Replica: "r0",
			ConnStats: engine.ConnStats{Dialed: 2, Reused: 3, Retried: 5, Fallbacks: 7, LateEnds: 11, Idle: 13}},
		{Engine: "vllm", EngineVersion: "0.9", Pool: "p", Replica: "r1", ConnStats: engine.ConnStats{Dialed: 1, OnePerGeneration: true}},
	})
	want := map[string][2]float64{ // family: r0, r1
		"engine_connections_dialed_total":       {2, 1},
		"engine_connections_reused_total":       {3, 0},
		"engine_connection_retries_total":       {5, 0},
		"engine_connection_fallbacks_total":     {7, 0},
		"engine_answers_ended_late_total":       {11, 0},
		"engine_connections_idle":               {13, 0},
		"engine_connections_one_per_generation": {0, 1},
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, mf := range mfs {
		w, ok := want[mf.GetName()]
		if !ok {
			continue
		}
		seen++
		if len(mf.GetMetric()) != 2 {
			t.Fatalf("%s: %d series, want 2", mf.GetName(), len(mf.GetMetric()))
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range s.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			i := map[string]int{"r0": 0, "r1": 1}[labels["replica_id"]]
			got := s.GetCounter().GetValue() + s.GetGauge().GetValue()
			if got != w[i] || labels["engine"] != "vllm" || labels["engine_version"] != "0.9" || labels["pool_id"] != "p" {
				t.Errorf("%s %v = %v, want %v", mf.GetName(), labels, got, w[i])
			}
		}
	}
	if seen != len(want) {
		t.Fatalf("%d of the %d engine connection families gathered", seen, len(want))
	}
	m.SetEngineConns(nil)
	if n, err := testutil.GatherAndCount(reg, "engine_connections_dialed_total", "engine_connections_idle"); err != nil || n != 0 {
		t.Fatalf("after the replicas left: %d series (%v), want none", n, err)
	}
}
