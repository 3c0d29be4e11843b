package contracts

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestOpenAICanceledTaskIsNotRetried: a facade completion whose task is canceled through the
// task API (POST /v1/tasks/{id}/cancel, by its owner or an operator who read X-Task-Id) is
// answered 409 task_canceled with x-should-retry: false. It was a 500 internal_error, which the
// official OpenAI clients retry (openai/_base_client.py, _should_retry: they obey
// x-should-retry, else retry every 409, 429 and 5xx): the cancel was undone, the client posting
// the same completion again as new tasks.
func TestOpenAICanceledTaskIsNotRetried(t *testing.T) {
	h := newHarness(t)
	h.fake.SetGated(true)

	// 1. The wire answer.
	body := `{"model":"` + modelID + `","max_tokens":8,"messages":[{"role":"user","content":"Hi"}]}`
	type answer struct {
		resp *http.Response
		out  []byte
	}
	ch := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequestWithContext(h.ctx(t), http.MethodPost, h.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header = bearer(testKey)
		resp, err := h.raw.Do(req)
		if err != nil {
			ch <- answer{}
			return
		}
		defer resp.Body.Close()
		b := make([]byte, 4096)
		n, _ := resp.Body.Read(b)
		ch <- answer{resp, b[:n]}
	}()
	eventually(t, "the completion's generation started", func() bool { return len(h.fake.Requests()) == 1 })
	h.cancel(t, uuid.MustParse(h.fake.Requests()[0].TaskID))
	a := <-ch
	if a.resp == nil {
		t.Fatal("no answer")
	}
	if typ, code, _ := openAIErr(t, a.out); a.resp.StatusCode != http.StatusConflict || code != "task_canceled" ||
		typ != "invalid_request_error" || a.resp.Header.Get("x-should-retry") != "false" {
		t.Errorf("a canceled task's completion: %d %s, x-should-retry %q; want 409 task_canceled that OpenAI clients do not retry",
			a.resp.StatusCode, a.out, a.resp.Header.Get("x-should-retry"))
	}

	// 2. What the official Python client does with it (skipped without the client).
	py := os.Getenv("ORCHD_CLIENTS_PYTHON")
	if py == "" {
		py = filepath.Join("..", ".venv-clients", "bin", "python")
	}
	if err := exec.Command(py, "-c", "import openai").Run(); err != nil {
		t.Skipf("no Python with the openai client (%v)", err)
	}
	script := `
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=2)
try:
    c.chat.completions.create(model=sys.argv[3], max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    print("answered")
except openai.APIStatusError as e:
    print("raised", type(e).__name__, e.status_code)
`
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", script, h.url, testKey, modelID)
	done := make(chan struct{})
	var out []byte
	var runErr error
	go func() { out, runErr = cmd.CombinedOutput(); close(done) }()
	// Cancel every task the client's requests start, as an operator would cancel "the" task.
	seen := 1
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(5 * time.Millisecond):
			if reqs := h.fake.Requests(); len(reqs) > seen {
				for _, r := range reqs[seen:] {
					h.cancel(t, uuid.MustParse(r.TaskID))
				}
				seen = len(reqs)
			}
		}
	}
	if runErr != nil {
		t.Fatalf("python: %v\n%s", runErr, out)
	}
	if posted := len(h.fake.Requests()) - 1; posted != 1 {
		t.Errorf("one chat.completions.create whose task was canceled ran as %d tasks (the client retried the cancel's answer): %s",
			posted, strings.TrimSpace(string(out)))
	}
}
