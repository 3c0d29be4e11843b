package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/internal/testdaemon"
	"github.com/orchestratord/orchestratord/sdk"
)

// TestMain runs orchctl itself when the terminal test re-executes this binary with
// ORCHCTL_TEST_MAIN=1, and otherwise the tests, checked for leaked goroutines.
func TestMain(m *testing.M) {
	if os.Getenv("ORCHCTL_TEST_MAIN") == "1" {
		main()
	}
	goleak.VerifyTestMain(m)
}

const sentence = " The quick brown fox jumps over the lazy dog."

func startDaemon(t *testing.T, eng fake.Options) *testdaemon.Daemon {
	t.Helper()
	return startDaemonWith(t, "", eng)
}

// startDaemonWith is startDaemon with YAML sections added to the daemon's configuration.
func startDaemonWith(t *testing.T, sections string, eng fake.Options) *testdaemon.Daemon {
	t.Helper()
	d, err := testdaemon.Start(testdaemon.Options{Fake: eng, Sections: sections})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	return d
}

type result struct {
	code           int
	stdout, stderr string
}

// orchctl runs the command line in-process with env as its environment.
func orchctl(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, stdio{in: strings.NewReader(stdin), out: &out, err: &errb},
		func(k string) string { return env[k] })
	return result{code, out.String(), errb.String()}
}

func TestRunPipedWritesPlainText(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	env := map[string]string{"ORCHD_URL": d.URL, "ORCHD_API_KEY": testdaemon.Key}
	tests := []struct {
		name  string
		stdin string
		args  []string
	}{
		{"prompt argument", "", []string{"run", "-n", "10", "Once upon a time"}},
		{"prompt on stdin", "Once upon a time\n", []string{"run", "--max-tokens", "10", "-"}},
		{"explicit model", "", []string{"run", "-n", "10", "--model", testdaemon.ModelID, "hi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := orchctl(t, env, tt.stdin, tt.args...)
			if r.code != 0 || r.stdout != sentence+"\n" || r.stderr != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 0, %q, nothing", r.code, r.stdout, r.stderr, sentence+"\n")
			}
		})
	}
	if got := d.Fake.Requests()[1].Prompt; got != "Once upon a time" {
		t.Errorf("stdin prompt %q", got)
	}
}

func TestRunJSON(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	r := orchctl(t, nil, "", "--url", d.URL, "--api-key", testdaemon.Key, "run", "-n", "3", "--json", "hi")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var names []string
	var text strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var ev struct {
			TaskID string `json:"task_id"`
			ID     int64
			Event  string
			Data   map[string]any
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if ev.TaskID != taskIDOf(t, d) { // for tasks get/cancel: the events carry none
			t.Errorf("line %q: task_id %q, want %s", line, ev.TaskID, taskIDOf(t, d))
		}
		if ev.Event == "metrics" {
			continue
		}
		names = append(names, ev.Event)
		if ev.Event == "token" {
			text.WriteString(ev.Data["t"].(string))
		}
	}
	if strings.Join(names, ",") != "started,token,token,token,end" || text.String() != " The quick brown" {
		t.Errorf("events %v, text %q", names, text.String())
	}
}

func TestKeyFromTheStateDirectoryOnLoopback(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "api-key"), []byte(testdaemon.Key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
	}{
		{"--state-dir", map[string]string{"ORCHD_URL": d.URL}, []string{"--state-dir", dir}, 0},
		{"ORCHD_STATE_DIR", map[string]string{"ORCHD_URL": d.URL, "ORCHD_STATE_DIR": dir}, nil, 0},
		{"localhost", map[string]string{"ORCHD_STATE_DIR": dir}, []string{"--url", strings.Replace(d.URL, "127.0.0.1", "localhost", 1)}, 0},
		{"a flag key wins", map[string]string{"ORCHD_URL": d.URL, "ORCHD_STATE_DIR": dir}, []string{"--api-key", "wrong-key-0123456789"}, exitClient},
		{"no key", map[string]string{"ORCHD_URL": d.URL, "ORCHD_STATE_DIR": t.TempDir()}, nil, exitClient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := orchctl(t, tt.env, "", append(tt.args, "pools", "health", testdaemon.PoolID)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d: %s", r.code, tt.wantCode, r.stderr)
			}
		})
	}
}

// TestKeyFromTheEnvironmentIsTrimmed guards that ORCHD_API_KEY and --api-key are TrimSpace'd
// like the key file: a key with a trailing newline (a Kubernetes secret, a file exported as
// is) would otherwise fail every command with an invalid X-Api-Key header value (exit 1).
func TestKeyFromTheEnvironmentIsTrimmed(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	for name, tt := range map[string]struct {
		env  map[string]string
		args []string
	}{
		"ORCHD_API_KEY": {map[string]string{"ORCHD_URL": d.URL, "ORCHD_API_KEY": testdaemon.Key + "\n"}, nil},
		"--api-key":     {map[string]string{"ORCHD_URL": d.URL}, []string{"--api-key", " " + testdaemon.Key + "\n"}},
	} {
		r := orchctl(t, tt.env, "", append(tt.args, "capabilities")...)
		if r.code != 0 || !strings.Contains(r.stdout, testdaemon.ModelID) {
			t.Errorf("%s with surrounding whitespace: exit %d, stderr %q; want 0 (as for the same key in the api-key file)", name, r.code, r.stderr)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for u, want := range map[string]bool{
		"http://127.0.0.1:8080": true, "http://localhost": true, "http://[::1]:1": true, "http://127.9.9.9": true,
		"http://10.0.0.1:8080": false, "https://example.com": false, "::bad": false,
	} {
		if got := isLoopback(u); got != want {
			t.Errorf("isLoopback(%q) = %v", u, got)
		}
	}
}

// TestExitCodes: errors print the envelope's message and exit with the code of their class.
func TestExitCodes(t *testing.T) {
	envelope := func(status int, code, msg string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if status == 429 {
				w.Header().Set("Retry-After", "1")
			}
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg, "retriable": status >= 429})
		}
	}
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		args     []string
		wantCode int
		wantMsg  string
	}{
		{"400", envelope(400, "INVALID_PARAMS", "/max_tokens: number must be at least 1"), []string{"capabilities"}, exitClient, "/max_tokens: number must be at least 1"},
		{"404", envelope(404, "NOT_FOUND", "task not found"), []string{"tasks", "get", "6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11"}, exitClient, "task not found"},
		{"429", envelope(429, "ADMISSION_REJECT", "queue is full (capacity 8); retry later"), []string{"--retries", "0", "capabilities"}, exitBackpressure, "queue is full (capacity 8); retry later"},
		{"500", envelope(500, "INTERNAL", "boom"), []string{"sessions", "get", "6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11"}, exitServer, "boom"},
		{"503", envelope(503, "POOL_UNAVAILABLE", "no pool serves model x"), []string{"pools", "health", "p1"}, exitServer, "no pool serves model x"},
		{"not an envelope", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "bad gateway", http.StatusBadGateway) }, []string{"capabilities"}, exitServer, "bad gateway"},
		{"usage: bad id", envelope(200, "", ""), []string{"tasks", "get", "nope"}, exitUsage, "not a UUID"},
		{"usage: unknown flag", envelope(200, "", ""), []string{"run", "--nope", "x"}, exitUsage, "unknown flag"},
		{"usage: missing argument", envelope(200, "", ""), []string{"run"}, exitUsage, "accepts 1 arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			r := orchctl(t, map[string]string{"ORCHD_URL": srv.URL, "ORCHD_API_KEY": "k"}, "", tt.args...)
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantMsg) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestRunReportsAFailedTask(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	d.Fake.FailNext(engine.KindWorkerReset, 2)
	r := orchctl(t, map[string]string{"ORCHD_URL": d.URL, "ORCHD_API_KEY": testdaemon.Key}, "", "run", "hi")
	if r.code != exitTaskFailed || r.stdout != " The quick\n" || !strings.Contains(r.stderr, "WORKER_RESET") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestCommands drives every other command against the daemon.
func TestCommands(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	env := map[string]string{"ORCHD_URL": d.URL, "ORCHD_API_KEY": testdaemon.Key}
	// A finished task and its session, through the SDK-backed run --json.
	r := orchctl(t, env, "", "run", "-n", "2", "--json", "hi")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	st := orchctl(t, env, "", "tasks", "get", "--json", taskIDOf(t, d))
	var task struct {
		TaskID    string `json:"task_id"`
		SessionID string `json:"session_id"`
		State     string
	}
	if st.code != 0 || json.Unmarshal([]byte(st.stdout), &task) != nil || task.State != "succeeded" {
		t.Fatalf("tasks get: %d %q %q", st.code, st.stdout, st.stderr)
	}
	art := filepath.Join(t.TempDir(), "a.json")
	if err := os.WriteFile(art, []byte(`{"steps":["read","write"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	put := orchctl(t, env, "", "artifacts", "put", "--kind", "plan", art)
	artID := strings.TrimSpace(put.stdout)
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string // in stdout
	}{
		{"tasks get", "", []string{"tasks", "get", task.TaskID}, ": succeeded on pool " + testdaemon.PoolID},
		{"tasks get explains the placement", "", []string{"tasks", "get", task.TaskID}, "placement: replica " + testdaemon.PoolID + "/0 of pool " + testdaemon.PoolID + " (only_choice)"},
		{"tasks watch", "", []string{"tasks", "watch", task.TaskID}, " The quick\n"},
		{"tasks cancel (finished: no-op)", "", []string{"tasks", "cancel", task.TaskID}, ""},
		{"sessions get", "", []string{"sessions", "get", task.SessionID}, `"turns": 1`},
		{"sessions rm", "", []string{"sessions", "rm", task.SessionID}, ""},
		{"artifacts get", "", []string{"artifacts", "get", artID}, `"kind": "plan"`},
		{"artifacts put stdin", `{"kind":"plan","content":{"steps":["read","write"]}}`, []string{"artifacts", "put", "-"}, artID},
		{"pools health", "", []string{"pools", "health", testdaemon.PoolID}, `"ready": true`},
		{"capabilities", "", []string{"capabilities"}, `"model_id": "tiny"`},
		{"version", "", []string{"version"}, "daemon API "},
		{"completion", "", []string{"completion", "bash"}, "__start_orchctl"},
		{"pools drain --replica", "", []string{"pools", "drain", testdaemon.PoolID, "--replica", testdaemon.PoolID + "/0", "--deadline", "1m"}, `"deadline_ms": 60000`},
		{"pools health: the replica drains", "", []string{"pools", "health", testdaemon.PoolID}, `"state": "draining"`},
		{"pools resume", "", []string{"pools", "resume", testdaemon.PoolID, testdaemon.PoolID + "/0"}, `"state": "ready"`},
		{"pools drain", "", []string{"pools", "drain", testdaemon.PoolID, "--deadline", "1s"}, `"deadline_ms": 1000`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := orchctl(t, env, tt.stdin, tt.args...)
			if r.code != 0 || !strings.Contains(r.stdout, tt.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %q in stdout", r.code, r.stdout, r.stderr, tt.want)
			}
		})
	}
	if r := orchctl(t, env, "", "sessions", "get", task.SessionID); r.code != exitClient {
		t.Errorf("sessions get after rm: exit %d %q", r.code, r.stderr)
	}
	if r := orchctl(t, env, "", "pools", "reload", testdaemon.PoolID, "models/other.gguf"); r.code != exitClient {
		t.Errorf("reloading an external pool: exit %d %q, want %d", r.code, r.stderr, exitClient)
	}
}

// taskIDOf returns the id of the only task the fake engine has run.
func taskIDOf(t *testing.T, d *testdaemon.Daemon) string {
	t.Helper()
	reqs := d.Fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d engine requests", len(reqs))
	}
	return reqs[0].TaskID
}

func TestRunReportsATaskCanceledElsewhere(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	d.Fake.Pause()
	c, err := sdk.New(d.URL, sdk.Options{APIKey: testdaemon.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	canceled := make(chan error, 1)
	go func() {
		// Once orchctl's task runs, someone else cancels it.
		if err := d.Fake.WaitActive(context.Background(), 1); err != nil {
			canceled <- err
			return
		}
		id, err := uuid.Parse(d.Fake.Requests()[0].TaskID)
		if err == nil {
			err = c.Cancel(context.Background(), id)
		}
		canceled <- err
	}()
	r := orchctl(t, map[string]string{"ORCHD_URL": d.URL, "ORCHD_API_KEY": testdaemon.Key}, "", "run", "hi")
	if err := <-canceled; err != nil {
		t.Fatal(err)
	}
	if r.code != exitTaskFailed || !strings.Contains(r.stderr, "canceled") {
		t.Fatalf("exit %d, stderr %q; want %d and canceled", r.code, r.stderr, exitTaskFailed)
	}
}

// readerFunc adapts a function to io.Reader.
type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestCtrlCWhileReadingStdin guards that `orchctl run -` and `orchctl artifacts put -` read
// stdin until ctx ends: main turns SIGINT into a canceled ctx (signal.NotifyContext), so a read
// that ignored ctx would swallow Ctrl-C while the input is typed (or a producer is slow) and
// wait for EOF instead of exiting 130 at once.
func TestCtrlCWhileReadingStdin(t *testing.T) {
	for _, args := range [][]string{{"run", "-"}, {"artifacts", "put", "-"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) { ctrlCWhileReadingStdin(t, args) })
	}
}

func ctrlCWhileReadingStdin(t *testing.T, args []string) {
	pr, pw := io.Pipe()
	defer pw.Close()
	reading := make(chan struct{})
	var once sync.Once
	in := readerFunc(func(p []byte) (int, error) {
		once.Do(func() { close(reading) })
		return pr.Read(p)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb bytes.Buffer
	env := map[string]string{"ORCHD_URL": "http://127.0.0.1:1", "ORCHD_API_KEY": "k"}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, args, stdio{in: in, out: &out, err: &errb}, func(k string) string { return env[k] })
	}()
	<-reading
	cancel() // Ctrl-C: what signal.NotifyContext does with SIGINT
	select {
	case code := <-done:
		if code != exitInterrupted {
			t.Errorf("exit %d, stderr %q; want %d", code, errb.String(), exitInterrupted)
		}
	case <-time.After(10 * time.Second): // a bound for the failure only: the fix returns at once
		_ = pw.Close() // let it finish
		code := <-done
		t.Errorf("Ctrl-C while reading stdin was ignored: orchctl returned only at EOF (exit %d, stderr %q); want exit %d at once",
			code, errb.String(), exitInterrupted)
	}
}

// TestCtrlCDuringSubmitCancelsTheTask guards that Ctrl-C while the submit is in flight cancels
// the task id orchctl generated: the daemon may have admitted it (it answers 202 only once the
// admission is recorded), and with no stream opened its cancel-on-disconnect never applies, so
// the task would run unread and spend the key's slot and budget.
func TestCtrlCDuringSubmitCancelsTheTask(t *testing.T) {
	ctx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	var (
		mu        sync.Mutex
		posted    string
		cancelled []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/capabilities":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"api_version":"1.0.0","engines":[],"gpus":{"available":false},"pools":[{"pool_id":"p1","model_id":"tiny","model_ref":"tiny","engine":"llamacpp","ctx_max":2048,"ready":true,"slots":1}]}`)
		case r.Method == http.MethodPost && r.URL.Path == "/v1/tasks":
			var body struct {
				TaskID string `json:"task_id"`
			}
			b, _ := io.ReadAll(r.Body)
			_ = json.Unmarshal(b, &body)
			mu.Lock()
			posted = body.TaskID
			mu.Unlock()
			// The daemon is recording the admission when the user presses Ctrl-C.
			cancelRun()
			<-r.Context().Done()
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/cancel"):
			mu.Lock()
			cancelled = append(cancelled, strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/tasks/"), "/cancel"))
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	env := map[string]string{"ORCHD_URL": srv.URL, "ORCHD_API_KEY": "k"}
	code := run(ctx, []string{"run", "hi"}, stdio{in: strings.NewReader(""), out: &out, err: &errb}, func(k string) string { return env[k] })
	if code != exitInterrupted {
		t.Errorf("exit %d, stderr %q; want %d", code, errb.String(), exitInterrupted)
	}
	mu.Lock()
	defer mu.Unlock()
	if posted == "" {
		t.Fatal("no task was posted")
	}
	if len(cancelled) != 1 || cancelled[0] != posted {
		t.Errorf("cancel requests %v after Ctrl-C during the submit of task %s; want that task canceled", cancelled, posted)
	}
}

// `orchctl run -n N` with N between 2048 and the pool's ctx_max (4096 in testdaemon) runs: run
// asks for the context the prompt and N need, up to ctx_max (it asked for sdk.Completion's
// fixed 2048, and the daemon refused "/max_tokens: N exceeds ctx 2048").
func TestRunMaxTokensWithinPoolContext(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	env := map[string]string{"ORCHD_URL": d.URL, "ORCHD_API_KEY": testdaemon.Key}
	r := orchctl(t, env, "", "run", "-n", "3000", "--json", "hi")
	if r.code != 0 {
		t.Fatalf("orchctl run -n 3000 against a pool with ctx_max 4096: exit %d, stderr %q; want 0", r.code, r.stderr)
	}
}
