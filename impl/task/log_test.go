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
	var want bytes.Buffer
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
