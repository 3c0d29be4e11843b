package fake

import (
	"context"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/orchestratord/orchestratord/engine"
)

// DefaultText is the default text cycle: the sentence the real tiny test model generates.
const DefaultText = " The quick brown fox jumps over the lazy dog."

// UnhealthyDetail is Health's Detail after SetHealthy(false).
const UnhealthyDetail = "fake: set unhealthy"

// Options configures a Replica. The zero value generates DefaultText without delays.
type Options struct {
	// Text is the cycle of generated text, split into tokens by Split. Default DefaultText
	// (" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".").
	Text string
	// FirstTokenDelay is waited before the first token, TokenDelay before each later one.
	FirstTokenDelay time.Duration
	TokenDelay      time.Duration
	// EOSAfter, when positive, ends each generation after this many text tokens with an
	// end-of-sequence token (empty text, counted in TokensOut) and engine.StopEOS, unless
	// MaxTokens ends it first.
	EOSAfter int
}

type fault struct {
	kind  engine.Kind
	after int
}

// Replica is a fake engine replica. Create it with New.
type Replica struct {
	opts   Options
	tokens []string

	mu        sync.Mutex
	unhealthy bool
	paused    bool
	faults    []fault
	active    int
	started   int
	requests  []engine.Request
	changed   chan struct{} // closed and replaced when active or paused changes
}

var _ engine.Replica = (*Replica)(nil)

// New returns a healthy Replica.
func New(opts Options) *Replica {
	if opts.Text == "" {
		opts.Text = DefaultText
	}
	return &Replica{opts: opts, tokens: Split(opts.Text), changed: make(chan struct{})}
}

// Split cuts text into word tokens the way the tiny model's vocabulary does: each token is
// optional leading white space followed by a run of letters and digits or by one other
// character; trailing white space is a token of its own. " The quick dog." gives " The",
// " quick", " dog", ".".
func Split(text string) []string {
	var out []string
	for len(text) > 0 {
		i := 0
		for i < len(text) {
			r, n := utf8.DecodeRuneInString(text[i:])
			if !unicode.IsSpace(r) {
				break
			}
			i += n
		}
		if i < len(text) {
			r, n := utf8.DecodeRuneInString(text[i:])
			i += n
			if isWord(r) {
				for i < len(text) {
					r, n := utf8.DecodeRuneInString(text[i:])
					if !isWord(r) {
						break
					}
					i += n
				}
			}
		}
		out = append(out, text[:i])
		text = text[i:]
	}
	return out
}

func isWord(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// Generate implements engine.Replica. Token i is the cycle's token i modulo its length;
// TokensIn is the number of tokens Split finds in the prompt; TokensCached is 0.
func (r *Replica) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	if err := ctx.Err(); err != nil {
		return engine.Result{}, err
	}
	r.mu.Lock()
	r.requests = append(r.requests, req)
	if r.unhealthy {
		r.mu.Unlock()
		return engine.Result{}, engine.Errorf(engine.KindPoolUnavailable, "fake: replica unhealthy")
	}
	if req.MaxTokens < 1 {
		r.mu.Unlock()
		return engine.Result{}, engine.Errorf(engine.KindInvalidRequest, "fake: max tokens %d must be positive", req.MaxTokens)
	}
	var f *fault
	if len(r.faults) > 0 {
		f = &r.faults[0]
		r.faults = r.faults[1:]
	}
	r.active++
	r.started++
	r.notifyLocked()
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.active--
		r.notifyLocked()
		r.mu.Unlock()
	}()

	res := engine.Result{TokensIn: len(Split(req.Prompt))}
	var text []byte // the token text handed to emit
	for i := 0; ; i++ {
		end := i == req.MaxTokens
		if f != nil && (i == f.after || end) {
			return res, engine.Errorf(f.kind, "fake: injected failure after %d tokens", i)
		}
		if end {
			res.Stop = engine.StopLimit
			return res, nil
		}
		delay := r.opts.TokenDelay
		if i == 0 {
			delay = r.opts.FirstTokenDelay
		}
		if err := r.wait(ctx, delay); err != nil {
			return res, err
		}
		eos := r.opts.EOSAfter > 0 && i == r.opts.EOSAfter
		text = text[:0] // a view for emit, reused for the next token
		if !eos {
			text = append(text, r.tokens[i%len(r.tokens)]...)
		}
		if err := emit(engine.Token{Text: text, Index: i}); err != nil {
			return res, err
		}
		res.TokensOut++
		if eos {
			if f != nil {
				return res, engine.Errorf(f.kind, "fake: injected failure after %d tokens", i+1)
			}
			res.Stop = engine.StopEOS
			return res, nil
		}
	}
}

// wait sleeps d, then holds while paused; it returns ctx.Err() as soon as ctx ends.
func (r *Replica) wait(ctx context.Context, d time.Duration) error {
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	for {
		r.mu.Lock()
		paused, changed := r.paused, r.changed
		r.mu.Unlock()
		if !paused {
			return ctx.Err()
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (r *Replica) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Health implements engine.Replica: live and ready unless SetHealthy(false).
func (r *Replica) Health(ctx context.Context) (engine.Health, error) {
	if err := ctx.Err(); err != nil {
		return engine.Health{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unhealthy {
		return engine.Health{Live: true, Detail: UnhealthyDetail}, nil
	}
	return engine.Health{Live: true, Ready: true}, nil
}

// FailNext arms a fault: the next generation to start emits afterTokens tokens (or fewer, if
// it would end sooner) and then fails with an *engine.Error of kind. Faults queue up, one per
// generation, in call order.
func (r *Replica) FailNext(kind engine.Kind, afterTokens int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, fault{kind: kind, after: max(afterTokens, 0)})
}

// SetHealthy sets what Health reports; while unhealthy, Generate fails with
// KindPoolUnavailable. Running generations are not affected.
func (r *Replica) SetHealthy(healthy bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unhealthy = !healthy
}

// Pause holds every generation before its next token until Resume (ctx still ends it).
func (r *Replica) Pause() { r.setPaused(true) }

// Resume releases the generations Pause holds.
func (r *Replica) Resume() { r.setPaused(false) }

func (r *Replica) setPaused(p bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.paused != p {
		r.paused = p
		r.notifyLocked()
	}
}

// Active returns the number of generations in progress.
func (r *Replica) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active
}

// Started returns the number of generations that have started (passed the health and
// request checks).
func (r *Replica) Started() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started
}

// Requests returns a copy of every request Generate has received, in order.
func (r *Replica) Requests() []engine.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]engine.Request(nil), r.requests...)
}

// WaitActive blocks until exactly n generations are in progress, or ctx ends.
func (r *Replica) WaitActive(ctx context.Context, n int) error {
	for {
		r.mu.Lock()
		active, changed := r.active, r.changed
		r.mu.Unlock()
		if active == n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
