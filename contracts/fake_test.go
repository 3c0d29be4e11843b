package contracts

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/orchestratord/orchestratord/engine"
)

// fakeEngine is a deterministic engine.Replica. Everything about its behaviour is set through its
// Go API, never through prompt contents:
//
//   - it emits the configured tokens in order (at most max_tokens of them);
//   - when gated, each token waits for one permit (Allow) or for the request's ctx, so a test
//     decides exactly how many tokens exist at any moment, without timing assumptions;
//   - FailAt(n) makes a generation fail with a worker reset after n tokens;
//   - SetEnding(stop, err) makes generations end with the engine's own stop reason, or err;
//   - SetHealthy flips what Health reports;
//   - Active counts generations in flight, Canceled those that ended because their ctx did.
type fakeEngine struct {
	permits chan struct{}

	mu     sync.Mutex
	tokens []string
	gated  bool
	failAt int // -1: never
	// failNext: the next generation fails after this many tokens (-1: none), once.
	failNext int
	// continues: the base prompt whose continuations the fake continues ("": none).
	continues string
	prompts   []string
	reqs      []engine.Request
	// endStop and endErr, when set, are how every generation ends after its tokens.
	endStop engine.StopReason
	endErr  error

	healthy  atomic.Bool
	active   atomic.Int64
	canceled atomic.Int64
	started  atomic.Int64
}

var _ engine.Replica = (*fakeEngine)(nil)

// defaultTokens is what a fake emits unless told otherwise.
var defaultTokens = []string{"Once", " upon", " a", " time", ",", " a", " fake", " engine", " spoke", "."}

func newFakeEngine() *fakeEngine {
	f := &fakeEngine{permits: make(chan struct{}, 1<<16), tokens: defaultTokens, failAt: -1, failNext: -1}
	f.healthy.Store(true)
	return f
}

// SetTokens sets the text pieces every later generation emits.
func (f *fakeEngine) SetTokens(toks ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append([]string(nil), toks...)
}

// Text is the concatenation of the first n configured tokens (all when n is larger).
func (f *fakeEngine) Text(n int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.tokens[:min(n, len(f.tokens))], "")
}

// SetGated makes every token wait for a permit.
func (f *fakeEngine) SetGated(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gated = on
}

// Allow lets n more tokens through the gate (shared by all generations).
func (f *fakeEngine) Allow(n int) {
	for range n {
		f.permits <- struct{}{}
	}
}

// FailAt makes later generations fail with engine.KindWorkerReset after n tokens (-1: never).
func (f *fakeEngine) FailAt(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failAt = n
}

// FailNext makes the next generation that starts, and only it, fail with
// engine.KindWorkerReset after n tokens (when it would emit more than n).
func (f *fakeEngine) FailNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = n
}

// SetEnding makes every later generation end, after its tokens, with stop as the engine's
// stop reason ("": the fake's own, eos or limit), or fail with err (nil: none).
func (f *fakeEngine) SetEnding(stop engine.StopReason, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endStop, f.endErr = stop, err
}

// SetContinues makes the fake continue its text, as an engine continues a prompt, when a
// prompt is base followed by the fake's first k tokens: it then emits its tokens from the k-th
// on (a task migrated to another replica after k tokens is continued so).
func (f *fakeEngine) SetContinues(base string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.continues = base
}

// continued returns how many of toks prompt continues base with (0 when it does not).
func continued(base, prompt string, toks []string) int {
	if base == "" {
		return 0
	}
	rest, ok := strings.CutPrefix(prompt, base)
	if !ok {
		return 0
	}
	k := 0
	for k < len(toks) && rest != "" {
		if rest, ok = strings.CutPrefix(rest, toks[k]); !ok {
			return 0
		}
		k++
	}
	if rest != "" {
		return 0
	}
	return k
}

// SetHealthy sets what Health reports as Ready.
func (f *fakeEngine) SetHealthy(ok bool) { f.healthy.Store(ok) }

// Active is the number of generations in flight.
func (f *fakeEngine) Active() int { return int(f.active.Load()) }

// Canceled is the number of generations that ended because their ctx ended.
func (f *fakeEngine) Canceled() int { return int(f.canceled.Load()) }

// Started is the number of generations begun.
func (f *fakeEngine) Started() int { return int(f.started.Load()) }

// Requests returns the requests received, in order.
func (f *fakeEngine) Requests() []engine.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]engine.Request(nil), f.reqs...)
}

// Prompts returns the prompts received, in order.
func (f *fakeEngine) Prompts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.prompts...)
}

var errFakeReset = errors.New("fake: connection reset by peer")

func (f *fakeEngine) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	f.active.Add(1)
	defer f.active.Add(-1)
	f.started.Add(1)
	f.mu.Lock()
	toks, gated, failAt, endStop, endErr := f.tokens, f.gated, f.failAt, f.endStop, f.endErr
	if f.failNext >= 0 {
		failAt, f.failNext = f.failNext, -1
	}
	toks = toks[continued(f.continues, req.Prompt, toks):]
	f.prompts = append(f.prompts, req.Prompt)
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()

	res := engine.Result{TokensIn: len(strings.Fields(req.Prompt))}
	n := min(len(toks), req.MaxTokens)
	for i := range n {
		if i == failAt {
			return res, &engine.Error{Kind: engine.KindWorkerReset, Err: errFakeReset}
		}
		if gated {
			select {
			case <-f.permits:
			case <-ctx.Done():
				f.canceled.Add(1)
				return res, ctx.Err()
			}
		} else if ctx.Err() != nil {
			f.canceled.Add(1)
			return res, ctx.Err()
		}
		if err := emit(engine.Token{Text: []byte(toks[i]), Index: i}); err != nil {
			if ctx.Err() != nil {
				f.canceled.Add(1)
			}
			return res, err
		}
		res.TokensOut++
	}
	if failAt >= 0 && failAt == n {
		return res, &engine.Error{Kind: engine.KindWorkerReset, Err: errFakeReset}
	}
	if endErr != nil {
		return res, endErr
	}
	res.Stop = engine.StopEOS
	if n == req.MaxTokens {
		res.Stop = engine.StopLimit
	}
	if endStop != "" {
		res.Stop = endStop
	}
	return res, nil
}

func (f *fakeEngine) Health(ctx context.Context) (engine.Health, error) {
	if err := ctx.Err(); err != nil {
		return engine.Health{}, err
	}
	if !f.healthy.Load() {
		return engine.Health{Live: true, Ready: false, Detail: "fake: not ready"}, nil
	}
	return engine.Health{Live: true, Ready: true}, nil
}

// Version makes the pool report an engine version (pool.Versioner).
func (f *fakeEngine) Version(context.Context) (string, error) { return "fake-1", nil }
