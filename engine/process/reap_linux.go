package process

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// ReapOrphans kills every process of this user whose environment holds the entry mark ("K=V"):
// the engine processes an earlier run of the daemon started with it (Options.Env) and, since
// children inherit the environment, the workers those started. Pdeathsig ends an engine with
// the daemon that started it, but not the engine's own children (a vLLM or Triton worker):
// after a kill -9 of the daemon they live on, holding GPU memory and ports. The caller must
// own mark alone (no running daemon uses it): cmd/orchestratord holds the state directory's
// lock, and the mark names that directory. It returns how many processes it killed.
func ReapOrphans(mark string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	want := append([]byte(mark), 0)
	self := os.Getpid()
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !hasEntry(env, want) {
			continue // gone, another user's, or not an engine of this directory
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// hasEntry reports whether the NUL-separated environment env holds entry (NUL-terminated).
func hasEntry(env, entry []byte) bool {
	for len(env) > 0 {
		if bytes.HasPrefix(env, entry) {
			return true
		}
		i := bytes.IndexByte(env, 0)
		if i < 0 {
			return false
		}
		env = env[i+1:]
	}
	return false
}
