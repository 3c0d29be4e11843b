package admission

import "hash/maphash"

// idIndex maps the ids of queued items to their tickets: an open-addressing table with linear
// probing, at most half full, whose deletions shift the following entries back rather than
// leave tombstones. A queue whose depth stays level therefore never grows it (Go's maps grow
// under such churn: their tombstones are reclaimed only by growing), so a steady queue
// allocates nothing; the table doubles when it passes half full and never shrinks, like a map.
// Guarded by the queue's lock.
type idIndex struct {
	slots []idSlot // len a power of two, or 0
	n     int
	seed  maphash.Seed
}

type idSlot struct {
	h  uint64
	tk *Ticket // nil: empty
}

const minIndexSlots = 16

func newIDIndex() idIndex { return idIndex{seed: maphash.MakeSeed()} }

// find is id's slot: the one holding it, or the empty slot where it would go.
func (x *idIndex) find(id string, h uint64) int {
	mask := len(x.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.tk == nil || s.h == h && s.tk.item.ID == id {
			return i
		}
	}
}

func (x *idIndex) hash(id string) uint64 { return maphash.String(x.seed, id) }

// get is the ticket queued under id, or nil.
func (x *idIndex) get(id string) *Ticket { return x.lookup(id, x.hash(id)) }

// lookup is get with id's hash.
func (x *idIndex) lookup(id string, h uint64) *Ticket {
	if x.n == 0 {
		return nil
	}
	return x.slots[x.find(id, h)].tk
}

// put files tk under its item's id, of hash h, which is not in the index. tk keeps h for
// remove.
func (x *idIndex) put(tk *Ticket, h uint64) {
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	tk.idHash = h
	x.slots[x.find(tk.item.ID, h)] = idSlot{h: h, tk: tk}
	x.n++
}

func (x *idIndex) grow() {
	old := x.slots
	x.slots = make([]idSlot, max(minIndexSlots, 2*len(old)))
	mask := len(x.slots) - 1
	for _, s := range old {
		if s.tk == nil {
			continue
		}
		i := int(s.h) & mask
		for x.slots[i].tk != nil {
			i = (i + 1) & mask
		}
		x.slots[i] = s
	}
}

// remove takes tk, filed by put, off the index, shifting back the entries of its probe run
// that may move.
func (x *idIndex) remove(tk *Ticket) {
	if x.n == 0 {
		return
	}
	mask := len(x.slots) - 1
	i := int(tk.idHash) & mask
	for x.slots[i].tk != tk { // by pointer: its id's bytes need not be read
		if x.slots[i].tk == nil {
			return
		}
		i = (i + 1) & mask
	}
	x.n--
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		s := x.slots[j]
		if s.tk == nil {
			break
		}
		// s may move back to the hole at i unless its home lies cyclically in (i, j].
		if home := int(s.h) & mask; (j-home)&mask < (j-i)&mask {
			continue
		}
		x.slots[i] = s
		i = j
	}
	x.slots[i] = idSlot{}
}
