package admission_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// Part of the product's performance harness. Each benchmark runs against a queue pre-filled to
// the sub-benchmark's depth on one pool whose single slot is busy. Tickets are the callers' own
// (a ring reused as items end), as a task embeds its ticket. Dispatch keeps the depth exact;
// Enqueue and Cancel keep it within [depth, depth+max(8, depth/10)].

var benchDepths = []int{1, 10, 1000, 100000}

// bench is a queue with a ring of tickets: ticket k always carries item "t<k>".
type bench struct {
	q       *admission.Queue
	tickets []admission.Ticket
	ids     []string
	index   map[string]int // id -> ticket
	last    int            // the ticket of the item dispatched last (Observe)
	item    func(k int) admission.Item
}

// newBench makes a queue with capacity for depth+headroom queued items, one pool "p" with one
// slot, held by ticket 0, and depth queued items on tickets 1..depth. item(k) is ticket k's
// item (its ID is overwritten).
func newBench(b *testing.B, depth, headroom int, item func(k int) admission.Item) *bench {
	b.Helper()
	n := depth + headroom + 2
	bn := &bench{tickets: make([]admission.Ticket, n), ids: make([]string, n), index: make(map[string]int, n)}
	for k := range n {
		bn.ids[k] = "t" + strconv.Itoa(k)
		bn.index[bn.ids[k]] = k
	}
	bn.item = func(k int) admission.Item {
		it := item(k)
		it.ID, it.Pool = bn.ids[k], "p"
		return it
	}
	q, err := admission.New(admission.Options{Capacity: depth + headroom,
		Observe: func(o admission.Outcome, it *admission.Item) {
			if o == admission.Dispatched {
				// Its ticket from its id ("t<k>"): a lookup in a map of depth entries would
				// add a cache miss of the harness's own to every cycle at depth 100,000.
				bn.last, _ = strconv.Atoi(it.ID[1:])
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	bn.q = q
	if err := q.SetPool("p", admission.PoolConfig{Slots: 1, Dispatchable: true, PriorServiceMs: 1000}); err != nil {
		b.Fatal(err)
	}
	for k := range depth + 1 { // ticket 0 takes the slot
		bn.enqueue(b, k)
	}
	if err := bn.tickets[0].Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	if q.Depth() != depth {
		b.Fatalf("depth %d, want %d", q.Depth(), depth)
	}
	return bn
}

func (bn *bench) enqueue(b *testing.B, k int) {
	if _, err := bn.q.EnqueueTicket(&bn.tickets[k], bn.item(k)); err != nil {
		b.Fatal(err)
	}
}

func batchItem(int) admission.Item { return admission.Item{Priority: admission.Batch} }

// BenchmarkEnqueueDispatch measures one admission cycle at a constant depth: EnqueueTicket of a
// new item at the tail, Done of the running item (which dispatches the pool's head), and the
// dispatched item's Wait taking the slot. tenants=1000: the queue's items belong to 1000 tenants
// (weights 1-4, costs 16-256 tokens), served by their virtual token counters.
func BenchmarkEnqueueDispatch(b *testing.B) { benchEnqueueDispatch(b, []int{1, 1000}, false) }

// BenchmarkEnqueueDispatchSettle is BenchmarkEnqueueDispatch with 1000 tenants whose Done
// settles each item's charge to half its cost, as the task runner settles to the tokens used:
// the running item's tenant's counter moves back while it has items queued.
func BenchmarkEnqueueDispatchSettle(b *testing.B) { benchEnqueueDispatch(b, []int{1000}, true) }

func benchEnqueueDispatch(b *testing.B, tenantCounts []int, settle bool) {
	for _, tenants := range tenantCounts {
		for _, depth := range benchDepths {
			if tenants > 1 && depth < 10 { // fewer items than tenants
				continue
			}
			name := fmt.Sprintf("depth=%d", depth)
			if tenants > 1 {
				name = fmt.Sprintf("tenants=%d/depth=%d", tenants, depth)
			}
			b.Run(name, func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 2))
				costs := make([]float64, depth+2)
				for k := range costs {
					costs[k] = float64(int(16) << rng.IntN(5))
				}
				names := newIDs("tenant-", tenants)
				item := func(k int) admission.Item {
					return admission.Item{Priority: admission.Interactive, Tenant: names[k%tenants],
						Weight: float64(1 + k%4), Cost: costs[k]}
				}
				bn := newBench(b, depth, 1, item)
				running, free := 0, depth+1
				bg := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					bn.enqueue(b, free)
					d := admission.DoneInfo{}
					if settle {
						d = admission.DoneInfo{Settle: true, Used: int(costs[running] / 2)}
					}
					if err := bn.tickets[running].Done(d); err != nil {
						b.Fatal(err)
					}
					free, running = running, bn.last
					if err := bn.tickets[running].Wait(bg); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if bn.q.Depth() != depth {
					b.Fatalf("depth %d, want %d", bn.q.Depth(), depth)
				}
			})
		}
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
			bn := newBench(b, depth, round, batchItem)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				first := i
				for k := depth + 1; i < b.N && i-first < round; i, k = i+1, k+1 {
					bn.enqueue(b, k)
				}
				b.StopTimer()
				for k := depth + 1; k < depth+1+i-first; k++ {
					if !bn.q.Cancel(bn.ids[k]) {
						b.Fatalf("Cancel(%s) found nothing", bn.ids[k])
					}
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkCancel measures Cancel of a random queued item: rounds of up to max(8, depth/10)
// Cancels, the victims re-enqueued afterwards with the timer stopped.
func BenchmarkCancel(b *testing.B) {
	for _, depth := range benchDepths {
		if depth < benchMinRound {
			// Rounds of fewer than benchMinRound ops time StopTimer/StartTimer's stop-the-world,
			// not Cancel, and b.N grows until the run takes many minutes.
			continue
		}
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			round := min(max(benchMinRound, depth/10), depth)
			bn := newBench(b, depth, 0, batchItem)
			victims := make([]int, 0, round)
			picked := make([]bool, depth+2)
			rng := rand.New(rand.NewPCG(1, 2))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				b.StopTimer()
				victims = victims[:0]
				for len(victims) < round && i+len(victims) < b.N {
					k := 1 + rng.IntN(depth)
					if !picked[k] {
						picked[k] = true
						victims = append(victims, k)
					}
				}
				b.StartTimer()
				for _, k := range victims {
					if !bn.q.Cancel(bn.ids[k]) {
						b.Fatalf("Cancel(%s) found nothing", bn.ids[k])
					}
				}
				b.StopTimer()
				for _, k := range victims {
					picked[k] = false
					bn.enqueue(b, k)
				}
				b.StartTimer()
				i += len(victims)
			}
		})
	}
}

// benchMinRound is the fewest ops timed between two timer stops: stopping the timer after every
// op would measure the disturbance of StopTimer/StartTimer (a stop-the-world ReadMemStats) more
// than the op.
const benchMinRound = 8
