package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestChooseAsReference: on random pools and requests Choose decides, and words its errors, as
// the reference (the slice-building implementation it replaced) does.
func TestChooseAsReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	some := func(xs ...string) []string {
		var out []string
		for _, x := range xs {
			if r.IntN(3) == 0 {
				out = append(out, x)
			}
		}
		return out
	}
	for range 20000 {
		cands := make([]Candidate, r.IntN(5))
		for i := range cands {
			cands[i] = Candidate{PoolID: pick("a", "b", "c", "d"), Engine: pick("llamacpp", "vllm"), ModelRef: pick("m1", "m2"),
				ModelID: pick("", "tiny"), CtxMax: pick2(r, 512, 4096), Workloads: some("completion", "chat"),
				Admittable: r.IntN(3) > 0, Slots: r.IntN(3), Load: r.IntN(4)}
		}
		req := Request{Engine: pick("llamacpp", "vllm"), ModelRef: pick("m1", "m2", "tiny"), Workload: pick("completion", "chat"),
			Ctx: pick2(r, 256, 1024, 8192), Mode: Mode(pick(string(ModeAuto), string(ModePin), string(ModePrefer))),
			PinPool: pick("a", "b", "e"), PreferPools: some("a", "b", "c"), AvoidPools: some("a", "d"), AllowFallback: r.IntN(2) == 0}
		got, gerr := Choose(slices.Clone(cands), req)
		want, werr := chooseReference(slices.Clone(cands), req)
		if got != want || fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("cands %+v\nreq %+v\ngot  %+v %v\nwant %+v %v", cands, req, got, gerr, want, werr)
		}
	}
}

func pick2(r *rand.Rand, xs ...int) int { return xs[r.IntN(len(xs))] }

// TestChooseAllocations: a successful choice allocates nothing.
func TestChooseAllocations(t *testing.T) {
	cands := []Candidate{
		{PoolID: "a", Engine: "llamacpp", ModelRef: "m", CtxMax: 4096, Workloads: []string{"completion"}, Admittable: true, Slots: 2, Load: 1},
		{PoolID: "b", Engine: "llamacpp", ModelRef: "m", CtxMax: 4096, Workloads: []string{"completion"}, Admittable: true, Slots: 2},
	}
	req := Request{Engine: "llamacpp", ModelRef: "m", Workload: "completion", Ctx: 512, Mode: ModePrefer, PreferPools: []string{"a"}}
	if n := testing.AllocsPerRun(100, func() {
		if d, err := Choose(cands, req); err != nil || d.PoolID != "a" {
			t.Fatal(d, err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per choice, want 0", n)
	}
}

// Choose picks a pool for r among cands.
func chooseReference(cands []Candidate, r Request) (Decision, error) {
	d := Decision{Pinned: r.Mode == ModePin}
	var matching, fitting []Candidate
	for _, c := range cands {
		if c.Engine != r.Engine || (c.ModelRef != r.ModelRef && c.ModelID != r.ModelRef) {
			continue
		}
		if !slices.Contains(c.Workloads, r.Workload) {
			continue
		}
		if slices.Contains(r.AvoidPools, c.PoolID) {
			continue
		}
		if r.Mode == ModePin && c.PoolID != r.PinPool {
			continue
		}
		matching = append(matching, c)
		if c.CtxMax >= r.Ctx {
			fitting = append(fitting, c)
		}
	}
	d.Considered = len(matching)
	if len(matching) == 0 {
		what := fmt.Sprintf("engine %s, model %q, workload %s", r.Engine, r.ModelRef, r.Workload)
		if len(r.AvoidPools) > 0 {
			what += fmt.Sprintf(" outside avoid_pools %s", strings.Join(r.AvoidPools, ", "))
		}
		if r.Mode == ModePin {
			return d, fmt.Errorf("%w: pinned pool %q does not serve %s", ErrNoMatch, r.PinPool, what)
		}
		return d, fmt.Errorf("%w: %s", ErrNoMatch, what)
	}
	if len(fitting) == 0 {
		maxCtx := 0
		ids := make([]string, 0, len(matching))
		for _, c := range matching {
			maxCtx = max(maxCtx, c.CtxMax)
			ids = append(ids, c.PoolID)
		}
		return d, fmt.Errorf("%w: ctx %d exceeds ctx_max %d of pool %s", ErrCtxTooLarge, r.Ctx, maxCtx, strings.Join(ids, ", "))
	}
	var ready []Candidate
	for _, c := range fitting {
		if c.Admittable {
			ready = append(ready, c)
		}
	}
	if len(ready) == 0 {
		return d, fmt.Errorf("%w: pool %s not ready or draining", ErrNoPool, idsReference(fitting))
	}
	pool := ready
	if r.Mode == ModePrefer && len(r.PreferPools) > 0 {
		var preferred []Candidate
		for _, c := range ready {
			if slices.Contains(r.PreferPools, c.PoolID) {
				preferred = append(preferred, c)
			}
		}
		switch {
		case len(preferred) > 0:
			pool = preferred
		case r.AllowFallback:
			d.Fallback = true
		default:
			return d, fmt.Errorf("%w: none of the preferred pools %s is ready and feasible", ErrNoPool, strings.Join(r.PreferPools, ", "))
		}
	}
	best := pool[0]
	for _, c := range pool[1:] {
		if lessReference(c, best) {
			best = c
		}
	}
	d.PoolID = best.PoolID
	return d, nil
}

// less orders by load per slot (cross-multiplied to stay in integers), then pool id.
func lessReference(a, b Candidate) bool {
	la, lb := a.Load*max(b.Slots, 1), b.Load*max(a.Slots, 1)
	if la != lb {
		return la < lb
	}
	return a.PoolID < b.PoolID
}

func idsReference(cs []Candidate) string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.PoolID
	}
	return strings.Join(out, ", ")
}
