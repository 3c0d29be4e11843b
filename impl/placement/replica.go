package placement

import "slices"

// FNV-1a, written out so that hashing allocates nothing.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// Reasons a replica was chosen (ReplicaDecision.Reason); also the reason label of
// placements_total.
const (
	ReasonPinned      = "pinned"       // the task pinned the replica
	ReasonSession     = "session"      // the session's previous turn ran there (its KV cache)
	ReasonPrefix      = "prefix"       // tasks sharing the prompt's prefix go there
	ReasonLeastLoaded = "least_loaded" // the best score among several eligible replicas
	ReasonOnlyChoice  = "only_choice"  // one eligible replica
	ReasonRetry       = "retry"        // placed again after a replica failed the task
)

// Reasons a replica was not eligible (ReplicaScore.ExcludedBecause).
const (
	ExcludedNotReady    = "not_ready"    // not ready (starting, unhealthy, stopped)
	ExcludedDraining    = "draining"     // the replica is drained: its running tasks finish, no new ones
	ExcludedBreakerOpen = "breaker_open" // its breaker is open, or half-open with its probe in flight
	ExcludedTried       = "tried"        // it already failed this task
	ExcludedAvoided     = "avoided"      // the task avoids it
	ExcludedNotPinned   = "not_pinned"   // the task is pinned to another replica
	ExcludedDevices     = "devices"      // none of its devices is in the task's device mask
	ExcludedVRAM        = "vram"         // its devices have too little memory, in all, for the task's context
)

// Breaker is a replica's circuit breaker state.
type Breaker uint8

// Breaker states.
const (
	BreakerClosed   Breaker = iota // serving
	BreakerOpen                    // refusing after replica faults
	BreakerHalfOpen                // letting one probe task through
)

// String names the state as pool health shows it.
func (b Breaker) String() string {
	switch b {
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half_open"
	default:
		return "closed"
	}
}

// ReplicaSnapshot is one replica as the scorer sees it; all of it is copied from the pool
// registry before the call.
type ReplicaSnapshot struct {
	ID    string
	Ready bool // healthy
	// Draining: the replica itself is drained (not merely its pool): it takes no new task.
	Draining bool
	Breaker  Breaker
	// ProbeInFlight: half-open with its one probe task running.
	ProbeInFlight bool
	Slots         int
	Busy          int     // tasks dispatched to it and not finished
	Waiting       int     // requests queued inside the engine (its load probe), 0 if unknown
	KVUsage       float64 // KV cache use 0..1 from its load probe; negative if unknown
	Devices       []int
	// VRAM is the total memory of its devices in bytes; negative if unknown. Total, not free:
	// engines such as vLLM and llama.cpp reserve their KV cache when they start, so free memory
	// says nothing about whether a task fits in the cache they already hold.
	VRAM int64
}

// ReplicaRequest is what the task asks of a replica.
type ReplicaRequest struct {
	Pin     string   // replica id the task is pinned to ("" none)
	Prefer  []string // replica ids preferred
	Avoid   []string // replica ids avoided
	Tried   []string // replicas that already failed this task (never again)
	Devices []int    // device mask: a replica qualifies if one of its devices is listed (nil: any)
	// NeedVRAM is the KV memory the task's context needs (bytes); 0: not checked.
	NeedVRAM int64
	// SessionReplica is where the session's previous turn ran ("" none).
	SessionReplica string
	// SessionBound: the session stays on its replica while that replica's busy slots are below
	// Slots × SessionBound (default 1: while it has a free slot).
	SessionBound float64
	// PrefixKey is a hash of the prompt's long prefix; HasPrefix false when the prompt has none.
	PrefixKey uint64
	HasPrefix bool
	// PrefixLoadBound is the bounded-load factor of prefix affinity (default 1.25): the hashed
	// replica is used while its busy slots stay within factor × the mean load (+1).
	PrefixLoadBound float64
	// Retry marks a placement after a failure (the reason is then retry).
	Retry bool
	// Tiebreak rotates the choice among equally scored replicas (e.g. a task sequence number).
	Tiebreak uint64
}

// ReplicaScore is one candidate's line of the explanation.
type ReplicaScore struct {
	ReplicaID       string
	Score           float64
	ExcludedBecause string // "" when eligible
}

// ReplicaDecision is the choice and its explanation. ReplicaID is "" when no replica is
// eligible.
type ReplicaDecision struct {
	ReplicaID  string
	Reason     string
	Candidates []ReplicaScore
	// SessionMoved: the session had a replica but the task went elsewhere.
	SessionMoved bool
}

// Score is a replica's load score in [−2, 1]: the share of free slots, less the engine's
// queue and KV cache pressure. Higher is better.
func Score(r ReplicaSnapshot) float64 {
	slots := max(r.Slots, 1)
	s := float64(slots-r.Busy) / float64(slots)
	s -= float64(r.Waiting) / float64(slots)
	if r.KVUsage > 0 {
		s -= 0.5 * r.KVUsage
	}
	return max(s, -2)
}

// ChooseReplica ranks a pool's replicas for one task. It is pure and deterministic: the same
// snapshots and request give the same decision. out is reused for the candidates when it has
// room (pass nil otherwise).
func ChooseReplica(reps []ReplicaSnapshot, req ReplicaRequest, out []ReplicaScore) ReplicaDecision {
	out = out[:0]
	eligible := 0
	for _, r := range reps {
		why := exclusion(r, req)
		sc := ReplicaScore{ReplicaID: r.ID, ExcludedBecause: why}
		if why == "" {
			sc.Score = Score(r)
			eligible++
		}
		out = append(out, sc)
	}
	d := ReplicaDecision{Candidates: out}
	if eligible == 0 {
		return d
	}
	pick := func(i int, reason string) ReplicaDecision {
		d.ReplicaID, d.Reason = reps[i].ID, reason
		if req.Retry {
			d.Reason = ReasonRetry
		}
		d.SessionMoved = req.SessionReplica != "" && req.SessionReplica != d.ReplicaID
		return d
	}
	if req.Pin != "" {
		for i := range reps {
			if out[i].ExcludedBecause == "" {
				return pick(i, ReasonPinned)
			}
		}
	}
	if eligible == 1 {
		for i := range reps {
			if out[i].ExcludedBecause == "" {
				return pick(i, ReasonOnlyChoice)
			}
		}
	}
	if req.SessionReplica != "" {
		bound := req.SessionBound
		if bound <= 0 {
			bound = 1
		}
		for i, r := range reps {
			if r.ID == req.SessionReplica && out[i].ExcludedBecause == "" && float64(r.Busy) < float64(max(r.Slots, 1))*bound {
				return pick(i, ReasonSession)
			}
		}
	}
	if req.HasPrefix {
		if i := prefixChoice(reps, out, req); i >= 0 {
			return pick(i, ReasonPrefix)
		}
	}
	// Least loaded: the best score, preferred replicas with a free slot first; ties rotate with
	// Tiebreak.
	best, bestPref := -1, false
	ties := 0
	for i, r := range reps {
		if out[i].ExcludedBecause != "" {
			continue
		}
		pref := preferred(r, req)
		switch {
		case best < 0 || (pref && !bestPref) || (pref == bestPref && out[i].Score > out[best].Score):
			best, bestPref, ties = i, pref, 1
		case pref == bestPref && out[i].Score == out[best].Score:
			ties++
		}
	}
	if ties > 1 {
		k := int(req.Tiebreak % uint64(ties))
		for i, r := range reps {
			if out[i].ExcludedBecause != "" || preferred(r, req) != bestPref || out[i].Score != out[best].Score {
				continue
			}
			if k == 0 {
				best = i
				break
			}
			k--
		}
	}
	return pick(best, ReasonLeastLoaded)
}

// preferred reports whether the task prefers r (prefer_replicas) and r has a free slot: the
// queue grants a slot of the pool, which may be another replica's, and a preference that beat
// load outright would run the task over a full replica's slots while that one stays idle.
func preferred(r ReplicaSnapshot, req ReplicaRequest) bool {
	return r.Busy < max(r.Slots, 1) && slices.Contains(req.Prefer, r.ID)
}

func exclusion(r ReplicaSnapshot, req ReplicaRequest) string {
	switch {
	case slices.Contains(req.Tried, r.ID):
		return ExcludedTried
	case req.Pin != "" && r.ID != req.Pin:
		return ExcludedNotPinned
	case slices.Contains(req.Avoid, r.ID):
		return ExcludedAvoided
	case r.Draining:
		return ExcludedDraining
	case !r.Ready:
		return ExcludedNotReady
	case r.Breaker == BreakerOpen || (r.Breaker == BreakerHalfOpen && r.ProbeInFlight):
		return ExcludedBreakerOpen
	case req.Devices != nil && !slices.ContainsFunc(r.Devices, func(d int) bool { return slices.Contains(req.Devices, d) }):
		return ExcludedDevices
	case req.NeedVRAM > 0 && r.VRAM >= 0 && r.VRAM < req.NeedVRAM:
		return ExcludedVRAM
	}
	return ""
}

// prefixChoice is consistent hashing with bounded load: the eligible replicas are ranked by
// rendezvous hash of (prefix, replica id); the first whose load is within the bound takes the
// task. -1 when every one is above it.
func prefixChoice(reps []ReplicaSnapshot, out []ReplicaScore, req ReplicaRequest) int {
	factor := req.PrefixLoadBound
	if factor <= 0 {
		factor = 1.25
	}
	total, n := 0, 0
	for i, r := range reps {
		if out[i].ExcludedBecause == "" {
			total += r.Busy
			n++
		}
	}
	bound := factor*float64(total)/float64(n) + 1
	best, bestW := -1, uint64(0)
	for i, r := range reps {
		if out[i].ExcludedBecause != "" || float64(r.Busy) >= bound || r.Busy >= max(r.Slots, 1) {
			continue
		}
		if w := rendezvous(req.PrefixKey, r.ID); best < 0 || w > bestW {
			best, bestW = i, w
		}
	}
	return best
}

func rendezvous(key uint64, id string) uint64 {
	h := uint64(fnvOffset)
	for i := range 8 {
		h = (h ^ uint64(byte(key>>(8*i)))) * fnvPrime
	}
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * fnvPrime
	}
	return mix(h)
}

// mix is a 64-bit finalizer (splitmix64) so that nearby keys spread.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// PrefixKey hashes the first n bytes of a prompt; ok is false when the prompt is shorter than
// n (it has no long prefix to share).
func PrefixKey(prompt string, n int) (key uint64, ok bool) {
	if n <= 0 || len(prompt) < n {
		return 0, false
	}
	h := uint64(fnvOffset)
	for i := range n {
		h = (h ^ uint64(prompt[i])) * fnvPrime
	}
	return h, true
}
