package llamacpp

// End-to-end tests against a real llama-server (found by llamatest.ServerPath; skipped when
// there is none) running the tiny constructed model, which continues
// " The quick brown fox jumps over the lazy dog." whatever the prompt.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/llamacpp/llamatest"
	"github.com/orchestratord/orchestratord/internal/gguf"
)

func requireServer(t *testing.T) {
	t.Helper()
	if _, ok := llamatest.ServerPath(); !ok {
		t.Skip(llamatest.SkipMessage)
	}
}

// cycle returns the first n tokens of the model's endless sentence cycle.
func cycle(n int) []string {
	words := gguf.Tokens()
	out := make([]string, n)
	for i := range out {
		out[i] = words[i%len(words)]
	}
	return out
}

func TestE2EGenerate(t *testing.T) {
	requireServer(t)
	base := llamatest.Start(t, llamatest.TinyModel(t, gguf.DefaultOptions()), "-np", "2")
	r := newReplica(t, base, 0)
	seed := int64(7)

	t.Run("exact text", func(t *testing.T) {
		tests := []struct {
			name string
			req  engine.Request
		}{
			{"deterministic", engine.Request{Prompt: "Hello", MaxTokens: 12, Deterministic: true}},
			{"sampled with a seed", engine.Request{Prompt: "Hello", MaxTokens: 12, Seed: &seed}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var c collected
				res, err := r.Generate(t.Context(), tt.req, c.emit)
				if err != nil {
					t.Fatal(err)
				}
				const want = " The quick brown fox jumps over the lazy dog. The quick"
				if got := strings.Join(c.texts, ""); got != want {
					t.Errorf("text = %q, want %q", got, want)
				}
				if strings.Join(c.texts, "|") != strings.Join(cycle(12), "|") {
					t.Errorf("tokens = %q, want one word each", c.texts)
				}
				// "Hello" is <s> ▁H e l l o: 6 prompt tokens.
				if res.TokensOut != 12 || res.TokensIn != 6 || res.Stop != engine.StopLimit {
					t.Errorf("result = %+v", res)
				}
			})
		}
	})

	t.Run("prompt cache", func(t *testing.T) {
		req := engine.Request{Prompt: "Cache this prompt", MaxTokens: 3, Deterministic: true}
		var results []engine.Result
		for range 2 {
			res, err := r.Generate(t.Context(), req, func(engine.Token) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			results = append(results, res)
		}
		first, second := results[0], results[1]
		if first.TokensIn == 0 || second.TokensIn != first.TokensIn {
			t.Errorf("TokensIn %d then %d", first.TokensIn, second.TokensIn)
		}
		// The second request reuses all but the last prompt token from the slot's cache
		// (llama-server always evaluates at least one).
		if second.TokensCached != second.TokensIn-1 {
			t.Errorf("second TokensCached = %d, want %d", second.TokensCached, second.TokensIn-1)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Go(func() {
				var c collected
				_, err := r.Generate(t.Context(), engine.Request{Prompt: "Parallel " + strconv.Itoa(i), MaxTokens: 30, Deterministic: true}, c.emit)
				if err == nil && strings.Join(c.texts, "") != strings.Join(cycle(30), "") {
					err = errors.New("wrong text: " + strings.Join(c.texts, ""))
				}
				errs[i] = err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("prompt longer than the slot's context", func(t *testing.T) {
		prompt := strings.Repeat("hello ", 1000) // ~5,000 tokens; a slot has 4,096
		_, err := r.Generate(t.Context(), engine.Request{Prompt: prompt, MaxTokens: 3}, func(engine.Token) error { return nil })
		if k := engine.KindOf(err); k != engine.KindInvalidRequest || !strings.Contains(err.Error(), "exceeds the available context size") {
			t.Errorf("err = %v (kind %v), want INVALID_PARAMS with the engine's message", err, k)
		}
	})

	t.Run("health", func(t *testing.T) {
		h, err := r.Health(t.Context())
		if err != nil || h != (engine.Health{Live: true, Ready: true}) {
			t.Errorf("health = %+v, %v", h, err)
		}
	})

	t.Run("props", func(t *testing.T) {
		p, err := r.Props(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// Without -c, every slot gets the model's whole context (with -c N, N/slots).
		if p.TotalSlots != 2 || p.NCtx != gguf.ContextLength || p.BuildInfo == "" || !strings.HasSuffix(p.ModelPath, "tiny.gguf") {
			t.Errorf("props = %+v", p)
		}
	})
}

func TestE2EEndOfSequence(t *testing.T) {
	requireServer(t)
	opts := gguf.DefaultOptions()
	opts.EOS = true
	base := llamatest.Start(t, llamatest.TinyModel(t, opts), "-np", "1")
	r := newReplica(t, base, 0)
	var c collected
	res, err := r.Generate(t.Context(), engine.Request{Prompt: "Hello", MaxTokens: 100, Deterministic: true}, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	// The end-of-sequence token is sampled and streamed as a token with empty text.
	want := append(cycle(10), "")
	if strings.Join(c.texts, "|") != strings.Join(want, "|") {
		t.Errorf("tokens = %q, want %q", c.texts, want)
	}
	if res.Stop != engine.StopEOS || res.TokensOut != 11 {
		t.Errorf("result = %+v, want eos after 11 tokens", res)
	}
}

// TestE2ECancelFreesSlot cancels a long generation on a one-slot server after a few tokens:
// Generate must return ctx's error, and the slot must be free for the next generation. The
// server's own counter proves the first task stopped early instead of running to its end.
func TestE2ECancelFreesSlot(t *testing.T) {
	requireServer(t)
	base := llamatest.Start(t, llamatest.TinyModel(t, gguf.DefaultOptions()), "-np", "1", "--metrics")
	r := newReplica(t, base, 0)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var got int
	_, err := r.Generate(ctx, engine.Request{Prompt: "Hello", MaxTokens: 4000, Deterministic: true}, func(tok engine.Token) error {
		got++
		if tok.Index == 2 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got != 3 {
		t.Errorf("emitted %d tokens after cancel at the third", got)
	}

	// Bounded only so that a stuck slot fails the test instead of hanging it.
	ctx2, cancel2 := context.WithTimeout(t.Context(), time.Minute)
	defer cancel2()
	var c collected
	res, err := r.Generate(ctx2, engine.Request{Prompt: "Again", MaxTokens: 12, Deterministic: true}, c.emit)
	if err != nil {
		t.Fatalf("second generation: %v", err)
	}
	if strings.Join(c.texts, "") != strings.Join(cycle(12), "") || res.TokensOut != 12 {
		t.Errorf("second generation: %q, %+v", c.texts, res)
	}

	predicted := metric(t, base, "llamacpp:tokens_predicted_total")
	if predicted >= 4000 {
		t.Errorf("server predicted %v tokens in all: the cancelled task ran on", predicted)
	}
	t.Logf("tokens predicted by the server in all: %v (12 by the second generation)", predicted)

	// The load probe reads the idle server's /metrics (this build exports no KV cache ratio).
	if l, err := r.Load(t.Context()); err != nil || l != (engine.Load{Running: 0, Waiting: 0, KVUsage: -1}) {
		t.Errorf("load = %+v, %v", l, err)
	}
	if id, err := r.Identify(t.Context()); err != nil || !strings.HasSuffix(id.ModelID, "tiny.gguf") || id.Version == "" {
		t.Errorf("identity = %+v, %v", id, err)
	}
}

// metric reads one sample from llama-server's Prometheus /metrics.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	defer http.DefaultClient.CloseIdleConnections()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics (%v)", name, sc.Err())
	return 0
}

// bodyRecorder records the bodies of the requests it forwards.
type bodyRecorder struct {
	mu     sync.Mutex
	bodies []string
	next   http.RoundTripper
}

func (b *bodyRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		data, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(data))
		b.mu.Lock()
		b.bodies = append(b.bodies, string(data))
		b.mu.Unlock()
	}
	return b.next.RoundTrip(req)
}

func (b *bodyRecorder) last() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bodies[len(b.bodies)-1]
}

// A session's second turn, on a server with two slots, asks for the slot that served its
// first turn (id_slot with cache_prompt) and reuses that slot's cache for the whole first
// prompt, although another session used the server in between.
func TestE2ESessionSlot(t *testing.T) {
	requireServer(t)
	base := llamatest.Start(t, llamatest.TinyModel(t, gguf.DefaultOptions()), "-np", "2")
	rec := &bodyRecorder{next: http.DefaultTransport}
	r := New(Options{BaseURL: base, Client: &http.Client{Transport: rec}})
	gen := func(session, prompt string) (engine.Result, string) {
		t.Helper()
		var c collected
		res, err := r.Generate(t.Context(), engine.Request{Prompt: prompt, MaxTokens: 6, Deterministic: true, SessionID: session}, c.emit)
		if err != nil {
			t.Fatal(err)
		}
		return res, strings.Join(c.texts, "")
	}
	slotOf := func(session string) int {
		r.slots.mu.Lock()
		defer r.slots.mu.Unlock()
		s, ok := r.slots.slotOf[session]
		if !ok {
			t.Fatalf("no slot remembered for %s", session)
		}
		return s
	}

	promptA := "Session A remembers a long first prompt about foxes and dogs."
	first, textA := gen("a", promptA)
	if strings.Contains(rec.last(), "id_slot") {
		t.Fatalf("a first turn asked for a slot: %s", rec.last())
	}
	slotA := slotOf("a")
	if _, _ = gen("b", "Zebra"); slotOf("b") == slotA {
		t.Logf("session b also ran on slot %d", slotA) // the server's choice; a's turn still asks for its slot
	}

	second, _ := gen("a", promptA+textA+" And then?")
	if want := `"id_slot":` + strconv.Itoa(slotA); !strings.Contains(rec.last(), want) || !strings.Contains(rec.last(), `"cache_prompt":true`) {
		t.Fatalf("second turn's request %s, want %s with cache_prompt", rec.last(), want)
	}
	if got := slotOf("a"); got != slotA {
		t.Errorf("second turn served by slot %d, want %d", got, slotA)
	}
	if second.TokensCached < first.TokensIn-1 {
		t.Errorf("second turn reused %d prompt tokens from the cache, want at least the first prompt's %d", second.TokensCached, first.TokensIn-1)
	}
}
