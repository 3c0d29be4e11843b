package task

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// paced emits up to its task's max_tokens, the fake clock advancing gap before each token;
// a task whose id is in hold waits after its tokens until it is canceled.
type paced struct {
	clock *tasktest.Clock
	gap   time.Duration
	hold  map[string]bool
}

func (e *paced) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	for i := range req.MaxTokens {
		e.clock.Advance(e.gap)
		if err := emit(engine.Token{Text: []byte(" w"), Index: i}); err != nil {
			return engine.Result{TokensOut: i}, err
		}
	}
	if e.hold[req.TaskID] {
		<-ctx.Done()
		return engine.Result{TokensOut: req.MaxTokens}, ctx.Err()
	}
	return engine.Result{TokensOut: req.MaxTokens, Stop: engine.StopLimit}, nil
}

func (e *paced) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

// evalPanel evaluates a dashboard expression made of sum/sum by/rate/increase over series,
// numbers, + - * / and parentheses, on one scrape: the rate of a counter that started at 0
// within the window is taken as its value (the ratio of two rates is the ratio of their
// increases over the same window).
func evalPanel(t *testing.T, expr string, values map[string]float64) float64 {
	t.Helper()
	s := expr
	var parseExpr func() float64
	skipSpace := func() { s = strings.TrimLeftFunc(s, unicode.IsSpace) }
	ident := func() string {
		skipSpace()
		i := 0
		for i < len(s) && (s[i] == '_' || s[i] == ':' || unicode.IsLetter(rune(s[i])) || unicode.IsDigit(rune(s[i])) || s[i] == '.') {
			i++
		}
		w := s[:i]
		s = s[i:]
		return w
	}
	skipGroup := func(opening, closing byte) {
		depth := 0
		for i := 0; i < len(s); i++ {
			switch s[i] {
			case opening:
				depth++
			case closing:
				depth--
				if depth == 0 {
					s = s[i+1:]
					return
				}
			}
		}
		t.Fatalf("unbalanced %c in %q", opening, expr)
	}
	var primary func() float64
	primary = func() float64 {
		skipSpace()
		if strings.HasPrefix(s, "(") {
			s = s[1:]
			v := parseExpr()
			skipSpace()
			s = strings.TrimPrefix(s, ")")
			return v
		}
		w := ident()
		if w == "" {
			t.Fatalf("cannot evaluate %q at %q", expr, s)
		}
		if n, err := strconv.ParseFloat(w, 64); err == nil {
			return n
		}
		skipSpace()
		switch w {
		case "sum", "rate", "increase", "max":
			if strings.HasPrefix(s, "by") || strings.HasPrefix(s, "without") {
				ident()
				skipSpace()
				skipGroup('(', ')')
				skipSpace()
			}
			return primary()
		}
		if strings.HasPrefix(s, "{") {
			skipGroup('{', '}')
		}
		skipSpace()
		if strings.HasPrefix(s, "[") {
			skipGroup('[', ']')
		}
		return values[w]
	}
	term := func() float64 {
		v := primary()
		for {
			skipSpace()
			switch {
			case strings.HasPrefix(s, "*"):
				s = s[1:]
				v *= primary()
			case strings.HasPrefix(s, "/"):
				s = s[1:]
				v /= primary()
			default:
				return v
			}
		}
	}
	parseExpr = func() float64 {
		v := term()
		for {
			skipSpace()
			switch {
			case strings.HasPrefix(s, "+"):
				s = s[1:]
				v += term()
			case strings.HasPrefix(s, "-"):
				s = s[1:]
				v -= term()
			default:
				return v
			}
		}
	}
	v := parseExpr()
	if skipSpace(); s != "" {
		t.Fatalf("cannot evaluate %q: %q left", expr, s)
	}
	return v
}

// The dashboard's "Per-token latency (mean decode ms per output token)" panel reads the real
// gap between tokens: latency_decode_ms_sum over decode_tokens_total, the tokens after the
// first of the tasks the histogram observes. It divided by tokens_out_total, which counts the
// first token of each task (time to first token, not decode) and every token of canceled and
// failed tasks. Here the engine makes a token every 10 ms: one task succeeds with 5 tokens,
// one is canceled after 5; the panel showed 4 ms per token, not 10.
func TestPerTokenLatencyPanel(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/grafana/orchestratord.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	var expr string
	for _, p := range d.Panels {
		if strings.HasPrefix(p.Title, "Per-token latency") && len(p.Targets) == 1 {
			expr = p.Targets[0].Expr
		}
	}
	if expr == "" {
		t.Fatal("no Per-token latency panel with one query")
	}

	reg := prometheus.NewRegistry()
	h := newHarnessWith(t, 4, 1, admission.Reject, func(o *Options) { o.Metrics = metrics.New(reg) })
	const gap = 10 * time.Millisecond
	done, canceled := spec(admission.Interactive), spec(admission.Interactive)
	done.MaxTokens, canceled.MaxTokens = 5, 5
	h.pools.rep = &paced{clock: h.clock, gap: gap, hold: map[string]bool{canceled.ID: true}}

	h.submit(done)
	h.events(done.ID)
	h.submit(canceled)
	waitFor(t, func() bool { snap, err := h.svc.Get(h.ctx, canceled.ID); return err == nil && snap.TokensOut == 5 })
	if err := h.svc.Cancel(h.ctx, canceled.ID); err != nil {
		t.Fatal(err)
	}
	h.events(canceled.ID)
	if snap, _ := h.svc.Get(h.ctx, canceled.ID); snap.Status != Canceled {
		t.Fatalf("second task %v, want canceled", snap.Status)
	}

	// A task's metrics are observed just after its final frame: wait for both tasks' (the
	// first one's decode_tokens_total is its last).
	var values map[string]float64
	waitFor(t, func() bool {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		values = map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch {
				case m.GetHistogram() != nil:
					values[mf.GetName()+"_sum"] += m.GetHistogram().GetSampleSum()
					values[mf.GetName()+"_count"] += float64(m.GetHistogram().GetSampleCount())
				case m.GetCounter() != nil:
					values[mf.GetName()] += m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					values[mf.GetName()] += m.GetGauge().GetValue()
				}
			}
		}
		return values["tasks_finished_total"] == 2 && values["decode_tokens_total"] > 0
	})
	got := evalPanel(t, expr, values)
	if math.IsNaN(got) || math.Abs(got-float64(gap.Milliseconds())) > 0.5 {
		t.Errorf("panel %q = %.2f ms per token (decode sum %v ms, tokens_out_total %v); the engine made one every %v",
			expr, got, values["latency_decode_ms_sum"], values["tokens_out_total"], gap)
	}
}
