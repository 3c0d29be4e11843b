package contracts

import (
	"testing"

	"github.com/orchestratord/orchestratord/gen/client"
)

// TestCapabilitiesSlotsCountReplicas: a pool of 3 replicas with slots: 2 serves 6 generations
// at once (README's three-replicas example: "6 slots in the pool"; pool health's
// metrics.slots_total says 6). The contract says EngineCapability.slots is the "Total slots over
// the engine's pools": the llamacpp engine entry says 6, and the pool's own entry agrees with
// pool health. (Both said 2, the slots per replica.)
func TestCapabilitiesSlotsCountReplicas(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withReplicas(3), withSlots(2))
	ctx := h.ctx(t)
	eventually(t, "all three replicas ready", func() bool {
		st, _ := h.replicaStates(t)
		return st["p0/0"] == client.ReplicaHealthStateReady && st["p0/1"] == client.ReplicaHealthStateReady &&
			st["p0/2"] == client.ReplicaHealthStateReady
	})
	_, ph := h.replicaStates(t)
	if ph.Metrics.SlotsTotal != 6 {
		t.Fatalf("pool health slots_total %d, want 6 (precondition)", ph.Metrics.SlotsTotal)
	}
	r, err := h.client.GetCapabilitiesWithResponse(ctx, nil)
	if err != nil || r.JSON200 == nil {
		t.Fatalf("getCapabilities: %v %s", err, r.Body)
	}
	for _, e := range r.JSON200.Engines {
		if e.Engine == client.Llamacpp && e.Slots != 6 {
			t.Errorf("capabilities engine llamacpp slots = %d, want 6 (3 replicas x 2 slots; pool health slots_total = %d)", e.Slots, ph.Metrics.SlotsTotal)
		}
	}
	for _, p := range r.JSON200.Pools {
		if p.PoolId == poolID && p.Slots != ph.Metrics.SlotsTotal {
			t.Errorf("capabilities pool %s slots = %d, pool health slots_total = %d: the two control-plane views disagree", p.PoolId, p.Slots, ph.Metrics.SlotsTotal)
		}
	}
}
