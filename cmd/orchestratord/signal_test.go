package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
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
