package contracts

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
)

// TestOpenAIQueuedCompletionAtShutdown: a non-streaming facade completion still queued when the
// daemon stops. Its task was kept queued for the next start like a task of the task API, but no
// client can come back to it: the waiting client got no answer (a bare EOF, which OpenAI clients
// retry as a new request), http.Server.Shutdown waited its 10 s for the handler, and the next
// start ran the task for nobody. Now the shutdown ends it: the client gets a retriable 503
// server_error at once, and the next start does not run it.
func TestOpenAIQueuedCompletionAtShutdown(t *testing.T) {
	stateDir := filepath.Join(t.TempDir(), "state")
	h := newHarness(t, withStateDir(stateDir), withSlots(1), withFakeSetup(func(f *fakeEngine) { f.SetGated(true) }))
	running := h.submit(t, taskReq(uuid.New())).JSON202.TaskId // holds the only slot
	h.waitState(t, running, client.Running)
	type answer struct {
		status int
		out    string
		retry  string // x-should-retry
		err    error
	}
	ch := make(chan answer, 1)
	go func() {
		body := `{"model":"` + modelID + `","max_tokens":3,"messages":[{"role":"user","content":"Hi"}]}`
		req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header = bearer(testKey)
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b := make([]byte, 2048)
		n, _ := resp.Body.Read(b)
		ch <- answer{status: resp.StatusCode, out: string(b[:n]), retry: resp.Header.Get("x-should-retry")}
	}()
	// The completion is queued behind the running task.
	eventually(t, "the completion queued", func() bool {
		r, err := h.client.GetPoolHealthWithResponse(h.ctx(t), poolID, nil)
		return err == nil && r.JSON200 != nil && r.JSON200.Metrics.QueueDepth == 1
	})
	stopStart := time.Now()
	h.stop()
	if took := time.Since(stopStart); took > 5*time.Second {
		t.Errorf("the daemon (shutdown_grace 50ms) took %s to stop: the facade handler held http.Server.Shutdown", took.Round(time.Millisecond))
	}
	a := <-ch
	if a.err != nil || a.status != http.StatusServiceUnavailable || !strings.Contains(a.out, `"type":"server_error"`) || a.retry == "false" {
		t.Errorf("the waiting facade client at shutdown: %d %s (x-should-retry %q) %v; want a retriable 503 server_error", a.status, a.out, a.retry, a.err)
	}

	h2 := newHarness(t, withStateDir(stateDir), withSlots(1))
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range h2.fake.Requests() {
			if strings.Contains(r.Prompt, "User: Hi") {
				t.Fatalf("after the restart the daemon ran the facade completion of before it (task %s, prompt %q): nobody can read its answer",
					r.TaskID, r.Prompt)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}
