package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
)

// TestSecondSignalStopsAtOnce: the first SIGTERM starts the graceful shutdown, which waits up
// to shutdown_grace (here ten minutes) for a task that is still generating; a second SIGTERM
// (an operator's second Ctrl-C, a service manager's repeated stop) ends the daemon at once,
// by the signal's default action.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	// An OpenAI-compatible engine whose generations never produce a token until the test ends.
	generating := make(chan struct{}, 1)
	done := make(chan struct{})
	eng := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
		case "/v1/models":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"tiny","object":"model","owned_by":"x"}]}`)
		case "/v1/completions":
			select {
			case generating <- struct{}{}:
			default:
			}
			select {
			case <-done:
			case <-r.Context().Done():
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer eng.Close()
	defer close(done) // before eng.Close: the hanging handler returns
	bin := buildDaemon(t)
	state := t.TempDir()
	t.Setenv("ORCHD_STATE_DIR", state) // make exports one; the environment wins over the file
	config := filepath.Join(t.TempDir(), "config.yaml")
	yaml := fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
log_format: json
shutdown_grace: 10m
pools:
  - id: sim
    engine: openai
    model_ref: tiny
    ctx_max: 4096
    slots: 1
    workloads: [completion]
    replicas: [{url: %q}]
`, state, eng.URL)
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, bin, config)
	prompt := "Once"
	r, err := p.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
		TaskId: uuid.New(), SessionId: uuid.New(), Workload: client.Completion, ModelRef: "tiny",
		Engine: client.Openai, Ctx: 1024, Priority: client.Interactive, Prompt: &prompt, MaxTokens: 8, DeadlineMs: 3_600_000,
	})
	if err != nil || r.StatusCode() != http.StatusAccepted {
		t.Fatalf("create: %v %v", err, r)
	}
	select {
	case <-generating:
	case <-time.After(60 * time.Second):
		t.Fatalf("the task never reached the engine:\n%s", p.log())
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The first starts the graceful shutdown, which waits for the task (shutdown_grace 10m).
	waitLog(t, p, "shutting down: admission stopped")
	select {
	case <-p.exit:
		t.Fatalf("the daemon exited on the first SIGTERM with a task generating and shutdown_grace 10m:\n%s", p.log())
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exit:
	case <-time.After(60 * time.Second): // far beyond a signal's delivery, far below the grace
		t.Fatalf("a second SIGTERM did not stop the daemon:\n%s", p.log())
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("the daemon ended with %v, want killed by SIGTERM", p.cmd.ProcessState)
	}
}

// waitLog waits until the daemon's log has a line with msg.
func waitLog(t *testing.T, p *proc, msg string) {
	t.Helper()
	for end := time.Now().Add(60 * time.Second); !strings.Contains(p.log(), `"msg":"`+msg); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no %q in the log:\n%s", msg, p.log())
		}
	}
}
