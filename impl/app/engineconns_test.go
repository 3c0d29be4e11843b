package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

// TestEngineConnectionMetrics: a replica's kept engine connections show in /metrics. Three
// tasks one after the other on a one-slot pool: every generation is sent on a connection the
// adapter set up or on one it kept, at least one on a kept one, and one is kept after.
func TestEngineConnectionMetrics(t *testing.T) {
	for _, tt := range []struct {
		engine string
		api    client.Engine
	}{
		{"llamacpp", client.Llamacpp}, // engine/llamacpp
		{"vllm", client.Vllm},         // engine/openai
		{"tgi", client.Tgi},           // engine/tgi
	} {
		t.Run(tt.engine, func(t *testing.T) {
			ts := httptest.NewServer(sim.New(sim.Options{Model: "sim", NCtx: 2048, TokenDelay: time.Millisecond}))
			defer ts.Close()
			d := startDaemonYAML(t, fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
shutdown_grace: 2s
pools:
  - id: default
    engine: %s
    model_ref: sim
    ctx_max: 2048
    slots: 1
    replicas: [{url: "%s"}]
`, t.TempDir(), tt.engine, ts.URL))
			const tasks = 3
			for range tasks {
				prompt := "Hello there"
				r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
					TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Completion, ModelRef: "sim",
					Engine: tt.api, Ctx: 2048, Priority: client.Interactive, Prompt: &prompt, MaxTokens: 4, DeadlineMs: 60000,
				})
				if err != nil || r.StatusCode() != 202 {
					t.Fatalf("create: %v %d %s", err, r.StatusCode(), r.Body)
				}
				resp, br := d.openStream(t, r.JSON202.TaskId)
				if last := lastFrame(t, br); last.event != "end" {
					t.Fatalf("last frame %+v", last)
				}
				resp.Body.Close()
			}
			mr, err := d.c.GetMetrics(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(mr.Body)
			mr.Body.Close()
			value := func(family string) int {
				t.Helper()
				re := regexp.MustCompile(`(?m)^` + family + `\{engine="` + tt.engine + `",engine_version="[^"]*",pool_id="default",replica_id="[^"]+"\} (\d+)$`)
				m := re.FindSubmatch(body)
				if m == nil {
					t.Fatalf("no %s series for the replica:\n%s", family, grepLines(string(body), "engine_conn"))
				}
				n, _ := strconv.Atoi(string(m[1]))
				return n
			}
			dialed, reused := value("engine_connections_dialed_total"), value("engine_connections_reused_total")
			if dialed+reused != tasks || reused < 1 {
				t.Errorf("%d generations: %d connections dialed, %d reused", tasks, dialed, reused)
			}
			if n := value("engine_connection_fallbacks_total"); n != 0 {
				t.Errorf("%d fallbacks from an engine that keeps its connections", n)
			}
			if n := value("engine_connections_one_per_generation"); n != 0 {
				t.Errorf("one connection per generation: %d", n)
			}
			if n, late := value("engine_connections_idle"), value("engine_answers_ended_late_total"); n+late < 1 {
				t.Errorf("%d connections kept after the last generation (%d late ends)", n, late)
			}
			value("engine_connection_retries_total")
		})
	}
}
