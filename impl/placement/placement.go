// Package placement chooses the pool a task runs on. The decision is a pure, deterministic
// function of the candidates' snapshot and the task's needs: feasibility filters first (engine,
// model, workload, readiness, context length, overrides), then the least-loaded pool, ties broken
// by pool id.
package placement

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Errors of placement. ErrNoMatch means no configured pool serves the task's engine, model and
// workload within its placement overrides, so retrying cannot help (503 POOL_UNAVAILABLE, not
// retriable); ErrNoPool means matching pools exist but none is ready now (503, retriable);
// ErrCtxTooLarge means matching pools exist but the task's context exceeds their ctx_max (400).
var (
	ErrNoMatch     = errors.New("no pool serves the task")
	ErrNoPool      = errors.New("no pool available")
	ErrCtxTooLarge = errors.New("ctx exceeds pool limit")
)

// Candidate is one pool as placement sees it.
type Candidate struct {
	PoolID     string
	Engine     string
	ModelRef   string
	ModelID    string
	CtxMax     int
	Workloads  []string
	Admittable bool // healthy and not draining
	Slots      int
	Load       int // queued + busy tasks on the pool
}

// Mode is the placement override mode.
type Mode string

// Modes.
const (
	ModeAuto   Mode = "auto"
	ModePin    Mode = "pin"
	ModePrefer Mode = "prefer"
)

// Request is what a task needs.
type Request struct {
	Engine        string
	ModelRef      string
	Workload      string
	Ctx           int
	Mode          Mode
	PinPool       string
	PreferPools   []string
	AvoidPools    []string
	AllowFallback bool
}

// Decision is the outcome of a successful placement.
type Decision struct {
	PoolID     string
	Considered int
	Pinned     bool
	Fallback   bool
}

// Choose picks a pool for r among cands. A successful choice allocates nothing: one pass counts
// the matching, fitting, ready (and preferred) pools and keeps the best of the ready (and of the
// preferred) ones; the lists an error names are gathered only then.
func Choose(cands []Candidate, r Request) (Decision, error) {
	d := Decision{Pinned: r.Mode == ModePin}
	prefer := r.Mode == ModePrefer && len(r.PreferPools) > 0
	var fitting, ready int
	best, bestPreferred := -1, -1
	for i := range cands {
		c := &cands[i]
		if !r.matches(c) {
			continue
		}
		d.Considered++
		if c.CtxMax < r.Ctx {
			continue
		}
		fitting++
		if !c.Admittable {
			continue
		}
		ready++
		if best < 0 || less(c, &cands[best]) {
			best = i
		}
		if prefer && slices.Contains(r.PreferPools, c.PoolID) && (bestPreferred < 0 || less(c, &cands[bestPreferred])) {
			bestPreferred = i
		}
	}
	if d.Considered == 0 {
		what := fmt.Sprintf("engine %s, model %q, workload %s", r.Engine, r.ModelRef, r.Workload)
		if len(r.AvoidPools) > 0 {
			what += fmt.Sprintf(" outside avoid_pools %s", strings.Join(r.AvoidPools, ", "))
		}
		if r.Mode == ModePin {
			return d, fmt.Errorf("%w: pinned pool %q does not serve %s", ErrNoMatch, r.PinPool, what)
		}
		return d, fmt.Errorf("%w: %s", ErrNoMatch, what)
	}
	if fitting == 0 {
		maxCtx := 0
		var ids []string
		for i := range cands {
			if c := &cands[i]; r.matches(c) {
				maxCtx = max(maxCtx, c.CtxMax)
				ids = append(ids, c.PoolID)
			}
		}
		return d, fmt.Errorf("%w: ctx %d exceeds ctx_max %d of pool %s", ErrCtxTooLarge, r.Ctx, maxCtx, strings.Join(ids, ", "))
	}
	if ready == 0 {
		var ids []string
		for i := range cands {
			if c := &cands[i]; r.matches(c) && c.CtxMax >= r.Ctx {
				ids = append(ids, c.PoolID)
			}
		}
		return d, fmt.Errorf("%w: pool %s not ready or draining", ErrNoPool, strings.Join(ids, ", "))
	}
	if prefer {
		switch {
		case bestPreferred >= 0:
			best = bestPreferred
		case r.AllowFallback:
			d.Fallback = true
		default:
			return d, fmt.Errorf("%w: none of the preferred pools %s is ready and feasible", ErrNoPool, strings.Join(r.PreferPools, ", "))
		}
	}
	d.PoolID = cands[best].PoolID
	return d, nil
}

// ServesModel reports whether a pool serving modelRef under modelID serves a task that asked
// for want: by the pool's model_ref or by its model_id.
func ServesModel(modelRef, modelID, want string) bool {
	return modelRef == want || modelID == want
}

// matches reports whether c serves r's engine, model and workload within its overrides.
func (r *Request) matches(c *Candidate) bool {
	switch {
	case c.Engine != r.Engine || !ServesModel(c.ModelRef, c.ModelID, r.ModelRef):
		return false
	case !slices.Contains(c.Workloads, r.Workload):
		return false
	case slices.Contains(r.AvoidPools, c.PoolID):
		return false
	case r.Mode == ModePin && c.PoolID != r.PinPool:
		return false
	}
	return true
}

// less orders by load per slot (cross-multiplied to stay in integers), then pool id.
func less(a, b *Candidate) bool {
	la, lb := a.Load*max(b.Slots, 1), b.Load*max(a.Slots, 1)
	if la != lb {
		return la < lb
	}
	return a.PoolID < b.PoolID
}
