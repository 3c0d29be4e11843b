//go:build linux

package task

import (
	"context"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/task/tasktest"
	"github.com/orchestratord/orchestratord/impl/tenant"
)

// TestFailedJournalDoesNotChargeTwice: a task charged while the journal is failing (its disk
// refuses writes) stays named in budgets.json, so the restart that brings it back unended
// does not charge it again (README, Budgets: "each task's once even across a crash"). The
// failure raised the journal's durable mark to release its waiters, and the budget file took
// the task's final record, never written, for on disk (journal.OnDisk now says what is).
func TestFailedJournalDoesNotChargeTwice(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(t.TempDir(), "budgets.json")
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	alice := &tenant.Key{Name: "alice", TokenBudget: 100}

	b := openBudgets(t, path)
	d := startMeterDaemon(t, dir, clock, &budgetMeter{budgets: b})
	s := d.submitCharged(t, b, alice)
	g := d.eng.next(t)
	g.tokens <- "a"
	d.waitShown(t, s.ID, "0:started,1:token,2:metrics")
	// Everything so far (admission, running record, first token) is on disk.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.j.mu.Lock()
	last := d.j.last
	d.j.mu.Unlock()
	if err := d.j.Journal.Wait(ctx, last); err != nil {
		t.Fatal(err)
	}

	// The journal's disk now refuses writes (as a full or failing disk would): a file-size limit
	// just below the segment's end makes its next write fail (EFBIG). budgets.json (a few dozen
	// bytes, on the state directory's disk) is still written.
	limit := uint64(d.j.Journal.Stats().SegmentSize)
	if limit < 200 {
		t.Fatalf("segment of %d bytes: too small for the test's file-size limit", limit)
	}
	restore := limitFileSize(t, limit)
	defer restore()
	g.tokens <- "b"
	d.waitShown(t, s.ID, "0:started,1:token,2:metrics,3:token")
	d.j.mu.Lock()
	last = d.j.last
	d.j.mu.Unlock()
	if err := d.j.Journal.Wait(ctx, last); err == nil {
		t.Fatal("the journal did not fail")
	}
	g.tokens <- "c"
	close(g.tokens)
	d.log(t, s.ID, 0) // the stream goes on from memory and ends
	if used := b.Used("alice"); used != 3 {
		t.Fatalf("used before the restart: %d, want 3", used)
	}
	restore()
	d.stop()

	// The operator fixes the disk and restarts the daemon.
	b = openBudgets(t, path)
	d = startMeterDaemon(t, dir, clock, &budgetMeter{budgets: b})
	snap, err := d.svc.Get(d.ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if used := b.Used("alice"); used != 3 {
		t.Fatalf("after the restart (task %s, %d tokens) the key is charged %d tokens for a task that produced 3: "+
			"budgets.json forgot the task because the failed journal reported its final record durable", snap.Status,
			snap.TokensOut, used)
	}
}

// limitFileSize makes every write of this process past limit bytes of a file fail (EFBIG, as
// a full disk's ENOSPC would), and returns what lifts it again (called more than once, it
// lifts it once). The limit is the whole process's: lift it as soon as the failure happened.
func limitFileSize(t *testing.T, limit uint64) (restore func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
	}
	return sync.OnceFunc(func() { _ = syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old) })
}
