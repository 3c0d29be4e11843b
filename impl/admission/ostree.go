package admission

import "math"

// An order-statistics treap over the queued items of one pool and class whose tenant is
// "regular" (see fair.go): keyed by each item's virtual start (the tenant's counter when the
// item will be served) rounded to 31 significant bits (snap), then its tenant's name, then an
// insertion sequence number (unique keys). The rounding groups the starts that differ only by
// the rounding of their sums, which before treats as ties broken by name, as the key does.
// Each node counts its subtree and knows its subtree's least and greatest key, so the number
// of items that start before a given virtual start, in before's tolerant order, is one
// O(log n) descent (see rank). Nodes are the tickets themselves (the tree fields of Ticket):
// the tree allocates nothing. Guarded by the queue's lock.

// treeNode is a ticket's place in its fairQueue's tree.
type treeNode struct {
	// Read at every step of a descent: first, in one cache line of the ticket.
	l, r   *node
	key    float64 // snap(start)
	lo, hi float64 // least and greatest key of the subtree
	size   int32   // of the subtree; 0: not in the tree
	prio   uint32
	// Read on ties of keys, and in the band.
	name  string // the item's tenant
	seq   uint64
	start float64 // virtual start
}

// ostree is a treap of nodes.
type ostree struct {
	root *node
	rng  uint64 // xorshift state for priorities
	seq  uint64
	// lastRank is rank's answer for the node inserted last (last), found on its way down: the
	// position of a node just inserted costs no second descent.
	last     *node
	lastRank int
}

func tsize(n *node) int32 {
	if n == nil {
		return 0
	}
	return n.ot.size
}

func (n *node) inTree() bool { return n.ot.size > 0 }

// fix recomputes n's subtree aggregates from its children's.
func (n *node) fix() {
	t := &n.ot
	t.size, t.lo, t.hi = 1, t.key, t.key
	if l := t.l; l != nil {
		t.size += l.ot.size
		t.lo = l.ot.lo
	}
	if r := t.r; r != nil {
		t.size += r.ot.size
		t.hi = r.ot.hi
	}
}

// keyLess orders a before b: virtual start, tenant name, sequence.
func keyLess(a, b *node) bool {
	if a.ot.key != b.ot.key {
		return a.ot.key < b.ot.key
	}
	if a.ot.name != b.ot.name {
		return a.ot.name < b.ot.name
	}
	return a.ot.seq < b.ot.seq
}

// merge joins a and b, every node of a before every node of b.
func merge(a, b *node) *node {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.ot.prio > b.ot.prio:
		a.ot.r = merge(a.ot.r, b)
		a.fix()
		return a
	default:
		b.ot.l = merge(a, b.ot.l)
		b.fix()
		return b
	}
}

// snap rounds x to 31 significant bits (a relative step of 2^-31, under before's tie band of
// 1e-9), monotonically.
func snap(x float64) float64 {
	const drop = 52 - 31
	b := math.Float64bits(x)
	return math.Float64frombits((b + 1<<(drop-1)) &^ (1<<drop - 1))
}

// query is one rank question: how many nodes start before v (on a tie, in before's sense,
// when their tenant's name is before name), the nodes of tenant skip counted by key alone.
type query struct {
	v, sv    float64 // v and snap(v)
	lo, hi   float64 // the keys a start tied with v may have
	name     string
	seq      uint64
	skip     *tenantQ
	fix      int // band corrections
	position int
}

func newQuery(v float64, name string, seq uint64, skip *tenantQ) query {
	band := 3e-9 * max(1, v, -v)
	return query{v: v, sv: snap(v), lo: v - band, hi: v + band, name: name, seq: seq, skip: skip}
}

// counted reports whether the descent counts t as before (key, then name and sequence).
func (q *query) counted(t *node) bool {
	k := t.ot.key
	return k < q.sv || k == q.sv && (t.ot.name < q.name || t.ot.name == q.name && t.ot.seq < q.seq)
}

// band corrects the count for t, whose key is in the band and not snap(v) (the descents test
// that inline: most nodes stop there): a start tied with v in before's sense but whose key is
// not snap(v) is ahead by name, not by key. Keys equal to snap(v) are within the band and
// ordered by name already.
func (q *query) band(t *node) {
	if t.tq == q.skip {
		return
	}
	k := t.ot.key
	ahead := t.ot.name < q.name
	if !tied(t.ot.start, q.v) {
		ahead = t.ot.start < q.v
	}
	switch counted := k < q.sv; {
	case ahead && !counted:
		q.fix++
	case !ahead && counted:
		q.fix--
	}
}

// near reports whether a subtree with keys in [lo, hi] may hold a node band corrects: its
// keys reach into the band with a key other than snap(v). The descent asks it of the subtree it
// passes by from the bounds it knows, without reading the subtree.
func (q *query) near(lo, hi float64) bool {
	return lo <= q.hi && hi >= q.lo && (lo != q.sv || hi != q.sv)
}

// side corrects the count for the subtree t the descent passes by, visiting only the subtrees
// whose keys reach into the band with a key other than snap(v): none, unless starts differ by
// more than their rounding and less than the band.
func (q *query) side(t *node) {
	for t != nil && q.near(t.ot.lo, t.ot.hi) {
		if k := t.ot.key; k != q.sv && k >= q.lo && k <= q.hi {
			q.band(t)
		}
		q.side(t.ot.l)
		t = t.ot.r
	}
}

// insert adds n with virtual start start, and sets rank for it (its own tenant skipped in the
// band corrections).
func (o *ostree) insert(n *node, start float64, skip *tenantQ) {
	o.rng ^= o.rng << 13
	o.rng ^= o.rng >> 7
	o.rng ^= o.rng << 17
	if o.rng == 0 {
		o.rng = 0x9e3779b97f4a7c15
	}
	o.seq++
	n.ot = treeNode{prio: uint32(o.rng >> 32), key: snap(start), start: start, name: n.item.Tenant, seq: o.seq}
	n.fix()
	q := newQuery(start, n.ot.name, n.ot.seq, skip)
	o.root = o.ins(o.root, n, &q)
	o.last, o.lastRank = n, q.position+q.fix
}

// ins adds n under t at its key's leaf and rotates it up while its priority is higher: one
// root-to-leaf path, on which q counts the nodes before n.
func (o *ostree) ins(t, n *node, q *query) *node {
	if t == nil {
		return n
	}
	if k := t.ot.key; k != q.sv && k >= q.lo && k <= q.hi {
		q.band(t)
	}
	if keyLess(n, t) {
		if q.near(t.ot.key, t.ot.hi) {
			q.side(t.ot.r)
		}
		t.ot.l = o.ins(t.ot.l, n, q)
		l := t.ot.l
		if l.ot.prio > t.ot.prio { // rotate right
			t.ot.l, l.ot.r = l.ot.r, t
			t.fix()
			l.fix()
			return l
		}
		t.ot.size++ // the path child's aggregates only: the other child is not read
		t.ot.lo = l.ot.lo
		return t
	}
	if q.near(t.ot.lo, t.ot.key) {
		q.side(t.ot.l)
	}
	q.position += int(tsize(t.ot.l)) + 1
	t.ot.r = o.ins(t.ot.r, n, q)
	r := t.ot.r
	if r.ot.prio > t.ot.prio { // rotate left
		t.ot.r, r.ot.l = r.ot.l, t
		t.fix()
		r.fix()
		return r
	}
	t.ot.size++
	t.ot.hi = r.ot.hi
	return t
}

// delete removes n, which is in the tree.
func (o *ostree) delete(n *node) {
	o.last = nil
	o.root = del(o.root, n)
	n.ot = treeNode{}
}

func del(t, n *node) *node {
	if t == n {
		return merge(t.ot.l, t.ot.r)
	}
	t.ot.size-- // the path child's aggregates only: the other child is not read
	if keyLess(n, t) {
		t.ot.l = del(t.ot.l, n)
		t.ot.lo = t.ot.key
		if l := t.ot.l; l != nil {
			t.ot.lo = l.ot.lo
		}
	} else {
		t.ot.r = del(t.ot.r, n)
		t.ot.hi = t.ot.key
		if r := t.ot.r; r != nil {
			t.ot.hi = r.ot.hi
		}
	}
	return t
}

// rank is the number of nodes that start before v (on a tie, in before's sense, when their
// tenant's name is before name; with name's own items, those before sequence seq), the nodes
// of tenant skip compared by key alone: one descent.
func (o *ostree) rank(v float64, name string, seq uint64, skip *tenantQ) int {
	q := newQuery(v, name, seq, skip)
	for t := o.root; t != nil; {
		if k := t.ot.key; k != q.sv && k >= q.lo && k <= q.hi {
			q.band(t)
		}
		if q.counted(t) {
			if q.near(t.ot.lo, t.ot.key) {
				q.side(t.ot.l)
			}
			q.position += int(tsize(t.ot.l)) + 1
			t = t.ot.r
		} else {
			if q.near(t.ot.key, t.ot.hi) {
				q.side(t.ot.r)
			}
			t = t.ot.l
		}
	}
	return q.position + q.fix
}
