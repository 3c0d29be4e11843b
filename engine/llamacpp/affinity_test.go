package llamacpp

import (
	"strconv"
	"testing"
)

// A session's turn asks for its last slot only when that slot is known to be free.
func TestSlotAffinity(t *testing.T) {
	type step struct {
		op      string // "acquire" or "release"
		session string
		slot    int // release: the slot asked for
		served  int // release: the slot the engine named
		want    int // acquire: the slot asked for
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"no session never pins", []step{
			{op: "acquire", want: -1}, {op: "release", slot: -1, served: 0},
			{op: "acquire", want: -1},
		}},
		{"first turn lets the server choose, second asks for its slot", []step{
			{op: "acquire", session: "s", want: -1}, {op: "release", session: "s", slot: -1, served: 1},
			{op: "acquire", session: "s", want: 1}, {op: "release", session: "s", slot: 1, served: 1},
			{op: "acquire", session: "s", want: 1},
		}},
		{"slot busy with a pinned turn", []step{
			{op: "acquire", session: "s", want: -1}, {op: "release", session: "s", slot: -1, served: 0},
			{op: "acquire", session: "s", want: 0},
			{op: "acquire", session: "s", want: -1}, // the same slot is taken: the server chooses
		}},
		{"an unpinned generation in flight may hold the slot", []step{
			{op: "acquire", session: "s", want: -1}, {op: "release", session: "s", slot: -1, served: 0},
			{op: "acquire", session: "", want: -1},
			{op: "acquire", session: "s", want: -1},
			{op: "release", session: "", slot: -1, served: 1},
			{op: "release", session: "s", slot: -1, served: 0},
			{op: "acquire", session: "s", want: 0},
		}},
		{"a failed turn keeps the last known slot", []step{
			{op: "acquire", session: "s", want: -1}, {op: "release", session: "s", slot: -1, served: 1},
			{op: "acquire", session: "s", want: 1}, {op: "release", session: "s", slot: 1, served: -1},
			{op: "acquire", session: "s", want: 1},
		}},
		{"the turn moved to another slot", []step{
			{op: "acquire", session: "s", want: -1}, {op: "release", session: "s", slot: -1, served: 0},
			{op: "acquire", session: "s", want: 0}, {op: "release", session: "s", slot: 0, served: 1},
			{op: "acquire", session: "s", want: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newSlotAffinity()
			for i, s := range tt.steps {
				switch s.op {
				case "acquire":
					if got := a.acquire(s.session); got != s.want {
						t.Fatalf("step %d: acquire(%q) = %d, want %d", i, s.session, got, s.want)
					}
				case "release":
					a.release(s.session, s.slot, s.served)
				}
			}
		})
	}
}

// The remembered sessions are bounded: the oldest is forgotten first.
func TestSlotAffinityBounded(t *testing.T) {
	a := newSlotAffinity()
	for i := range maxSessionSlots + 1 {
		a.acquire("")
		a.release("s"+strconv.Itoa(i), -1, 0)
	}
	if len(a.slotOf) != maxSessionSlots || len(a.order) != maxSessionSlots {
		t.Fatalf("%d sessions remembered (%d in order), want %d", len(a.slotOf), len(a.order), maxSessionSlots)
	}
	if got := a.acquire("s0"); got != -1 {
		t.Errorf("the oldest session still pins slot %d", got)
	}
	a.release("s0", -1, -1)
	if got := a.acquire("s" + strconv.Itoa(maxSessionSlots)); got != 0 {
		t.Errorf("the newest session asks for slot %d, want 0", got)
	}
}
