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

// TestJournalDirIsTheStateDir: journal.dir naming the state directory itself (`journal:
// {dir: .}`) starts the daemon. Its second lock (the journal dir's) conflicted with the
// state directory's on the same file, and the daemon refused to start naming its own pid as
// "another orchestratord".
func TestJournalDirIsTheStateDir(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte(`addr: 127.0.0.1:0
state_dir: `+state+`
journal: {dir: .}
shutdown_grace: 1s
pools:
  - {id: p0, engine: llamacpp, model_ref: m, model_id: m, ctx_max: 2048, slots: 1, replicas: [{url: "http://127.0.0.1:1"}]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ORCHD_API_KEYS", "")
	var cerr bytes.Buffer
	if code := run([]string{"--check-config", cfg}, io.Discard, &cerr); code != 0 {
		if strings.Contains(cerr.String(), "journal") {
			return // refused up front, naming the field: fixed
		}
		t.Fatalf("--check-config: exit %d: %s", code, cerr.String())
	}
	var stderr bytes.Buffer
	exited := make(chan int, 1)
	go func() { exited <- run([]string{"--config", cfg}, io.Discard, &stderr) }()
	select {
	case code := <-exited:
		self := "(pid " + strconv.Itoa(os.Getpid()) + ")"
		t.Fatalf("--check-config said ok, but the daemon exited %d at once: %s (it names its own pid %s)",
			code, strings.TrimSpace(stderr.String()), self)
	case <-time.After(5 * time.Second): // it runs: stop it as an operator would
		_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
		<-exited
	}
}
