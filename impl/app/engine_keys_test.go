package app

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/orchestratord/orchestratord/engine/fake"
)

// TestStaleEngineKeysRemovedAtStart: a run killed with its managed engines (kill -9) left their
// key files in <state_dir>/engine-keys; the next start removes them.
func TestStaleEngineKeysRemovedAtStart(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	keys := filepath.Join(state, engineKeysDir)
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(keys, "p1-123.key")
	other := filepath.Join(keys, "notes.txt") // not a key file: left alone
	for _, f := range []string{stale, other} {
		if err := os.WriteFile(f, []byte("orchd-engine-x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a := shutdownApp(t, shutdownConfig(t, state), fake.New(fake.Options{}))
	jctx, jcancel := context.WithCancel(context.Background())
	jcancel()
	defer func() { _ = a.journal.Run(jctx) }() // closes the journal New opened
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the stale key file is still there: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a file that is no key file was removed: %v", err)
	}
}
