package task

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/sse"
)

// The event log survives many reallocations: every cursor, including one that read part of the
// log before the buffer moved, reads exactly the frames appended, in order.
func TestLogGrowthKeepsFrames(t *testing.T) {
	tk := &Task{done: make(chan struct{})}
	early := tk.Subscribe(0, false)
	defer early.Close()
	var want, wantVerbose bytes.Buffer // all frames; from id 250 on, verbose variants
	var got []byte
	for i := range 2000 {
		data := sse.AppendTokenData(nil, strings.Repeat("x", i%97), i)
		var verbose []byte
		if i%250 == 0 {
			verbose = []byte(fmt.Sprintf(`{"n":%d,"human":"frame %d"}`, i, i))
		}
		tk.mu.Lock()
		tk.appendLocked("token", data, verbose)
		tk.mu.Unlock()
		want.Write(sse.AppendFrame(nil, i, "token", data))
		if i >= 250 {
			if verbose == nil {
				verbose = data
			}
			wantVerbose.Write(sse.AppendFrame(nil, i, "token", verbose))
		}
		if i%300 == 0 {
			got, _ = early.Next(got) // read while the log is still growing
		}
	}
	got, _ = early.Next(got)
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("early cursor read %d bytes, want %d", len(got), want.Len())
	}
	late := tk.Subscribe(0, false)
	defer late.Close()
	if all, _ := late.Next(nil); !bytes.Equal(all, want.Bytes()) {
		t.Fatal("late cursor differs")
	}
	v := tk.Subscribe(250, true)
	defer v.Close()
	frames, _ := v.Next(nil)
	if !bytes.HasPrefix(frames, []byte("id: 250\nevent: token\ndata: {\"n\":250,")) {
		t.Fatalf("verbose cursor starts with %.60q", frames)
	}
	if !bytes.Equal(frames, wantVerbose.Bytes()) {
		t.Fatalf("verbose cursor read %d bytes, want %d", len(frames), wantVerbose.Len())
	}
	// A cursor that reads one frame at a time gets the same bytes as one that reads them all.
	one := tk.Subscribe(0, false)
	defer one.Close()
	var each []byte
	for _, sp := range tk.spans {
		each = append(each, tk.buf[sp.start:sp.end]...)
	}
	if all, _ := one.Next(nil); !bytes.Equal(all, each) || !bytes.Equal(each, want.Bytes()) {
		t.Fatal("frames read one by one differ from the cursor's")
	}
}

// Each open cursor is woken by an append; a closed one is not, and closing twice is harmless.
func TestSubscribersWakeAndClose(t *testing.T) {
	tk := &Task{done: make(chan struct{})}
	a, b, c := tk.Subscribe(0, false), tk.Subscribe(0, false), tk.Subscribe(0, false)
	b.Close()
	b.Close()
	tk.mu.Lock()
	tk.appendLocked("token", []byte(`{"t":"x","i":0}`), nil)
	n := len(tk.subs)
	tk.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d subscribers, want 2", n)
	}
	for name, cur := range map[string]*Cursor{"a": a, "c": c} {
		select {
		case <-cur.Wake():
		default:
			t.Errorf("cursor %s not woken", name)
		}
	}
	select {
	case <-b.Wake():
		t.Error("closed cursor woken")
	default:
	}
	a.Close()
	c.Close()
	if len(tk.subs) != 0 {
		t.Fatalf("%d subscribers left", len(tk.subs))
	}
}

// heldJournal shows records only when the test says so, and tells waiters (AfterVisible).
type heldJournal struct {
	copyJournal
	visible uint64
	waiters []waiter
}

type waiter struct {
	seq uint64
	fn  func()
}

func (j *heldJournal) Append(task string, kind uint8, name string, data, extra []byte) uint64 {
	j.seq++
	return j.seq
}

func (j *heldJournal) Visible() (uint64, <-chan struct{}) { return j.visible, make(chan struct{}) }

func (j *heldJournal) AfterVisible(seq uint64, fn func()) bool {
	if seq <= j.visible {
		return false
	}
	j.waiters = append(j.waiters, waiter{seq, fn})
	return true
}

func (j *heldJournal) show(to uint64) {
	j.visible = to
	kept := j.waiters[:0]
	for _, w := range j.waiters {
		if w.seq <= to {
			w.fn()
		} else {
			kept = append(kept, w)
		}
	}
	j.waiters = kept
}

// A cursor with a notify function is told of a frame once the journal shows it, not when it is
// logged (its reader would find it held back); a cursor without one is woken at once; a
// journal that cannot tell leaves the reader to wait on Flushed.
func TestNotifyWhenTheJournalShows(t *testing.T) {
	j := &heldJournal{}
	tk := &Task{done: make(chan struct{}), j: j}
	notified := 0
	c := tk.SubscribeFunc(0, false, func() { notified++ }, nil)
	defer c.Close()
	plain := tk.Subscribe(0, false)
	defer plain.Close()
	tk.mu.Lock()
	tk.appendTokenLocked([]byte("a"), 0)
	tk.mu.Unlock()
	if notified != 0 {
		t.Fatalf("notified %d times before the journal showed the frame", notified)
	}
	select {
	case <-plain.Wake():
	default:
		t.Fatal("a cursor without notify was not woken")
	}
	if frames, _ := c.Next(nil); len(frames) != 0 || c.Flushed() == nil {
		t.Fatalf("read %q before the journal showed it", frames)
	}
	if registered, supported := c.NotifyWhenShown(); !registered || !supported {
		t.Fatalf("NotifyWhenShown: registered %v, supported %v", registered, supported)
	}
	j.show(1)
	if notified != 2 { // the append's wait and the reader's
		t.Fatalf("notified %d times once shown, want 2", notified)
	}
	if frames, _ := c.Next(nil); !bytes.Contains(frames, []byte(`"t":"a"`)) {
		t.Fatalf("after the journal showed it: %q", frames)
	}
	if registered, supported := c.NotifyWhenShown(); registered || !supported {
		t.Fatalf("nothing held back: registered %v, supported %v", registered, supported)
	}

	// A journal without AfterVisible: notify at once, and the reader waits on Flushed.
	tk2 := &Task{done: make(chan struct{}), j: &copyJournal{}}
	n2 := 0
	c2 := tk2.SubscribeFunc(0, false, func() { n2++ }, nil)
	defer c2.Close()
	tk2.mu.Lock()
	tk2.appendTokenLocked([]byte("b"), 0)
	tk2.mu.Unlock()
	if n2 != 1 {
		t.Fatalf("notified %d times, want 1", n2)
	}
	if _, supported := c2.NotifyWhenShown(); supported {
		t.Fatal("a journal without AfterVisible reported as supported")
	}
}

// TestResumeBeyondTheEndWaitsForTheJournal: a reader that resumes after an id beyond the end
// of the log (Last-Event-ID past the end) is sent the task's final frame once the task ends.
// Like every other frame, that frame may be shown only once the journal shows its record
// ("a crash of the process never takes back what a client saw"): while the journal holds the
// final record back, Next must hold the frame back too, and report the log incomplete.
func TestResumeBeyondTheEndWaitsForTheJournal(t *testing.T) {
	j := &heldJournal{}
	tk := &Task{done: make(chan struct{}), j: j}
	tk.mu.Lock()
	tk.appendLocked("started", []byte(`{"queue_position":0,"predicted_start_ms":0}`), nil)
	tk.appendTokenLocked([]byte("a"), 0)
	tk.mu.Unlock()
	j.show(j.seq) // started and token 0 are written

	// The client saw ids up to 5 (Last-Event-ID: 5) before a crash took them back.
	c := tk.Subscribe(6, false)
	defer c.Close()

	tk.mu.Lock()
	tk.status = Succeeded
	tk.appendFinalLocked("end", []byte(`{"tokens_out":1,"decode_ms":1,"decode_time_ms":1}`))
	finalSeq := j.seq
	tk.mu.Unlock()

	frames, complete := c.Next(nil)
	if len(frames) != 0 || complete {
		t.Fatalf("final frame (journal record %d, visible %d) shown before the journal showed it: %q, complete %v",
			finalSeq, j.visible, frames, complete)
	}
	j.show(finalSeq)
	frames, complete = c.Next(nil)
	if len(frames) == 0 || !complete {
		t.Fatalf("once shown: %q, complete %v", frames, complete)
	}
}
