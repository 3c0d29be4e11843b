package admission

import "fmt"

// Per-replica accounting. A pool's slots are granted under the queue's lock before the task
// service has chosen the replica the item runs on (the grant is a reservation of pool
// capacity); once it has, it records the replica here with Ticket.Assign, moves the slot with
// Assign again when the item fails over or migrates to another replica, and Done takes it off.
// The pool's busy count and its replicas' counts are thus kept by one owner, under one lock:
//
//	busy = sum over replicas of ReplicaBusy + slots granted but not (or no longer) on a replica
//
// and no other component counts busy slots.

// Assign records that the ticket's slot is on replica (an id of the item's pool): the replica
// the task service chose for it. Assigning another replica moves the slot there (failover,
// migration); "" takes it off its replica while the item keeps its slot (between a failed
// attempt and the next placement). It fails with ErrNotBusy unless the ticket holds a slot.
func (t *Ticket) Assign(replica string) error {
	q := t.q
	if q == nil {
		return fmt.Errorf("%w: ticket was never enqueued", ErrNotBusy)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.state != stDispatched && t.state != stRunning {
		return fmt.Errorf("%w: ticket %q holds no slot", ErrNotBusy, t.item.ID)
	}
	q.st.place(t, replica)
	return nil
}

// Replica is the replica the ticket's slot is on ("" none).
func (t *Ticket) Replica() string {
	q := t.q
	if q == nil {
		return ""
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return t.replica
}

// ReplicaBusy is the number of pool's slots held by items on replica: the one count of a
// replica's busy slots, which placement and pool health read. 0 for an unknown pool or
// replica. It does not allocate.
func (q *Queue) ReplicaBusy(pool, replica string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if p := q.st.pools[pool]; p != nil {
		return p.reps[replica]
	}
	return 0
}

// place moves tk's slot from the replica it is on (if any) to replica ("" none). A replica
// keeps its entry once seen (replica ids are the pools' configured ones), so that moving a
// slot back and forth neither allocates nor churns the map.
func (s *state) place(tk *Ticket, replica string) {
	if tk.replica == replica {
		return
	}
	p := tk.pool
	if tk.replica != "" {
		p.reps[tk.replica]--
	}
	tk.replica = replica
	if replica != "" {
		if p.reps == nil {
			p.reps = make(map[string]int)
		}
		p.reps[replica]++
	}
}

// Busy is pool's busy slots (Stats' PoolStats.Busy) and, when perReplica is not nil, fills it
// with the busy slots of each replica (read under the same lock as the pool's, so that they
// agree: busy is their sum plus the slots not assigned to a replica). 0 for an unknown pool.
func (q *Queue) Busy(pool string, perReplica map[string]int) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.st.pools[pool]
	if p == nil {
		return 0
	}
	if perReplica != nil {
		for id, n := range p.reps {
			if n > 0 {
				perReplica[id] = n
			}
		}
	}
	return p.busy
}
