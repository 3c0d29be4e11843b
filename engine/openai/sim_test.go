package openai

import (
	"net/http/httptest"
	"strings"
	"testing"

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
