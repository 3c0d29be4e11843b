package process

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// reapWait bounds ReapOrphans' wait for the processes it killed to be gone.
const reapWait = 10 * time.Second

// ReapOrphans kills every process of this user whose environment holds the entry mark ("K=V"):
// the engine processes an earlier run of the daemon started with it (Options.Env) and, since
// children inherit the environment, the workers those started. Pdeathsig ends an engine with
// the daemon that started it, but not the engine's own children (a vLLM or Triton worker):
// after a kill -9 of the daemon they live on, holding GPU memory and ports. The caller must
// own mark alone (no running daemon uses it): cmd/orchestratord holds the state directory's
// lock, and the mark names that directory.
//
// A process is held by a pidfd from before its environment is read to its signal, so that a
// pid reused in between is never signalled; ReapOrphans then waits (up to 10 s) until the
// processes it killed are gone, and their GPU memory and ports free for the engines started
// next. A process that rewrote its environment area is not found (Python's setproctitle does,
// unless SPT_NOENV is set). It returns how many processes it killed.
func ReapOrphans(mark string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	want := append([]byte(mark), 0)
	self := os.Getpid()
	var killed []int // pidfds
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		fd, ferr := unix.PidfdOpen(pid, 0)
		if ferr != nil && !errors.Is(ferr, unix.ENOSYS) {
			continue // gone
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !hasEntry(env, want) { // gone, another user's, or not an engine of this directory
			if ferr == nil {
				_ = unix.Close(fd)
			}
			continue
		}
		if ferr != nil { // no pidfds (Linux before 5.3): by pid
			if unix.Kill(pid, unix.SIGKILL) == nil {
				n++
			}
			continue
		}
		if unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil {
			n++
			killed = append(killed, fd)
			continue
		}
		_ = unix.Close(fd)
	}
	deadline := time.Now().Add(reapWait)
	for _, fd := range killed {
		// A pidfd turns readable when its process has exited.
		for left := time.Until(deadline); left > 0; left = time.Until(deadline) {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if k, err := unix.Poll(p, int(left.Milliseconds())+1); k > 0 || (err != nil && !errors.Is(err, unix.EINTR)) {
				break
			}
		}
		_ = unix.Close(fd)
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
