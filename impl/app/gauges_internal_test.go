package app

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orchestratord/orchestratord/engine/gpu"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/pool"
)

// A pool's mirrored gauges keep one series, under the engine version the pool reports now:
// the one left under "" (before the first health check) or an old version goes, other pools'
// series stay.
func TestForgetOtherVersions(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	m.QueueDepth.WithLabelValues("llamacpp", "", "p1", "interactive").Set(3)
	m.QueueDepth.WithLabelValues("llamacpp", "", "p1", "batch").Set(1)
	m.QueueDepth.WithLabelValues("llamacpp", "b100", "p1", "interactive").Set(2)
	m.QueueDepth.WithLabelValues("llamacpp", "", "p2", "interactive").Set(5)
	m.KVCacheUsage.WithLabelValues("llamacpp", "b99", "p1", "p1/0").Set(0.5)
	m.KVCacheUsage.WithLabelValues("llamacpp", "b100", "p1", "p1/0").Set(0.25)

	forgetOtherVersions("p1", "b100", m.QueueDepth, m.KVCacheUsage)

	want := `
# HELP kv_cache_usage_ratio Busy slots over total slots of a replica (KV cache occupancy proxy).
# TYPE kv_cache_usage_ratio gauge
kv_cache_usage_ratio{engine="llamacpp",engine_version="b100",pool_id="p1",replica_id="p1/0"} 0.25
# HELP queue_depth Queued tasks per pool and priority.
# TYPE queue_depth gauge
queue_depth{engine="llamacpp",engine_version="",pool_id="p2",priority="interactive"} 5
queue_depth{engine="llamacpp",engine_version="b100",pool_id="p1",priority="interactive"} 2
`
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.QueueDepth, m.KVCacheUsage)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "queue_depth", "kv_cache_usage_ratio"); err != nil {
		t.Error(err)
	}
}

// Each replica's GPU gauges cover the devices it runs on; one that names none sees them all.
func TestReplicaDevices(t *testing.T) {
	inv := gpu.Inventory{Devices: []gpu.Device{{Index: 0}, {Index: 1}, {Index: 2}, {Index: 3}}}
	tests := []struct {
		name    string
		managed bool
		url     string // an external replica's
		devices []int
		want    []int
	}{
		{"none named", true, "", nil, []int{0, 1, 2, 3}},
		{"one", true, "", []int{1}, []int{1}},
		{"a group", true, "", []int{2, 3}, []int{2, 3}},
		{"absent from the inventory", true, "", []int{7}, nil},
		{"external on this host", false, "http://127.0.0.1:8000", nil, []int{0, 1, 2, 3}},
		{"external on localhost", false, "http://localhost:8000", nil, []int{0, 1, 2, 3}},
		{"external elsewhere", false, "http://10.0.0.5:8000", nil, nil},
		{"external by name", false, "http://gpu-box-2:8000", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			rv := pool.ReplicaView{ReplicaSpec: pool.ReplicaSpec{ID: "p/0", Devices: tt.devices, Managed: tt.managed}, URL: tt.url}
			for _, d := range replicaDevices(rv, inv) {
				got = append(got, d.Index)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("devices %v, want %v", got, tt.want)
			}
		})
	}
}
