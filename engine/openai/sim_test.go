package openai

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

// TestAgainstSimulator: the adapter streams from tools/enginesim's OpenAI personality (the one
// the official openai client is checked against in tools/enginesim/sim), completion and chat,
// one emit per simulated token, with the simulator's usage and finish reason.
func TestAgainstSimulator(t *testing.T) {
	ts := httptest.NewServer(sim.New(sim.Options{Model: "sim-model"}))
	defer ts.Close()
	r := newReplica(t, ts.URL, Options{})
	for _, req := range []engine.Request{
		{Prompt: "Hello there", MaxTokens: 9},
		{Workload: engine.WorkloadChat, Messages: []engine.Message{{Role: "user", Content: "Hello"}}, MaxTokens: 9},
	} {
		var c collected
		res, err := r.Generate(t.Context(), req, c.emit)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.texts) != 9 || res.TokensOut != 9 || res.Stop != engine.StopLimit || res.TokensIn <= 0 {
			t.Errorf("%q: %q, %+v", req.Workload, c.texts, res)
		}
		for _, tok := range c.texts {
			if !strings.HasPrefix(tok, " t") || len(tok) != 21 {
				t.Errorf("token %q is not a simulator stamp", tok)
			}
		}
	}
	if id, err := r.Identify(t.Context()); err != nil || id.ModelID != "sim-model" {
		t.Errorf("identity %+v, %v", id, err)
	}
}

// TestOpenEndedCutKeepsPromptCount: the daemon stops reading an open-ended request at its
// MaxTokens (emit refuses the next token), before the last chunk's usage; the prompt's count
// still comes back, from the usage the engine sent with every chunk (continuous_usage_stats).
func TestOpenEndedCutKeepsPromptCount(t *testing.T) {
	ts := httptest.NewServer(sim.New(sim.Options{Model: "sim-model"}))
	defer ts.Close()
	r := newReplica(t, ts.URL, Options{})
	cut := errors.New("max_tokens streamed")
	for _, req := range []engine.Request{
		{Prompt: "one two three four five six seven eight", MaxTokens: 3, OpenEnded: true},
		{Workload: engine.WorkloadChat, Messages: []engine.Message{{Role: "user", Content: "Hello"}}, MaxTokens: 3, OpenEnded: true},
	} {
		n := 0
		res, err := r.Generate(t.Context(), req, func(engine.Token) error {
			if n == req.MaxTokens {
				return cut
			}
			n++
			return nil
		})
		if !errors.Is(err, cut) {
			t.Fatalf("%q: %v, want the emit's refusal", req.Workload, err)
		}
		if n != 3 || res.TokensIn <= 0 || res.TokensOut != 3 {
			t.Errorf("%q: %d emitted, %+v; want 3 and the prompt's count", req.Workload, n, res)
		}
	}
}

// TestSimulatorProbesAndFaults: a pool pointed at the simulator's OpenAI personality becomes
// ready (/health), reads vLLM's and SGLang's load names from its /metrics, and classifies the
// faults the simulator injects in OpenAI's words.
func TestSimulatorProbesAndFaults(t *testing.T) {
	s := sim.New(sim.Options{Model: "sim-model", TotalSlots: 4})
	ts := httptest.NewServer(s)
	defer ts.Close()
	for _, f := range []Flavor{FlavorVLLM, FlavorSGLang, FlavorLlamaCpp} {
		r := newReplica(t, ts.URL, Options{Flavor: f})
		if h, err := r.Health(t.Context()); err != nil || !h.Ready {
			t.Errorf("%s: health %+v, %v", f, h, err)
		}
		if l, err := r.Load(t.Context()); err != nil || l != (engine.Load{}) {
			t.Errorf("%s: idle load %+v, %v", f, l, err)
		}
	}
	r := newReplica(t, ts.URL, Options{IdleTimeout: 200 * time.Millisecond})
	for _, tt := range []struct {
		fault sim.Fault
		kind  engine.Kind
	}{
		{sim.Fault{Mode: sim.FaultContextTooLong}, engine.KindInvalidRequest},
		{sim.Fault{Mode: sim.FaultOverload}, engine.KindOverload},
		{sim.Fault{Mode: sim.FaultUnavailable}, engine.KindPoolUnavailable},
		{sim.Fault{Mode: sim.FaultSlowFirstToken, Delay: time.Minute}, engine.KindDecodeTimeout},
		{sim.Fault{Mode: sim.FaultCut, After: 1}, engine.KindWorkerReset},
		{sim.Fault{Mode: sim.FaultMalformed, After: 1}, engine.KindProtocol},
		{sim.Fault{Mode: sim.FaultCrash, After: 1}, engine.KindWorkerReset},
	} {
		s.SetFault(tt.fault)
		var c collected
		if _, err := r.Generate(t.Context(), engine.Request{Prompt: "a b", MaxTokens: 4}, c.emit); engine.KindOf(err) != tt.kind {
			t.Errorf("%s: kind %v (%v), want %v", tt.fault.Mode, engine.KindOf(err), err, tt.kind)
		}
	}
}
