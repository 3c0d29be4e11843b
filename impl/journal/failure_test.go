package journal

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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

// TestFailureKeepsTheWrittenRecordsOfAcknowledgedTasks: with the default Sync, frames and final
// states are written (and shown to readers) before any fdatasync covers them. When the journal
// then fails, on an fdatasync or on a write, those records of tasks whose admission was
// acknowledged stay: a task that finished and was seen finished must not run again after a
// restart. Only the tasks whose admission was refused go: their records past the last
// fdatasync, interleaved with the others', and a re-posted id's new admission past its
// tombstone (whether the tombstone is on disk or only written: it stays).
func TestFailureKeepsTheWrittenRecordsOfAcknowledgedTasks(t *testing.T) {
	enospc := func(op, name string) error { return &os.PathError{Op: op, Path: name, Err: syscall.ENOSPC} }
	for _, tc := range []struct {
		name string
		// failing breaks the journal's next fdatasync or write.
		failing func(j *Journal)
		want    []rec
	}{
		{"an fdatasync fails", func(j *Journal) {
			j.datasync = func(f *os.File) error { return enospc("fdatasync", f.Name()) }
		}, []rec{
			{"a", 1, "", "admit a", ""}, {"c", 1, "", "admit c", ""},
			{"a", 2, "token", "1", ""}, {"a", 4, "final", "succeeded", ""}, {"c", 2, "token", "x", ""},
		}},
		{"a write fails part way", func(j *Journal) {
			j.writeAt = func(f *os.File, b []byte, off int64) (int, error) {
				n, _ := f.WriteAt(b[:len(b)/2], off)
				return n, enospc("write", f.Name())
			}
		}, []rec{ // the last batch never reached the file: c's token with it
			{"a", 1, "", "admit a", ""}, {"c", 1, "", "admit c", ""},
			{"a", 2, "token", "1", ""}, {"a", 4, "final", "succeeded", ""},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// No lazy fdatasync: what follows the admissions stays written, not synced.
			var failures atomic.Int32
			j, err := Open(Options{Dir: dir, MaxUnsynced: time.Hour, MaxUnsyncedBytes: 1 << 30,
				OnFailure: func(error) { failures.Add(1) }})
			if err != nil {
				t.Fatal(err)
			}
			stop := start(t, j)
			a := j.Append("a", 1, "", []byte("admit a"), nil)
			wait(t, j, a)
			wait(t, j, j.Append("c", 1, "", []byte("admit c"), nil))
			wait(t, j, j.Append("q", 1, "", []byte("admit q"), nil))
			j.Retire("q") // on disk with the next admission: q's id may be posted again
			wait(t, j, j.Append("r", 1, "", []byte("admit r"), nil))
			j.Retire("r") // written only
			j.Append("a", 2, "token", []byte("1"), nil)
			waitWritten(t, j, j.Append("a", 4, "final", []byte("succeeded"), nil))
			if d, _ := j.Durable(); d != 5 {
				t.Fatalf("durable %d before the failure, want 5 (up to r's admission)", d)
			}

			tc.failing(j)
			j.Append("b", 1, "", []byte("admit b"), nil)
			b := j.Append("b", 2, "started", nil, nil) // the record an admission's Wait is for
			j.Append("c", 2, "token", []byte("x"), nil)
			r := j.Append("r", 1, "", []byte("admit r again"), nil)
			j.Append("q", 1, "", []byte("admit q again"), nil)
			if err := j.Wait(context.Background(), b); err == nil {
				t.Fatal("Wait succeeded although the journal failed")
			}
			if err := j.Wait(context.Background(), r); err == nil {
				t.Fatal("Wait for the re-posted id's admission succeeded although the journal failed")
			}
			if err := j.Wait(context.Background(), a); err != nil {
				t.Fatalf("a record acknowledged before the failure, waited for after it: %v", err)
			}
			stop()
			if n := failures.Load(); n != 1 {
				t.Errorf("OnFailure called %d times, want once", n)
			}
			if got := replayAll(t, dir); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("replay after reopening:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}
