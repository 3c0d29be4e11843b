package process

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// pidAlive reports whether pid is a live (non-zombie) process.
func pidAlive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z'
}

// TestStopKillsTheGroupOfAnExitedEngine: the engine exits while a health check is in flight
// and Stop comes before supervise saw the exit. Stop must still kill what is left of the
// engine's process group (a worker it spawned), as the doc promises: "after it returns no
// goroutine and no process of the supervisor remains".
func TestStopKillsTheGroupOfAnExitedEngine(t *testing.T) {
	h := newHarness(t)
	var calls atomic.Int32
	o := h.options()
	o.Argv = []string{"/bin/sh", "-c", `sleep 30 >/dev/null 2>&1 & echo $! >> "$AUDIT_DIR/workers"; sleep 0.3; exit 0`}
	o.Env = []string{"AUDIT_DIR=" + h.dir}
	o.HealthTimeout = 20 * time.Second
	o.Health = func(ctx context.Context, _ string) (bool, error) {
		if calls.Add(1) == 1 {
			return true, nil // the start's check
		}
		<-ctx.Done() // a slow health check, in flight when the engine exits
		return false, ctx.Err()
	}
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.PID() != 0 { // the shell (group leader) exited and was reaped
		if time.Now().After(deadline) {
			t.Fatal("the engine never exited")
		}
		time.Sleep(10 * time.Millisecond)
	}
	pids := h.lines("workers")
	if len(pids) != 1 {
		t.Fatalf("worker pids %v", pids)
	}
	worker, _ := strconv.Atoi(pids[0])
	t.Cleanup(func() { _ = syscall.Kill(worker, syscall.SIGKILL) })
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if !pidAlive(worker) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("after Stop, the engine's worker %d (in the engine's process group) still runs", worker)
}
