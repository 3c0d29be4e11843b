package admission

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// entries lists the tree's entries in leaf-chain order.
func (o *ostree) entries() []entry {
	var es []entry
	if o.root == nil {
		return nil
	}
	x := o.root
	for h := o.height; h > 1; h-- {
		x = x.kids[0]
	}
	for l := x.leaves[0]; l != nil; l = l.next {
		for i := range l.n {
			es = append(es, l.entry(i))
		}
	}
	return es
}

// check verifies the tree's invariants: counts, separators, key order, leaf chain, no empty
// node, and that the leaf chain visits exactly the leaves under the root, in order.
func (o *ostree) check() error {
	if o.root == nil {
		if o.height != 0 {
			return fmt.Errorf("empty tree of height %d", o.height)
		}
		return nil
	}
	var leaves []*leaf
	var walk func(x *inner, h int, lo, hi *bkey) (int, error)
	walk = func(x *inner, h int, lo, hi *bkey) (int, error) {
		if x.n == 0 || x.n > innerCap {
			return 0, fmt.Errorf("inner node with %d children", x.n)
		}
		total := 0
		for i := range innerCap {
			if x.skey[i] != x.sep[i].key {
				return 0, fmt.Errorf("separator %d keyed %v, its key %v", i, x.skey[i], x.sep[i].key)
			}
		}
		for i := range x.n {
			clo, chi := lo, hi
			if i > 0 {
				clo = &x.sep[i]
			}
			if i+1 < x.n {
				chi = &x.sep[i+1]
			}
			var c int
			if h == 1 {
				l := x.leaves[i]
				if l == nil || x.kids[i] != nil {
					return 0, fmt.Errorf("height 1 child %d is not a leaf", i)
				}
				if l.n == 0 && (x != o.root || x.n > 1) || l.n > leafCap {
					return 0, fmt.Errorf("leaf with %d entries", l.n)
				}
				for j := range l.n {
					e := l.entry(j)
					if clo != nil && e.less(clo) || chi != nil && !e.less(chi) {
						return 0, fmt.Errorf("entry %v outside its separators", e.bkey)
					}
					if e.key != snap(e.start) {
						return 0, fmt.Errorf("entry key %v, start %v", e.key, e.start)
					}
				}
				for j := l.n; j < leafCap; j++ {
					if l.entry(j) != (entry{}) {
						return 0, fmt.Errorf("leaf slot %d past its end not cleared", j)
					}
				}
				leaves = append(leaves, l)
				c = l.n
			} else {
				if x.kids[i] == nil || x.leaves[i] != nil {
					return 0, fmt.Errorf("height %d child %d is not an inner node", h, i)
				}
				var err error
				if c, err = walk(x.kids[i], h-1, clo, chi); err != nil {
					return 0, err
				}
			}
			if c != x.cnt[i] {
				return 0, fmt.Errorf("child %d counts %d, holds %d", i, x.cnt[i], c)
			}
			total += c
		}
		return total, nil
	}
	if _, err := walk(o.root, o.height, nil, nil); err != nil {
		return err
	}
	for i, l := range leaves {
		var prev, next *leaf
		if i > 0 {
			prev = leaves[i-1]
		}
		if i+1 < len(leaves) {
			next = leaves[i+1]
		}
		if l.prev != prev || l.next != next {
			return fmt.Errorf("leaf %d of %d badly chained", i, len(leaves))
		}
	}
	es := o.entries()
	near := 0
	for i := 1; i < len(es); i++ {
		if !es[i-1].less(&es[i].bkey) {
			return fmt.Errorf("entries %d and %d out of order", i-1, i)
		}
		near += nearPair(es[i-1].key, es[i].key)
	}
	if near != o.near {
		return fmt.Errorf("%d near neighbours counted, %d there", o.near, near)
	}
	return nil
}

// refRank is rank by definition over a sorted list: an entry is before v when its key is (with
// name and sequence on equal keys), except that an entry of a tenant other than skip whose key
// is in the band around v but not snap(v) is before v when its start is (by name when tied).
func refRank(es []entry, v float64, name string, seq uint64, skip *tenantQ) int {
	q := newQuery(v, name, skip)
	k := bkey{key: q.sv, name: name, seq: seq}
	pos := 0
	for i := range es {
		e := &es[i]
		ahead := e.less(&k)
		if e.tq != skip && e.key != q.sv && e.key >= q.lo && e.key <= q.hi {
			ahead = e.name < name
			if !tied(e.start, v) {
				ahead = e.start < v
			}
		}
		if ahead {
			pos++
		}
	}
	return pos
}

// TestTreeMatchesReference plays random inserts and deletes, with many equal starts, starts
// within the tie band of each other and spread ones, and checks every rank (and the rank found
// by insert) against the definition over a sorted list, and the tree's invariants.
func TestTreeMatchesReference(t *testing.T) {
	for seed := range uint64(60) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			var o ostree
			tenants := make([]*tenantQ, 1+rng.IntN(6))
			for i := range tenants {
				tenants[i] = &tenantQ{name: string(rune('a' + i))}
			}
			start := func() float64 {
				base := float64(rng.IntN(4 + rng.IntN(400)))
				switch rng.IntN(4) {
				case 0:
					return base
				case 1: // tied with base, possibly another key
					return base * (1 + float64(rng.IntN(7)-3)*7e-10)
				default:
					return base + rng.Float64()
				}
			}
			var in []*node
			maxSize := 1 + rng.IntN(3000)
			for step := range 6000 {
				if len(in) > 0 && (len(in) >= maxSize || rng.IntN(100) < 45) {
					i := rng.IntN(len(in))
					if rng.IntN(3) == 0 {
						i = 0 // from the front, as dispatch does
					}
					n := in[i]
					in = slices.Delete(in, i, i+1)
					o.delete(n)
					if n.inTree() {
						t.Fatal("deleted node still in the tree")
					}
				} else {
					n := new(node)
					n.tq = tenants[rng.IntN(len(tenants))]
					n.item.Tenant = n.tq.name
					v := start()
					if rng.IntN(3) == 0 && len(in) > 0 { // at the end, as the tail of a tenant
						v = in[len(in)-1].ot.start + float64(rng.IntN(3))
					}
					skip := tenants[rng.IntN(len(tenants))]
					o.insert(n, v, skip)
					in = append(in, n)
					es := o.entries()
					if want := refRank(es, v, n.ot.name, n.ot.seq, skip); o.last != n || o.lastRank != want {
						t.Fatalf("step %d: insert's rank %d, want %d", step, o.lastRank, want)
					}
				}
				if step%97 == 0 || len(in) < 40 {
					if err := o.check(); err != nil {
						t.Fatalf("step %d: %v", step, err)
					}
				}
				es := o.entries()
				if len(es) != len(in) {
					t.Fatalf("step %d: %d entries, %d inserted", step, len(es), len(in))
				}
				v := start()
				name := tenants[rng.IntN(len(tenants))].name
				seq := uint64(rng.IntN(int(o.seq) + 2))
				if rng.IntN(2) == 0 {
					seq = math.MaxUint64
				}
				skip := tenants[rng.IntN(len(tenants))]
				if got, want := o.rank(v, name, seq, skip, false), refRank(es, v, name, seq, skip); got != want {
					t.Fatalf("step %d: rank(%v, %s, %d) %d, want %d", step, v, name, seq, got, want)
				}
				if len(es) > 0 { // a present key: an entry's own start
					e := es[rng.IntN(len(es))]
					if got, want := o.rank(e.start, name, seq, skip, true), refRank(es, e.start, name, seq, skip); got != want {
						t.Fatalf("step %d: rank(%v, %s, %d) of a present key %d, want %d", step, e.start, name, seq, got, want)
					}
				}
			}
			for len(in) > 0 {
				o.delete(in[len(in)-1])
				in = in[:len(in)-1]
			}
			if err := o.check(); err != nil || o.height != 1 || o.root.n != 1 || o.root.leaves[0].n != 0 || o.near != 0 {
				t.Fatalf("emptied tree: %v, height %d, %d children", err, o.height, o.root.n)
			}
		})
	}
}
