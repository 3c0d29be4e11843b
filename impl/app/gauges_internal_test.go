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
		devices []int
		want    []int
	}{
		{"none named", nil, []int{0, 1, 2, 3}},
		{"one", []int{1}, []int{1}},
		{"a group", []int{2, 3}, []int{2, 3}},
		{"absent from the inventory", []int{7}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			for _, d := range replicaDevices(pool.ReplicaView{ReplicaSpec: pool.ReplicaSpec{ID: "p/0", Devices: tt.devices}}, inv) {
				got = append(got, d.Index)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("devices %v, want %v", got, tt.want)
			}
		})
	}
}
