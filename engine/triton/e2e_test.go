package triton

// End-to-end tests against a real tritonserver 2.51.0 (nvidia-pytriton 0.7.0, started by
// tools/tritontest from .venv-triton; skipped when the venv is absent unless
// ORCHD_TRITON=require).

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/tools/tritontest"
)

func words(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = tritontest.Words[i%len(tritontest.Words)]
	}
	return out
}

func wordEvents(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "word_" + strconv.Itoa(i)
	}
	return out
}

func TestE2ETriton(t *testing.T) {
	s := tritontest.Shared(t)
	replica := func(model string) *Replica {
		return New(Options{BaseURL: s.HTTP, Model: model, MetricsURL: s.Metrics, IdleTimeout: 20 * time.Second})
	}

	t.Run("exact text, one emit per response", func(t *testing.T) {
		tests := []struct {
			name      string
			model     string
			maxTokens int
			want      []string
			stop      engine.StopReason
		}{
			{"max_tokens cuts the text", tritontest.ModelWords, 4, words(4), engine.StopLimit},
			{"max_tokens past the sentence repeats it", tritontest.ModelWords, 12, words(12), engine.StopLimit},
			{"not decoupled: one response", tritontest.ModelWhole, 3, []string{" The quick brown"}, engine.StopEOS},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var got []string
				res, err := replica(tt.model).Generate(t.Context(), engine.Request{Prompt: "Hello", MaxTokens: tt.maxTokens},
					func(tok engine.Token) error {
						if tok.Index != len(got) {
							t.Errorf("token %q has index %d, want %d", tok.Text, tok.Index, len(got))
						}
						got = append(got, string(tok.Text))
						return nil
					})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, tt.want) || res.TokensOut != len(tt.want) || res.Stop != tt.stop {
					t.Errorf("tokens %q, result %+v; want %q, stop %s", got, res, tt.want, tt.stop)
				}
			})
		}
	})

	t.Run("without the max_tokens input the model's own end is eos", func(t *testing.T) {
		r := New(Options{BaseURL: s.HTTP, Model: tritontest.ModelWords, Tensors: Tensors{Stream: "stream"}})
		var got []string
		res, err := r.Generate(t.Context(), engine.Request{Prompt: "x", MaxTokens: 50}, func(tok engine.Token) error {
			got = append(got, string(tok.Text))
			return nil
		})
		if err != nil || strings.Join(got, "") != " The quick brown fox jumps over the lazy dog." || res.Stop != engine.StopEOS {
			t.Errorf("text %q, result %+v, err %v", strings.Join(got, ""), res, err)
		}
	})

	t.Run("errors are classified by whose fault they are", func(t *testing.T) {
		tests := []struct {
			name  string
			r     *Replica
			kind  engine.Kind
			in    string // in the error text
			token int    // tokens emitted before the error
		}{
			{"unknown model: 404, the replica does not serve it", replica("nope"), engine.KindPoolUnavailable, "unknown model", 0},
			{"missing input: 400, the request's fault",
				New(Options{BaseURL: s.HTTP, Model: tritontest.ModelWords, Tensors: Tensors{Input: "prompt"}}),
				engine.KindInvalidRequest, "expected", 0},
			{"mid-stream error frame: the model failed", replica(tritontest.ModelFailing), engine.KindEngineFailure, "boom after 2 words", 2},
			{"unreachable server", New(Options{BaseURL: "http://127.0.0.1:1", Model: "words"}), engine.KindPoolUnavailable, "refused", 0},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				n := 0
				_, err := tt.r.Generate(t.Context(), engine.Request{Prompt: "x", MaxTokens: 5}, func(engine.Token) error { n++; return nil })
				if k := engine.KindOf(err); k != tt.kind || !strings.Contains(err.Error(), tt.in) || n != tt.token {
					t.Errorf("err = %v (kind %v) after %d tokens; want kind %v containing %q after %d", err, k, n, tt.kind, tt.in, tt.token)
				}
			})
		}
	})

	t.Run("cancel returns at once and the server serves the next request", func(t *testing.T) {
		// Triton 2.51's HTTP frontend has no request cancellation: closing the connection is
		// all a client can do, and the model runs on (logged below). What the adapter owes
		// is to stop reading, return ctx's error at once and leave the server serving.
		// The shared server's event log holds the runs of earlier tests in this process (go
		// test -count=N): this run's events are the lines after mark.
		mark := len(s.EventLines())
		ctx, cancel := context.WithCancel(t.Context())
		n := 0
		start := time.Now()
		res, err := replica(tritontest.ModelSlow).Generate(ctx, engine.Request{Prompt: "x", MaxTokens: 30}, func(engine.Token) error {
			n++
			if n == 2 {
				cancel()
			}
			return nil
		})
		elapsed := time.Since(start)
		if !errors.Is(err, context.Canceled) || n != 2 || res.TokensOut != 2 {
			t.Fatalf("err = %v after %d tokens (%+v), want context.Canceled after 2", err, n, res)
		}
		// 30 words take 6 s; a Generate that read on would have seen them all.
		if elapsed > 6*time.Second {
			t.Errorf("Generate returned after %v", elapsed)
		}
		var got []string
		if _, err := replica(tritontest.ModelWords).Generate(t.Context(), engine.Request{Prompt: "x", MaxTokens: 3},
			func(tok engine.Token) error { got = append(got, string(tok.Text)); return nil }); err != nil || !slices.Equal(got, words(3)) {
			t.Errorf("next request: %q, %v", got, err)
		}
		// What the server did: the model ran on to its 30th word (Triton 2.51 over HTTP does
		// not abort on disconnect; the README says so). Should a Triton abort it, this fails
		// and the README must change.
		var ev []string
		for range 150 {
			if ev = s.EventLines()[mark:]; slices.Contains(ev, "end") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !slices.Equal(ev, append(append([]string{"start"}, wordEvents(30)...), "end")) {
			t.Errorf("slow model's events after the cancel: %v", ev)
		}
	})

	t.Run("health, identity and load", func(t *testing.T) {
		r := replica(tritontest.ModelWords)
		if h, err := r.Health(t.Context()); err != nil || !h.Live || !h.Ready {
			t.Errorf("health = %+v, %v", h, err)
		}
		if h, err := replica("nope").Health(t.Context()); err != nil || !h.Live || h.Ready {
			t.Errorf("health of a model the server lacks = %+v, %v; want live, not ready", h, err)
		}
		id, err := r.Identify(t.Context())
		if err != nil || id.ModelID != "words" || !strings.HasPrefix(id.Version, "triton 2.") || !strings.HasSuffix(id.Version, "model version 1") {
			t.Errorf("identity = %+v, %v", id, err)
		}
		l, err := r.Load(t.Context())
		if err != nil || l.Waiting != 0 || l.Running != -1 || l.KVUsage != -1 {
			t.Errorf("idle load = %+v, %v; want waiting 0, the rest unknown", l, err)
		}
	})
}
