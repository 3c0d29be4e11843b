package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

// TestEndToEndMaxTokensEnforced: the daemon keeps a task to its max_tokens even on an engine
// that ignores the limit it is sent (tools/enginesim with a fixed token count, through
// engine/openai): the client gets max_tokens tokens and the end a length-limited task gets,
// the engine's request is aborted (its context canceled, its slot freed), and the OpenAI
// facade answers as it does for an engine that stops at max_tokens itself (pool "ok"):
// finish_reason "length", usage.completion_tokens max_tokens.
func TestEndToEndMaxTokensEnforced(t *testing.T) {
	finished := make(chan sim.Finish, 16)
	over := httptest.NewServer(sim.New(sim.Options{Model: "sim-over", NCtx: 2048, Tokens: 1000, TokenDelay: 5 * time.Millisecond,
		OnFinish: func(f sim.Finish) { finished <- f }}))
	defer over.Close()
	ok := httptest.NewServer(sim.New(sim.Options{Model: "sim-ok", NCtx: 2048}))
	defer ok.Close()
	d := startDaemonYAML(t, fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
shutdown_grace: 2s
pools:
  - id: default
    engine: sglang
    model_ref: sim-over
    ctx_max: 2048
    slots: 2
    workloads: [completion, chat]
    replicas: [{url: "%s"}]
  - id: ok
    engine: sglang
    model_ref: sim-ok
    ctx_max: 2048
    slots: 2
    workloads: [completion, chat]
    replicas: [{url: "%s"}]
`, t.TempDir(), over.URL, ok.URL))
	eventually(t, "pool ok ready", func() bool {
		r, err := d.c.GetPoolHealthWithResponse(context.Background(), "ok", nil)
		return err == nil && r.JSON200 != nil && r.JSON200.Ready
	})
	const maxTokens = 5
	aborted := func(t *testing.T) {
		t.Helper()
		select {
		case f := <-finished:
			if !errors.Is(f.Err, context.Canceled) || f.Tokens >= 1000 {
				t.Errorf("the engine's request ended with %+v, want it aborted (context canceled) long before its 1000 tokens", f)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the engine's request never ended")
		}
	}

	t.Run("task stream", func(t *testing.T) {
		prompt := "Hello there"
		r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
			TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Completion, ModelRef: "sim-over",
			Engine: client.Sglang, Ctx: 2048, Priority: client.Interactive, Prompt: &prompt, MaxTokens: maxTokens,
			DeadlineMs: 60000,
		})
		if err != nil || r.StatusCode() != 202 {
			t.Fatalf("create: %v %d %s", err, r.StatusCode(), r.Body)
		}
		resp, br := d.openStream(t, r.JSON202.TaskId)
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
		if tokens != maxTokens || last.event != "end" || !strings.Contains(last.data, `"tokens_out":5,`) ||
			!strings.Contains(last.data, `"stop_reason":"limit"`) {
			t.Errorf("%d token frames, last frame %+v; want %d and an end with stop_reason limit", tokens, last, maxTokens)
		}
		aborted(t)
		if n := strings.Count(d.logs.String(), "the engine generated past the task's max_tokens"); n != 1 {
			t.Errorf("the overrun was logged %d times, want once", n)
		}
	})

	type answer struct {
		Choices []struct {
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	post := func(t *testing.T, body string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, d.url+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-API-Key", testKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
		}
		return resp
	}
	for _, model := range []string{"sim-ok", "sim-over"} {
		t.Run("facade "+model, func(t *testing.T) {
			resp := post(t, `{"model":"`+model+`","max_tokens":5,"messages":[{"role":"user","content":"Hello there"}]}`)
			var a answer
			err := json.NewDecoder(resp.Body).Decode(&a)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Choices) != 1 || a.Choices[0].FinishReason != "length" || a.Usage.CompletionTokens != maxTokens {
				t.Errorf("answer %+v, want finish_reason length and %d completion tokens", a, maxTokens)
			}
			if model == "sim-over" {
				aborted(t)
			}

			resp = post(t, `{"model":"`+model+`","max_tokens":5,"stream":true,"stream_options":{"include_usage":true},`+
				`"messages":[{"role":"user","content":"Hello there"}]}`)
			defer resp.Body.Close()
			var content int
			var finish string
			var usage *answer
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				data, found := strings.CutPrefix(sc.Text(), "data: ")
				if !found || data == "[DONE]" {
					continue
				}
				var c struct {
					Choices []struct {
						Delta struct {
							Content string `json:"content"`
						} `json:"delta"`
						FinishReason *string `json:"finish_reason"`
					} `json:"choices"`
					Usage *json.RawMessage `json:"usage"`
				}
				if err := json.Unmarshal([]byte(data), &c); err != nil {
					t.Fatalf("chunk %s: %v", data, err)
				}
				for _, ch := range c.Choices {
					if ch.Delta.Content != "" {
						content++
					}
					if ch.FinishReason != nil {
						finish = *ch.FinishReason
					}
				}
				if c.Usage != nil {
					usage = new(answer)
					if err := json.Unmarshal([]byte(data), usage); err != nil {
						t.Fatal(err)
					}
				}
			}
			if content != maxTokens || finish != "length" || usage == nil || usage.Usage.CompletionTokens != maxTokens {
				t.Errorf("stream: %d content chunks, finish_reason %q, usage %+v; want %d, length and %d completion tokens",
					content, finish, usage, maxTokens, maxTokens)
			}
			if model == "sim-over" {
				aborted(t)
			}
		})
	}
}
