// Package metrics defines every Prometheus series orchestratord exports, registered on an
// injected prometheus.Registerer. All series of the metrics contract are created up front, so
// `/metrics` shows their `# HELP`/`# TYPE` lines from start-up, before any sample exists.
// Label values are bounded: engine, pool, replica and priority come from configuration, reasons
// and outcomes from closed enums; task ids are never labels.
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// Buckets for the latency histograms, in milliseconds.
var (
	FirstTokenBuckets = []float64{5, 10, 25, 50, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000}
	DecodeBuckets     = []float64{10, 50, 100, 250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 30000, 60000}
)

// Metrics holds the collectors.
type Metrics struct {
	TasksEnqueued       *prometheus.CounterVec   // engine, engine_version, pool_id, replica_id, priority
	TasksStarted        *prometheus.CounterVec   // engine, engine_version, pool_id, replica_id, priority
	TasksCanceled       *prometheus.CounterVec   // engine, engine_version, pool_id, replica_id, reason
	TasksRejected       *prometheus.CounterVec   // engine, reason
	TasksFinished       *prometheus.CounterVec   // engine, pool_id, outcome
	QueueDepth          *prometheus.GaugeVec     // engine, engine_version, pool_id, priority
	KVCacheUsage        *prometheus.GaugeVec     // engine, engine_version, pool_id, replica_id
	GPUUtilization      *prometheus.GaugeVec     // engine, engine_version, pool_id, replica_id, device
	VRAMUsed            *prometheus.GaugeVec     // engine, engine_version, pool_id, replica_id, device
	FirstToken          *prometheus.HistogramVec // engine, engine_version, pool_id, priority
	Decode              *prometheus.HistogramVec // engine, engine_version, pool_id, priority
	TokensIn            *prometheus.CounterVec   // engine, engine_version, pool_id, replica_id
	TokensOut           *prometheus.CounterVec   // engine, engine_version, pool_id, replica_id
	Backpressure        *prometheus.CounterVec   // engine, policy
	CatalogVerify       *prometheus.CounterVec   // result, reason, engine
	ModelState          *prometheus.GaugeVec     // model_id, state
	PlacementDecisions  *prometheus.CounterVec   // outcome, pinned, fallback
	PlacementConsidered prometheus.Gauge
	PoolReady           *prometheus.GaugeVec   // pool_id
	ActiveLeases        *prometheus.GaugeVec   // pool_id
	DrainEvents         *prometheus.CounterVec // pool_id, reason
	StreamsOpen         prometheus.Gauge
	SSEDisconnects      prometheus.Counter
	ConnectionsOpen     prometheus.Gauge
	ConnectionsWaited   prometheus.Counter

	families []family
}

// family is a declared metric family, remembered so that the exposition can carry its
// # HELP/# TYPE lines even while it has no sample yet.
type family struct{ name, help, typ string }

// New creates and registers every series on reg.
func New(reg prometheus.Registerer) *Metrics {
	replicaLabels := []string{"engine", "engine_version", "pool_id", "replica_id"}
	m := &Metrics{
		TasksEnqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasks_enqueued_total", Help: "Tasks admitted into the queue.",
		}, append(replicaLabels, "priority")),
		TasksStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasks_started_total", Help: "Tasks dispatched to an engine.",
		}, append(replicaLabels, "priority")),
		TasksCanceled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasks_canceled_total", Help: "Tasks canceled, by reason (client, disconnect, drain, shutdown).",
		}, append(replicaLabels, "reason")),
		TasksRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasks_rejected_total", Help: "Tasks refused or evicted, by error code.",
		}, []string{"engine", "reason"}),
		TasksFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasks_finished_total", Help: "Tasks that reached a final state, by outcome.",
		}, []string{"engine", "pool_id", "outcome"}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "queue_depth", Help: "Queued tasks per pool and priority.",
		}, []string{"engine", "engine_version", "pool_id", "priority"}),
		KVCacheUsage: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kv_cache_usage_ratio", Help: "Busy slots over total slots of a replica (KV cache occupancy proxy).",
		}, replicaLabels),
		GPUUtilization: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpu_utilization", Help: "GPU utilisation in percent (NVML).",
		}, append(replicaLabels, "device")),
		VRAMUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vram_used_bytes", Help: "GPU memory used in bytes (NVML).",
		}, append(replicaLabels, "device")),
		FirstToken: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "latency_first_token_ms", Help: "Time from admission to the first token, in milliseconds.",
			Buckets: FirstTokenBuckets,
		}, []string{"engine", "engine_version", "pool_id", "priority"}),
		Decode: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "latency_decode_ms", Help: "Decode time of a whole task (first token to last), in milliseconds.",
			Buckets: DecodeBuckets,
		}, []string{"engine", "engine_version", "pool_id", "priority"}),
		TokensIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokens_in_total", Help: "Prompt tokens evaluated by engines.",
		}, replicaLabels),
		TokensOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokens_out_total", Help: "Tokens generated and relayed.",
		}, replicaLabels),
		Backpressure: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "admission_backpressure_events_total", Help: "Admissions refused or evictions made because the queue was full.",
		}, []string{"engine", "policy"}),
		CatalogVerify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "catalog_verifications_total", Help: "Model catalog verifications (no catalog in this build: stays 0).",
		}, []string{"result", "reason", "engine"}),
		ModelState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "model_state", Help: "1 for the state each served model is in.",
		}, []string{"model_id", "state"}),
		PlacementDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "placement_decisions_total", Help: "Placement decisions by outcome.",
		}, []string{"outcome", "pinned", "fallback"}),
		PlacementConsidered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "placement_candidates_considered", Help: "Pools considered by the last placement decision.",
		}),
		PoolReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pool_ready", Help: "1 when the pool accepts new tasks.",
		}, []string{"pool_id"}),
		ActiveLeases: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "active_leases", Help: "Engine slots in use per pool.",
		}, []string{"pool_id"}),
		DrainEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drain_events_total", Help: "Pool drains, by reason.",
		}, []string{"pool_id", "reason"}),
		StreamsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sse_streams_open", Help: "Open SSE streams.",
		}),
		SSEDisconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sse_client_disconnects_total", Help: "Streams whose client went away before the task ended.",
		}),
		ConnectionsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "http_connections_open", Help: "Client connections open (at most server.max_connections).",
		}),
		ConnectionsWaited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "http_connections_waited_total", Help: "Client connections that waited for a free slot because server.max_connections were open.",
		}),
	}
	for _, c := range []prometheus.Collector{m.TasksEnqueued, m.TasksStarted, m.TasksCanceled, m.TasksRejected, m.TasksFinished,
		m.QueueDepth, m.KVCacheUsage, m.GPUUtilization, m.VRAMUsed, m.FirstToken, m.Decode,
		m.TokensIn, m.TokensOut, m.Backpressure, m.CatalogVerify, m.ModelState,
		m.PlacementDecisions, m.PlacementConsidered, m.PoolReady, m.ActiveLeases, m.DrainEvents,
		m.StreamsOpen, m.SSEDisconnects, m.ConnectionsOpen, m.ConnectionsWaited} {
		m.families = append(m.families, describe(c))
	}
	reg.MustRegister(m.TasksEnqueued, m.TasksStarted, m.TasksCanceled, m.TasksRejected, m.TasksFinished,
		m.QueueDepth, m.KVCacheUsage, m.GPUUtilization, m.VRAMUsed, m.FirstToken, m.Decode,
		m.TokensIn, m.TokensOut, m.Backpressure, m.CatalogVerify, m.ModelState,
		m.PlacementDecisions, m.PlacementConsidered, m.PoolReady, m.ActiveLeases, m.DrainEvents,
		m.StreamsOpen, m.SSEDisconnects, m.ConnectionsOpen, m.ConnectionsWaited)
	return m
}

var descRe = regexp.MustCompile(`fqName: "([^"]+)", help: "((?:[^"\\]|\\.)*)"`)

// describe reads a collector's name and help from its descriptor, and its type from its kind.
func describe(c prometheus.Collector) family {
	ch := make(chan *prometheus.Desc, 1)
	c.Describe(ch)
	d := <-ch
	f := family{}
	if mm := descRe.FindStringSubmatch(d.String()); mm != nil {
		f.name, f.help = mm[1], mm[2]
	}
	switch c.(type) {
	case *prometheus.CounterVec, prometheus.Counter:
		f.typ = "counter"
	case *prometheus.HistogramVec, prometheus.Histogram:
		f.typ = "histogram"
	default:
		f.typ = "gauge"
	}
	return f
}

// ContentType is the exposition's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WriteText writes the text exposition of g to w, followed by # HELP/# TYPE lines for every
// declared family that has no sample yet.
func (m *Metrics) WriteText(w io.Writer, g prometheus.Gatherer) error {
	mfs, err := g.Gather()
	if err != nil {
		return fmt.Errorf("gather: %w", err)
	}
	bw := bufio.NewWriter(w)
	enc := expfmt.NewEncoder(bw, expfmt.NewFormat(expfmt.TypeTextPlain))
	seen := make(map[string]bool, len(mfs))
	for _, mf := range mfs {
		seen[mf.GetName()] = true
		if err := enc.Encode(mf); err != nil {
			return fmt.Errorf("encode %s: %w", mf.GetName(), err)
		}
	}
	for _, f := range m.families {
		if !seen[f.name] {
			fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.typ)
		}
	}
	return bw.Flush()
}
