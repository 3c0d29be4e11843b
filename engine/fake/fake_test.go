package fake

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/engine"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestSplit(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{DefaultText, []string{" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."}},
		{"Hello, world!", []string{"Hello", ",", " world", "!"}},
		{"a  b ", []string{"a", "  b", " "}},
		{"naïve 42x", []string{"naïve", " 42x"}},
		{"   ", []string{"   "}},
		{"", nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := Split(tt.in)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Errorf("Split(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if strings.Join(got, "") != tt.in {
				t.Errorf("tokens do not join back to the input")
			}
		})
	}
}

// run generates req and returns the emitted texts.
func run(ctx context.Context, r *Replica, req engine.Request) ([]string, engine.Result, error) {
	var texts []string
	res, err := r.Generate(ctx, req, func(tok engine.Token) error {
		if tok.Index != len(texts) {
			return errors.New("non-contiguous token index")
		}
		texts = append(texts, string(tok.Text))
		return nil
	})
	return texts, res, err
}

func TestGenerate(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		req       engine.Request
		wantText  string
		wantToks  int
		wantStop  engine.StopReason
		wantInput int
	}{
		{
			name:     "limit wraps the cycle",
			req:      engine.Request{Prompt: "Hello there", MaxTokens: 12},
			wantText: " The quick brown fox jumps over the lazy dog. The quick", wantToks: 12, wantStop: engine.StopLimit, wantInput: 2,
		},
		{
			name:     "custom text",
			opts:     Options{Text: "a b"},
			req:      engine.Request{Prompt: "", MaxTokens: 5},
			wantText: "a ba ba", wantToks: 5, wantStop: engine.StopLimit,
		},
		{
			name:     "end of sequence",
			opts:     Options{EOSAfter: 10},
			req:      engine.Request{Prompt: "x", MaxTokens: 100},
			wantText: DefaultText, wantToks: 11, wantStop: engine.StopEOS, wantInput: 1,
		},
		{
			name:     "limit before end of sequence",
			opts:     Options{EOSAfter: 10},
			req:      engine.Request{Prompt: "x", MaxTokens: 10},
			wantText: DefaultText, wantToks: 10, wantStop: engine.StopLimit, wantInput: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.opts)
			texts, res, err := run(t.Context(), r, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(texts, ""); got != tt.wantText {
				t.Errorf("text = %q, want %q", got, tt.wantText)
			}
			want := engine.Result{TokensOut: tt.wantToks, TokensIn: tt.wantInput, Stop: tt.wantStop}
			if res != want || len(texts) != tt.wantToks {
				t.Errorf("result = %+v (%d emitted), want %+v", res, len(texts), want)
			}
			if r.Active() != 0 || r.Started() != 1 {
				t.Errorf("active %d, started %d", r.Active(), r.Started())
			}
		})
	}
}

func TestFailNext(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		kind       engine.Kind
		after      int
		maxTokens  int
		wantTokens int
	}{
		{"before the first token", Options{}, engine.KindPoolUnavailable, 0, 10, 0},
		{"mid-stream", Options{}, engine.KindWorkerReset, 3, 10, 3},
		{"after the last token", Options{}, engine.KindDecodeTimeout, 50, 10, 10},
		{"at end of sequence", Options{EOSAfter: 2}, engine.KindInternal, 50, 10, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.opts)
			r.FailNext(tt.kind, tt.after)
			texts, res, err := run(t.Context(), r, engine.Request{MaxTokens: tt.maxTokens})
			var e *engine.Error
			if !errors.As(err, &e) || e.Kind != tt.kind {
				t.Fatalf("err = %v, want kind %v", err, tt.kind)
			}
			if len(texts) != tt.wantTokens || res.TokensOut != tt.wantTokens {
				t.Errorf("%d tokens emitted, TokensOut %d, want %d", len(texts), res.TokensOut, tt.wantTokens)
			}
			// The fault was for one generation only.
			if _, _, err := run(t.Context(), r, engine.Request{MaxTokens: tt.maxTokens}); err != nil {
				t.Errorf("next generation: %v", err)
			}
			if r.Active() != 0 {
				t.Errorf("active %d", r.Active())
			}
		})
	}
}

func TestFailNextQueues(t *testing.T) {
	r := New(Options{})
	r.FailNext(engine.KindWorkerReset, 1)
	r.FailNext(engine.KindDecodeTimeout, 2)
	var kinds []engine.Kind
	for range 3 {
		_, _, err := run(t.Context(), r, engine.Request{MaxTokens: 5})
		if err == nil {
			kinds = append(kinds, -1)
			continue
		}
		kinds = append(kinds, engine.KindOf(err))
	}
	want := []engine.Kind{engine.KindWorkerReset, engine.KindDecodeTimeout, -1}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("kinds = %v, want %v", kinds, want)
		}
	}
}

func TestHealth(t *testing.T) {
	r := New(Options{})
	tests := []struct {
		name     string
		healthy  bool
		want     engine.Health
		genError engine.Kind
	}{
		{"unhealthy", false, engine.Health{Live: true, Detail: UnhealthyDetail}, engine.KindPoolUnavailable},
		{"healthy again", true, engine.Health{Live: true, Ready: true}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.SetHealthy(tt.healthy)
			h, err := r.Health(t.Context())
			if err != nil || h != tt.want {
				t.Errorf("health = %+v, %v; want %+v", h, err, tt.want)
			}
			_, _, err = run(t.Context(), r, engine.Request{MaxTokens: 1})
			if tt.genError < 0 {
				if err != nil {
					t.Errorf("generate: %v", err)
				}
			} else if engine.KindOf(err) != tt.genError || err == nil {
				t.Errorf("generate err = %v, want kind %v", err, tt.genError)
			}
		})
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.Health(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("health with a cancelled ctx: %v", err)
	}
}

func TestGenerateRejects(t *testing.T) {
	r := New(Options{})
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		req  engine.Request
		is   func(error) bool
	}{
		{"zero max tokens", t.Context(), engine.Request{}, func(err error) bool { return engine.KindOf(err) == engine.KindInvalidRequest }},
		{"cancelled ctx", cancelled, engine.Request{MaxTokens: 1}, func(err error) bool { return errors.Is(err, context.Canceled) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := run(tt.ctx, r, tt.req); err == nil || !tt.is(err) {
				t.Errorf("err = %v", err)
			}
		})
	}
	if r.Started() != 0 {
		t.Errorf("started = %d", r.Started())
	}
}

// TestCancel checks that cancelling ctx ends a generation wherever it waits, with ctx.Err(),
// and releases its slot.
func TestCancel(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		pause bool
	}{
		{"while paused", Options{}, true},
		{"in the first-token delay", Options{FirstTokenDelay: time.Hour}, false},
		{"in a token delay", Options{TokenDelay: time.Hour}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.opts)
			if tt.pause {
				r.Pause()
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, _, err := run(ctx, r, engine.Request{MaxTokens: 1000})
				done <- err
			}()
			if err := r.WaitActive(t.Context(), 1); err != nil {
				t.Fatal(err)
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
			if r.Active() != 0 {
				t.Errorf("active = %d after cancel", r.Active())
			}
		})
	}
}

func TestEmitErrorStops(t *testing.T) {
	r := New(Options{})
	errStop := errors.New("stop")
	res, err := r.Generate(t.Context(), engine.Request{MaxTokens: 10}, func(tok engine.Token) error {
		if tok.Index == 2 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || res.TokensOut != 2 || r.Active() != 0 {
		t.Errorf("err = %v, result %+v, active %d", err, res, r.Active())
	}
}

func TestPauseHoldsConcurrentGenerations(t *testing.T) {
	r := New(Options{})
	r.Pause()
	const n = 3
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			texts, _, err := run(t.Context(), r, engine.Request{Prompt: "p", MaxTokens: 4, Seed: new(int64)})
			if err == nil && strings.Join(texts, "") != " The quick brown fox" {
				err = errors.New("wrong text " + strings.Join(texts, ""))
			}
			errs <- err
		})
	}
	if err := r.WaitActive(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	if r.Started() != n {
		t.Errorf("started = %d", r.Started())
	}
	r.Resume()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := r.WaitActive(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	reqs := r.Requests()
	if len(reqs) != n || reqs[0].Prompt != "p" || reqs[0].Seed == nil {
		t.Errorf("requests = %+v", reqs)
	}
}

func TestWaitActiveHonoursCtx(t *testing.T) {
	r := New(Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := r.WaitActive(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

func BenchmarkGenerate(b *testing.B) {
	r := New(Options{})
	emit := func(engine.Token) error { return nil }
	req := engine.Request{Prompt: "Hello", MaxTokens: 100}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Generate(b.Context(), req, emit); err != nil {
			b.Fatal(err)
		}
	}
}
