package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/tools/tritontest"
)

// TestEndToEndTriton runs pools with engine: triton against a real tritonserver (external
// replicas, one pool per model): a task's exact text through admission, the Triton adapter and
// SSE; a cancel mid-stream; a mid-stream model error counted as the replica's fault; and the
// metrics of all three.
func TestEndToEndTriton(t *testing.T) {
	s := tritontest.Shared(t)
	pool := func(id, model string) string {
		return fmt.Sprintf(`
  - id: %s
    engine: triton
    model_ref: %s
    ctx_max: 2048
    slots: 2
    workloads: [completion]
    engine_options: {model: %s, metrics_url: "%s"}
    replicas: [{url: "%s"}]`, id, model, model, s.Metrics, s.HTTP)
	}
	d := startDaemonYAML(t, fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
shutdown_grace: 2s
pools:%s%s%s
`, t.TempDir(), pool("default", tritontest.ModelWords), pool("slow", tritontest.ModelSlow), pool("failing", tritontest.ModelFailing)))

	caps, err := d.c.GetCapabilitiesWithResponse(context.Background(), nil)
	if err != nil || caps.JSON200 == nil {
		t.Fatalf("capabilities: %v", err)
	}
	found := false
	for _, e := range caps.JSON200.Engines {
		if e.Engine == client.Triton {
			found = true
			if e.Managed || !slices.Equal(e.SupportedWorkloads, []client.Workload{client.Completion}) {
				t.Errorf("triton capability = %+v", e)
			}
		}
	}
	if !found {
		t.Errorf("capabilities engines = %+v", caps.JSON200.Engines)
	}

	create := func(t *testing.T, model string, maxTokens int32) uuid.UUID {
		t.Helper()
		prompt := "Hello"
		r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
			TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Completion, ModelRef: model,
			Engine: client.Triton, Ctx: 2048, Priority: client.Interactive, Prompt: &prompt,
			MaxTokens: maxTokens, DeadlineMs: 60000,
		})
		if err != nil || r.StatusCode() != 202 {
			t.Fatalf("create: %v %d %s", err, r.StatusCode(), r.Body)
		}
		return r.JSON202.TaskId
	}
	token := func(t *testing.T, f frame) string {
		var tok struct{ T string }
		if err := json.Unmarshal([]byte(f.data), &tok); err != nil {
			t.Fatal(err)
		}
		return tok.T
	}

	t.Run("exact text", func(t *testing.T) {
		resp, br := d.openStream(t, create(t, tritontest.ModelWords, 12))
		defer resp.Body.Close()
		var toks []string
		var last frame
		for {
			f, ok := nextFrame(t, br)
			if !ok {
				break
			}
			last = f
			if f.event == "token" {
				toks = append(toks, token(t, f))
			}
		}
		want := append(slices.Clone(tritontest.Words), tritontest.Words[:3]...)
		if !slices.Equal(toks, want) {
			t.Errorf("tokens = %q, want %q", toks, want)
		}
		if last.event != "end" || !strings.Contains(last.data, `"tokens_out":12`) {
			t.Errorf("last frame = %+v", last)
		}
	})

	t.Run("cancel mid-stream", func(t *testing.T) {
		id := create(t, tritontest.ModelSlow, 20)
		resp, br := d.openStream(t, id)
		defer resp.Body.Close()
		for n := 0; n < 2; {
			f, ok := nextFrame(t, br)
			if !ok {
				t.Fatal("stream ended early")
			}
			if f.event == "token" {
				n++
			}
		}
		if cr, err := d.c.CancelTaskWithResponse(context.Background(), id, nil); err != nil || cr.StatusCode() != 204 {
			t.Fatalf("cancel: %v %v", err, cr)
		}
		last := lastFrame(t, br)
		if last.event != "end" || !strings.Contains(last.data, `"canceled":true`) {
			t.Fatalf("after cancel: %+v", last)
		}
	})

	t.Run("a model error mid-stream is the replica's fault", func(t *testing.T) {
		resp, br := d.openStream(t, create(t, tritontest.ModelFailing, 5))
		defer resp.Body.Close()
		var toks []string
		var last frame
		for {
			f, ok := nextFrame(t, br)
			if !ok {
				break
			}
			last = f
			if f.event == "token" {
				toks = append(toks, token(t, f))
			}
		}
		if !slices.Equal(toks, tritontest.Words[:2]) || last.event != "error" {
			t.Errorf("tokens %q, last frame %+v", toks, last)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		mr, err := d.c.GetMetrics(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer mr.Body.Close()
		body, _ := io.ReadAll(mr.Body)
		for _, want := range []string{
			`engine_errors_total{engine="triton",fault="replica",kind="engine_failure",pool_id="failing"} 1`,
			`tasks_finished_total{engine="triton",outcome="`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %s in:\n%s", want, grepLines(string(body), "triton"))
			}
		}
		canceled := grepLines(string(body), "tasks_canceled_total{")
		if !strings.Contains(canceled, `engine="triton"`) || !strings.Contains(canceled, `pool_id="slow"`) ||
			!strings.Contains(canceled, `reason="client"`) || !strings.HasSuffix(canceled, " 1") {
			t.Errorf("tasks_canceled_total:\n%s", canceled)
		}
	})
}
