package process

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
)

// logFile appends a replica's output to its log file and caps the file: before a write would
// take it past max bytes it renames the file to <path>.1 (replacing the previous one) and goes
// on in a new file, so that a replica keeps about 2×max bytes of output on disk (each file
// exceeds max by at most the one write that starts it). It counts the bytes it writes instead
// of asking the file system, and reads the file's size again only when the count says it is
// time to rotate: an external truncate (logrotate's copytruncate) only makes it look sooner.
type logFile struct {
	path string
	max  int64 // <= 0: never rotate
	log  *slog.Logger

	mu     sync.Mutex
	f      *os.File // nil once closed
	size   int64    // bytes in f as counted by the writes
	warned bool     // a rotation failure was logged since the last rotation that worked
}

// openLogFile opens (or creates, mode 0600) path for appending, capped at maxBytes; the count starts at the
// size of what is already there.
func openLogFile(path string, maxBytes int64, log *slog.Logger) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &logFile{path: path, max: maxBytes, log: log, f: f, size: st.Size()}, nil
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, os.ErrClosed
	}
	if l.max > 0 && l.size > 0 && l.size+int64(len(p)) > l.max {
		l.rotate(int64(len(p)))
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

// rotate makes room for a write of n bytes. On failure the output goes on in the current
// file: the engine and the output tail of error reports never depend on the rotation.
func (l *logFile) rotate(n int64) {
	if st, err := l.f.Stat(); err == nil {
		l.size = st.Size()
		if l.size == 0 || l.size+n <= l.max {
			return // truncated from outside since: there is room
		}
	}
	// A file that is gone (removed or moved away from outside) needs only a new one.
	if err := os.Rename(l.path, l.path+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		l.failed(err)
		return
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		l.failed(fmt.Errorf("open a new log file: %w", err))
		return
	}
	if err := l.f.Close(); err != nil {
		l.log.Warn("closing the rotated engine log file", "path", l.path+".1", "err", err)
	}
	l.f, l.size, l.warned = f, 0, false
}

// failed logs a rotation failure (once until a rotation works again) and restarts the
// count, so that the next attempt comes after another max bytes instead of at every write.
func (l *logFile) failed(err error) {
	l.size = 0
	if !l.warned {
		l.warned = true
		l.log.Warn("cannot rotate the engine log file; its output goes on in the current file",
			"path", l.path, "max_bytes", l.max, "err", err)
	}
}

// Close closes the file; later writes fail with os.ErrClosed.
func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
