package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

// TestEndToEndSGLang runs a pool with engine: sglang against tools/enginesim's OpenAI
// personality (the one the official openai client accepts, serving SGLang's /metrics names):
// completion and chat tasks stream through admission, engine/openai and SSE; a cancel reaches
// the engine; "context too long" fails the task INVALID_PARAMS and an overloaded engine fails it
// retriable, both leaving the pool ready; engine_errors_total says whose fault each was.
func TestEndToEndSGLang(t *testing.T) {
	finished := make(chan sim.Finish, 16)
	s := sim.New(sim.Options{Model: "sim-sglang", NCtx: 2048, TokenDelay: 2 * time.Millisecond,
		OnFinish: func(f sim.Finish) { finished <- f }})
	ts := httptest.NewServer(s)
	defer ts.Close()
	d := startDaemonYAML(t, fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
shutdown_grace: 2s
pools:
  - id: default
    engine: sglang
    model_ref: sim-sglang
    ctx_max: 2048
    slots: 2
    workloads: [completion, chat]
    replicas: [{url: "%s"}]
`, t.TempDir(), ts.URL))

	create := func(t *testing.T, workload client.Workload, maxTokens int32) uuid.UUID {
		t.Helper()
		prompt := "Hello there"
		r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
			TaskId: uuid.New(), SessionId: uuid.New(), Workload: workload, ModelRef: "sim-sglang",
			Engine: client.Sglang, Ctx: 2048, Priority: client.Interactive, Prompt: &prompt, MaxTokens: maxTokens,
			DeadlineMs: 60000,
		})
		if err != nil || r.StatusCode() != 202 {
			t.Fatalf("create: %v %d %s", err, r.StatusCode(), r.Body)
		}
		return r.JSON202.TaskId
	}
	drain := func() {
		for {
			select {
			case <-finished:
			default:
				return
			}
		}
	}

	for _, tt := range []struct {
		workload client.Workload
		endpoint string
	}{
		{client.Completion, "/v1/completions"},
		{client.Chat, "/v1/chat/completions"},
	} {
		t.Run(string(tt.workload)+" streams every token", func(t *testing.T) {
			drain()
			resp, br := d.openStream(t, create(t, tt.workload, 8))
			defer resp.Body.Close()
			tokens := 0
			var last frame
			for {
				f, ok := nextFrame(t, br)
				if !ok {
					break
				}
				last = f
				if f.event == "token" {
					tokens++
				}
			}
			if tokens != 8 || last.event != "end" || !strings.Contains(last.data, `"tokens_out":8`) {
				t.Errorf("%d token frames, last frame %+v", tokens, last)
			}
			if f := <-finished; f.Endpoint != tt.endpoint || f.Err != nil || f.Tokens != 8 {
				t.Errorf("engine saw %+v, want %s with 8 tokens", f, tt.endpoint)
			}
		})
	}

	t.Run("cancel aborts the engine request", func(t *testing.T) {
		drain()
		id := create(t, client.Completion, 2000)
		resp, br := d.openStream(t, id)
		defer resp.Body.Close()
		for n := 0; n < 3; {
			f, ok := nextFrame(t, br)
			if !ok {
				t.Fatal("stream ended early")
			}
			if f.event == "token" {
				n++
			}
		}
		if cr, err := d.c.CancelTaskWithResponse(context.Background(), id, nil); err != nil || cr.StatusCode() != 204 {
			t.Fatalf("cancel: %v", err)
		}
		if last := lastFrame(t, br); last.event != "end" || !strings.Contains(last.data, `"canceled":true`) {
			t.Errorf("after cancel: %+v", last)
		}
		if f := <-finished; f.Err == nil || f.Tokens >= 2000 {
			t.Errorf("the engine did not see the abort: %+v", f)
		}
	})

	for _, tt := range []struct {
		name  string
		fault sim.FaultMode
		want  string // in the error frame
	}{
		{"context too long is the request's fault", sim.FaultContextTooLong, `"code":"INVALID_PARAMS"`},
		{"an overloaded engine is retriable", sim.FaultOverload, `"retriable":true`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s.SetFault(sim.Fault{Mode: tt.fault})
			defer s.SetFault(sim.Fault{})
			resp, br := d.openStream(t, create(t, client.Completion, 6))
			defer resp.Body.Close()
			if last := lastFrame(t, br); last.event != "error" || !strings.Contains(last.data, tt.want) {
				t.Fatalf("last frame = %+v, want an error with %s", last, tt.want)
			}
			h, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
			if err != nil || h.JSON200 == nil || !h.JSON200.Ready {
				t.Fatalf("pool after a fault that is not the replica's: %v %s", err, h.Body)
			}
		})
	}

	mr, err := d.c.GetMetrics(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mr.Body.Close()
	body, _ := io.ReadAll(mr.Body)
	for _, want := range []string{
		`engine_errors_total{engine="sglang",fault="request",kind="invalid_request",pool_id="default"} 1`,
		`engine_errors_total{engine="sglang",fault="overload",kind="overload",pool_id="default"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(string(body), "engine_errors"))
		}
	}
}
