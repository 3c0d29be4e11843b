package task

import (
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/gpu"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/placement"
)

// Placement reads the free memory of each replica's devices from NVML (engine/gpu over the
// go-nvml mocks): a replica whose devices cannot hold the task's context (Ctx × KV bytes per
// token) is excluded with "vram". Without NVML, or for a replica that names no devices, the
// fit is unknown and excludes nothing.
func TestPlacementVRAMFit(t *testing.T) {
	// The harness's pool has 10 KV bytes per token: a 4096-token context needs 40,960 bytes.
	nearlyFull := func() nvml.Interface {
		srv := dgxh200.New()
		d0 := srv.Devices[0].(*server.Device)
		d0.MemoryInfo = nvml.Memory{Total: 144384 << 20, Used: 144384<<20 - 1000, Free: 1000}
		return srv
	}
	noNVML := func() nvml.Interface {
		return &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
	}
	tests := []struct {
		name     string
		lib      func() nvml.Interface
		devices  map[string][]int
		excluded map[string]string // replica → excluded_because
		want     string            // the replica chosen
	}{
		{"device 0 lacks memory", nearlyFull, map[string][]int{"p/0": {0}, "p/1": {1}},
			map[string]string{"p/0": placement.ExcludedVRAM, "p/1": ""}, "p/1"},
		{"a group counts all its devices", nearlyFull, map[string][]int{"p/0": {0, 2}, "p/1": {1}},
			map[string]string{"p/0": "", "p/1": ""}, ""},
		{"no devices named: unknown", nearlyFull, nil,
			map[string]string{"p/0": "", "p/1": ""}, ""},
		{"no NVML: unknown", noNVML, map[string][]int{"p/0": {0}, "p/1": {1}},
			map[string]string{"p/0": "", "p/1": ""}, ""},
		{"device not in the inventory: unknown", nearlyFull, map[string][]int{"p/0": {0}, "p/1": {9}},
			map[string]string{"p/0": placement.ExcludedVRAM, "p/1": ""}, "p/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engines := map[string]engine.Replica{
				"p/0": &replicaScript{tokens: []string{" ok"}, failAfter: -1},
				"p/1": &replicaScript{tokens: []string{" ok"}, failAfter: -1},
			}
			probe := gpu.New(tt.lib(), nil)
			t.Cleanup(func() { _ = probe.Close() })
			h := newGPUHarness(t, true, []string{"p/0", "p/1"}, engines, tt.devices, probe)
			s := spec(admission.Interactive)
			s.Ctx = 4096
			h.submit(s)
			h.events(s.ID)
			snap, _ := h.svc.Get(h.ctx, s.ID)
			if snap.Placement == nil || len(snap.Placement.Candidates) != 2 {
				t.Fatalf("placement %+v", snap.Placement)
			}
			for _, c := range snap.Placement.Candidates {
				if want, ok := tt.excluded[c.ReplicaID]; !ok || c.ExcludedBecause != want {
					t.Errorf("candidate %s excluded because %q, want %q", c.ReplicaID, c.ExcludedBecause, want)
				}
			}
			if tt.want != "" && snap.Placement.ReplicaID != tt.want {
				t.Errorf("placed on %s, want %s", snap.Placement.ReplicaID, tt.want)
			}
		})
	}
}
