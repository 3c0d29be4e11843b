package app_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/app"
)

// TestEngineWorkersDoNotOutliveTheDaemon: a managed engine's worker that leaves the engine's
// process group (setsid, as some engines' workers do) is not stopped with the engine's group,
// and Pdeathsig does not reach it either when the daemon dies. Every managed engine carries
// its state directory's mark (ORCHD_ENGINE_OF, inherited by its workers): the daemon kills
// what carries it after stopping its engines, and at its next start (after a kill -9).
func TestEngineWorkersDoNotOutliveTheDaemon(t *testing.T) {
	if _, err := os.Stat("/proc/self/environ"); err != nil {
		t.Skip("no /proc:", err)
	}
	if _, err := os.Stat("/usr/bin/setsid"); err != nil {
		t.Skip("no setsid:", err)
	}
	state, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(state, "models"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "models", "a.gguf"), []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The engine records its mark and a worker in a new session, then never turns healthy. The
	// mark is written before the worker's pid, which the test waits for before reading it.
	script := `dir=$ORCHD_ENGINE_OF; echo "$ORCHD_ENGINE_OF $SPT_NOENV" > "$dir/mark"; /usr/bin/setsid sleep 60 </dev/null >/dev/null 2>&1 & echo $! > "$dir/worker.tmp"; mv "$dir/worker.tmp" "$dir/worker"; exec sleep 30`
	yaml := fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 100ms
pools:
  - id: default
    engine: llamacpp
    model_ref: models/a.gguf
    ctx_max: 512
    slots: 1
    replicas:
      - managed:
          command: ["/bin/sh", "-c", %q, "engine", "{port}"]
          start_timeout: 60s
`, state, script)
	cfg := loadConfig(t, t.TempDir(), yaml)
	serve := func() (stop func()) {
		a, err := app.New(cfg, app.Options{Logger: slog.New(slog.DiscardHandler), HealthInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		_, stopServe := serveLoopback(t, a, nil)
		return func() {
			if err := stopServe(); err != nil {
				t.Errorf("Serve: %v", err)
			}
		}
	}
	worker := func() int {
		t.Helper()
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if raw, err := os.ReadFile(filepath.Join(state, "worker")); err == nil {
				pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
				if err != nil {
					t.Fatal(err)
				}
				_ = os.Remove(filepath.Join(state, "worker"))
				return pid
			}
			if time.Now().After(end) {
				t.Fatal("the engine never started its worker")
			}
		}
	}
	dead := func(pid int) bool {
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if syscall.Kill(pid, 0) != nil {
				return true
			}
			if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && strings.Contains(string(st), ") Z ") {
				return true // killed, not yet reaped by its parent
			}
		}
		return false
	}

	stop := serve()
	pid := worker()
	mark, _ := os.ReadFile(filepath.Join(state, "mark"))
	if got := strings.TrimSpace(string(mark)); got != state+" 1" {
		t.Errorf("the engine's ORCHD_ENGINE_OF and SPT_NOENV %q, want the state directory %s and 1 (setproctitle must not overwrite the mark)", got, state)
	}
	stop()
	if !dead(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("the engine's worker %d outlived the daemon's stop", pid)
	}

	// After a kill -9 of the daemon the worker lives on: here, one started with the mark by
	// hand (the test cannot kill its own process). The next start kills it.
	orphan := startMarked(t, "ORCHD_ENGINE_OF="+state)
	stop = serve()
	defer stop()
	if !dead(orphan) {
		_ = syscall.Kill(orphan, syscall.SIGKILL)
		t.Fatalf("the orphan %d carrying the state directory's mark outlived the next start", orphan)
	}
}

// startMarked starts sleep with env added to the environment, in a new session, and returns its pid.
func startMarked(t *testing.T, env string) int {
	t.Helper()
	attr := &os.ProcAttr{Env: append(os.Environ(), env), Sys: &syscall.SysProcAttr{Setsid: true}}
	p, err := os.StartProcess("/bin/sleep", []string{"sleep", "60"}, attr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = p.Wait() }()
	return p.Pid
}
