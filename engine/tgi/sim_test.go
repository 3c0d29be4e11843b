package tgi

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

// TestAgainstSimulator: the adapter streams from tools/enginesim's TGI personality (the one
// the official text-generation client is checked against in tools/enginesim/sim): one emit
// per simulated token, TGI's details for tokens in and out and the stop reason, /info for the
// identity, /metrics for the load.
func TestAgainstSimulator(t *testing.T) {
	s := sim.New(sim.Options{Model: "sim-model", NCtx: 2048})
	ts := httptest.NewServer(s)
	defer ts.Close()
	r := newReplica(t, ts.URL, Options{})
	var c collected
	res, err := r.Generate(t.Context(), engine.Request{Prompt: "Hello there you", MaxTokens: 9}, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.texts) != 9 || res != (engine.Result{TokensOut: 9, TokensIn: 3, Stop: engine.StopLimit}) {
		t.Errorf("%q, %+v", c.texts, res)
	}
	for _, tok := range c.texts {
		if !strings.HasPrefix(tok, " t") || len(tok) != 21 {
			t.Errorf("token %q is not a simulator stamp", tok)
		}
	}
	in, err := r.Info(t.Context())
	if err != nil || in != (Info{ModelID: "sim-model", Version: "enginesim", MaxInputTokens: 2047, MaxTotalTokens: 2048}) {
		t.Errorf("info %+v, %v", in, err)
	}
	if l, err := r.Load(t.Context()); err != nil || l != (engine.Load{Running: 0, Waiting: 0, KVUsage: -1}) {
		t.Errorf("idle load %+v, %v", l, err)
	}
}

// TestCancelAbortsEngine: cancelling ctx mid-stream ends Generate with ctx's error and the
// simulator sees its request end early (its OnFinish reports the abort, and no slot stays
// held), which is how TGI learns to drop the request from its batch.
func TestCancelAbortsEngine(t *testing.T) {
	finished := make(chan sim.Finish, 1)
	s := sim.New(sim.Options{TokenDelay: time.Millisecond, Tokens: 100000, Slots: 1,
		OnFinish: func(f sim.Finish) { finished <- f }})
	ts := httptest.NewServer(s)
	defer ts.Close()
	r := newReplica(t, ts.URL, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n := 0
	_, err := r.Generate(ctx, engine.Request{Prompt: "p", MaxTokens: 100000}, func(engine.Token) error {
		if n++; n == 3 {
			if l, err := r.Load(t.Context()); err != nil || l.Running != 1 {
				t.Errorf("load while generating: %+v, %v", l, err)
			}
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Generate: %v, want context.Canceled", err)
	}
	f := <-finished
	if f.Endpoint != "/generate_stream" || f.Err == nil || f.Tokens >= 100000 {
		t.Errorf("the engine did not see the abort: %+v", f)
	}
	if st := s.Stats(); st.Aborted != 1 || st.Active != 0 {
		t.Errorf("simulator stats after the abort: %+v", st)
	}
}

// TestSimulatorFaults: each fault the simulator injects in TGI's words maps to the kind that
// says whose fault it is; the replica stays ready after request and overload faults.
func TestSimulatorFaults(t *testing.T) {
	tests := []struct {
		fault  sim.Fault
		kind   engine.Kind
		tokens int // emitted before the failure
	}{
		{sim.Fault{Mode: sim.FaultContextTooLong}, engine.KindInvalidRequest, 0},
		{sim.Fault{Mode: sim.FaultOverload}, engine.KindOverload, 0},
		{sim.Fault{Mode: sim.FaultUnavailable}, engine.KindPoolUnavailable, 0},
		{sim.Fault{Mode: sim.FaultSlowFirstToken, Delay: time.Minute}, engine.KindDecodeTimeout, 0},
		{sim.Fault{Mode: sim.FaultCut, After: 2}, engine.KindWorkerReset, 2},
		{sim.Fault{Mode: sim.FaultMalformed, After: 3}, engine.KindProtocol, 3},
		{sim.Fault{Mode: sim.FaultCrash, After: 1}, engine.KindWorkerReset, 1},
	}
	for _, tt := range tests {
		t.Run(string(tt.fault.Mode), func(t *testing.T) {
			ts := httptest.NewServer(sim.New(sim.Options{Fault: tt.fault}))
			defer ts.Close()
			r := newReplica(t, ts.URL, Options{IdleTimeout: 200 * time.Millisecond})
			var c collected
			_, err := r.Generate(t.Context(), engine.Request{Prompt: "a b c", MaxTokens: 6}, c.emit)
			if engine.KindOf(err) != tt.kind || len(c.texts) != tt.tokens {
				t.Errorf("kind %v (%v) after %d tokens, want %v after %d", engine.KindOf(err), err, len(c.texts), tt.kind, tt.tokens)
			}
			if f := tt.kind.Fault(); f == engine.FaultRequest || f == engine.FaultOverload {
				if h, err := r.Health(t.Context()); err != nil || !h.Ready {
					t.Errorf("replica not ready after a %v fault: %+v, %v", f, h, err)
				}
			}
		})
	}
}
