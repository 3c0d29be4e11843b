package process

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReapOrphans: an engine (sh) left by a daemon killed with kill -9, and the worker it
// started (sleep, which inherits the environment), are killed by the next start's reap; a
// process without the mark, or with another directory's, is left alone.
func TestReapOrphans(t *testing.T) {
	if _, err := os.Stat("/proc/self/environ"); err != nil {
		t.Skip("no /proc:", err)
	}
	dir := t.TempDir()
	mark := "ORCHD_ENGINE_OF=" + dir
	workers := filepath.Join(dir, "workers")
	start := func(env ...string) *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", `sleep 60 & echo $! >> "$W"; wait`)
		cmd.Env = append(os.Environ(), append(env, "W="+workers)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	engine := start(mark)
	other := start("ORCHD_ENGINE_OF=" + dir + "-other")
	unmarked := start()
	var pids []int
	for end := time.Now().Add(10 * time.Second); len(pids) < 3; time.Sleep(10 * time.Millisecond) {
		raw, _ := os.ReadFile(workers)
		pids = pids[:0]
		for f := range strings.FieldsSeq(string(raw)) {
			p, _ := strconv.Atoi(f)
			pids = append(pids, p)
		}
		if time.Now().After(end) {
			t.Fatalf("workers %v, want 3", pids)
		}
	}
	marked := 0
	for _, p := range pids {
		env, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/environ")
		if hasEntry(env, append([]byte(mark), 0)) {
			marked++
		}
	}
	if marked != 1 {
		t.Fatalf("%d workers carry the mark, want 1 (the environment is inherited)", marked)
	}
	if n := ReapOrphans(mark); n != 2 {
		t.Errorf("ReapOrphans killed %d processes, want 2 (the engine and its worker)", n)
	}
	// It returns once they are gone: their GPU memory and ports are free for the next engines.
	for _, p := range pids {
		env, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/environ")
		if pidAlive(p) && hasEntry(env, append([]byte(mark), 0)) {
			t.Errorf("worker %d with the mark is still running when ReapOrphans returns", p)
		}
	}
	done := make(chan error, 1)
	go func() { done <- engine.Wait() }()
	select {
	case _ = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the marked engine is still running")
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		alive := 0
		for _, p := range pids {
			if pidAlive(p) {
				alive++
			}
		}
		if alive == 2 {
			break // the other two engines' workers
		}
		if time.Now().After(end) {
			t.Fatalf("%d of the 3 workers alive, want 2: the marked one is killed, the others are not", alive)
		}
	}
	for _, c := range []*exec.Cmd{other, unmarked} {
		if !pidAlive(c.Process.Pid) {
			t.Errorf("process %d without this directory's mark was killed", c.Process.Pid)
		}
	}
}

func TestHasEntry(t *testing.T) {
	env := []byte("A=1\x00ORCHD_ENGINE_OF=/s\x00B=2\x00")
	for _, tt := range []struct {
		entry string
		want  bool
	}{
		{"A=1", true}, {"ORCHD_ENGINE_OF=/s", true}, {"B=2", true},
		{"ORCHD_ENGINE_OF=/", false}, {"ORCHD_ENGINE_OF=/s2", false}, {"=1", false}, {"1", false},
	} {
		if got := hasEntry(env, append([]byte(tt.entry), 0)); got != tt.want {
			t.Errorf("hasEntry(%q) = %v, want %v", tt.entry, got, tt.want)
		}
	}
}
