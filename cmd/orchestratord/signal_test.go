package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/internal/statelock"
)

// A SIGHUP that arrives while the daemon starts (a service manager reloading right after the
// start) is held for the running daemon, not the signal's default action that ends the
// process. Without the handler in place, the signal kills the test binary.
func TestSIGHUPDuringStartupDoesNotKill(t *testing.T) {
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "state") // a file, not a directory: the start fails after the hook
	if err := os.WriteFile(stateFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ORCHD_API_KEYS", "")
	sent := false
	beforeStart = func() {
		sent = syscall.Kill(os.Getpid(), syscall.SIGHUP) == nil
		// The signal is delivered asynchronously: wait until a thread has taken it, while the
		// daemon's handler is still in place (a start that fails fast could otherwise remove
		// the handler first, and the late signal would kill the test binary).
		for range 5000 {
			if !sighupPending(t) {
				return
			}
			time.Sleep(time.Millisecond)
		}
		t.Error("SIGHUP still pending after 5s")
	}
	t.Cleanup(func() { beforeStart = nil })
	var stderr bytes.Buffer
	code := run([]string{"--addr", "127.0.0.1:0", "--state-dir", stateFile}, io.Discard, &stderr)
	if !sent {
		t.Fatal("the hook did not run or the signal was not sent")
	}
	if code != 1 {
		t.Fatalf("exit code %d, want 1 (a start-up failure): %s", code, stderr.String())
	}
}

// sighupPending reports whether SIGHUP is pending for the process (ShdPnd in /proc/self/status).
func sighupPending(t *testing.T) bool {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status:", err)
	}
	for line := range strings.Lines(string(raw)) {
		if hex, ok := strings.CutPrefix(line, "ShdPnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatalf("ShdPnd %q: %v", hex, err)
			}
			return mask&(1<<(uint(syscall.SIGHUP)-1)) != 0
		}
	}
	t.Fatal("no ShdPnd in /proc/self/status")
	return false
}

// TestSecondDaemonOnOneStateDirRefused: a daemon started on a state directory another one
// holds exits at once, naming the holder, before it opens (and would rewrite) the journal.
func TestSecondDaemonOnOneStateDirRefused(t *testing.T) {
	dir := t.TempDir()
	held, err := statelock.Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if held == nil {
		t.Skip("no flock on this platform")
	}
	defer held.Close()
	journal := filepath.Join(dir, "journal")
	t.Setenv("ORCHD_API_KEYS", "")
	var stderr bytes.Buffer
	exited := make(chan int, 1)
	go func() { exited <- run([]string{"--addr", "127.0.0.1:0", "--state-dir", dir}, io.Discard, &stderr) }()
	var code int
	select {
	case code = <-exited:
	case <-time.After(30 * time.Second): // it started: stop it the way an operator would
		_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
		code = <-exited
	}
	if code != 1 || !strings.Contains(stderr.String(), "in use by another orchestratord (pid "+strconv.Itoa(os.Getpid())+")") {
		t.Fatalf("exit code %d, log %s; want 1 and the state dir in use by pid %d", code, stderr.String(), os.Getpid())
	}
	if _, err := os.Stat(journal); !os.IsNotExist(err) {
		t.Errorf("the refused daemon touched the journal: %v", err)
	}
}
