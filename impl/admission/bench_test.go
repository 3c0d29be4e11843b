package admission_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// Part of the product's performance harness. Each benchmark runs against a live queue (owner
// goroutine included, so every op is a round trip to it) pre-filled to the sub-benchmark's depth
// on one pool whose single slot is busy. Dispatch keeps the depth exact; Enqueue and Cancel keep
// it within [depth, depth+max(8, depth/10)].

var benchDepths = []int{10, 1000, 100000}

// benchQueue starts a queue with capacity for depth+headroom queued items, one pool "p" with one
// busy slot, and depth queued batch items named "f<i>".
func benchQueue(b *testing.B, depth, headroom int) *admission.Queue {
	b.Helper()
	q := admission.New(admission.Options{Capacity: depth + headroom, Dispatch: func(admission.Item) {}})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- q.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		_ = <-stopped // cancelled: Run returns ctx's error
	})
	bg := context.Background()
	if err := q.SetPool(bg, "p", admission.PoolConfig{Slots: 1, Dispatchable: true, PriorServiceMs: 1000}); err != nil {
		b.Fatal(err)
	}
	mustEnqueue(b, q, "running") // takes the slot
	for i := range depth {
		mustEnqueue(b, q, "f"+strconv.Itoa(i))
	}
	if q.Depth() != depth {
		b.Fatalf("depth %d, want %d", q.Depth(), depth)
	}
	return q
}

func mustEnqueue(b *testing.B, q *admission.Queue, id string) {
	if _, err := q.Enqueue(context.Background(), admission.Item{ID: id, Pool: "p", Priority: admission.Batch}); err != nil {
		b.Fatal(err)
	}
}

func mustCancel(b *testing.B, q *admission.Queue, id string) {
	if ok, err := q.Cancel(context.Background(), id); !ok || err != nil {
		b.Fatalf("Cancel(%s) = %v, %v", id, ok, err)
	}
}

func newIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = prefix + strconv.Itoa(i)
	}
	return ids
}

// BenchmarkEnqueue measures admission of one item into a queue that is not full: rounds of up
// to max(8, depth/10) Enqueues, each round undone by Cancels with the timer stopped.
func BenchmarkEnqueue(b *testing.B) {
	for _, depth := range benchDepths {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			round := max(benchMinRound, depth/10)
			q := benchQueue(b, depth, round)
			ids := newIDs("e", b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				first := i
				for ; i < b.N && i-first < round; i++ {
					mustEnqueue(b, q, ids[i])
				}
				b.StopTimer()
				for _, id := range ids[first:i] {
					mustCancel(b, q, id)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDispatch measures one full cycle: Enqueue of a new item at the tail, then Done for the
// busy slot, which dispatches the pool's head. The depth stays exactly constant.
func BenchmarkDispatch(b *testing.B) {
	bg := context.Background()
	for _, depth := range benchDepths {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			q := benchQueue(b, depth, 1)
			ids := newIDs("d", b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				mustEnqueue(b, q, ids[i])
				if err := q.Done(bg, "p", admission.DoneInfo{}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if q.Depth() != depth {
				b.Fatalf("depth %d, want %d", q.Depth(), depth)
			}
		})
	}
}

// BenchmarkCancel measures Cancel of a random queued item: rounds of up to max(8, depth/10)
// Cancels, the replacements enqueued beforehand with the timer stopped.
func BenchmarkCancel(b *testing.B) {
	for _, depth := range benchDepths {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			round := max(benchMinRound, depth/10)
			q := benchQueue(b, depth, round)
			live := newIDs("f", depth) // queued ids
			fresh := newIDs("c", b.N)  // replacements
			victims := make([]string, 0, round)
			rng := rand.New(rand.NewPCG(1, 2))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				b.StopTimer()
				victims = victims[:0]
				for k := 0; k < round && i+k < b.N; k++ {
					j := rng.IntN(len(live))
					victims = append(victims, live[j])
					live[j] = fresh[i+k]
					mustEnqueue(b, q, live[j])
				}
				b.StartTimer()
				for _, id := range victims {
					mustCancel(b, q, id)
				}
				i += len(victims)
			}
		})
	}
}

// benchMinRound is the fewest ops timed between two timer stops: stopping the timer after every
// op would measure the disturbance of StopTimer/StartTimer (a stop-the-world ReadMemStats that
// idles the owner goroutine) more than the op.
const benchMinRound = 8

// BenchmarkEnqueueDispatchTenants measures the admission cost of fair queueing: one op is an
// Enqueue plus the Done that dispatches the class's fair head, on one pool with one slot, the
// queue holding one item of each of `tenants` tenants (weights 1–4, costs 16–256 tokens).
func BenchmarkEnqueueDispatchTenants(b *testing.B) {
	for _, tenants := range []int{1, 1000} {
		b.Run(fmt.Sprintf("tenants=%d", tenants), func(b *testing.B) {
			q := admission.New(admission.Options{Capacity: tenants + 8, Dispatch: func(admission.Item) {}})
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan error, 1)
			go func() { stopped <- q.Run(ctx) }()
			defer func() { cancel(); _ = <-stopped }()
			bg := context.Background()
			if err := q.SetPool(bg, "p", admission.PoolConfig{Slots: 1, Dispatchable: true, PriorServiceMs: 1000}); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			names := newIDs("tenant-", tenants)
			item := func(id string, i int) admission.Item {
				return admission.Item{ID: id, Pool: "p", Priority: admission.Interactive, Tenant: names[i%tenants],
					Weight: float64(1 + i%4), Cost: float64(int(16) << rng.IntN(5))}
			}
			if _, err := q.Enqueue(bg, item("running", 0)); err != nil { // takes the slot
				b.Fatal(err)
			}
			for i := range tenants {
				if _, err := q.Enqueue(bg, item("f"+strconv.Itoa(i), i)); err != nil {
					b.Fatal(err)
				}
			}
			ids := newIDs("e", b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := q.Enqueue(bg, item(ids[i], i)); err != nil {
					b.Fatal(err)
				}
				if err := q.Done(bg, "p", admission.DoneInfo{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
