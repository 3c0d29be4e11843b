package process

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// spawnGroupLeaderWithPID starts "sleep 30" as the leader of its own process group with pid
// want, by setting the kernel's last handed-out pid just before (root only); other processes
// of the host may take the pid first, so it tries a few times. It skips the test when it
// cannot.
func spawnGroupLeaderWithPID(t *testing.T, want int) *exec.Cmd {
	t.Helper()
	for range 200 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(want-1)), 0); err != nil {
			t.Skipf("cannot choose the next pid: %v", err)
		}
		cmd := exec.Command("sleep", "30")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == want {
			return cmd
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	t.Skipf("pid %d never came back", want)
	return nil
}

// A replica whose start failed keeps its dead process as the last one; the daemon stops it at
// shutdown (or on a reload) much later. By then the engine's pid, and so its process-group id,
// may belong to another process group (another replica's engine, a shell job): Stop must not
// SIGKILL that group, whose processes are not the supervisor's.
func TestStopAfterFailedStartSparesAReusedGroupID(t *testing.T) {
	h := newHarness(t)
	s := h.newSupervisor(h.options("HELPER_EXIT_EARLY=1"))
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded")
	}
	pids := h.lines("pids")
	if len(pids) != 1 {
		t.Fatalf("pids %v", pids)
	}
	old, _ := strconv.Atoi(pids[0])
	for pidAlive(old) {
		time.Sleep(10 * time.Millisecond)
	}
	victim := spawnGroupLeaderWithPID(t, old)
	waited := make(chan error, 1)
	go func() { waited <- victim.Wait() }()
	t.Cleanup(func() {
		_ = victim.Process.Kill()
		_ = <-waited
	})

	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		waited <- err
		t.Fatalf("Stop killed process group %d, which is no longer the engine's: %v", old, err)
	case <-time.After(300 * time.Millisecond):
	}
}
