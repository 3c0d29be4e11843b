package admission

import (
	"container/heap"
	"math"
	"slices"
	"strings"
)

// earlier orders two virtual starts: a before b, counters within rounding of each other
// being equal and then ordered by tenant name. Counters are sums of cost/weight in floating
// point; two ways of summing the same terms may differ in the last bits. The names are compared
// only on a tie.
func earlier(a float64, an string, b float64, bn string) bool {
	if tied(a, b) {
		return an < bn
	}
	return a < b
}

// before is a < b, or tie when a and b are within rounding of each other (tied).
func before(a, b float64, tie bool) bool {
	if tied(a, b) {
		return tie
	}
	return a < b
}

// tied reports whether a and b are within rounding of each other: 1e-9 of the larger
// magnitude. Plain comparisons: this runs at every heap step and position count (math.Max and
// math.Abs handle NaN and signed zeros, which counters never are, at several times the cost).
func tied(a, b float64) bool {
	return within(a, b, 1e-9)
}

// within reports whether a and b differ by at most rel of the larger of their magnitudes and 1.
func within(a, b, rel float64) bool {
	m := 1.0
	if a > m {
		m = a
	} else if -a > m {
		m = -a
	}
	if b > m {
		m = b
	} else if -b > m {
		m = -b
	}
	d := a - b
	return d <= rel*m && d >= -rel*m
}

// Fair queueing within a pool's priority class: virtual token counters (VTC, Sheng et al.,
// "Fairness in Serving Large Language Models", OSDI 2024), on two levels. Each tenant (the key
// that submitted the item) has a counter of the service it received, in tokens divided by its
// weight; within a tenant, each session (Item.Session; items without one share the "" lane) has
// its own counter of the same service. The class serves the backlogged tenant with the smallest
// counter, and within it the backlogged session with the smallest counter, oldest item first,
// so a key's one chatty session does not starve its other sessions. Both counters are charged
// the item's cost when it is dispatched, and corrected at Done to the tokens it produced. A
// tenant (session) that becomes backlogged is lifted to the smallest counter among the
// backlogged (or, with none, to the counter of the one served last): it gets no credit for the
// time it was idle, and no debt from others' backlog. A session's lane is forgotten when it has
// nothing queued, so lanes are bounded by the queued items.

// laneQ is one session's queued items of a tenant (of one pool and class), with its counter.
type laneQ struct {
	name     string
	q        dlist // k = linkTenant, FIFO
	vtc      float64
	pending  float64 // the queued items' cost/weight
	tailCost float64 // the last item's cost/weight
	// pre[h0+k] - pre[h0] is the cost/weight of the lane's first k items: its items' starts,
	// for a binary search. Appended at push, h0 advanced when the head leaves; a removal
	// from the middle marks it stale (rebuilt from the list when next searched).
	pre   []float64
	h0    int
	stale bool
	idx   int    // in tenantQ.lh
	seq   uint64 // opening order within the tenant: breaks ties between equal counters
	gen   uint64 // bumped when the lane is recycled: a ticket's charge names its lane's gen
}

// freshen rebuilds l's sums from its list after a removal from its middle left them stale.
func (l *laneQ) freshen() {
	if !l.stale {
		return
	}
	l.pre, l.h0, l.stale = append(l.pre[:0], 0), 0, false
	for m := l.q.head; m != nil; m = m.links[linkTenant].next {
		l.pre = append(l.pre, l.pre[len(l.pre)-1]+costOf(m))
	}
}

// compact drops the sums of the items gone from l's head, rebasing the rest at 0.
func (l *laneQ) compact() {
	base := l.pre[l.h0]
	k := copy(l.pre, l.pre[l.h0:])
	l.pre = l.pre[:k]
	for i := range l.pre {
		l.pre[i] -= base
	}
	l.h0 = 0
}

// tenantQ is one tenant's queued items of one pool and class, with its counter.
type tenantQ struct {
	name string
	vtc  float64
	// pending is the queued items' cost/weight: the tenant's last item starts at most at
	// vtc+pending-its own.
	pending  float64
	n        int               // queued items
	idx      int               // in fairQueue.h; -1 while not backlogged
	lanes    map[string]*laneQ // backlogged sessions by name, while there are two or more
	lh       laneHeap          // backlogged lanes, least counter first
	lastLane float64           // counter of the lane charged last
	laneSeq  uint64            // lanes opened
	// irr is the tenant's index in fairQueue.irr while it is irregular, else -1 (its queued
	// items are then in fairQueue.tree).
	irr int
	// ord is the tenant's place in name order among its fairQueue's tenants: the heap breaks
	// ties of counters by it, as by name, without comparing strings.
	ord uint64
}

// fairQueue is the tenants of one pool and class. The heap holds the backlogged tenants, least
// counter first.
type fairQueue struct {
	tenants map[string]*tenantQ
	h       tenantHeap
	last    float64  // counter of the tenant charged last
	free    []*laneQ // forgotten lanes, reused so that admission allocates nothing
	// tree holds the queued items of the regular tenants by virtual start; irr lists the
	// irregular tenants, counted one by one. See tailOrder.
	tree ostree
	irr  []*tenantQ
	// irrSum[i] is what tailOrder reads of irr[i], kept in step with it (syncIrr) in one array,
	// so that counting a thousand irregular tenants reads a few cache lines each, not their
	// tenant's and session's structs.
	irrSum []irrSum
	// byName lists every tenant in name order, their ords ascending.
	byName []*tenantQ
}

// rekeyMax is the most queued items a regular tenant re-enters into the tree when their
// virtual starts move (a settlement, a withdrawal); a tenant with more becomes irregular.
const rekeyMax = 8

// maxFreeLanes bounds a fairQueue's free list.
const maxFreeLanes = 1024

func (f *fairQueue) tenant(name string) *tenantQ {
	if f.tenants == nil {
		f.tenants = map[string]*tenantQ{}
	}
	t := f.tenants[name]
	if t == nil {
		t = &tenantQ{name: name, idx: -1, irr: -1, lanes: map[string]*laneQ{}}
		f.tenants[name] = t
		f.fileByName(t)
	}
	return t
}

// fileByName files new tenant t in byName and gives it an ord between its neighbours', renumbering
// all (evenly spread) when they leave no room: O(tenants), once per new tenant.
func (f *fairQueue) fileByName(t *tenantQ) {
	i, _ := slices.BinarySearchFunc(f.byName, t.name, func(u *tenantQ, name string) int {
		return strings.Compare(u.name, name)
	})
	f.byName = slices.Insert(f.byName, i, t)
	lo, hi := uint64(0), uint64(math.MaxUint64)
	if i > 0 {
		lo = f.byName[i-1].ord
	}
	if i+1 < len(f.byName) {
		hi = f.byName[i+1].ord
	}
	if hi-lo >= 2 {
		t.ord = lo + (hi-lo)/2
		return
	}
	step := math.MaxUint64 / uint64(len(f.byName)+1)
	for k, u := range f.byName {
		u.ord = uint64(k+1) * step
	}
}

func costOf(n *node) float64 { return n.cw } // n.item.cost() / n.item.weight()

// push queues n behind its session's other items, lifting a tenant or session that was idle.
func (f *fairQueue) push(n *node) {
	t := f.tenant(n.item.Tenant)
	if t.idx < 0 {
		floor := f.last
		if len(f.h) > 0 {
			floor = f.h[0].vtc
		}
		t.vtc = max(t.vtc, floor)
		f.h.push(t)
	}
	var l *laneQ
	switch {
	case len(t.lh) == 1 && t.lh[0].name == n.item.Session: // the one backlogged session
		l = t.lh[0]
	case len(t.lh) > 1:
		l = t.lanes[n.item.Session]
	}
	if l == nil {
		floor := t.lastLane
		if len(t.lh) > 0 {
			floor = t.lh[0].vtc
		}
		if k := len(f.free); k > 0 {
			l, f.free = f.free[k-1], f.free[:k-1]
		} else {
			l = &laneQ{q: dlist{k: linkTenant}}
		}
		t.laneSeq++
		l.name, l.vtc, l.seq = n.item.Session, floor, t.laneSeq
		if len(t.lh) > 0 { // the map is kept while two or more sessions are backlogged
			t.lanes[t.lh[0].name] = t.lh[0]
			t.lanes[l.name] = l
		}
		t.lh.push(l)
	}
	c := costOf(n)
	l.q.pushBack(n)
	l.pending += c
	l.tailCost = c
	if len(l.pre) == 0 {
		l.pre = append(l.pre, 0)
	} else if len(l.pre) == cap(l.pre) {
		if 16*l.h0 >= len(l.pre) {
			l.compact() // rather than grow: a lane at a level length keeps its array
		} else {
			l.pre = slices.Grow(l.pre, len(l.pre)) // doubled: room for the head to move on
		}
	}
	l.pre = append(l.pre, l.pre[len(l.pre)-1]+c)
	t.pending += c
	t.n++
	n.tq, n.lq = t, l
	if t.irr < 0 {
		if len(t.lh) > 1 { // a second session: the tenant's order interleaves its lanes
			f.makeIrregular(t)
		} else { // its virtual start, as tailOrder computes it
			f.tree.insert(n, t.vtc+(l.pending-c), t)
		}
	}
	if t.irr >= 0 {
		f.syncIrr(t)
	}
}

// makeIrregular takes t's queued items out of the tree: from now until it has nothing queued,
// its items are counted by tailOrder one tenant at a time.
func (f *fairQueue) makeIrregular(t *tenantQ) {
	for _, l := range t.lh {
		for m := l.q.head; m != nil; m = m.links[linkTenant].next {
			if m.inTree() {
				f.tree.delete(m)
			}
		}
	}
	t.irr = len(f.irr)
	f.irr = append(f.irr, t)
	f.irrSum = append(f.irrSum, irrSum{})
	f.syncIrr(t)
}

// irrSum is an irregular tenant's queued items as countIrr reads them: copies of the fields of
// the tenant and of its one session that a count reads, in one cache line (the tenant itself,
// f.irr[i], is read only for a tie or a play).
type irrSum struct {
	first float64 // t.vtc: its first item's start
	last  float64 // t.vtc+t.pending-tailCost: its last item's start
	lastL float64 // the same by its session's sum, as countBefore computes it
	// shift is pre[0]-first and mag the sum of the magnitudes of first, pre[0] and pre's last:
	// the terms of a straddle's bound that do not depend on v, so that it reads pre only in
	// its search.
	shift, mag float64
	// pre holds its items' starts less first, plus pre[0] (its session's pre from h0); nil
	// while it has several sessions (they are counted by its play) or its session's sums are
	// stale (rebuilt by the next count).
	pre []float64
}

// syncIrr copies irregular t's fields to its irrSum, after any change of its counter, its
// queued items or its sessions. A session whose sums a removal from its middle left stale is
// left to countIrr (pre nil), which rebuilds them when it needs them: a tenant that is never
// counted (the only one, or never straddling) is not rebuilt at every cancel.
func (f *fairQueue) syncIrr(t *tenantQ) {
	s := &f.irrSum[t.irr]
	if len(t.lh) != 1 || t.lh[0].stale {
		*s = irrSum{first: t.vtc}
		return
	}
	l := t.lh[0]
	s.first = t.vtc
	s.last = t.vtc + t.pending - l.tailCost
	s.lastL = t.vtc + l.pending - l.tailCost
	s.pre = l.pre[l.h0 : l.h0+l.q.len]
	p0, pn := s.pre[0], s.pre[len(s.pre)-1]
	s.shift = p0 - s.first
	s.mag = max(s.first, -s.first) + max(p0, -p0) + max(pn, -pn)
}

// A straddle is one search of countIrr: how many of a session's starts base+(pre[k]-pre[0]),
// which do not decrease with k, are before v, whose tie band is [lo, hi]; on a tie, those of
// a tenant u named before the tenant of v.
//
// The searches are where the time goes when a thousand irregular tenants are counted, each in
// its own array, so they are cut to their least: a search compares the sums themselves to one
// bound, without the additions, and without branches (each step's way is a coin toss that a
// branch would mispredict), and countIrr runs four at a time in lockstep, so that their loads,
// each a likely cache miss, overlap rather than wait on one another. The bound is lo moved into
// the sums' terms less a margin far wider than the rounding of either side, so that every sum
// below it is a start below lo. The starts from there on are checked exactly by finish: one
// check, unless the margin or the tie band holds starts, then a binary search of the rest.
type straddle struct {
	pre         []float64
	base, bound float64
	u           *tenantQ
	b           int // the count of sums below bound, once searched
}

func (s *irrSum) straddle(lo float64, u *tenantQ) straddle {
	margin := 1e-9 * (max(1, lo, -lo) + s.mag)
	return straddle{pre: s.pre, base: s.first, bound: lo + s.shift - margin, u: u}
}

// search sets s.b: a binary search without branches.
func (s *straddle) search() {
	pre, bound := s.pre, s.bound
	b, k := 0, len(pre)
	for k > 1 {
		half := k >> 1
		b += half & -b2i(pre[b+half] < bound)
		k -= half
	}
	s.b = b + b2i(pre[b] < bound)
}

// search4 is search of four straddles in lockstep (a search whose steps ended marks time with
// zero halves).
func search4(q *[4]straddle) {
	p0, p1, p2, p3 := q[0].pre, q[1].pre, q[2].pre, q[3].pre
	x0, x1, x2, x3 := q[0].bound, q[1].bound, q[2].bound, q[3].bound
	b0, b1, b2, b3 := 0, 0, 0, 0
	k0, k1, k2, k3 := len(p0), len(p1), len(p2), len(p3)
	for k0 > 1 || k1 > 1 || k2 > 1 || k3 > 1 {
		h0, h1, h2, h3 := k0>>1, k1>>1, k2>>1, k3>>1
		b0 += h0 & -b2i(p0[b0+h0] < x0)
		b1 += h1 & -b2i(p1[b1+h1] < x1)
		b2 += h2 & -b2i(p2[b2+h2] < x2)
		b3 += h3 & -b2i(p3[b3+h3] < x3)
		k0, k1, k2, k3 = k0-h0, k1-h1, k2-h2, k3-h3
	}
	q[0].b = b0 + b2i(p0[b0] < x0)
	q[1].b = b1 + b2i(p1[b1] < x1)
	q[2].b = b2 + b2i(p2[b2] < x2)
	q[3].b = b3 + b2i(p3[b3] < x3)
}

// finish is the count of s's starts before v, the start of an item of tenant of, from the
// count of its sums below its bound.
func (s *straddle) finish(v, lo, hi float64, of *tenantQ) int {
	pre, b := s.pre, s.b
	n, p0 := len(pre), pre[0]
	if b == n {
		return b
	}
	if x := s.base + (pre[b] - p0); x > hi || x >= lo && !before(x, v, s.u.ord < of.ord) {
		return b
	}
	tie := s.u.ord < of.ord
	i, j := b+1, n // items [0, i) start before v, [j, n) do not
	for i < j {
		mid := int(uint(i+j) >> 1)
		if startBefore(s.base+(pre[mid]-p0), v, tie, lo, hi) {
			i = mid + 1
		} else {
			j = mid
		}
	}
	return i
}

// b2i is 1 for true, 0 for false: the compiler makes it a flag set, no branch.
func b2i(b bool) int {
	var i int
	if b {
		i = 1
	}
	return i
}

// countIrr is how many items of the irregular tenants other than of start before v, the start
// of an item of of (on a tie, those of the tenants named before of). A tenant whose items start
// all before or all after v costs a look at its irrSum; one whose items straddle v a search of
// its starts (see straddle); one with several sessions a play (playBefore).
func (f *fairQueue) countIrr(v float64, of *tenantQ) int {
	lo, hi := tieBand(v)
	pos := 0
	var q [4]straddle
	nq := 0
	for i := range f.irrSum {
		if i == of.irr {
			continue
		}
		s := &f.irrSum[i]
		switch {
		case s.first > hi && s.first-v > 2e-9*max(1, s.first): // its first item starts after v: all do
			continue
		case s.pre == nil && len(f.irr[i].lh) != 1:
			pos += f.irr[i].playBefore(v, of.name)
			continue
		case s.pre == nil: // its session's sums are stale
			u := f.irr[i]
			u.lh[0].freshen()
			f.syncIrr(u)
		}
		switch {
		case s.last < lo, s.lastL < lo: // its last item starts before v
			pos += len(s.pre)
			continue
		case s.lastL <= hi && before(s.lastL, v, f.irr[i].ord < of.ord):
			pos += len(s.pre)
			continue
		}
		q[nq] = s.straddle(lo, f.irr[i])
		if nq++; nq == len(q) {
			search4(&q)
			for j := range q {
				pos += q[j].finish(v, lo, hi, of)
			}
			nq = 0
		}
	}
	for j := range q[:nq] {
		q[j].search()
		pos += q[j].finish(v, lo, hi, of)
	}
	return pos
}

// reshape follows a move of regular t's queued items' virtual starts other than a dispatch of
// its head (which leaves the others' starts as they were): a settlement of its counter, or a
// withdrawal, which moves the items behind. With few items they re-enter the tree at their new
// starts; with more, t becomes irregular.
func (f *fairQueue) reshape(t *tenantQ) {
	if t.irr >= 0 || t.n == 0 {
		return
	}
	if t.n > rekeyMax || len(t.lh) != 1 {
		f.makeIrregular(t)
		return
	}
	l := t.lh[0]
	for m := l.q.head; m != nil; m = m.links[linkTenant].next {
		f.tree.delete(m)
	}
	sum := 0.0
	for m := l.q.head; m != nil; m = m.links[linkTenant].next {
		f.tree.insert(m, t.vtc+sum, t)
		sum += costOf(m)
	}
}

// remove takes n off its session's list, forgetting a session left with nothing queued.
// dispatched: n is its tenant's next item, leaving with its cost charged.
func (f *fairQueue) remove(n *node, dispatched bool) {
	t, l := n.tq, n.lq
	c := costOf(n)
	if n.inTree() {
		f.tree.delete(n)
	}
	switch n {
	case l.q.head:
		l.h0++
		if l.h0 >= 64 && 2*l.h0 >= len(l.pre) {
			l.compact()
		}
	case l.q.tail:
		l.pre = l.pre[:len(l.pre)-1]
	default:
		l.stale = true
	}
	l.q.remove(n)
	l.pending -= c
	if l.q.len == 0 {
		t.lh.remove(l.idx)
		if len(t.lanes) > 0 {
			delete(t.lanes, l.name)
		}
		l.gen++
		l.pending, l.tailCost = 0, 0
		l.pre, l.h0, l.stale = l.pre[:0], 0, false
		if len(f.free) < maxFreeLanes {
			f.free = append(f.free, l)
		}
	} else {
		l.tailCost = costOf(l.q.tail)
	}
	t.pending -= c
	t.n--
	if t.n == 0 {
		t.pending = 0 // no drift left behind
	}
	n.tq, n.lq = nil, nil
	if t.n == 0 && t.idx >= 0 {
		f.h.remove(t.idx)
	}
	switch {
	case t.n == 0 && t.irr >= 0: // regular again
		k := len(f.irr) - 1
		last := f.irr[k]
		f.irr[t.irr], last.irr = last, t.irr
		f.irrSum[t.irr] = f.irrSum[k]
		f.irr[k], f.irrSum[k] = nil, irrSum{}
		f.irr, f.irrSum = f.irr[:k], f.irrSum[:k]
		t.irr = -1
	case !dispatched:
		f.reshape(t)
	}
	if t.irr >= 0 {
		f.syncIrr(t)
	}
}

// head is the next item to serve: the oldest item of the least-counter session of the
// least-counter backlogged tenant.
func (f *fairQueue) head() *node {
	if len(f.h) == 0 {
		return nil
	}
	return f.h[0].lh[0].q.head
}

// charge adds v (an item's cost over its weight) to t's counter, and to its session l's (nil:
// dispatched without queueing), as the item is dispatched. leaving: it is t's last queued
// item, about to be removed, taking t out of the heap (which need not be fixed first).
func (f *fairQueue) charge(t *tenantQ, l *laneQ, v float64, leaving bool) {
	if t.idx < 0 && len(f.h) > 0 { // dispatched without queueing: lift as a newcomer would be
		t.vtc = max(t.vtc, f.h[0].vtc)
	} else if t.idx < 0 {
		t.vtc = max(t.vtc, f.last)
	}
	t.vtc += v
	f.last = t.vtc
	if t.idx >= 0 && !leaving {
		f.h.fix(t.idx)
	}
	if l != nil {
		l.vtc += v
		t.lastLane = l.vtc
		t.lh.fix(l.idx)
	}
	if t.irr >= 0 {
		f.syncIrr(t)
	}
}

// correct adds delta to t's counter, and to its session l's while l (of generation gen) still
// has items queued, when a dispatched item ends: its charge is settled from the cost it was charged at dispatch
// to the tokens it actually produced, so that a tenant whose items stop early is not
// over-charged (nor one whose items run long under-charged).
func (f *fairQueue) correct(t *tenantQ, l *laneQ, gen uint64, delta float64) {
	if delta == 0 {
		return
	}
	t.vtc += delta
	if t.idx >= 0 {
		f.h.fix(t.idx)
	}
	f.reshape(t)
	if l != nil && l.gen == gen {
		l.vtc += delta
		t.lh.fix(l.idx)
	}
	if t.irr >= 0 {
		f.syncIrr(t)
	}
}

// countBefore counts the items of lane l, which start at base and follow one another by their
// cost/weight (pending in all), whose start is before v (on a tie: when tie), and the service
// they sum to. O(1) when all are, else O(log items) (O(items) once after a removal from the
// middle of the lane).
func countBefore(l *laneQ, base float64, tie bool, v float64) (int, float64) {
	lo, hi := tieBand(v)
	return countBeforeIn(l, base, tie, v, lo, hi)
}

// tieBand is the band [lo, hi] around v outside which no start is tied with v: a start below lo
// is before v and one above hi after it, whatever the tie, with no call to before. The band is
// twice tied's tolerance, so that its own rounding cannot exclude a tied start.
func tieBand(v float64) (lo, hi float64) {
	band := 2e-9 * max(1, v, -v)
	return v - band, v + band
}

// startBefore is before(x, v, tie) for [lo, hi] = tieBand(v): plain comparisons outside the
// band, which a binary search over a lane's starts mostly meets.
func startBefore(x, v float64, tie bool, lo, hi float64) bool {
	if x < lo {
		return true
	}
	return x <= hi && before(x, v, tie)
}

// countBeforeIn is countBefore with v's tie band [lo, hi] (tieBand) computed by the caller, who
// asks about the same v for many lanes.
func countBeforeIn(l *laneQ, base float64, tie bool, v, lo, hi float64) (int, float64) {
	if startBefore(base+l.pending-l.tailCost, v, tie, lo, hi) {
		return l.q.len, l.pending
	}
	l.freshen()
	pre := l.pre[l.h0 : l.h0+l.q.len] // pre[k]-pre[0]: the k-th item's start less base
	p0 := pre[0]
	i, j := 0, len(pre) // items [0, i) start before v, [j, len) do not
	for i < j {
		mid := int(uint(i+j) >> 1)
		if startBefore(base+(pre[mid]-p0), v, tie, lo, hi) {
			i = mid + 1
		} else {
			j = mid
		}
	}
	return i, l.pre[l.h0+i] - p0
}

// tailOrder is order for n, the last item of its session (just pushed): an item ahead is one
// whose virtual start is smaller (on a tie, whose tenant name is). The items of regular tenants
// are counted by one descent of the tree, O(log n); each irregular tenant (several sessions
// queued, or more than rekeyMax items when its starts moved) by its own walk, as before the
// tree: O(1) when its items start all before or all after n, else a binary search, or a play
// of its sessions.
func (f *fairQueue) tailOrder(n *node) (int, float64) {
	t, l := n.tq, n.lq
	c := costOf(n)
	var pos int
	var v float64
	if t.irr < 0 { // its items are in the tree, which counts them
		v = t.vtc + (l.pending - c)
	} else {
		pos, v = t.ownBefore(l, c)
	}
	switch {
	case n == f.tree.last: // just inserted: its rank counts its own items before it, as does ownBefore
		pos += f.tree.lastRank
	case n.inTree():
		pos += f.tree.rank(v, t.name, n.ot.seq, t, false)
	default: // t's items are not in the tree
		pos += f.tree.rank(v, t.name, math.MaxUint64, t, false)
	}
	return pos + f.countIrr(v, t), v
}

// orderOf is order for any queued n: for an item of a regular tenant, its rank in the tree
// (its own tenant's items before it included) and the irregular tenants counted one by one, as
// tailOrder does; for an item of an irregular tenant, order's play.
func (f *fairQueue) orderOf(n *node) (int, float64) {
	t := n.tq
	if t.irr >= 0 || !n.inTree() {
		return f.order(n)
	}
	v := n.ot.start
	pos := f.tree.rank(v, t.name, n.ot.seq, t, true) // v is n's key
	pos += f.countIrr(v, t)                          // t is regular: no irregular tenant is skipped
	return pos, v
}

// ownBefore is how many of t's items start before the last item of its session l (cost c), and
// that item's virtual start.
func (t *tenantQ) ownBefore(l *laneQ, c float64) (int, float64) {
	// Within n's tenant: the items of its other sessions that start before n in session time.
	vl := l.vtc + l.pending - c
	lo, hi := tieBand(vl)
	pos, sum := l.q.len-1, l.pending-c
	for _, m := range t.lh {
		if m != l {
			k, s := countBeforeIn(m, m.vtc, m.seq < l.seq, vl, lo, hi)
			pos += k
			sum += s
		}
	}
	return pos, t.vtc + sum
}

// playBefore counts t's items that start before v (ties: by tenant name against vname),
// serving its sessions by their counters.
func (t *tenantQ) playBefore(v float64, vname string) int {
	cs := make([]laneCursor, 0, len(t.lh))
	for _, l := range t.lh {
		cs = append(cs, laneCursor{n: l.q.head, vtc: l.vtc, seq: l.seq})
	}
	cnt, s := 0, t.vtc
	for len(cs) > 0 && earlier(s, t.name, v, vname) {
		i := minLane(cs)
		c := costOf(cs[i].n)
		cnt++
		s += c
		cs[i].vtc += c
		if cs[i].n = cs[i].n.links[linkTenant].next; cs[i].n == nil {
			cs[i] = cs[len(cs)-1]
			cs = cs[:len(cs)-1]
		}
	}
	return cnt
}

// laneCursor walks one session's items with its counter, for order and playBefore.
type laneCursor struct {
	n   *node
	vtc float64
	seq uint64
}

// minLane is the index of the cursor served next: least counter, then opening order.
func minLane(cs []laneCursor) int {
	best := 0
	for i := 1; i < len(cs); i++ {
		if before(cs[i].vtc, cs[best].vtc, cs[i].seq < cs[best].seq) {
			best = i
		}
	}
	return best
}

// order is how many queued items of the class would be served before until if nothing else
// arrived: the counters are played forward, O(position × (log tenants + sessions)).
func (f *fairQueue) order(until *node) (int, float64) {
	cs := make(cursorHeap, 0, len(f.h))
	for _, t := range f.h {
		c := cursor{t: t, vtc: t.vtc, lanes: make([]laneCursor, 0, len(t.lh))}
		for _, l := range t.lh {
			c.lanes = append(c.lanes, laneCursor{n: l.q.head, vtc: l.vtc, seq: l.seq})
		}
		cs = append(cs, c)
	}
	heap.Init(&cs)
	pos := 0
	for len(cs) > 0 {
		c := &cs[0]
		i := minLane(c.lanes)
		lc := &c.lanes[i]
		if lc.n == until {
			return pos, c.vtc
		}
		v := costOf(lc.n)
		c.vtc += v
		lc.vtc += v
		if lc.n = lc.n.links[linkTenant].next; lc.n == nil {
			c.lanes[i] = c.lanes[len(c.lanes)-1]
			c.lanes = c.lanes[:len(c.lanes)-1]
		}
		if len(c.lanes) == 0 {
			heap.Pop(&cs)
		} else {
			heap.Fix(&cs, 0)
		}
		pos++
	}
	return pos, 0
}

// cursor walks one tenant's items with its counter, for order.
type cursor struct {
	t     *tenantQ
	vtc   float64
	lanes []laneCursor
}

type cursorHeap []cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	return earlier(h[i].vtc, h[i].t.name, h[j].vtc, h[j].t.name)
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(cursor)) } //nolint:forcetypeassert // only cursors are pushed
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// tenantHeap orders backlogged tenants by counter, then name (deterministic ties).
type tenantHeap []*tenantQ

func (h tenantHeap) Len() int { return len(h) }
func (h tenantHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if tied(a.vtc, b.vtc) {
		return a.ord < b.ord // as a.name < b.name
	}
	return a.vtc < b.vtc
}
func (h tenantHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *tenantHeap) Push(x any) {
	t := x.(*tenantQ) //nolint:forcetypeassert // only *tenantQ is pushed
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *tenantHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}

// laneHeap orders a tenant's backlogged sessions by counter, then opening order.
type laneHeap []*laneQ

func (h laneHeap) Len() int           { return len(h) }
func (h laneHeap) Less(i, j int) bool { return before(h[i].vtc, h[j].vtc, h[i].seq < h[j].seq) }
func (h laneHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *laneHeap) Push(x any) {
	l := x.(*laneQ) //nolint:forcetypeassert // only *laneQ is pushed
	l.idx = len(*h)
	*h = append(*h, l)
}
func (h *laneHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.idx = -1
	return l
}
