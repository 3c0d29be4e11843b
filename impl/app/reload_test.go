package app_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/impl/app"
)

// lockedBuffer is a log sink that tests may read while the daemon writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// scriptDaemon runs the app with one managed pool whose engine is the shell script script
// (given {model} as $1 and {port} as $2), and returns a client, the state directory and the
// daemon's log.
func scriptDaemon(t *testing.T, script, startTimeout string) (*client.ClientWithResponses, string, *lockedBuffer) {
	t.Helper()
	state := t.TempDir()
	for _, m := range []string{"a.gguf", "b.gguf"} {
		if err := os.MkdirAll(filepath.Join(state, "models"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, "models", m), []byte("GGUF"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	yaml := fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 1s
pools:
  - id: default
    engine: llamacpp
    model_ref: models/a.gguf
    ctx_max: 512
    slots: 1
    replicas:
      - managed:
          command: ["/bin/sh", "-c", %q, "engine", "{model}", "{port}"]
          start_timeout: %s
`, state, script, startTimeout)
	cfg := loadConfig(t, t.TempDir(), yaml)
	logs := &lockedBuffer{}
	a, err := app.New(cfg, app.Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveLoopback(t, a, nil)
	c, err := client.NewClientWithResponses("http://"+addr, client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("X-API-Key", testKey)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c, state, logs
}

// TestReloadFailureKeepsEngineOutputInTheLog: an engine that fails prints a marker on stderr
// (as llama-server prints the first bytes of the file it was given); the 409 carries a reason
// and a fixed sentence, the marker reaches the daemon's log and no response.
func TestReloadFailureKeepsEngineOutputInTheLog(t *testing.T) {
	const marker = "SECRET-ENGINE-OUTPUT-7f3a"
	tests := []struct {
		name, script, timeout string
		reason                client.ReloadResponseReason
	}{
		{"engine exits", `echo "` + marker + ` $1" >&2; exit 3`, "5s", client.EngineExited},
		{"engine never healthy", `echo "` + marker + ` $1" >&2; exec sleep 30`, "1s", client.HealthGateTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, state, logs := scriptDaemon(t, tt.script, tt.timeout)
			r, err := c.ReloadPoolWithResponse(context.Background(), "default", nil, client.ReloadRequest{NewModelRef: "models/b.gguf"})
			if err != nil {
				t.Fatal(err)
			}
			if r.StatusCode() != http.StatusConflict || r.JSON409 == nil || r.JSON409.Status != client.Rollback {
				t.Fatalf("reload = %d %s, want 409 rollback", r.StatusCode(), r.Body)
			}
			if r.JSON409.Reason == nil || *r.JSON409.Reason != tt.reason || r.JSON409.Message == nil || *r.JSON409.Message == "" {
				t.Fatalf("reload body %s, want reason %s and a message", r.Body, tt.reason)
			}
			for _, leak := range []string{marker, state, "output tail"} {
				if bytes.Contains(r.Body, []byte(leak)) {
					t.Errorf("reload response leaks %q: %s", leak, r.Body)
				}
			}
			h, err := c.GetPoolHealthWithResponse(context.Background(), "default", nil)
			if err != nil || h.JSON200 == nil {
				t.Fatalf("pool health: %v %s", err, h.Body)
			}
			if bytes.Contains(h.Body, []byte(marker)) {
				t.Errorf("pool health leaks the engine output: %s", h.Body)
			}
			if !strings.Contains(logs.String(), marker) {
				t.Errorf("the engine output is not in the daemon's log:\n%s", logs.String())
			}
		})
	}
}

// TestReloadRefusesPathsOutsideModelsDirs: before the fix, each of these started the engine
// on the named file; now each is a 400 that names the allowed directory, and no engine is
// ever given the file.
func TestReloadRefusesPathsOutsideModelsDirs(t *testing.T) {
	c, state, _ := scriptDaemon(t, `echo "$1" >> "$(dirname "$(dirname "$1")")/launches"; exit 3`, "5s")
	outside := filepath.Join(t.TempDir(), "outside.gguf")
	if err := os.WriteFile(outside, []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(state, "models", "link.gguf")); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"/etc/passwd", "api-key", "models/../api-key", "file:" + outside, "models/link.gguf", "models/none.gguf"} {
		t.Run(ref, func(t *testing.T) {
			r, err := c.ReloadPoolWithResponse(context.Background(), "default", nil, client.ReloadRequest{NewModelRef: ref})
			if err != nil {
				t.Fatal(err)
			}
			if r.StatusCode() != http.StatusBadRequest || r.JSON400 == nil || r.JSON400.Code != client.INVALIDPARAMS {
				t.Fatalf("reload %q = %d %s, want 400 INVALID_PARAMS", ref, r.StatusCode(), r.Body)
			}
			if !strings.Contains(r.JSON400.Message, filepath.Join(state, "models")) {
				t.Errorf("message %q does not name the models directory", r.JSON400.Message)
			}
		})
	}
	// The one allowed reference reaches the engine (which then fails): the script ran, and
	// only ever on files inside the models directory.
	r, err := c.ReloadPoolWithResponse(context.Background(), "default", nil, client.ReloadRequest{NewModelRef: "models/b.gguf"})
	if err != nil || r.StatusCode() != http.StatusConflict {
		t.Fatalf("reload inside models_dirs: %v %d %s", err, r.StatusCode(), r.Body)
	}
	launches, err := os.ReadFile(filepath.Join(state, "launches"))
	if err != nil {
		t.Fatal(err)
	}
	models, _ := filepath.EvalSymlinks(filepath.Join(state, "models"))
	for _, l := range strings.Fields(string(launches)) {
		if filepath.Dir(l) != models {
			t.Errorf("an engine was started on %s", l)
		}
	}
	if !strings.Contains(string(launches), "b.gguf") {
		t.Errorf("launches = %q, want one on b.gguf", launches)
	}
}

// Two pools may name a replica alike (ids are unique within a pool): each managed replica
// writes its own log file, <state-dir>/logs/<pool>/<replica>.log, instead of both appending to
// one.
func TestReplicaLogFilesPerPool(t *testing.T) {
	state := t.TempDir()
	if err := os.MkdirAll(filepath.Join(state, "models"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "models", "a.gguf"), []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The engine prints its pool's marker and waits (never healthy: the test reads only logs).
	const script = `echo "engine of $1"; exec sleep 60`
	pool := func(id string) string {
		return fmt.Sprintf(`
  - id: %s
    engine: llamacpp
    model_ref: models/a.gguf
    model_id: %s
    ctx_max: 512
    slots: 1
    replicas:
      - name: r
        managed:
          command: ["/bin/sh", "-c", %q, "engine", "{model_id}", "{port}"]
          start_timeout: 1m`, id, id, script)
	}
	yaml := fmt.Sprintf("addr: 127.0.0.1:0\nstate_dir: %q\nshutdown_grace: 1s\npools:%s%s\n", state, pool("one"), pool("two"))
	cfg := loadConfig(t, t.TempDir(), yaml)
	a, err := app.New(cfg, app.Options{Logger: slog.New(slog.DiscardHandler), HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	serveLoopback(t, a, nil)
	for _, id := range []string{"one", "two"} {
		path := filepath.Join(state, "logs", id, "r.log")
		eventually(t, "the replica of pool "+id+" logged", func() bool {
			b, err := os.ReadFile(path)
			return err == nil && strings.Contains(string(b), "engine of ")
		})
		b, _ := os.ReadFile(path)
		if got := string(b); !strings.Contains(got, "engine of "+id) || strings.Count(got, "engine of ") != 1 {
			t.Errorf("%s holds %q, want only pool %s's engine", path, got, id)
		}
	}
}

// A managed replica's log_max_bytes reaches its supervisor: output past it moves to
// <replica>.log.1 and each file stays near the cap.
func TestReplicaLogFileCapped(t *testing.T) {
	state := t.TempDir()
	if err := os.MkdirAll(filepath.Join(state, "models"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "models", "a.gguf"), []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	// 3 MB of output, then a marker, then waiting (never healthy: the test reads only logs).
	const script = `yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 3000000; echo; echo output-done; exec sleep 60`
	yaml := fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 1s
pools:
  - id: one
    engine: llamacpp
    model_ref: models/a.gguf
    ctx_max: 512
    slots: 1
    replicas:
      - name: r
        managed:
          command: ["/bin/sh", "-c", %q, "engine", "{model}", "{port}"]
          start_timeout: 1m
          log_max_bytes: 1048576
`, state, script)
	cfg := loadConfig(t, t.TempDir(), yaml)
	a, err := app.New(cfg, app.Options{Logger: slog.New(slog.DiscardHandler), HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	serveLoopback(t, a, nil)
	path := filepath.Join(state, "logs", "one", "r.log")
	eventually(t, "the replica wrote its output", func() bool {
		b, err := os.ReadFile(path)
		return err == nil && strings.Contains(string(b), "output-done")
	})
	for _, p := range []string{path, path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 1<<20+64<<10 {
			t.Errorf("%s is %d bytes, cap 1 MiB", p, st.Size())
		}
	}
}
