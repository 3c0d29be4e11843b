package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
		t.Fatalf("--check-config: exit %d: %s", code, cerr.String())
	}
	logs, w := io.Pipe()
	exited := make(chan int, 1)
	go func() { exited <- run([]string{"--config", cfg}, io.Discard, w); _ = w.Close() }()
	listening := make(chan struct{})
	var seen strings.Builder // read once the scan ended
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(logs)
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "orchestratord listening") {
				close(listening)
				_, _ = io.Copy(io.Discard, logs)
				return
			}
		}
	}()
	select {
	case <-listening: // it runs: stop it as an operator would
		_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
		if code := <-exited; code != 0 {
			t.Fatalf("exit %d after SIGINT", code)
		}
	case code := <-exited:
		<-scanned
		t.Fatalf("the daemon exited %d at start (its own pid is %d): %s", code, os.Getpid(), seen.String())
	}
}
