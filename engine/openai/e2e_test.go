package openai

// End-to-end tests against a real llama-server's OpenAI-compatible /v1 (found by
// llamatest.ServerPath; skipped when there is none), running the tiny constructed model, which
// continues " The quick brown fox jumps over the lazy dog." whatever the prompt.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/llamacpp/llamatest"
	"github.com/orchestratord/orchestratord/internal/gguf"
)

const e2eKey = "e2e-openai-key-0123456789"

func cycle(n int) []string {
	words := gguf.Tokens()
	out := make([]string, n)
	for i := range out {
		out[i] = words[i%len(words)]
	}
	return out
}

// startServer runs llama-server with one slot (so that a slot left busy would block the next
// request), metrics and an API key file.
func startServer(t *testing.T) string {
	t.Helper()
	if _, ok := llamatest.ServerPath(); !ok {
		t.Skip(llamatest.SkipMessage)
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(e2eKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return llamatest.Start(t, llamatest.TinyModel(t, gguf.DefaultOptions()), "-np", "1", "--metrics", "--api-key-file", keyFile)
}

func TestE2EOpenAI(t *testing.T) {
	base := startServer(t)
	r := newReplica(t, base, Options{APIKey: e2eKey, Flavor: FlavorLlamaCpp})
	const want = " The quick brown fox jumps over the lazy dog. The quick"

	t.Run("exact text", func(t *testing.T) {
		seed := int64(7)
		tests := []struct {
			name string
			req  engine.Request
			in   int
		}{
			// "Hello" is <s> ▁H e l l o: 6 prompt tokens.
			{"completion", engine.Request{Prompt: "Hello", MaxTokens: 12, Deterministic: true}, 6},
			{"completion with a seed", engine.Request{Prompt: "Hello", MaxTokens: 12, Seed: &seed}, 6},
			{"chat", engine.Request{Workload: engine.WorkloadChat, MaxTokens: 12, Deterministic: true,
				Messages: []engine.Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello"}, {Role: "user", Content: "Go on"}}}, -1},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var c collected
				res, err := r.Generate(t.Context(), tt.req, c.emit)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Join(c.texts, "") != want || strings.Join(c.texts, "|") != strings.Join(cycle(12), "|") {
					t.Errorf("tokens = %q, want one word each of %q", c.texts, want)
				}
				if res.TokensOut != 12 || res.Stop != engine.StopLimit || (tt.in > 0 && res.TokensIn != tt.in) || res.TokensIn <= 0 {
					t.Errorf("result = %+v", res)
				}
			})
		}
	})

	t.Run("context too long is the request's fault", func(t *testing.T) {
		_, err := r.Generate(t.Context(), engine.Request{Prompt: strings.Repeat("hello ", 1000), MaxTokens: 3}, func(engine.Token) error { return nil })
		if k := engine.KindOf(err); k != engine.KindInvalidRequest || k.Fault() != engine.FaultRequest ||
			!strings.Contains(err.Error(), "exceeds the available context size") {
			t.Errorf("err = %v (kind %v)", err, k)
		}
		if h, err := r.Health(t.Context()); err != nil || !h.Ready {
			t.Errorf("health after a request fault = %+v, %v", h, err)
		}
	})

	t.Run("without the key the server refuses", func(t *testing.T) {
		nokey := newReplica(t, base, Options{Model: "tiny"})
		_, err := nokey.Generate(t.Context(), engine.Request{Prompt: "x", MaxTokens: 1}, func(engine.Token) error { return nil })
		if k := engine.KindOf(err); k != engine.KindPoolUnavailable || !strings.Contains(err.Error(), "401") {
			t.Errorf("err = %v (kind %v), want a 401", err, k)
		}
	})

	t.Run("identify and load", func(t *testing.T) {
		id, err := r.Identify(t.Context())
		if err != nil || !strings.HasSuffix(id.ModelID, "tiny.gguf") {
			t.Errorf("identity = %+v, %v", id, err)
		}
		l, err := r.Load(t.Context())
		if err != nil || l.Running != 0 || l.Waiting != 0 {
			t.Errorf("idle load = %+v, %v", l, err)
		}
	})
}

// TestE2ECancelFreesSlot cancels a long generation on a one-slot server after three tokens;
// the next generation runs at once, and the server's own counter shows the first stopped early.
func TestE2ECancelFreesSlot(t *testing.T) {
	base := startServer(t)
	r := newReplica(t, base, Options{APIKey: e2eKey})
	for _, w := range []string{engine.WorkloadCompletion, engine.WorkloadChat} {
		t.Run(w, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			req := engine.Request{Workload: w, Prompt: "Hello", Messages: []engine.Message{{Role: "user", Content: "Hello"}},
				MaxTokens: 4000, Deterministic: true}
			got := 0
			_, err := r.Generate(ctx, req, func(tok engine.Token) error {
				got++
				if tok.Index == 2 {
					cancel()
				}
				return nil
			})
			if !errors.Is(err, context.Canceled) || got != 3 {
				t.Fatalf("err = %v after %d tokens, want context.Canceled after 3", err, got)
			}
			// Bounded only so that a stuck slot fails the test instead of hanging it.
			ctx2, cancel2 := context.WithTimeout(t.Context(), time.Minute)
			defer cancel2()
			var c collected
			req.MaxTokens = 5
			if _, err := r.Generate(ctx2, req, c.emit); err != nil || strings.Join(c.texts, "") != strings.Join(cycle(5), "") {
				t.Fatalf("next generation: %q, %v", c.texts, err)
			}
		})
	}
	m, err := r.get(t.Context(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	sums, err := engine.SumMetrics(strings.NewReader(string(m)), "llamacpp:tokens_predicted_total")
	if err != nil || sums["llamacpp:tokens_predicted_total"] >= 4000 {
		t.Errorf("server predicted %v tokens in all (%v): a cancelled request ran on", sums, err)
	}
}
