package admission

import "math"

// An order-statistics B+-tree over the queued items of one pool and class whose tenant is
// "regular" (see fair.go): keyed by each item's virtual start (the tenant's counter when the
// item will be served) rounded to 31 significant bits (snap), then its tenant's name, then an
// insertion sequence number (unique keys). The rounding groups the starts that differ only by
// the rounding of their sums, which before treats as ties broken by name, as the key does.
//
// Entries live in arrays: leaves of up to leafCap entries, linked in key order, under inner
// nodes of up to innerCap children, each child with its entry count and a separator key. A
// descent reads a few contiguous nodes (three levels at 100,000 items) rather than one ticket
// per level, so it stays in cache where a binary tree of tickets missed at every step. The
// number of items that start before a given virtual start, in before's tolerant order, is one
// descent by key (counting the children passed by) plus a scan of the entries whose keys fall
// in the tie band around it but differ from its key (see rank): none, unless starts differ by
// more than their rounding and less than the band.
//
// Nodes are kept on free lists when they empty, so that a queue at a steady depth allocates
// nothing. Guarded by the queue's lock.

const (
	leafCap  = 32 // entries per leaf
	innerCap = 32 // children per inner node
	// maxFreeNodes bounds each free list.
	maxFreeNodes = 64
)

// bkey is an entry's place in the order: snapped start, tenant name, sequence.
type bkey struct {
	key  float64 // snap(start)
	name string  // the item's tenant
	seq  uint64
}

// less orders a before b: virtual start, tenant name, sequence.
func (a *bkey) less(b *bkey) bool {
	if a.key != b.key {
		return a.key < b.key
	}
	if a.name != b.name {
		return a.name < b.name
	}
	return a.seq < b.seq
}

// treeNode is a ticket's key while it is in its fairQueue's tree.
type treeNode struct {
	bkey
	start float64 // virtual start
	in    bool    // in the tree
}

// entry is one item of a leaf, as insert passes it and tests read it.
type entry struct {
	bkey
	start float64
	tq    *tenantQ // the item's tenant (band corrections skip their own)
	n     *node
}

// leaf holds its entries field by field: a search reads the keys, a few cache lines, and the
// names only on equal keys. The rest of an entry is read from its ticket (n.ot, n.tq): the
// sequence on equal keys and names, the start and tenant in the band (both rare).
type leaf struct {
	n          int
	prev, next *leaf // neighbours in key order
	keys       [leafCap]float64
	names      [leafCap]string
	nodes      [leafCap]*node
}

// less reports whether entry i of l is before k.
func (l *leaf) less(i int, k *bkey) bool {
	if l.keys[i] != k.key {
		return l.keys[i] < k.key
	}
	if l.names[i] != k.name {
		return l.names[i] < k.name
	}
	return l.nodes[i].ot.seq < k.seq
}

func (l *leaf) entry(i int) entry {
	n := l.nodes[i]
	if n == nil {
		return entry{bkey: bkey{key: l.keys[i], name: l.names[i]}}
	}
	return entry{bkey: bkey{key: l.keys[i], name: l.names[i], seq: n.ot.seq}, start: n.ot.start, tq: n.tq, n: n}
}

func (l *leaf) set(i int, e *entry) {
	l.keys[i], l.names[i], l.nodes[i] = e.key, e.name, e.n
}

// move copies entries [from, from+k) of src to [to, to+k) of l (overlapping within one leaf).
func (l *leaf) move(to int, src *leaf, from, k int) {
	if k == 0 {
		return
	}
	copy(l.keys[to:to+k], src.keys[from:from+k])
	copy(l.names[to:to+k], src.names[from:from+k])
	copy(l.nodes[to:to+k], src.nodes[from:from+k])
}

// clearFrom zeroes entries [i, j) of l, dropping their pointers.
func (l *leaf) clearFrom(i, j int) {
	clear(l.keys[i:j])
	clear(l.names[i:j])
	clear(l.nodes[i:j])
}

// inner is an inner node. sep[i] (i >= 1) separates its children: every key under child i-1 is
// before sep[i], which is not after any key under child i. Separators are set when a node
// splits and stay valid bounds as entries leave.
type inner struct {
	n      int
	cnt    [innerCap]int // entries under each child
	sep    [innerCap]bkey
	skey   [innerCap]float64 // sep[i].key, for searches that read names only on equal keys
	kids   [innerCap]*inner  // children, above height 1
	leaves [innerCap]*leaf   // children, at height 1
}

// ostree is the B+-tree.
type ostree struct {
	root   *inner // nil until the first insert; then at least one leaf, empty when the tree is
	height int    // of root: 1 when its children are leaves
	seq    uint64
	// lastRank is rank's answer for the node inserted last (last), found on its way down: the
	// position of a node just inserted costs no second descent.
	last     *node
	lastRank int
	// near counts the neighbouring entries (in key order) whose keys differ by less than
	// nearBand: with none, no entry has a key in the band around an entry's key other than
	// that key, and ranks of present keys skip the band scan.
	near int
	// at and atIdx are where insLeaf put the entry it inserted.
	at        *leaf
	atIdx     int
	freeLeaf  freeList[leaf]
	freeInner freeList[inner]
}

func (n *node) inTree() bool { return n.ot.in }

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
	v, sv  float64 // v and snap(v)
	lo, hi float64 // the keys a start tied with v may have
	name   string
	skip   *tenantQ
	fix    int // band corrections
}

func newQuery(v float64, name string, skip *tenantQ) query {
	band := 3e-9 * max(1, v, -v)
	return query{v: v, sv: snap(v), lo: v - band, hi: v + band, name: name, skip: skip}
}

// band corrects the count for e, whose key is in the band and not snap(v): a start tied with v
// in before's sense but whose key is not snap(v) is ahead by name, not by key. Keys equal to
// snap(v) are within the band and ordered by name already.
func (q *query) band(l *leaf, i int) {
	n := l.nodes[i]
	if n.tq == q.skip {
		return
	}
	ahead := l.names[i] < q.name
	if !tied(n.ot.start, q.v) {
		ahead = n.ot.start < q.v
	}
	switch counted := l.keys[i] < q.sv; {
	case ahead && !counted:
		q.fix++
	case !ahead && counted:
		q.fix--
	}
}

// route is the child of x under which k belongs: the last whose separator is not after k.
func (x *inner) route(k *bkey) int {
	lo, hi := 1, x.n // children [1, lo) have separators not after k; [hi, n) after it
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if sk := x.skey[mid]; k.key < sk || k.key == sk && k.less(&x.sep[mid]) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo - 1
}

// lowerBound is the index of the first entry of l not before k.
func (l *leaf) lowerBound(k *bkey) int {
	lo, hi := 0, l.n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if l.less(mid, k) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// freeList keeps up to maxFreeNodes cleared nodes of one kind for reuse.
type freeList[T any] []*T

// get returns a kept node, or a new one.
func (f *freeList[T]) get() *T {
	if k := len(*f); k > 0 {
		x := (*f)[k-1]
		(*f)[k-1] = nil
		*f = (*f)[:k-1]
		return x
	}
	return new(T)
}

// put clears x and keeps it, unless the list is full.
func (f *freeList[T]) put(x *T) {
	var zero T
	*x = zero
	if len(*f) < maxFreeNodes {
		*f = append(*f, x)
	}
}

// dropLeaf unlinks l, which holds nothing, from the leaf chain and keeps it for reuse.
func (o *ostree) dropLeaf(l *leaf) {
	if l.prev != nil {
		l.prev.next = l.next
	}
	if l.next != nil {
		l.next.prev = l.prev
	}
	o.freeLeaf.put(l)
}

// insert adds n with virtual start start, and sets lastRank for it (its own tenant skipped in
// the band corrections).
func (o *ostree) insert(n *node, start float64, skip *tenantQ) {
	o.seq++
	n.ot = treeNode{bkey: bkey{key: snap(start), name: n.item.Tenant, seq: o.seq}, start: start, in: true}
	e := entry{bkey: n.ot.bkey, start: start, tq: n.tq, n: n}
	if o.root == nil {
		o.root, o.height = o.freeInner.get(), 1
		o.root.n = 1
		o.root.leaves[0] = o.freeLeaf.get()
	}
	rank, right, sep := o.insInner(o.root, o.height, &e)
	if right != nil { // the root split: a new root above the two halves
		old := o.root
		r := o.freeInner.get()
		r.n = 2
		r.kids[0], r.kids[1] = old, right
		r.cnt[1] = right.total()
		r.cnt[0] = old.total()
		r.sep[1] = sep
		r.syncKeys()
		o.root = r
		o.height++
	}
	l, i := o.at, o.atIdx
	o.at = nil
	prev, hasPrev := l.before(i)
	next, hasNext := l.after(i)
	if hasPrev && hasNext {
		o.near -= nearPair(prev, next)
	}
	if hasPrev {
		o.near += nearPair(prev, e.key)
	}
	if hasNext {
		o.near += nearPair(e.key, next)
	}
	q := newQuery(start, n.ot.name, skip)
	if o.near > 0 {
		o.bandFix(&q)
	}
	o.last, o.lastRank = n, rank+q.fix
}

// nearBand is the relative distance within which two keys count as near: wider than any two
// keys can be that fall in one start's band (3e-9 either side, plus the rounding of snap).
const nearBand = 8e-9

// nearPair is 1 when keys a and b differ by less than nearBand, else 0.
func nearPair(a, b float64) int {
	if a != b && within(a, b, nearBand) {
		return 1
	}
	return 0
}

// before is the key of the entry before entry i of l, if any.
func (l *leaf) before(i int) (float64, bool) {
	switch {
	case i > 0:
		return l.keys[i-1], true
	case l.prev != nil:
		return l.prev.keys[l.prev.n-1], true
	}
	return 0, false
}

// after is the key of the entry after entry i of l, if any.
func (l *leaf) after(i int) (float64, bool) {
	switch {
	case i+1 < l.n:
		return l.keys[i+1], true
	case l.next != nil:
		return l.next.keys[0], true
	}
	return 0, false
}

func (x *inner) total() int {
	s := 0
	for _, c := range x.cnt[:x.n] {
		s += c
	}
	return s
}

// insInner adds e under x, of height h, and returns the number of entries under x before it;
// when x had to split, the new right half and its separator.
func (o *ostree) insInner(x *inner, h int, e *entry) (int, *inner, bkey) {
	i := x.route(&e.bkey)
	rank := 0
	for _, c := range x.cnt[:i] {
		rank += c
	}
	x.cnt[i]++
	var newKid *inner
	var newLeaf *leaf
	var sep bkey
	var newCnt int
	if h == 1 {
		var r int
		r, newLeaf = o.insLeaf(x.leaves[i], e)
		rank += r
		if newLeaf == nil {
			return rank, nil, bkey{}
		}
		sep, newCnt = bkey{key: newLeaf.keys[0], name: newLeaf.names[0], seq: newLeaf.nodes[0].ot.seq}, newLeaf.n
	} else {
		var r int
		r, newKid, sep = o.insInner(x.kids[i], h-1, e)
		rank += r
		if newKid == nil {
			return rank, nil, bkey{}
		}
		newCnt = newKid.total()
	}
	x.cnt[i] -= newCnt
	// The new child goes at i+1; a full x splits first.
	pos, y := i+1, x
	var right *inner
	var rsep bkey
	if x.n == innerCap {
		right = o.freeInner.get()
		if pos == x.n { // appended at the end: the right half holds just the new child
			rsep = sep
			right.n = 1
			right.cnt[0], right.sep[0] = newCnt, bkey{}
			right.syncKeys()
			if h == 1 {
				right.leaves[0] = newLeaf
			} else {
				right.kids[0] = newKid
			}
			return rank, right, rsep
		}
		const mid = innerCap / 2
		rsep = x.sep[mid]
		right.n = x.n - mid
		copy(right.cnt[:], x.cnt[mid:x.n])
		copy(right.sep[:], x.sep[mid:x.n])
		right.sep[0] = bkey{}
		if h == 1 {
			copy(right.leaves[:], x.leaves[mid:x.n])
			clear(x.leaves[mid:x.n])
		} else {
			copy(right.kids[:], x.kids[mid:x.n])
			clear(x.kids[mid:x.n])
		}
		clear(x.sep[mid:x.n])
		clear(x.cnt[mid:x.n])
		x.n = mid
		x.syncKeys()
		right.syncKeys()
		if pos > mid {
			y, pos = right, pos-mid
		}
	}
	// Insert the child at pos of y.
	copy(y.cnt[pos+1:y.n+1], y.cnt[pos:y.n])
	copy(y.sep[pos+1:y.n+1], y.sep[pos:y.n])
	y.cnt[pos], y.sep[pos] = newCnt, sep
	y.syncKeys()
	if h == 1 {
		copy(y.leaves[pos+1:y.n+1], y.leaves[pos:y.n])
		y.leaves[pos] = newLeaf
	} else {
		copy(y.kids[pos+1:y.n+1], y.kids[pos:y.n])
		y.kids[pos] = newKid
	}
	y.n++
	return rank, right, rsep
}

// insLeaf adds e to l and returns its index; when l was full, the new leaf that follows it.
func (o *ostree) insLeaf(l *leaf, e *entry) (int, *leaf) {
	i := l.lowerBound(&e.bkey)
	if l.n < leafCap {
		l.move(i+1, l, i, l.n-i)
		l.set(i, e)
		l.n++
		o.at, o.atIdx = l, i
		return i, nil
	}
	r := o.freeLeaf.get()
	r.prev, r.next = l, l.next
	if l.next != nil {
		l.next.prev = r
	}
	l.next = r
	if i == l.n { // appended at the end: the new leaf holds just e
		r.set(0, e)
		r.n = 1
		o.at, o.atIdx = r, 0
		return i, r
	}
	const mid = leafCap / 2
	r.move(0, l, mid, l.n-mid)
	r.n = l.n - mid
	l.clearFrom(mid, l.n)
	l.n = mid
	if i <= mid {
		l.move(i+1, l, i, l.n-i)
		l.set(i, e)
		l.n++
		o.at, o.atIdx = l, i
	} else {
		j := i - mid
		r.move(j+1, r, j, r.n-j)
		r.set(j, e)
		r.n++
		o.at, o.atIdx = r, j
	}
	return i, r
}

// delete removes n, which is in the tree.
func (o *ostree) delete(n *node) {
	o.last = nil
	o.delInner(o.root, o.height, &n.ot.bkey)
	switch {
	case o.root.n == 0:
		o.freeInner.put(o.root)
		o.root, o.height = nil, 0
	case o.height > 1 && o.root.n == 1:
		old := o.root
		o.root = old.kids[0]
		o.height--
		o.freeInner.put(old)
	}
	n.ot = treeNode{}
}

// delInner removes the entry with key k under x, of height h, then removes an emptied child
// and merges a child left small into a neighbour that has room.
func (o *ostree) delInner(x *inner, h int, k *bkey) {
	i := x.route(k)
	x.cnt[i]--
	if h == 1 {
		l := x.leaves[i]
		j := l.lowerBound(k)
		prev, hasPrev := l.before(j)
		next, hasNext := l.after(j)
		if hasPrev {
			o.near -= nearPair(prev, k.key)
		}
		if hasNext {
			o.near -= nearPair(k.key, next)
		}
		if hasPrev && hasNext {
			o.near += nearPair(prev, next)
		}
		l.move(j, l, j+1, l.n-j-1)
		l.n--
		l.clearFrom(l.n, l.n+1)
		switch {
		case l.n == 0 && x.n == 1 && h == o.height: // the root's one leaf stays, empty
		case l.n == 0:
			o.dropLeaf(l)
			x.removeChild(i)
		case l.n < leafCap/4:
			o.mergeLeaf(x, i)
		}
		return
	}
	c := x.kids[i]
	o.delInner(c, h-1, k)
	switch {
	case c.n == 0:
		o.freeInner.put(c)
		x.removeChild(i)
	case c.n < innerCap/4:
		o.mergeInner(x, i)
	}
}

// removeChild takes child i off x.
func (x *inner) removeChild(i int) {
	copy(x.cnt[i:x.n-1], x.cnt[i+1:x.n])
	copy(x.sep[i:x.n-1], x.sep[i+1:x.n])
	copy(x.leaves[i:x.n-1], x.leaves[i+1:x.n])
	copy(x.kids[i:x.n-1], x.kids[i+1:x.n])
	x.n--
	x.cnt[x.n], x.sep[x.n], x.leaves[x.n], x.kids[x.n] = 0, bkey{}, nil, nil
	x.sep[0] = bkey{}
	x.syncKeys()
}

// syncKeys copies the separators' keys to skey.
func (x *inner) syncKeys() {
	for i := range x.sep {
		x.skey[i] = x.sep[i].key
	}
}

// mergeLeaf moves leaf child i of x into a neighbour under x when both fit in half a leaf.
func (o *ostree) mergeLeaf(x *inner, i int) {
	a := i - 1 // merge child a+1 into child a
	switch {
	case i+1 < x.n && x.leaves[i].n+x.leaves[i+1].n <= leafCap/2:
		a = i
	case i > 0 && x.leaves[i-1].n+x.leaves[i].n <= leafCap/2:
	default:
		return
	}
	l, r := x.leaves[a], x.leaves[a+1]
	l.move(l.n, r, 0, r.n)
	l.n += r.n
	x.cnt[a] += x.cnt[a+1]
	o.dropLeaf(r)
	x.removeChild(a + 1)
}

// mergeInner moves inner child i of x into a neighbour under x when both fit in half a node.
func (o *ostree) mergeInner(x *inner, i int) {
	a := i - 1
	switch {
	case i+1 < x.n && x.kids[i].n+x.kids[i+1].n <= innerCap/2:
		a = i
	case i > 0 && x.kids[i-1].n+x.kids[i].n <= innerCap/2:
	default:
		return
	}
	l, r := x.kids[a], x.kids[a+1]
	copy(l.cnt[l.n:], r.cnt[:r.n])
	copy(l.sep[l.n:], r.sep[:r.n])
	l.sep[l.n] = x.sep[a+1] // r's first child is bounded below by r's separator in x
	l.syncKeys()
	copy(l.leaves[l.n:], r.leaves[:r.n])
	copy(l.kids[l.n:], r.kids[:r.n])
	l.n += r.n
	x.cnt[a] += x.cnt[a+1]
	o.freeInner.put(r)
	x.removeChild(a + 1)
}

// countLess is the number of entries before k.
func (o *ostree) countLess(k *bkey) int {
	x, rank := o.root, 0
	if x == nil {
		return 0
	}
	for h := o.height; ; h-- {
		i := x.route(k)
		for _, c := range x.cnt[:i] {
			rank += c
		}
		if h == 1 {
			return rank + x.leaves[i].lowerBound(k)
		}
		x = x.kids[i]
	}
}

// seekKey is the first entry whose key is not below v: its leaf and index, or a nil leaf.
func (o *ostree) seekKey(v float64) (*leaf, int) {
	x := o.root
	if x == nil {
		return nil, 0
	}
	for h := o.height; ; h-- {
		// Children before the last one whose separator's key is below v hold only keys
		// below v.
		lo, hi := 1, x.n
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if x.skey[mid] < v {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		if h == 1 {
			l := x.leaves[lo-1]
			i, j := 0, l.n
			for i < j {
				mid := int(uint(i+j) >> 1)
				if l.keys[mid] < v {
					i = mid + 1
				} else {
					j = mid
				}
			}
			for l != nil && i == l.n {
				l, i = l.next, 0
			}
			return l, i
		}
		x = x.kids[lo-1]
	}
}

// bandFix corrects q's count for the entries whose keys are in q's band but not snap(v).
func (o *ostree) bandFix(q *query) {
	l, i := o.seekKey(q.lo)
	for l != nil && l.keys[i] < q.sv { // keys in [lo, sv)
		q.band(l, i)
		if i++; i == l.n {
			l, i = l.next, 0
		}
	}
	if l == nil || l.keys[i] > q.hi {
		return
	}
	if l.keys[i] == q.sv { // past the keys equal to sv
		l, i = o.seekKey(math.Nextafter(q.sv, math.Inf(1)))
	}
	for l != nil && l.keys[i] <= q.hi { // keys in (sv, hi]
		q.band(l, i)
		if i++; i == l.n {
			l, i = l.next, 0
		}
	}
}

// rank is the number of nodes that start before v (on a tie, in before's sense, when their
// tenant's name is before name; with name's own items, those before sequence seq), the nodes
// of tenant skip compared by key alone: one descent, and a scan of the band. present: an
// entry's key is snap(v) (the band is then scanned only when some keys are near).
func (o *ostree) rank(v float64, name string, seq uint64, skip *tenantQ, present bool) int {
	q := newQuery(v, name, skip)
	k := bkey{key: q.sv, name: name, seq: seq}
	pos := o.countLess(&k)
	if !present || o.near > 0 {
		o.bandFix(&q)
	}
	return pos + q.fix
}
