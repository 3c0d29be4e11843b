package app

import (
	"os"
	"path/filepath"
	"testing"
)

// TestProgramNotTakenFromASharedWorkingDirectory: a daemon started from a directory that
// every user may write to (cd /tmp; orchestratord ...), with llama-server not on PATH, ran the
// .tools/llama/llama-server that another user put there, as the daemon's user. exec.LookPath
// refuses programs found through the working directory for this reason (exec.ErrDot).
func TestProgramNotTakenFromASharedWorkingDirectory(t *testing.T) {
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o777); err != nil { // as /tmp is (without its sticky bit's help here)
		t.Fatal(err)
	}
	planted := filepath.Join(shared, ".tools", "llama", "llama-server")
	if err := os.MkdirAll(filepath.Dir(planted), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(planted, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir()) // llama-server is not installed
	got, err := resolveProgram("llamacpp", "llama-server", true, "/usr/bin/orchestratord", shared)
	if err == nil {
		t.Fatalf("resolveProgram = %q: a program under a directory every user may write to", got)
	}
}
