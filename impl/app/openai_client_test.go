package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
)

// sentence is what the generated model says, whatever the prompt, in 10 tokens.
const sentence = " The quick brown fox jumps over the lazy dog."

// clientsPython is a Python with the pinned official clients (tools/enginesim/clients/
// requirements.txt): $ORCHD_CLIENTS_PYTHON (make unit sets it; then it must work), else
// <repo>/.venv-clients/bin/python (make clients-venv). The test skips when neither is there.
func clientsPython(t *testing.T) string {
	t.Helper()
	if py := os.Getenv("ORCHD_CLIENTS_PYTHON"); py != "" {
		if out, err := exec.Command(py, "-c", "import openai").CombinedOutput(); err != nil {
			t.Fatalf("ORCHD_CLIENTS_PYTHON=%s cannot import openai: %v\n%s", py, err, out)
		}
		return py
	}
	py := filepath.Join("..", "..", ".venv-clients", "bin", "python")
	if err := exec.Command(py, "-c", "import openai").Run(); err != nil {
		t.Skip("no Python with the openai client: run make clients-venv or set ORCHD_CLIENTS_PYTHON")
	}
	return py
}

// pyResult is one JSON line of testdata/openai_client.py.
type pyResult struct {
	Check        string   `json:"check"`
	Models       []string `json:"models"`
	TaskID       string   `json:"task_id"`
	Object       string   `json:"object"`
	Role         string   `json:"role"`
	Text         string   `json:"text"`
	First        string   `json:"first"`
	Chunks       int      `json:"chunks"`
	FinishReason string   `json:"finish_reason"`
	Usage        *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Raised     *string `json:"raised"`
	Status     int     `json:"status"`
	Code       string  `json:"code"`
	Type       string  `json:"type"`
	Param      string  `json:"param"`
	RetryAfter string  `json:"retry_after"`
	BackoffMs  string  `json:"backoff_ms"`
	Reset      string  `json:"reset"`
}

// runClient runs one check of the script and returns its lines by check name.
func runClient(t *testing.T, py string, d *daemon, args ...string) map[string]pyResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // only against a hung client
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{filepath.Join("testdata", "openai_client.py"), d.url, testKey}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openai_client.py %v: %v\n%s%s", args, err, out, stderr.Bytes())
	}
	res := map[string]pyResult{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r pyResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		res[r.Check] = r
	}
	return res
}

// The official openai Python client against the daemon with the real llama-server: exact text
// streaming and not, usage, its typed errors, and closing a stream cancels the task.
func TestOpenAIPythonClient(t *testing.T) {
	py := clientsPython(t)
	d := startDaemon(t, t.TempDir(), "reject", 1)
	const model = "med" // the pool's model_id, from models/med.gguf

	taskState := func(t *testing.T, id string) client.TaskState {
		t.Helper()
		u, err := uuid.Parse(id)
		if err != nil {
			t.Fatalf("X-Task-Id %q: %v", id, err)
		}
		r, err := d.c.GetTaskWithResponse(context.Background(), u, nil)
		if err != nil || r.JSON200 == nil {
			t.Fatalf("getTask %s: %v %v", id, err, r)
		}
		return *r.JSON200
	}

	t.Run("text", func(t *testing.T) {
		res := runClient(t, py, d, model, "text", "10")
		if m := res["models"]; strings.Join(m.Models, ",") != model {
			t.Errorf("models %v", m.Models)
		}
		for _, tt := range []struct{ check, object string }{
			{"completion", "text_completion"}, {"chat", "chat.completion"}, {"completion-stream", ""}, {"chat-stream", ""},
		} {
			r, ok := res[tt.check]
			switch {
			case !ok:
				t.Errorf("%s: no result", tt.check)
				continue
			case r.Text != sentence || r.FinishReason != "length" || r.Object != tt.object:
				t.Errorf("%s: %+v, want %q", tt.check, r, sentence)
			case r.Usage == nil || r.Usage.CompletionTokens != 10 || r.Usage.PromptTokens == 0 ||
				r.Usage.TotalTokens != r.Usage.PromptTokens+10:
				t.Errorf("%s: usage %+v", tt.check, r.Usage)
			case tt.object == "" && r.Chunks != 10:
				t.Errorf("%s: %d content chunks, want one per token", tt.check, r.Chunks)
			case tt.check == "chat" && r.Role != "assistant":
				t.Errorf("chat: role %q", r.Role)
			}
			if st := taskState(t, r.TaskID); st.State != client.Succeeded || st.TokensOut != 10 {
				t.Errorf("%s: task %+v", tt.check, st)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		res := runClient(t, py, d, model, "errors")
		if r := res["auth"]; r.Raised == nil || *r.Raised != "AuthenticationError" || r.Status != 401 || r.Code != "invalid_api_key" {
			t.Errorf("wrong key: %+v", r)
		}
		if r := res["notfound"]; r.Raised == nil || *r.Raised != "NotFoundError" || r.Status != 404 || r.Code != "model_not_found" || r.Param != "model" {
			t.Errorf("unknown model: %+v", r)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		// The only slot runs a long task, the only queue place holds another: the next is refused.
		running, r := d.submit(t, client.Interactive, 4000)
		if r.StatusCode() != 202 {
			t.Fatalf("create: %d %s", r.StatusCode(), r.Body)
		}
		defer func() { _, _ = d.c.CancelTaskWithResponse(context.Background(), running, nil) }()
		for taskState(t, running.String()).State != client.Running {
			time.Sleep(10 * time.Millisecond)
		}
		queued, r := d.submit(t, client.Interactive, 10)
		if r.StatusCode() != 202 {
			t.Fatalf("create: %d %s", r.StatusCode(), r.Body)
		}
		defer func() { _, _ = d.c.CancelTaskWithResponse(context.Background(), queued, nil) }()
		res := runClient(t, py, d, model, "ratelimit")
		rl := res["ratelimit"]
		if rl.Raised == nil || *rl.Raised != "RateLimitError" || rl.Status != 429 || rl.Code != "rate_limit_exceeded" ||
			rl.RetryAfter == "" || rl.BackoffMs == "" || !strings.HasSuffix(rl.Reset, "s") {
			t.Errorf("full queue: %+v", rl)
		}
	})

	t.Run("closing the stream cancels the task", func(t *testing.T) {
		for d.tasksInFlight(t) {
			time.Sleep(10 * time.Millisecond) // the rate-limit subtest's tasks are being canceled
		}
		res := runClient(t, py, d, model, "close", "4000")
		r := res["close"]
		if r.First != " The" {
			t.Errorf("first chunk %q", r.First)
		}
		var st client.TaskState
		for i := 0; ; i++ {
			st = taskState(t, r.TaskID)
			if st.State == client.Canceled || i > 500 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if st.State != client.Canceled || st.TokensOut >= 4000 {
			t.Errorf("after the client closed its stream: %+v", st)
		}
	})
}

// tasksInFlight reports whether the pool still has queued or running tasks.
func (d *daemon) tasksInFlight(t *testing.T) bool {
	t.Helper()
	r, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
	if err != nil || r.JSON200 == nil {
		t.Fatalf("pool health: %v", err)
	}
	m := r.JSON200.Metrics
	return m.QueueDepth > 0 || m.SlotsBusy > 0
}
