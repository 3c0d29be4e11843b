package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/config"
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
// holds exits at once, naming the holder, before it opens (and would rewrite) the journal. So
// does one whose own state directory is free but whose journal.dir, outside it, is held.
func TestSecondDaemonOnOneStateDirRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		outside bool // journal.dir outside the state directory, and that is the held one
		want    string
	}{
		{name: "state_dir", want: "state_dir "},
		{name: "journal dir outside it", outside: true, want: "journal dir "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			journal := filepath.Join(dir, "journal")
			args := []string{"--addr", "127.0.0.1:0", "--state-dir", dir}
			held := dir
			if tc.outside {
				journal = filepath.Join(t.TempDir(), "elsewhere")
				held = journal
				cfg := filepath.Join(t.TempDir(), "config.yaml")
				// The embedded default's keys, journal's replaced: YAML takes no key twice.
				yaml := regexp.MustCompile(`(?m)^journal:\n(?:[ #].*\n|\n)*`).ReplaceAllString(string(config.DefaultYAML()), "")
				yaml += "journal:\n  dir: " + journal + "\n"
				if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", cfg)
			}
			lock, err := statelock.Lock(held, "held")
			if err != nil {
				t.Fatal(err)
			}
			if lock == nil {
				t.Skip("no flock on this platform")
			}
			defer lock.Close()
			t.Setenv("ORCHD_API_KEYS", "")
			var stderr bytes.Buffer
			exited := make(chan int, 1)
			go func() { exited <- run(args, io.Discard, &stderr) }()
			var code int
			select {
			case code = <-exited:
			case <-time.After(30 * time.Second): // it started: stop it the way an operator would
				_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
				code = <-exited
			}
			want := tc.want + held + " is in use by another orchestratord (pid " + strconv.Itoa(os.Getpid()) + ")"
			if code != 1 || !strings.Contains(stderr.String(), want) {
				t.Fatalf("exit code %d, log %s; want 1 and %q", code, stderr.String(), want)
			}
			ents, _ := os.ReadDir(journal)
			for _, e := range ents {
				if e.Name() != "LOCK" {
					t.Errorf("the refused daemon wrote %s in the journal", e.Name())
				}
			}
		})
	}
}
