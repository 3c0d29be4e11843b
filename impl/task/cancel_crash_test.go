package task

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// lagging is a journal whose writer has not yet reached a task's final record: while hold
// is set, final records are kept back (not written, not shown), as in the moment between
// Append and the journal goroutine's write. A crash in that moment loses them.
type lagging struct {
	c *crashable

	mu      sync.Mutex
	hold    bool
	pending []func()
	next    uint64 // the sequence number the journal will give the first held record
	shown   chan struct{}
}

func (l *lagging) Append(task string, kind uint8, name string, data, extra []byte) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hold && kind == recFinal {
		if len(l.pending) == 0 {
			l.next = l.c.last + 1
		}
		data, extra = append([]byte(nil), data...), append([]byte(nil), extra...)
		l.pending = append(l.pending, func() { l.c.Append(task, kind, name, data, extra) })
		return l.next + uint64(len(l.pending)) - 1
	}
	if len(l.pending) > 0 {
		panic("lagging: a record appended behind held ones")
	}
	return l.c.Append(task, kind, name, data, extra)
}

// release writes the held records.
func (l *lagging) release() {
	l.mu.Lock()
	for _, f := range l.pending {
		f()
	}
	l.pending, l.hold = nil, false
	close(l.shown)
	l.mu.Unlock()
}

func (l *lagging) Wait(ctx context.Context, seq uint64) error { return l.c.Wait(ctx, seq) }

func (l *lagging) Visible() (uint64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ch := l.c.Visible()
	if len(l.pending) > 0 {
		return min(v, l.next-1), l.shown
	}
	return v, ch
}

func (l *lagging) Retire(task string) { l.c.Retire(task) }

func (l *lagging) Replay(fn func(task string, kind uint8, name string, data, extra []byte) error) error {
	return l.c.Replay(fn)
}

// TestCancelJustBeforeACrash: a queued task whose cancel was answered (the API's 204) must
// not run after a crash that follows: README (Durability) "a crash of the daemon's process
// loses nothing acknowledged". Cancel answered as soon as the task's end was in memory, before
// the journal had written its final record: a kill -9 then brought the task back queued, and
// the restart ran the generation its client had cancelled.
func TestCancelJustBeforeACrash(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	var lag *lagging
	setup := func(o *Options, _ *journal.Journal) {
		lag = &lagging{c: o.Journal.(*crashable), shown: make(chan struct{})}
		o.Journal = lag
	}
	d := startDaemonWith(t, dir, clock, setup)
	running, queued := spec(admission.Interactive), spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, running); err != nil {
		t.Fatal(err)
	}
	d.eng.next(t) // holds the only slot
	if _, err := d.svc.Submit(d.ctx, queued); err != nil {
		t.Fatal(err)
	}

	lag.mu.Lock()
	lag.hold = true
	lag.mu.Unlock()
	answered := make(chan error, 1)
	go func() { answered <- d.svc.Cancel(d.ctx, queued.ID) }()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatal(err)
		}
		// The client has its 204; the daemon is killed before the journal wrote the end.
		d.j.crash(t)
		d.stop()
		d = startDaemon(t, dir, clock)
		s, err := d.svc.Get(d.ctx, queued.ID)
		if err != nil {
			t.Fatal(err)
		}
		if s.Status != Canceled {
			t.Fatalf("cancel answered before the task's end was journaled: after a crash the task is %s and runs again", s.Status)
		}
	case <-time.After(300 * time.Millisecond):
		// Cancel waits for the journal: once it has the end, the cancel is answered.
		lag.release()
		if err := <-answered; err != nil {
			t.Fatal(err)
		}
		d.j.crash(t)
		d.stop()
		d = startDaemon(t, dir, clock)
		if s, err := d.svc.Get(d.ctx, queued.ID); err != nil || s.Status != Canceled {
			t.Fatalf("after the crash: %+v %v; want canceled", s, err)
		}
	}
}
