package llamacpp

import "sync"

// maxSessionSlots bounds the sessions whose slot a Replica remembers; the oldest is forgotten
// first (its next turn lets llama-server choose a slot, as for a new session).
const maxSessionSlots = 4096

// slotAffinity remembers which llama-server slot served each session's last turn, and which
// slots this Replica's generations occupy now, so that a session's next turn asks for its
// slot (id_slot) only when that slot is free: its KV cache then still holds the conversation
// and cache_prompt reuses it. A generation sent without id_slot lands on a slot only the
// final frame names, so while one is in flight no slot is known to be free and none is
// asked for (asking for a busy slot would queue the turn behind another task).
//
// The mutex guards plain bookkeeping (no I/O under it); Generate calls acquire before the
// request and release after it.
type slotAffinity struct {
	mu       sync.Mutex
	slotOf   map[string]int // session → slot of its last turn
	order    []string       // sessions in the order first remembered, for eviction
	pinned   map[int]int    // slot → generations sent with that id_slot, in flight
	unpinned int            // generations in flight on a slot the server chose
}

func newSlotAffinity() *slotAffinity {
	return &slotAffinity{slotOf: map[string]int{}, pinned: map[int]int{}}
}

// acquire returns the slot to ask for (-1: let the server choose) for a generation of
// session ("" for none) and counts the generation as in flight.
func (a *slotAffinity) acquire(session string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	slot, ok := a.slotOf[session]
	if session == "" || !ok || a.pinned[slot] > 0 || a.unpinned > 0 {
		a.unpinned++
		return -1
	}
	a.pinned[slot]++
	return slot
}

// release ends a generation that asked for slot (-1: none) and, when the engine named the
// slot that served it (served >= 0), remembers it for session.
func (a *slotAffinity) release(session string, slot, served int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if slot >= 0 {
		if a.pinned[slot]--; a.pinned[slot] <= 0 {
			delete(a.pinned, slot)
		}
	} else {
		a.unpinned--
	}
	if session == "" || served < 0 {
		return
	}
	if _, ok := a.slotOf[session]; !ok {
		a.order = append(a.order, session)
		if len(a.order) > maxSessionSlots {
			delete(a.slotOf, a.order[0])
			a.order = a.order[1:]
		}
	}
	a.slotOf[session] = served
}
