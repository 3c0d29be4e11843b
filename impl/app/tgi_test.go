package app_test

import (
	"context"
	"encoding/json"
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

// TestEndToEndTGI runs a pool with engine: tgi against tools/enginesim's TGI personality (the
// one the official text-generation client accepts): a task streams through admission, the TGI
// adapter and SSE; a cancel reaches the engine; a "context too long" answer fails the task
// INVALID_PARAMS and leaves the pool ready; a stream cut is a replica fault; and
// engine_errors_total tells the two apart.
func TestEndToEndTGI(t *testing.T) {
	finished := make(chan sim.Finish, 16)
	s := sim.New(sim.Options{Model: "sim-tgi", NCtx: 2048, TokenDelay: 2 * time.Millisecond,
		OnFinish: func(f sim.Finish) { finished <- f }})
	ts := httptest.NewServer(s)
	defer ts.Close()
	d := startDaemonYAML(t, fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
shutdown_grace: 2s
pools:
  - id: default
    engine: tgi
    model_ref: sim-tgi
    ctx_max: 2048
    slots: 2
    workloads: [completion]
    replicas: [{url: "%s"}]
`, t.TempDir(), ts.URL))

	caps, err := d.c.GetCapabilitiesWithResponse(context.Background(), nil)
	if err != nil || caps.JSON200 == nil {
		t.Fatalf("capabilities: %v", err)
	}
	var tgi *client.EngineCapability
	for i, e := range caps.JSON200.Engines {
		if e.Engine == client.Tgi {
			tgi = &caps.JSON200.Engines[i]
		}
	}
	if tgi == nil || tgi.Slots != 2 || len(tgi.SupportedWorkloads) != 1 || tgi.SupportedWorkloads[0] != client.Completion {
		t.Errorf("capabilities engines = %+v", caps.JSON200.Engines)
	}

	create := func(t *testing.T, maxTokens int32) uuid.UUID {
		t.Helper()
		prompt := "Hello there"
		r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
			TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Completion, ModelRef: "sim-tgi",
			Engine: client.Tgi, Ctx: 2048, Priority: client.Interactive, Prompt: &prompt, MaxTokens: maxTokens,
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

	t.Run("a task streams every token", func(t *testing.T) {
		resp, br := d.openStream(t, create(t, 8))
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
				var tok struct{ T string }
				if err := json.Unmarshal([]byte(f.data), &tok); err != nil {
					t.Fatal(err)
				}
				if _, ok := sim.ParseStamp(tok.T); !ok {
					t.Errorf("token %q is not the simulator's", tok.T)
				}
				tokens++
			}
		}
		if tokens != 8 || last.event != "end" || !strings.Contains(last.data, `"tokens_out":8`) {
			t.Errorf("%d token frames, last frame %+v", tokens, last)
		}
		if f := <-finished; f.Endpoint != "/generate_stream" || f.Err != nil || f.Tokens != 8 {
			t.Errorf("engine saw %+v", f)
		}
	})

	t.Run("cancel aborts the engine request", func(t *testing.T) {
		drain()
		id := create(t, 2000)
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

	failWith := func(t *testing.T, fault sim.Fault, code string) {
		t.Helper()
		s.SetFault(fault)
		defer s.SetFault(sim.Fault{})
		resp, br := d.openStream(t, create(t, 6))
		defer resp.Body.Close()
		if last := lastFrame(t, br); last.event != "error" || !strings.Contains(last.data, `"code":"`+code+`"`) {
			t.Fatalf("last frame = %+v", last)
		}
	}

	t.Run("context too long is the request's fault", func(t *testing.T) {
		failWith(t, sim.Fault{Mode: sim.FaultContextTooLong}, "INVALID_PARAMS")
		h, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
		if err != nil || h.JSON200 == nil || !h.JSON200.Ready {
			t.Fatalf("pool after a request fault: %v %s", err, h.Body)
		}
	})

	t.Run("a cut stream is the replica's fault", func(t *testing.T) {
		s.SetFault(sim.Fault{Mode: sim.FaultCut, After: 2})
		resp, br := d.openStream(t, create(t, 6))
		last := lastFrame(t, br)
		resp.Body.Close()
		s.SetFault(sim.Fault{})
		if last.event != "error" || !strings.Contains(last.data, `"retriable":true`) {
			t.Fatalf("last frame = %+v", last)
		}
	})

	mr, err := d.c.GetMetrics(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mr.Body.Close()
	body, _ := io.ReadAll(mr.Body)
	for _, want := range []string{
		`engine_errors_total{engine="tgi",fault="request",kind="invalid_request",pool_id="default"} 1`,
		`engine_errors_total{engine="tgi",fault="replica",kind="reset",pool_id="default"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(string(body), "engine_errors"))
		}
	}
}
