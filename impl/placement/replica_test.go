package placement

import (
	"fmt"
	"slices"
	"testing"
)

func rep(id string, busy int) ReplicaSnapshot {
	return ReplicaSnapshot{ID: id, Ready: true, Slots: 4, Busy: busy, KVUsage: -1, VRAM: -1}
}

func TestChooseReplica(t *testing.T) {
	notReady := rep("b", 0)
	notReady.Ready = false
	open := rep("b", 0)
	open.Breaker = BreakerOpen
	halfBusy := rep("b", 0)
	halfBusy.Breaker, halfBusy.ProbeInFlight = BreakerHalfOpen, true
	halfFree := rep("b", 0)
	halfFree.Breaker = BreakerHalfOpen
	queued := rep("b", 0)
	queued.Waiting = 3
	kv := rep("b", 0)
	kv.KVUsage = 0.9
	dev := rep("b", 0)
	dev.Devices = []int{1}
	vram := rep("b", 0)
	vram.VRAM = 100
	draining := rep("b", 0) // the least loaded, and healthy, but drained
	draining.Draining = true

	tests := []struct {
		name     string
		reps     []ReplicaSnapshot
		req      ReplicaRequest
		want     string
		reason   string
		excluded map[string]string
	}{
		{"least loaded", []ReplicaSnapshot{rep("a", 2), rep("b", 1), rep("c", 3)}, ReplicaRequest{}, "b", ReasonLeastLoaded, nil},
		{"only choice", []ReplicaSnapshot{rep("a", 2), notReady}, ReplicaRequest{}, "a", ReasonOnlyChoice, map[string]string{"b": ExcludedNotReady}},
		{"none eligible", []ReplicaSnapshot{notReady}, ReplicaRequest{}, "", "", map[string]string{"b": ExcludedNotReady}},
		{"draining", []ReplicaSnapshot{rep("a", 3), draining}, ReplicaRequest{}, "a", ReasonOnlyChoice, map[string]string{"b": ExcludedDraining}},
		{"draining even when pinned", []ReplicaSnapshot{rep("a", 3), draining}, ReplicaRequest{Pin: "b"}, "", "", map[string]string{"a": ExcludedNotPinned, "b": ExcludedDraining}},
		{"open breaker", []ReplicaSnapshot{rep("a", 3), open}, ReplicaRequest{}, "a", ReasonOnlyChoice, map[string]string{"b": ExcludedBreakerOpen}},
		{"half-open with its probe out", []ReplicaSnapshot{rep("a", 3), halfBusy}, ReplicaRequest{}, "a", ReasonOnlyChoice, map[string]string{"b": ExcludedBreakerOpen}},
		{"half-open takes a probe", []ReplicaSnapshot{rep("a", 3), halfFree}, ReplicaRequest{}, "b", ReasonLeastLoaded, nil},
		{"engine queue counts", []ReplicaSnapshot{rep("a", 1), queued}, ReplicaRequest{}, "a", ReasonLeastLoaded, nil},
		{"kv pressure counts", []ReplicaSnapshot{rep("a", 1), kv}, ReplicaRequest{}, "a", ReasonLeastLoaded, nil},
		{"tried is never again", []ReplicaSnapshot{rep("a", 3), rep("b", 0)}, ReplicaRequest{Tried: []string{"b"}, Retry: true}, "a", ReasonRetry, map[string]string{"b": ExcludedTried}},
		{"pinned", []ReplicaSnapshot{rep("a", 0), rep("b", 3)}, ReplicaRequest{Pin: "b"}, "b", ReasonPinned, map[string]string{"a": ExcludedNotPinned}},
		{"avoided", []ReplicaSnapshot{rep("a", 0), rep("b", 3)}, ReplicaRequest{Avoid: []string{"a"}}, "b", ReasonOnlyChoice, map[string]string{"a": ExcludedAvoided}},
		{"preferred beats load", []ReplicaSnapshot{rep("a", 0), rep("b", 3), rep("c", 2)}, ReplicaRequest{Prefer: []string{"b", "c"}}, "c", ReasonLeastLoaded, nil},
		// The queue granted a slot of the pool: b's. a is full, preferred or not.
		{"a full preferred replica is not", []ReplicaSnapshot{rep("a", 4), rep("b", 0)}, ReplicaRequest{Prefer: []string{"a"}}, "b", ReasonLeastLoaded, nil},
		{"a preferred replica with a free slot is", []ReplicaSnapshot{rep("a", 3), rep("b", 0)}, ReplicaRequest{Prefer: []string{"a"}}, "a", ReasonLeastLoaded, nil},
		{"device mask", []ReplicaSnapshot{rep("a", 3), dev}, ReplicaRequest{Devices: []int{0}}, "", "", map[string]string{"a": ExcludedDevices, "b": ExcludedDevices}},
		{"device mask admits", []ReplicaSnapshot{rep("a", 0), dev}, ReplicaRequest{Devices: []int{1}}, "b", ReasonOnlyChoice, map[string]string{"a": ExcludedDevices}},
		{"vram fit", []ReplicaSnapshot{rep("a", 3), vram}, ReplicaRequest{NeedVRAM: 1000}, "a", ReasonOnlyChoice, map[string]string{"b": ExcludedVRAM}},
		{"session stays", []ReplicaSnapshot{rep("a", 0), rep("b", 3)}, ReplicaRequest{SessionReplica: "b"}, "b", ReasonSession, nil},
		{"session moves off a full replica", []ReplicaSnapshot{rep("a", 0), rep("b", 4)}, ReplicaRequest{SessionReplica: "b"}, "a", ReasonLeastLoaded, nil},
		{"session's replica gone", []ReplicaSnapshot{rep("a", 1), rep("c", 0)}, ReplicaRequest{SessionReplica: "b"}, "c", ReasonLeastLoaded, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := ChooseReplica(tt.reps, tt.req, nil)
			if d.ReplicaID != tt.want || d.Reason != tt.reason {
				t.Fatalf("chose %q (%s), want %q (%s); candidates %+v", d.ReplicaID, d.Reason, tt.want, tt.reason, d.Candidates)
			}
			if len(d.Candidates) != len(tt.reps) {
				t.Fatalf("%d candidates for %d replicas", len(d.Candidates), len(tt.reps))
			}
			for _, c := range d.Candidates {
				if c.ExcludedBecause != tt.excluded[c.ReplicaID] {
					t.Errorf("%s excluded because %q, want %q", c.ReplicaID, c.ExcludedBecause, tt.excluded[c.ReplicaID])
				}
			}
			if tt.req.SessionReplica != "" && d.SessionMoved != (d.ReplicaID != tt.req.SessionReplica) {
				t.Errorf("SessionMoved = %v", d.SessionMoved)
			}
		})
	}
}

// TestTiebreakSpreads: equally loaded replicas take turns as the tie-break moves, so that
// sequential tasks on an idle pool spread evenly.
func TestTiebreakSpreads(t *testing.T) {
	reps := []ReplicaSnapshot{rep("a", 0), rep("b", 0), rep("c", 0)}
	count := map[string]int{}
	for i := range 60 {
		count[ChooseReplica(reps, ReplicaRequest{Tiebreak: uint64(i)}, nil).ReplicaID]++
	}
	for _, id := range []string{"a", "b", "c"} {
		if count[id] != 20 {
			t.Fatalf("spread %v, want 20 each", count)
		}
	}
}

// TestDeterministic: the same input gives the same decision.
func TestDeterministic(t *testing.T) {
	reps := []ReplicaSnapshot{rep("a", 1), rep("b", 1), rep("c", 2)}
	req := ReplicaRequest{Tiebreak: 7, PrefixKey: 42, HasPrefix: true}
	first := ChooseReplica(reps, req, nil)
	for range 100 {
		if d := ChooseReplica(reps, req, nil); d.ReplicaID != first.ReplicaID || d.Reason != first.Reason ||
			!slices.Equal(d.Candidates, first.Candidates) {
			t.Fatalf("decision changed: %+v vs %+v", d, first)
		}
	}
}

// TestPrefixAffinity: prompts that share a prefix land on one replica while its load is within
// the bound, spread across replicas for different prefixes, and move when the hashed replica
// is above the bound; removing a replica moves only the prefixes that were on it.
func TestPrefixAffinity(t *testing.T) {
	reps := []ReplicaSnapshot{rep("a", 0), rep("b", 0), rep("c", 0), rep("d", 0)}
	key, ok := PrefixKey("a long shared system prompt ..........", 16)
	if !ok {
		t.Fatal("no prefix key")
	}
	home := ChooseReplica(reps, ReplicaRequest{PrefixKey: key, HasPrefix: true}, nil)
	if home.Reason != ReasonPrefix {
		t.Fatalf("reason %s", home.Reason)
	}
	for i := range 10 {
		if d := ChooseReplica(reps, ReplicaRequest{PrefixKey: key, HasPrefix: true, Tiebreak: uint64(i)}, nil); d.ReplicaID != home.ReplicaID {
			t.Fatalf("same prefix went to %s, then %s", home.ReplicaID, d.ReplicaID)
		}
	}
	// Bounded load: the home replica full of work → another replica.
	loaded := slices.Clone(reps)
	for i := range loaded {
		if loaded[i].ID == home.ReplicaID {
			loaded[i].Busy = 3
		}
	}
	if d := ChooseReplica(loaded, ReplicaRequest{PrefixKey: key, HasPrefix: true}, nil); d.ReplicaID == home.ReplicaID {
		t.Fatalf("prefix stayed on %s above its load bound", d.ReplicaID)
	}
	// Spread and stability over many prefixes.
	seen := map[string]int{}
	moved := 0
	var without []ReplicaSnapshot
	for _, r := range reps {
		if r.ID != "d" {
			without = append(without, r)
		}
	}
	for i := range 400 {
		k, _ := PrefixKey(fmt.Sprintf("prefix number %04d and then the same tail", i), 24)
		d := ChooseReplica(reps, ReplicaRequest{PrefixKey: k, HasPrefix: true}, nil)
		seen[d.ReplicaID]++
		d2 := ChooseReplica(without, ReplicaRequest{PrefixKey: k, HasPrefix: true}, nil)
		if d.ReplicaID != "d" && d2.ReplicaID != d.ReplicaID {
			moved++
		}
	}
	for _, r := range reps {
		if seen[r.ID] < 60 { // 100 expected each
			t.Errorf("replica %s got %d of 400 prefixes: %v", r.ID, seen[r.ID], seen)
		}
	}
	if moved != 0 {
		t.Errorf("%d prefixes moved off replicas that stayed", moved)
	}
	if _, ok := PrefixKey("short", 16); ok {
		t.Error("a prompt shorter than the prefix length has a prefix key")
	}
}

// BenchmarkChooseReplica is one decision over 256 pools × 8 replicas: the replicas of every
// pool that can serve the task are scored (2048 candidates).
func BenchmarkChooseReplica(b *testing.B) {
	reps := make([]ReplicaSnapshot, 0, 256*8)
	for p := range 256 {
		for r := range 8 {
			s := rep(fmt.Sprintf("pool-%03d/%d", p, r), (p+r)%4)
			s.Waiting, s.KVUsage = r%3, float64(p%10)/10
			reps = append(reps, s)
		}
	}
	out := make([]ReplicaScore, 0, len(reps))
	key, _ := PrefixKey("a shared prefix of some length", 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := ChooseReplica(reps, ReplicaRequest{Tiebreak: uint64(i), SessionReplica: "pool-100/3", PrefixKey: key, HasPrefix: i%2 == 0}, out)
		out = d.Candidates
	}
}
