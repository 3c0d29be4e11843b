package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
)

// examples/openai.yaml puts a pool with `model_ref: llama3.2` in front of Ollama, which
// serves every model pulled and lists them all in /v1/models. The pool's tasks generate with
// llama3.2, not with whichever model /v1/models lists first (two pools on one Ollama with
// different model_refs ran the same model).
func TestOpenAIPoolRequestsItsModelRef(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	ollama := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"other-model","object":"model","owned_by":"library"},{"id":"llama3.2","object":"model","owned_by":"library"}]}`))
		case r.Method == http.MethodPost && r.URL.Path == "/v1/completions":
			var body struct {
				Model string `json:"model"`
			}
			_ = json.NewDecoder(r.Body).Decode(&body)
			mu.Lock()
			asked = append(asked, body.Model)
			mu.Unlock()
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"model\":%q,\"choices\":[{\"index\":0,\"text\":\" hi\",\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n", body.Model)
			fmt.Fprint(w, "data: [DONE]\n\n")
		default:
			http.NotFound(w, r)
		}
	})
	ts := httptest.NewServer(ollama)
	defer ts.Close()
	d := startDaemonYAML(t, fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
shutdown_grace: 1s
pools:
  - id: default
    engine: openai
    model_ref: llama3.2
    ctx_max: 4096
    slots: 4
    workloads: [completion, chat]
    replicas: [{url: %q}]
`, t.TempDir(), ts.URL))
	prompt := "Hello"
	r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
		TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Completion, ModelRef: "llama3.2",
		Engine: client.Openai, Ctx: 2048, Priority: client.Interactive, Prompt: &prompt, MaxTokens: 1, DeadlineMs: 60000,
	})
	if err != nil || r.StatusCode() != http.StatusAccepted {
		t.Fatalf("create: %v %d %s", err, r.StatusCode(), r.Body)
	}
	resp, br := d.openStream(t, r.JSON202.TaskId)
	last := lastFrame(t, br)
	resp.Body.Close()
	if last.event != "end" {
		t.Fatalf("last frame %+v", last)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 || asked[0] != "llama3.2" {
		t.Errorf("a task of the pool with model_ref llama3.2 asked the engine for model %q, want llama3.2", asked)
	}
}
