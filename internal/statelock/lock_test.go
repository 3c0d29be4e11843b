package statelock

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	first, err := Lock(dir, "state_dir")
	if err != nil {
		t.Fatal(err)
	}
	if first == nil {
		t.Skip("no flock on this platform")
	}
	// A second holder (another open file, as another process would have) is refused, and
	// told who holds it.
	if _, err := Lock(dir, "state_dir"); err == nil || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second Lock: %v, want in use by pid %d", err, os.Getpid())
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Lock(dir, "state_dir")
	if err != nil {
		t.Fatalf("Lock after the holder closed: %v", err)
	}
	_ = again.Close()
}
