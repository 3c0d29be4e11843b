package admission

// Intrusive doubly-linked lists. Every queued item is its Ticket, which sits on three lists at
// once: its pool's list for its class (arrival order), the global list for its class (LRU order
// for eviction) and its tenant's list. Unlinking from all is O(1). Links are guarded by the
// queue's lock.

const (
	linkPool   = 0 // pool.q[class]: arrival order
	linkGlobal = 1 // state.global[class]
	linkTenant = 2 // tenantQ.q: the tenant's items of the pool and class
	numLinks   = 3
)

// node is a queued item: its ticket.
type node = Ticket

type link struct{ prev, next *node }

// dlist is one list over one of a node's link pairs (k).
type dlist struct {
	head, tail *node
	len        int
	k          uint8
}

func (l *dlist) pushBack(n *node) {
	k := l.k
	n.links[k] = link{prev: l.tail}
	if l.tail != nil {
		l.tail.links[k].next = n
	} else {
		l.head = n
	}
	l.tail = n
	l.len++
}

func (l *dlist) remove(n *node) {
	k := l.k
	lk := n.links[k]
	if lk.prev != nil {
		lk.prev.links[k].next = lk.next
	} else {
		l.head = lk.next
	}
	if lk.next != nil {
		lk.next.links[k].prev = lk.prev
	} else {
		l.tail = lk.prev
	}
	n.links[k] = link{}
	l.len--
}
