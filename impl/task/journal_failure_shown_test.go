//go:build linux

package task

import (
	"errors"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// TestFailedJournalKeepsAFinishedTask: a task ran and finished, and its readers were shown it
// finished, before any fdatasync covered its records (the default Sync writes frames at once
// and syncs them lazily). The journal's disk then refuses a write, and the next admission is
// refused. After a restart on the same state directory the finished task is still finished,
// with the same stream (it does not run again), and the refused task does not exist.
func TestFailedJournalKeepsAFinishedTask(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	// No lazy fdatasync within the test: the finished task's records stay written, not synced.
	jo := journal.Options{Dir: dir, MaxUnsynced: time.Hour, MaxUnsyncedBytes: 1 << 30}
	d := startDaemonJournal(t, jo, clock, nil)
	done := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, done); err != nil {
		t.Fatal(err)
	}
	g := d.eng.next(t)
	g.tokens <- "a"
	g.tokens <- "b"
	close(g.tokens)
	shown := d.log(t, done.ID, 0) // read to its end: the task has finished
	snap, err := d.svc.Get(d.ctx, done.ID)
	if err != nil || snap.Status != Succeeded {
		t.Fatalf("the first task: %+v %v, want succeeded", snap, err)
	}

	// The journal's disk refuses writes from its records' end on (EFBIG, as a full disk's
	// ENOSPC): the next admission's write fails.
	restore := limitFileSize(t, uint64(d.j.Journal.Stats().SegmentSize))
	defer restore()
	refused := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, refused); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("an admission on the failed journal: %v, want ErrNotDurable", err)
	}
	restore()
	d.stop()

	// The operator fixes the disk and restarts the daemon.
	d = startDaemonJournal(t, jo, clock, nil)
	snap, err = d.svc.Get(d.ctx, done.ID)
	if err != nil || snap.Status != Succeeded || snap.TokensOut != 2 {
		t.Fatalf("the finished task after the restart: %+v %v, want succeeded with 2 tokens "+
			"(the failure took back records its readers were shown, and it runs again)", snap, err)
	}
	if again := d.log(t, done.ID, 0); string(again) != string(shown) {
		t.Fatalf("the finished task's stream after the restart:\n%s\nbefore:\n%s", again, shown)
	}
	if _, err := d.svc.Get(d.ctx, refused.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused task after the restart: %v, want ErrNotFound", err)
	}
}
