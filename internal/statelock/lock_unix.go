//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package statelock

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Lock takes dir (created if need be) for this process: an exclusive lock (flock) on its LOCK
// file, which holds the owner's pid for the message another daemon gets. The lock goes with
// the file's close, or with the process (kill -9 included). what names the directory in
// errors and in the config's words ("state_dir", "journal dir").
func Lock(dir, what string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner := make([]byte, 32)
		n, _ := f.ReadAt(owner, 0)
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := string(bytes.TrimSpace(owner[:n]))
			if pid == "" {
				pid = "unknown"
			}
			return nil, fmt.Errorf("%s %s is in use by another orchestratord (pid %s): give each daemon its own %s", what, dir, pid, what)
		}
		return nil, fmt.Errorf("%s: locking %s: %w", what, path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
