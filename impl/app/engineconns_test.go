package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

// TestEngineConnectionMetrics: a replica's engine connections show in /metrics, for each
// adapter. Three tasks one after the other on a one-slot pool. From an engine that keeps its
// connections every generation is sent on a connection the adapter set up or on one it kept,
// at least one on a kept one, and one is kept after. An engine that closes them (it answers
// "Connection: close") gets a connection per generation: one fallback, logged by the adapter.
func TestEngineConnectionMetrics(t *testing.T) {
	for _, tt := range []struct {
		engine string
		api    client.Engine
	}{
		{"llamacpp", client.Llamacpp}, // engine/llamacpp
		{"vllm", client.Vllm},         // engine/openai
		{"tgi", client.Tgi},           // engine/tgi
	} {
		for _, closes := range []bool{false, true} {
			name := tt.engine + "/keeps connections"
			if closes {
				name = tt.engine + "/closes connections"
			}
			t.Run(name, func(t *testing.T) { testEngineConnectionMetrics(t, tt.engine, tt.api, closes) })
		}
	}
}

func testEngineConnectionMetrics(t *testing.T, engineName string, api client.Engine, closes bool) {
	var h http.Handler = sim.New(sim.Options{Model: "sim", NCtx: 2048, TokenDelay: time.Millisecond})
	if closes {
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			next.ServeHTTP(w, r)
		})
	}
	ts := httptest.NewServer(h)
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
`, t.TempDir(), engineName, ts.URL))
	const tasks = 3
	for range tasks {
		prompt := "Hello there"
		r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
			TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Completion, ModelRef: "sim",
			Engine: api, Ctx: 2048, Priority: client.Interactive, Prompt: &prompt, MaxTokens: 4, DeadlineMs: 60000,
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
		re := regexp.MustCompile(`(?m)^` + family + `\{engine="` + engineName + `",engine_version="[^"]*",pool_id="default",replica_id="[^"]+"\} (\d+)$`)
		m := re.FindSubmatch(body)
		if m == nil {
			t.Fatalf("no %s series for the replica:\n%s", family, grepLines(string(body), "engine_conn"))
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	dialed, reused := value("engine_connections_dialed_total"), value("engine_connections_reused_total")
	fallbacks, one := value("engine_connection_fallbacks_total"), value("engine_connections_one_per_generation")
	idle, late := value("engine_connections_idle"), value("engine_answers_ended_late_total")
	value("engine_connection_retries_total")
	logged := strings.Contains(d.logs.String(), "engine connections: one per generation")
	if closes {
		if dialed != tasks || reused != 0 || fallbacks != 1 || one != 1 || idle != 0 || !logged {
			t.Errorf("%d generations from an engine that closes its connections: %d dialed, %d reused, %d fallbacks, one per generation %d, %d kept, fallback logged %v",
				tasks, dialed, reused, fallbacks, one, idle, logged)
		}
		return
	}
	if dialed+reused != tasks || reused < 1 {
		t.Errorf("%d generations: %d connections dialed, %d reused", tasks, dialed, reused)
	}
	if fallbacks != 0 || one != 0 || logged {
		t.Errorf("an engine that keeps its connections: %d fallbacks, one per generation %d, fallback logged %v", fallbacks, one, logged)
	}
	if idle+late < 1 {
		t.Errorf("%d connections kept after the last generation (%d late ends)", idle, late)
	}
}
