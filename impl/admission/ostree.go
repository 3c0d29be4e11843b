package admission

import "math"

// An order-statistics treap over the queued items of one pool and class whose tenant is
// "regular" (see fair.go): keyed by each item's virtual start (the tenant's counter when the
// item will be served) rounded to 31 significant bits (snap), then its tenant's name, then an
// insertion sequence number (unique keys). The rounding groups the starts that differ only by
// the rounding of their sums, which before treats as ties broken by name, as the key does.
// Each node counts its subtree, so the number of items that start before a given virtual start
// is one O(log n) descent. Nodes are the tickets themselves (the tree fields of Ticket): the tree
// allocates nothing. Guarded by the queue's lock.

// treeNode is a ticket's place in its fairQueue's tree.
type treeNode struct {
	l, r   *node
	prio   uint32
	size   int32
	key    float64 // snap(start)
	start  float64 // virtual start
	seq    uint64
	inTree bool
}

// ostree is a treap of nodes.
type ostree struct {
	root *node
	rng  uint64 // xorshift state for priorities
	seq  uint64
	// rank is the number of nodes before the node inserted last (last), found on its way down:
	// countLess of a node just inserted costs no second descent.
	last *node
	rank int
}

func tsize(n *node) int32 {
	if n == nil {
		return 0
	}
	return n.ot.size
}

func (n *node) fix() { n.ot.size = 1 + tsize(n.ot.l) + tsize(n.ot.r) }

// keyLess orders a before b: virtual start, tenant name, sequence.
func keyLess(a, b *node) bool {
	if a.ot.key != b.ot.key {
		return a.ot.key < b.ot.key
	}
	if a.item.Tenant != b.item.Tenant {
		return a.item.Tenant < b.item.Tenant
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

// insert adds n with virtual start start.
func (o *ostree) insert(n *node, start float64) {
	o.rng ^= o.rng << 13
	o.rng ^= o.rng >> 7
	o.rng ^= o.rng << 17
	if o.rng == 0 {
		o.rng = 0x9e3779b97f4a7c15
	}
	o.seq++
	n.ot = treeNode{prio: uint32(o.rng >> 32), size: 1, key: snap(start), start: start, seq: o.seq, inTree: true}
	o.last, o.rank = n, 0
	o.root = o.ins(o.root, n)
}

// ins adds n under t at its key's leaf and rotates it up while its priority is higher: one
// root-to-leaf path.
func (o *ostree) ins(t, n *node) *node {
	if t == nil {
		return n
	}
	t.ot.size++
	if keyLess(n, t) {
		t.ot.l = o.ins(t.ot.l, n)
		if l := t.ot.l; l.ot.prio > t.ot.prio { // rotate right
			t.ot.l, l.ot.r = l.ot.r, t
			t.fix()
			l.fix()
			return l
		}
		return t
	}
	o.rank += int(tsize(t.ot.l)) + 1
	t.ot.r = o.ins(t.ot.r, n)
	if r := t.ot.r; r.ot.prio > t.ot.prio { // rotate left
		t.ot.r, r.ot.l = r.ot.l, t
		t.fix()
		r.fix()
		return r
	}
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
	if keyLess(n, t) {
		t.ot.l = del(t.ot.l, n)
	} else {
		t.ot.r = del(t.ot.r, n)
	}
	t.ot.size--
	return t
}

// countLess is the number of nodes whose key is before (snap(v), name, seq).
func (o *ostree) countLess(v float64, name string, seq uint64) int {
	c := 0
	sv := snap(v)
	for t := o.root; t != nil; {
		k := t.ot.key
		if k < sv || k == sv && (t.item.Tenant < name || t.item.Tenant == name && t.ot.seq < seq) {
			c += int(tsize(t.ot.l)) + 1
			t = t.ot.r
		} else {
			t = t.ot.l
		}
	}
	return c
}

// bandFix corrects countLess(v, name, seq) to the tolerant order of before: a node whose
// start is within before's tie band of v but whose key is not snap(v) is ahead when its
// tenant's name is before name (countLess compared the keys). Nodes with key snap(v) are within
// the band and were ordered by name already. Nodes of tenant skip are left out. It visits only
// the band's nodes with another key, O(log n + their number): none unless starts differ by
// more than their rounding and less than the band.
func (o *ostree) bandFix(v float64, name string, skip *tenantQ) int {
	band := 3e-9 * max(1, v, -v)
	sv := snap(v)
	return bandWalk(o.root, v-band, sv, v, name, skip, true) + bandWalk(o.root, sv, v+band, v, name, skip, false)
}

// bandWalk visits the nodes with a key in [lo, hi) (below) or (lo, hi] (above), and returns
// the correction for those counted differently by countLess and before.
func bandWalk(t *node, lo, hi, v float64, name string, skip *tenantQ, below bool) int {
	d := 0
	for t != nil {
		k := t.ot.key
		if below && k < lo || !below && k <= lo {
			t = t.ot.r
			continue
		}
		if below && k >= hi || !below && k > hi {
			t = t.ot.l
			continue
		}
		if t.tq != skip {
			ahead := t.ot.start < v
			if tied(t.ot.start, v) {
				ahead = t.item.Tenant < name
			}
			if ahead != below {
				if ahead {
					d++
				} else {
					d--
				}
			}
		}
		d += bandWalk(t.ot.l, lo, hi, v, name, skip, below)
		t = t.ot.r
	}
	return d
}
