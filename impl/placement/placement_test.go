package placement

import (
	"errors"
	"testing"
)

func cand(id string, load, slots int) Candidate {
	return Candidate{PoolID: id, Engine: "llamacpp", ModelRef: "/m/tiny.gguf", ModelID: "tiny", CtxMax: 4096,
		Workloads: []string{"completion"}, Admittable: true, Slots: slots, Load: load}
}

func TestChoose(t *testing.T) {
	base := Request{Engine: "llamacpp", ModelRef: "tiny", Workload: "completion", Ctx: 1024, Mode: ModeAuto, AllowFallback: true}
	notReady := cand("c", 0, 1)
	notReady.Admittable = false
	small := cand("s", 0, 1)
	small.CtxMax = 512
	tests := []struct {
		name    string
		cands   []Candidate
		mod     func(*Request)
		want    string
		wantErr error
		fb      bool
	}{
		{"by model id", []Candidate{cand("a", 0, 1)}, nil, "a", nil, false},
		{"by model ref", []Candidate{cand("a", 0, 1)}, func(r *Request) { r.ModelRef = "/m/tiny.gguf" }, "a", nil, false},
		{"least loaded per slot", []Candidate{cand("a", 2, 1), cand("b", 3, 4)}, nil, "b", nil, false},
		{"tie by id", []Candidate{cand("b", 1, 1), cand("a", 1, 1)}, nil, "a", nil, false},
		{"wrong engine", []Candidate{cand("a", 0, 1)}, func(r *Request) { r.Engine = "vllm" }, "", ErrNoMatch, false},
		{"unknown model", []Candidate{cand("a", 0, 1)}, func(r *Request) { r.ModelRef = "big" }, "", ErrNoMatch, false},
		{"workload", []Candidate{cand("a", 0, 1)}, func(r *Request) { r.Workload = "embedding" }, "", ErrNoMatch, false},
		{"ctx too large", []Candidate{small}, nil, "", ErrCtxTooLarge, false},
		{"ctx fits elsewhere", []Candidate{small, cand("b", 9, 1)}, nil, "b", nil, false},
		{"not ready", []Candidate{notReady}, nil, "", ErrNoPool, false},
		{"skips not ready", []Candidate{notReady, cand("d", 5, 1)}, nil, "d", nil, false},
		{"pin", []Candidate{cand("a", 0, 1), cand("b", 5, 1)}, func(r *Request) { r.Mode, r.PinPool = ModePin, "b" }, "b", nil, false},
		{"pin missing", []Candidate{cand("a", 0, 1)}, func(r *Request) { r.Mode, r.PinPool = ModePin, "z" }, "", ErrNoMatch, false},
		{"prefer", []Candidate{cand("a", 0, 1), cand("b", 5, 1)}, func(r *Request) { r.Mode, r.PreferPools = ModePrefer, []string{"b"} }, "b", nil, false},
		{"prefer fallback", []Candidate{cand("a", 0, 1)}, func(r *Request) { r.Mode, r.PreferPools = ModePrefer, []string{"z"} }, "a", nil, true},
		{"prefer no fallback", []Candidate{cand("a", 0, 1)}, func(r *Request) {
			r.Mode, r.PreferPools, r.AllowFallback = ModePrefer, []string{"z"}, false
		}, "", ErrNoPool, false},
		{"avoid", []Candidate{cand("a", 0, 1), cand("b", 5, 1)}, func(r *Request) { r.AvoidPools = []string{"a"} }, "b", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			if tt.mod != nil {
				tt.mod(&r)
			}
			d, err := Choose(tt.cands, r)
			if !errors.Is(err, tt.wantErr) || d.PoolID != tt.want || d.Fallback != tt.fb {
				t.Fatalf("Choose = %+v, %v; want pool %q err %v fallback %v", d, err, tt.want, tt.wantErr, tt.fb)
			}
		})
	}
}
