package journal

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestFailureKeepsWhatWasAcknowledged: once an fdatasync fails (EIO, or ENOSPC on a file
// system that allocates at writeback), a record whose Wait then fails was refused to its client
// (the task service answers the POST with an error and retires the task, a tombstone the failed
// journal never writes): it must not come back when the journal is opened again. A record
// acknowledged before the failure stays acknowledged, to a late Wait as on the next start.
func TestFailureKeepsWhatWasAcknowledged(t *testing.T) {
	for _, mode := range []Sync{SyncAdmission, SyncAlways} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			dir := t.TempDir()
			j, err := Open(Options{Dir: dir, Sync: mode})
			if err != nil {
				t.Fatal(err)
			}
			var failing atomic.Bool
			j.datasync = func(f *os.File) error {
				if failing.Load() {
					return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: syscall.ENOSPC}
				}
				return datasync(f)
			}
			stop := start(t, j)
			a := j.Append("a", 1, "", []byte("acknowledged"), nil)
			wait(t, j, a)
			failing.Store(true)
			b := j.Append("b", 1, "", []byte("refused"), nil)
			if err := j.Wait(context.Background(), b); err == nil {
				t.Fatal("Wait succeeded although the fdatasync failed")
			}
			if err := j.Wait(context.Background(), a); err != nil {
				t.Fatalf("a record acknowledged before the failure, waited for after it: %v", err)
			}
			j.Retire("b") // what the task service does with a refused admission
			stop()
			got := replayAll(t, dir)
			want := []rec{{"a", 1, "", "acknowledged", ""}}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("replay after reopening: %v\nwant %v: a record whose Wait failed came back", got, want)
			}
		})
	}
}
