package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/llamacpp/llamatest"
	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/internal/gguf"
)

const crashKey = "crash-test-key-0123456789"

// proc is an orchestratord process.
type proc struct {
	cmd  *exec.Cmd
	url  string
	c    *client.ClientWithResponses
	exit chan struct{}
	logs *bytes.Buffer
	mu   *sync.Mutex
}

// buildDaemon builds this command into a temporary directory.
func buildDaemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "orchestratord")
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the daemon with: %v", err)
	}
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startProc runs the daemon binary with config and waits until its pool is ready.
func startProc(t *testing.T, bin, config string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "--config", config)
	cmd.Env = append(os.Environ(), "ORCHD_API_KEYS="+crashKey)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, exit: make(chan struct{}), logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			p.mu.Lock()
			p.logs.Write(line)
			p.logs.WriteByte('\n')
			p.mu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "orchestratord listening" {
				addr <- rec.Addr
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(p.exit) }()
	t.Cleanup(func() { p.kill() })
	select {
	case a := <-addr:
		p.url = "http://" + a
	case <-p.exit:
		t.Fatalf("orchestratord exited at start:\n%s", p.log())
	case <-time.After(60 * time.Second):
		t.Fatalf("orchestratord did not listen within 60s:\n%s", p.log())
	}
	p.c, err = client.NewClientWithResponses(p.url, client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("X-API-Key", crashKey)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		r, err := p.c.GetPoolHealthWithResponse(context.Background(), "sim", nil)
		if err == nil && r.JSON200 != nil && r.JSON200.Ready {
			return p
		}
		if i > 600 {
			t.Fatalf("pool never became ready: %v\n%s", err, p.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exit
}

type sseFrame struct {
	id          int
	event, data string
	raw         string
}

// readFrames reads frames from an open stream until stop says so or the stream ends.
func readFrames(t *testing.T, br *bufio.Reader, stop func([]sseFrame) bool) []sseFrame {
	t.Helper()
	var out []sseFrame
	var f sseFrame
	var raw strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return out
		}
		if strings.HasPrefix(line, ":") { // keep-alive comments are not frames
			continue
		}
		raw.WriteString(line)
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			f.raw = raw.String()
			raw.Reset()
			out = append(out, f)
			f = sseFrame{}
			if stop != nil && stop(out) {
				return out
			}
		case strings.HasPrefix(line, "id: "):
			f.id, _ = strconv.Atoi(line[4:])
		case strings.HasPrefix(line, "event: "):
			f.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			f.data = line[6:]
		}
	}
}

// stream reads a task's stream after lastID (-1: from the start) to its end, within a bounded
// time.
func (p *proc) stream(t *testing.T, id uuid.UUID, lastID int) []sseFrame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var params client.StreamTaskParams
	if lastID >= 0 {
		s := strconv.Itoa(lastID)
		params.LastEventID = &s
	}
	resp, err := p.c.StreamTask(ctx, id, &params)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream %s: %d %s", id, resp.StatusCode, b)
	}
	frames := readFrames(t, bufio.NewReader(resp.Body), nil)
	if ctx.Err() != nil {
		t.Fatalf("stream %s did not end within its bound; %d frames", id, len(frames))
	}
	return frames
}

func text(frames []sseFrame) string {
	var b strings.Builder
	for _, f := range frames {
		if f.event == "token" {
			var tok struct{ T string }
			_ = json.Unmarshal([]byte(f.data), &tok)
			b.WriteString(tok.T)
		}
	}
	return b.String()
}

func raw(frames []sseFrame) string {
	var b strings.Builder
	for _, f := range frames {
		b.WriteString(f.raw)
	}
	return b.String()
}

// TestKill9LosesNothingAdmitted runs the real binary on a real llama-server, kill -9s it with
// tasks finished, streaming and queued, restarts it on the same state directory and checks
// every task and every stream.
func TestKill9LosesNothingAdmitted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon and llama-server")
	}
	if _, ok := llamatest.ServerPath(); !ok {
		t.Skip(llamatest.SkipMessage)
	}
	// A model big enough (~370 tokens/s on one core) that a 1500-token task streams for
	// seconds: the kill finds tasks mid-stream and queued.
	model := filepath.Join(t.TempDir(), "med.gguf")
	opts := gguf.DefaultOptions()
	opts.Embd, opts.Layers, opts.FF, opts.Heads = 256, 4, 512, 4
	if err := gguf.WriteFile(model, opts); err != nil {
		t.Fatal(err)
	}
	engineURL := llamatest.Start(t, model, "-np", "2", "-c", "8192")
	bin := buildDaemon(t)
	state := t.TempDir()
	config := filepath.Join(t.TempDir(), "config.yaml")
	yaml := fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
log_format: json
admission: {capacity: 16, policy: reject}
shutdown_grace: 1s
stream: {cancel_on_disconnect: false}   # the test reads part of a stream, then hangs up
journal: {fsync_interval: 2ms}
pools:
  - id: sim
    engine: llamacpp
    model_ref: med
    model_id: med
    ctx_max: 4096
    slots: 2
    replicas:
      - url: %s
`, state, engineURL)
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	const maxTokens = 1500
	prompt := "Once upon a time"
	seed := int64(7)
	strict := client.Strict
	body := func(id uuid.UUID, prio client.Priority) client.TaskRequest {
		return client.TaskRequest{TaskId: id, SessionId: uuid.New(), Workload: client.Completion, ModelRef: "med",
			Engine: client.Llamacpp, Ctx: 4096, Priority: prio, Prompt: &prompt, MaxTokens: maxTokens,
			DeadlineMs: 600000, Seed: &seed, Determinism: &strict}
	}
	bodies := map[uuid.UUID]client.TaskRequest{}
	submit := func(p *proc, prio client.Priority) uuid.UUID {
		t.Helper()
		id := uuid.New()
		bodies[id] = body(id, prio)
		r, err := p.c.CreateTaskWithResponse(context.Background(), nil, bodies[id])
		if err != nil || r.StatusCode() != 202 {
			t.Fatalf("create: %v %d %s", err, r.StatusCode(), r.Body)
		}
		return id
	}

	p := startProc(t, bin, config)
	// Two tasks finish before the crash; their text is the reference for the same request.
	fin := []uuid.UUID{submit(p, client.Interactive), submit(p, client.Interactive)}
	finStreams := map[uuid.UUID][]sseFrame{}
	for _, id := range fin {
		finStreams[id] = p.stream(t, id, -1)
		if last := finStreams[id][len(finStreams[id])-1]; last.event != "end" {
			t.Fatalf("finished task ended with %+v", last)
		}
	}
	ref := text(finStreams[fin[0]])
	if ref == "" || text(finStreams[fin[1]]) != ref {
		t.Fatalf("the engine is not deterministic here: %q vs %q", ref, text(finStreams[fin[1]]))
	}

	// Two stream (the pool has 2 slots); three wait: batch, interactive, batch.
	streaming := []uuid.UUID{submit(p, client.Interactive), submit(p, client.Interactive)}
	queued := []uuid.UUID{submit(p, client.Batch), submit(p, client.Interactive), submit(p, client.Batch)}
	seen := map[uuid.UUID][]sseFrame{}
	for _, id := range streaming {
		resp, err := p.c.StreamTask(context.Background(), id, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream: %v", err)
		}
		seen[id] = readFrames(t, bufio.NewReader(resp.Body), func(fs []sseFrame) bool { return len(fs) >= 6 })
		resp.Body.Close()
		if len(seen[id]) < 6 {
			t.Fatalf("stream of %s ended early: %+v", id, seen[id])
		}
	}
	for _, id := range queued {
		r, err := p.c.GetTaskWithResponse(context.Background(), id, nil)
		if err != nil || r.JSON200 == nil || r.JSON200.State != client.Queued {
			t.Fatalf("task %s before the kill: %v %s", id, err, r.Body)
		}
	}

	p.kill()
	p = startProc(t, bin, config)

	// Finished tasks read exactly as before.
	for _, id := range fin {
		r, err := p.c.GetTaskWithResponse(context.Background(), id, nil)
		if err != nil || r.JSON200 == nil || r.JSON200.State != client.Succeeded || r.JSON200.TokensOut != maxTokens {
			t.Fatalf("finished task %s after the restart: %v %s", id, err, r.Body)
		}
		if got := raw(p.stream(t, id, -1)); got != raw(finStreams[id]) {
			t.Fatalf("finished task %s: its stream changed across the restart", id)
		}
	}
	// Streaming tasks: resuming after the last event seen gives exactly the missed events,
	// ids continuing, ending with a retriable WORKER_RESET.
	for _, id := range streaming {
		before := seen[id]
		last := before[len(before)-1].id
		rest := p.stream(t, id, last)
		if len(rest) == 0 {
			t.Fatalf("task %s: nothing after event %d", id, last)
		}
		for i, f := range rest {
			if f.id != last+1+i {
				t.Fatalf("task %s: event %d after resuming from %d has id %d", id, i, last, f.id)
			}
		}
		end := rest[len(rest)-1]
		var e struct {
			Code      string
			Retriable bool
		}
		if err := json.Unmarshal([]byte(end.data), &e); err != nil || end.event != "error" || e.Code != "WORKER_RESET" || !e.Retriable {
			t.Fatalf("task %s ended with %+v", id, end)
		}
		full := p.stream(t, id, -1)
		if raw(full[:len(before)]) != raw(before) || raw(full[len(before):]) != raw(rest) {
			t.Fatalf("task %s: the stream from the start is not what was seen plus the resumed part", id)
		}
		r, err := p.c.GetTaskWithResponse(context.Background(), id, nil)
		if err != nil || r.JSON200 == nil || r.JSON200.State != client.Failed || r.JSON200.Error == nil || !r.JSON200.Error.Retriable {
			t.Fatalf("interrupted task %s: %v %s", id, err, r.Body)
		}
	}
	// Queued tasks run to completion with the exact text, interactive before batch.
	started := map[uuid.UUID]int64{}
	for _, id := range queued {
		frames := p.stream(t, id, -1)
		if last := frames[len(frames)-1]; last.event != "end" || !strings.Contains(last.data, fmt.Sprintf(`"tokens_out":%d`, maxTokens)) {
			t.Fatalf("queued task %s ended with %+v", id, last)
		}
		if got := text(frames); got != ref {
			t.Fatalf("queued task %s: text differs from the reference (%d vs %d bytes)", id, len(got), len(ref))
		}
		r, err := p.c.GetTaskWithResponse(context.Background(), id, nil)
		if err != nil || r.JSON200 == nil || r.JSON200.State != client.Succeeded || r.JSON200.StartedMs == nil {
			t.Fatalf("queued task %s after the restart: %v %s", id, err, r.Body)
		}
		started[id] = *r.JSON200.StartedMs
	}
	// Two slots: the interactive one and the first batch start together, the second batch last.
	if s := started[queued[2]]; s < started[queued[0]] || s < started[queued[1]] {
		t.Fatalf("start order: %v (batch, interactive, batch)", started)
	}
	// Re-posts after the restart: the same body matches, another body conflicts.
	r, err := p.c.CreateTaskWithResponse(context.Background(), nil, bodies[fin[0]])
	if err != nil || r.StatusCode() != 202 {
		t.Fatalf("idempotent re-post: %v %d %s", err, r.StatusCode(), r.Body)
	}
	other := bodies[queued[0]]
	otherPrompt := "another prompt"
	other.Prompt = &otherPrompt
	r, err = p.c.CreateTaskWithResponse(context.Background(), nil, other)
	if err != nil || r.StatusCode() != 409 {
		t.Fatalf("re-post with another body: %v %d %s", err, r.StatusCode(), r.Body)
	}
}
