package task

import (
	"errors"
	"strings"
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

// Placement reads the total memory of each replica's devices from NVML (engine/gpu over the
// go-nvml mocks): a replica whose devices cannot hold the task's context (Ctx × KV bytes per
// token) even when empty is excluded with "vram". A device that is nearly full is not: the
// engine on it reserved its KV cache at start-up, so free memory says nothing about the fit.
// Without NVML, or for a replica that names no devices, the fit is unknown and excludes nothing.
func TestPlacementVRAMFit(t *testing.T) {
	// The harness's pool has 10 KV bytes per token: a 4096-token context needs 40,960 bytes.
	small := func() nvml.Interface {
		srv := dgxh200.New()
		d0 := srv.Devices[0].(*server.Device)
		d0.MemoryInfo = nvml.Memory{Total: 30000, Used: 0, Free: 30000}
		return srv
	}
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
		{"device 0 too small", small, map[string][]int{"p/0": {0}, "p/1": {1}},
			map[string]string{"p/0": placement.ExcludedVRAM, "p/1": ""}, "p/1"},
		{"nearly full (preallocated) still fits", nearlyFull, map[string][]int{"p/0": {0}, "p/1": {1}},
			map[string]string{"p/0": "", "p/1": ""}, ""},
		{"a group counts all its devices", small, map[string][]int{"p/0": {0, 2}, "p/1": {1}},
			map[string]string{"p/0": "", "p/1": ""}, ""},
		{"no devices named: unknown", small, nil,
			map[string]string{"p/0": "", "p/1": ""}, ""},
		{"no NVML: unknown", noNVML, map[string][]int{"p/0": {0}, "p/1": {1}},
			map[string]string{"p/0": "", "p/1": ""}, ""},
		{"device not in the inventory: unknown", small, map[string][]int{"p/0": {0}, "p/1": {9}},
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

// The task's replica hints reach the replica scorer: a pinned task runs on its replica (and
// is not moved when it fails), an avoided replica is skipped, a preferred one chosen.
func TestReplicaHints(t *testing.T) {
	tests := []struct {
		name       string
		hints      Placement
		failOn     string // the replica that fails the task before its first token ("" none)
		wantOn     string
		wantReason string
		wantState  Status
	}{
		// p/0 carries another task, so least-loaded alone would choose p/1.
		{"pinned to the busier replica", Placement{PinReplica: "p/0"}, "", "p/0", "pinned", Succeeded},
		{"pinned replica fails: not moved", Placement{PinReplica: "p/1"}, "p/1", "p/1", "pinned", Failed},
		{"avoided", Placement{AvoidReplicas: []string{"p/1"}}, "", "p/0", "only_choice", Succeeded},
		{"preferred", Placement{PreferReplicas: []string{"p/0"}}, "", "p/0", "", Succeeded},
		{"unpinned replica fails: moved", Placement{}, "p/1", "p/0", "retry", Succeeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engines := map[string]engine.Replica{}
			for _, id := range []string{"p/0", "p/1"} {
				fail := -1
				if id == tt.failOn {
					fail = 0
				}
				engines[id] = &replicaScript{tokens: []string{" ok"}, failAfter: fail, err: resetErr()}
			}
			h := newReplicaHarness(t, true, []string{"p/0", "p/1"}, engines)
			h.pools.busy = map[string]int{"p/0": 1}
			s := spec(admission.Interactive)
			s.Placement = tt.hints
			h.submit(s)
			h.events(s.ID)
			snap, _ := h.svc.Get(h.ctx, s.ID)
			if snap.Status != tt.wantState {
				t.Fatalf("state %v, want %v", snap.Status, tt.wantState)
			}
			// Where the task ran (last): a failed task's placement is the retry that found no replica.
			ran := ""
			for _, id := range []string{"p/0", "p/1"} {
				if n := len(engines[id].(*replicaScript).requests()); n > 0 {
					ran = id
					if tt.failOn == "" && n != 1 || id == tt.failOn && n != 1 {
						t.Errorf("%s got %d requests", id, n)
					}
				}
			}
			if tt.failOn != "" && tt.failOn != tt.wantOn && ran != tt.wantOn {
				ran = "" // the moved task ran on both: the placement says where it ended
			}
			if ran != tt.wantOn && (snap.Placement == nil || snap.Placement.ReplicaID != tt.wantOn) {
				t.Fatalf("ran on %q (placement %+v), want %s", ran, snap.Placement, tt.wantOn)
			}
			if tt.wantState == Succeeded && tt.wantReason != "" && snap.Placement.Reason != tt.wantReason {
				t.Errorf("reason %s, want %s", snap.Placement.Reason, tt.wantReason)
			}
			if tt.failOn == tt.wantOn && len(engines[otherReplica(tt.wantOn)].(*replicaScript).requests()) != 0 {
				t.Errorf("the pinned task was moved to %s", otherReplica(tt.wantOn))
			}
		})
	}
}

// A pin to a replica the chosen pool lacks is refused at admission, as no pool can serve it.
func TestPinnedReplicaUnknown(t *testing.T) {
	h := newReplicaHarness(t, true, []string{"p/0"}, map[string]engine.Replica{"p/0": &replicaScript{tokens: []string{" ok"}, failAfter: -1}})
	s := spec(admission.Interactive)
	s.Placement = Placement{Mode: "pin", PinPool: "p", PinReplica: "p/9"}
	if _, err := h.svc.Submit(h.ctx, s); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("Submit: %v, want ErrNoMatch", err)
	}
}

func otherReplica(id string) string {
	if id == "p/0" {
		return "p/1"
	}
	return "p/0"
}

// A task whose context needs more KV memory than any replica's devices have in all can never
// be placed on this pool: it fails as an invalid request that says so, not retriable (a
// client told to retry would be refused forever). A pool where one replica is only busy or
// not ready is another matter: that task fails retriable.
func TestPlacementVRAMNeverFits(t *testing.T) {
	small := func() nvml.Interface {
		srv := dgxh200.New()
		for _, i := range []int{0, 1} {
			srv.Devices[i].(*server.Device).MemoryInfo = nvml.Memory{Total: 30000, Free: 30000}
		}
		return srv
	}
	tests := []struct {
		name          string
		devices       map[string][]int
		avoid         []string
		wantRetriable bool
		wantClass     Class
	}{
		{"every replica too small", map[string][]int{"p/0": {0}, "p/1": {1}}, nil, false, ClassInvalid},
		{"one too small, the other avoided", map[string][]int{"p/0": {0}, "p/1": {2}}, []string{"p/1"}, false, ClassInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engines := map[string]engine.Replica{
				"p/0": &replicaScript{tokens: []string{" ok"}, failAfter: -1},
				"p/1": &replicaScript{tokens: []string{" ok"}, failAfter: -1},
			}
			probe := gpu.New(small(), nil)
			t.Cleanup(func() { _ = probe.Close() })
			h := newGPUHarness(t, true, []string{"p/0", "p/1"}, engines, tt.devices, probe)
			s := spec(admission.Interactive)
			s.Ctx = 4096 // 40,960 bytes of KV memory in the harness's pool
			s.Placement.AvoidReplicas = tt.avoid
			h.submit(s)
			h.events(s.ID)
			snap, _ := h.svc.Get(h.ctx, s.ID)
			if snap.Status != Failed || snap.Error == nil {
				t.Fatalf("state %v, error %+v", snap.Status, snap.Error)
			}
			if snap.Error.Class != tt.wantClass || snap.Error.Retriable != tt.wantRetriable {
				t.Errorf("error %+v, want class %v retriable %v", snap.Error, tt.wantClass, tt.wantRetriable)
			}
			if !strings.Contains(snap.Error.Message, "KV memory") {
				t.Errorf("message %q does not say why", snap.Error.Message)
			}
		})
	}
}
