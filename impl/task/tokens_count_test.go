package task

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/session"
)

// contextEngine models vLLM, SGLang or TGI serving an open-ended request: the adapter sends no
// max_tokens (engine.Request.OpenEnded), so the engine generates to its own context, here
// ctxTokens tokens, and ends with finish_reason "length".
type contextEngine struct{ ctxTokens int }

func (e contextEngine) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	limit := req.MaxTokens
	if req.OpenEnded {
		limit = e.ctxTokens
	}
	for i := range limit {
		if err := emit(engine.Token{Text: []byte(" x"), Index: i}); err != nil {
			return engine.Result{TokensOut: i}, err
		}
	}
	return engine.Result{TokensOut: limit, TokensIn: 1, Stop: engine.StopLimit}, nil
}

func (contextEngine) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// TestOpenEndedStopsAtMaxTokens: an open-ended task (an OpenAI chat without max_tokens:
// MaxTokens = min(ctx_max, 32768)) is sent to vLLM, SGLang or TGI with no limit; on an engine
// whose context is longer the daemon still ends it at MaxTokens, with stop "limit": budgets
// reserve MaxTokens and charge tokens_out.
func TestOpenEndedStopsAtMaxTokens(t *testing.T) {
	h := newReplicaHarness(t, false, []string{"p/0"}, map[string]engine.Replica{"p/0": contextEngine{ctxTokens: 20}})
	s := spec(admission.Interactive)
	s.OpenEnded = true // MaxTokens 8
	h.submit(s)
	evs := h.events(s.ID)
	tokens := 0
	var end struct {
		TokensOut  int    `json:"tokens_out"`
		StopReason string `json:"stop_reason"`
	}
	for _, ev := range evs {
		switch ev.Event {
		case "token":
			tokens++
		case "end":
			if err := json.Unmarshal([]byte(ev.Data), &end); err != nil {
				t.Fatal(err)
			}
		}
	}
	if tokens != s.MaxTokens || end.TokensOut != s.MaxTokens || end.StopReason != "limit" {
		t.Errorf("open-ended task with max_tokens %d streamed %d token frames, end tokens_out %d (stop %q): the daemon did not stop reading at MaxTokens (events %s)",
			s.MaxTokens, tokens, end.TokensOut, end.StopReason, names(evs))
	}
	// The engine ended because the daemon refused the token past MaxTokens: no engine error.
	if n := testutil.CollectAndCount(h.m.EngineErrors); n != 0 {
		t.Errorf("engine_errors_total has %d series after a task the daemon ended at max_tokens, want none", n)
	}
}

// overrunEngine ignores the max_tokens it is sent, as a misconfigured engine, a simulator or one
// that counts its limit otherwise may: it generates until emit refuses a token or ctx ends (or,
// never cut, gives up after 1000 tokens), and sends why it stopped on stopped.
type overrunEngine struct{ stopped chan error }

func (e overrunEngine) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	for i := 0; ; i++ {
		if i == 1000 {
			e.stopped <- nil
			return engine.Result{TokensOut: i, TokensIn: 1, Stop: engine.StopLimit}, nil
		}
		if err := ctx.Err(); err != nil {
			e.stopped <- err
			return engine.Result{TokensOut: i}, err
		}
		if err := emit(engine.Token{Text: []byte(" x"), Index: i}); err != nil {
			e.stopped <- err
			return engine.Result{TokensOut: i}, err
		}
	}
}

func (overrunEngine) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// TestMaxTokensCutsAnEngineThatOverruns: the daemon enforces a task's max_tokens itself. An
// engine that generates past the limit it was sent has its request ended at the first frame
// past it (emit refuses it; the adapter returns and closes the request), and the task ends as
// it does on an engine that stops there by itself: max_tokens token frames, the same end frame
// (tokens_out max_tokens, stop_reason "limit"), succeeded, max_tokens charged to the replica,
// and no engine error.
func TestMaxTokensCutsAnEngineThatOverruns(t *testing.T) {
	var want string // the end frame of the engine that stops at the limit by itself
	for _, tt := range []struct {
		name    string
		overrun bool
	}{
		{"the engine stops at max_tokens", false},
		{"the engine overruns max_tokens", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var eng engine.Replica = contextEngine{ctxTokens: 20}
			stopped := make(chan error, 1) // why the overrunning engine stopped
			if tt.overrun {
				eng = overrunEngine{stopped: stopped}
			}
			h := newReplicaHarness(t, false, []string{"p/0"}, map[string]engine.Replica{"p/0": eng})
			s := spec(admission.Interactive) // MaxTokens 8
			h.submit(s)
			evs := h.events(s.ID)
			tokens, end := 0, ""
			for _, ev := range evs {
				switch ev.Event {
				case "token":
					tokens++
				case "end":
					end = ev.Data
				}
			}
			if tokens != s.MaxTokens {
				t.Errorf("%d token frames for max_tokens %d", tokens, s.MaxTokens)
			}
			if want == "" {
				want = end
				if !strings.Contains(end, `"tokens_out":8,`) || !strings.Contains(end, `"stop_reason":"limit"`) {
					t.Fatalf("end %s, want tokens_out 8 and stop_reason limit", end)
				}
			} else if end != want {
				t.Errorf("end %s, want %s as when the engine stops at max_tokens itself", end, want)
			}
			snap, err := h.svc.Get(h.ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if snap.Status != Succeeded || snap.TokensOut != s.MaxTokens {
				t.Errorf("task %v with tokens_out %d, want succeeded with %d", snap.Status, snap.TokensOut, s.MaxTokens)
			}
			if got := testutil.ToFloat64(h.m.TokensOut.WithLabelValues("llamacpp", "", "p", "p/0")); got != float64(s.MaxTokens) {
				t.Errorf("tokens_out_total of the replica %v, want %d", got, s.MaxTokens)
			}
			if n := testutil.CollectAndCount(h.m.EngineErrors); n != 0 {
				t.Errorf("engine_errors_total has %d series, want none", n)
			}
			if !tt.overrun {
				return
			}
			select {
			case err := <-stopped:
				if !errors.Is(err, errLimitReached) {
					t.Errorf("the overrunning engine stopped on %v, want the daemon's refusal of the token past max_tokens", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the overrunning engine never stopped")
			}
		})
	}
}

// chunkOverrunEngine overruns max_tokens inside frames of several tokens: 3 frames whose text
// is 20 tokens, as its final count says (a chunk carrying several tokens, which the daemon,
// counting frames, cannot cut).
type chunkOverrunEngine struct{}

func (chunkOverrunEngine) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	for i := range 3 {
		if err := emit(engine.Token{Text: []byte(" a b c d e f"), Index: i}); err != nil {
			return engine.Result{TokensOut: i}, err
		}
	}
	return engine.Result{TokensOut: 20, TokensIn: 1, Stop: engine.StopLimit}, nil
}

func (chunkOverrunEngine) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// TestEngineCountPastMaxTokensIsNotCharged: an engine whose final count is past max_tokens,
// its text in fewer frames than tokens, leaves the task at max_tokens (end, GET, what budgets
// charge): the text was relayed (the frames were within the limit), but the task is charged no
// more than the max_tokens it reserved.
func TestEngineCountPastMaxTokensIsNotCharged(t *testing.T) {
	h := newReplicaHarness(t, false, []string{"p/0"}, map[string]engine.Replica{"p/0": chunkOverrunEngine{}})
	s := spec(admission.Interactive) // MaxTokens 8
	h.submit(s)
	evs := h.events(s.ID)
	if end := evs[len(evs)-1]; end.Event != "end" || !strings.Contains(end.Data, `"tokens_out":8,`) {
		t.Errorf("last frame %s %s, want an end with tokens_out 8 (events %s)", end.Event, end.Data, names(evs))
	}
	snap, err := h.svc.Get(h.ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.TokensOut != s.MaxTokens {
		t.Errorf("tokens_out %d, want max_tokens %d", snap.TokensOut, s.MaxTokens)
	}
	if got := testutil.ToFloat64(h.m.TokensOut.WithLabelValues("llamacpp", "", "p", "p/0")); got != float64(s.MaxTokens) {
		t.Errorf("tokens_out_total of the replica %v, want %d", got, s.MaxTokens)
	}
}

// splitUTF8Engine models llama-server generating " a😀": the emoji is four byte-fallback
// tokens, and a token that ends inside a UTF-8 sequence sends no frame (engine/llamacpp's
// Generate doc): 2 frames for 5 generated tokens. Result.TokensOut is the engine's own count
// (tokens_predicted), as the llamacpp adapter returns it; the openai adapter likewise returns
// usage.completion_tokens for chunks that carry several tokens.
type splitUTF8Engine struct{}

func (splitUTF8Engine) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	for i, text := range []string{" a", "😀"} {
		if err := emit(engine.Token{Text: []byte(text), Index: i}); err != nil {
			return engine.Result{TokensOut: i}, err
		}
	}
	return engine.Result{TokensOut: 5, TokensIn: 1, Stop: engine.StopEOS}, nil
}

func (splitUTF8Engine) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// TestTokensOutIsTheEnginesCount: the task's tokens_out (the end frame, GET's tokens_out,
// the OpenAI facade's usage.completion_tokens, the budget charge) is the engine's count of
// generated tokens (Result.TokensOut) when it is above the frames': a text with multi-byte
// characters split over several tokens, or a chunk carrying several tokens.
func TestTokensOutIsTheEnginesCount(t *testing.T) {
	h := newReplicaHarness(t, false, []string{"p/0"}, map[string]engine.Replica{"p/0": splitUTF8Engine{}})
	s := spec(admission.Interactive)
	h.submit(s)
	evs := h.events(s.ID)
	for _, ev := range evs {
		if ev.Event != "end" {
			continue
		}
		var end struct {
			TokensOut int `json:"tokens_out"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &end); err != nil {
			t.Fatal(err)
		}
		if end.TokensOut != 5 {
			t.Errorf("end tokens_out %d, want 5 (the engine generated 5 tokens; 2 frames carried their text)", end.TokensOut)
		}
		return
	}
	t.Fatalf("no end frame (events %s)", names(evs))
}

// wordEngine continues any prompt with its tokens and reports TokensIn as the engine does:
// the length of the prompt it was sent, in tokens (here, words).
type wordEngine struct{ tokens []string }

func (e wordEngine) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	n := 0
	for i, tok := range e.tokens {
		if i >= req.MaxTokens {
			break
		}
		if err := emit(engine.Token{Text: []byte(tok), Index: i}); err != nil {
			return engine.Result{TokensOut: n}, err
		}
		n++
	}
	return engine.Result{TokensOut: n, TokensIn: len(strings.Fields(req.Prompt)), Stop: engine.StopLimit}, nil
}

func (wordEngine) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// TestMigrationPromptTokensNotDoubleCounted: after a mid-stream migration the second
// replica is sent the prompt plus the text already streamed, and reports that whole length as
// its prompt. The task's TokensIn (GET's tokens_in, the OpenAI facade's usage.prompt_tokens)
// is the client's prompt: the tokens streamed before the migration are tokens_out only.
func TestMigrationPromptTokensNotDoubleCounted(t *testing.T) {
	first := &replicaScript{tokens: []string{" The", " quick", " brown"}, failAfter: 2, err: resetErr()}
	second := wordEngine{tokens: []string{" brown", " fox"}}
	h := newReplicaHarness(t, true, []string{"p/0", "p/1"}, map[string]engine.Replica{"p/0": first, "p/1": second})
	h.pools.busy = map[string]int{"p/1": 1} // p/0 first
	s := spec(admission.Interactive)
	s.Prompt, s.MaxTokens = "Once:", 4 // one prompt token
	h.submit(s)
	evs := h.events(s.ID)
	if got := names(evs); got != "started,token,metrics,token,token,token,end" {
		t.Fatalf("events %s", got)
	}
	snap, err := h.svc.Get(h.ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Migrations != 1 {
		t.Fatalf("migrations %d, want 1", snap.Migrations)
	}
	if snap.TokensIn != 1 {
		t.Errorf("tokens_in %d after a migration, want 1 (the prompt); the 2 tokens streamed before it are tokens_out already (tokens_out %d)",
			snap.TokensIn, snap.TokensOut)
	}
	// The session's KV estimate is the context the last replica holds: the prompt and the
	// whole text, (1 + 4) tokens of 10 bytes, not the resent text twice.
	if info, ok := h.svc.opts.Sessions.(*session.Store).Get(s.SessionID); !ok || info.KVBytes != 50 {
		t.Errorf("session after the task: %+v (found %v), want KV bytes 50", info, ok)
	}
}

// limitEngine is contextEngine that records the max_tokens it was sent.
type limitEngine struct {
	contextEngine
	sent chan int
}

func (e limitEngine) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	e.sent <- req.MaxTokens
	return e.contextEngine.Generate(ctx, req, emit)
}

// TestBudgetGrantIsTheEnginesLimit: a task whose budget grant (StopAt) is below its max_tokens
// sends the engine the grant as its limit. The engine stops there itself and reports its
// usage, so the task ends with stop "budget", tokens_out the grant and tokens_in the engine's
// prompt count. (Cut by the daemon at the grant instead, the engine's last usage never came:
// tokens_in was 0.) An open-ended task keeps no limit for its engine and is cut as before.
func TestBudgetGrantIsTheEnginesLimit(t *testing.T) {
	for _, open := range []bool{false, true} {
		eng := limitEngine{contextEngine{ctxTokens: 20}, make(chan int, 1)}
		h := newReplicaHarness(t, false, []string{"p/0"}, map[string]engine.Replica{"p/0": eng})
		s := spec(admission.Interactive)
		s.MaxTokens, s.StopAt, s.OpenEnded = 8, 3, open
		h.submit(s)
		evs := h.events(s.ID)
		var end struct {
			TokensOut  int    `json:"tokens_out"`
			StopReason string `json:"stop_reason"`
		}
		if err := json.Unmarshal([]byte(evs[len(evs)-1].Data), &end); err != nil {
			t.Fatal(err)
		}
		if end.TokensOut != 3 || end.StopReason != "budget" {
			t.Errorf("open %v: end %+v (events %s), want 3 tokens and stop budget", open, end, names(evs))
		}
		if got := <-eng.sent; got != map[bool]int{false: 3, true: 8}[open] {
			t.Errorf("open %v: the engine was sent max_tokens %d", open, got)
		}
		snap, err := h.svc.Get(h.ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !open && snap.TokensIn != 1 { // (open-ended: the adapter's part, engine/openai's continuous usage)
			t.Errorf("tokens_in %d, want the engine's 1", snap.TokensIn)
		}
	}
}

// TestBudgetStreamedBeforeAFailureIsNotMigrated: a replica that fails after streaming the
// whole grant leaves nothing to ask another for (it would be sent max_tokens 0): the task ends
// with stop "budget", as if the engine had ended there.
func TestBudgetStreamedBeforeAFailureIsNotMigrated(t *testing.T) {
	first := &replicaScript{tokens: []string{" a", " b", " c", " d"}, failAfter: 3, err: resetErr()}
	second := &replicaScript{tokens: []string{" x"}, failAfter: -1}
	h := newReplicaHarness(t, true, []string{"p/0", "p/1"}, map[string]engine.Replica{"p/0": first, "p/1": second})
	h.pools.busy = map[string]int{"p/1": 1} // p/0 first
	s := spec(admission.Interactive)
	s.MaxTokens, s.StopAt = 8, 3
	h.submit(s)
	evs := h.events(s.ID)
	if got := names(evs); got != "started,token,metrics,token,token,end" || !strings.Contains(evs[len(evs)-1].Data, `"stop_reason":"budget"`) {
		t.Errorf("events %s, end %s; want the grant's 3 tokens and stop budget", got, evs[len(evs)-1].Data)
	}
	second.mu.Lock()
	defer second.mu.Unlock()
	if len(second.reqs) != 0 {
		t.Errorf("the task was moved to another replica with %+v", second.reqs)
	}
}
