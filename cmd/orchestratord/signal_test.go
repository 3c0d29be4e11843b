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
