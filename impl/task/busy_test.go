package task

import (
	"sync"
	"testing"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
)

// running counts the service's tasks in state Running.
func (h *harness) running() int {
	h.svc.mu.Lock()
	tasks := make([]*Task, 0, len(h.svc.tasks))
	for _, t := range h.svc.tasks {
		tasks = append(tasks, t)
	}
	h.svc.mu.Unlock()
	n := 0
	for _, t := range tasks {
		t.mu.Lock()
		if t.status == Running {
			n++
		}
		t.mu.Unlock()
	}
	return n
}

// checkBusy asserts that the one count of busy slots (the queue's, which pool health reports
// as slots_busy) and placement's pool load agree with the tasks running and queued.
func (h *harness) checkBusy(step string, wantRunning, wantQueued int) {
	h.t.Helper()
	st, _ := h.svc.Stats(h.ctx)
	ps := st.Pools["p"]
	if ps.Busy != wantRunning || h.running() != wantRunning {
		h.t.Fatalf("%s: slots busy %d, running tasks %d; want %d", step, ps.Busy, h.running(), wantRunning)
	}
	if q := ps.QueuedInteractive + ps.QueuedBatch; q != wantQueued {
		h.t.Fatalf("%s: queued %d, want %d", step, q, wantQueued)
	}
	if busy, queued := h.svc.queue.Load("p"); busy != wantRunning || queued != wantQueued {
		h.t.Fatalf("%s: placement load %d+%d, want %d+%d", step, busy, queued, wantRunning, wantQueued)
	}
}

// TestBusySlotsCountedOnce: after dispatch, cancel, drain and failover, the busy slots that
// pool health and placement read are the tasks actually running.
func TestBusySlotsCountedOnce(t *testing.T) {
	t.Run("dispatch, cancel, drain", func(t *testing.T) {
		h := newHarness(t, 8, 2, admission.Reject)
		a, b, c, d := spec(admission.Interactive), spec(admission.Interactive), spec(admission.Interactive), spec(admission.Batch)
		h.submit(a)
		h.submit(b)
		<-h.eng.started
		<-h.eng.started
		h.submit(c)
		h.submit(d)
		h.checkBusy("dispatch", 2, 2)

		if err := h.svc.Cancel(h.ctx, a.ID); err != nil { // running: its slot goes to c
			t.Fatal(err)
		}
		h.events(a.ID)
		<-h.eng.started
		h.checkBusy("cancel running", 2, 1)
		if err := h.svc.Cancel(h.ctx, d.ID); err != nil { // queued: no slot was held
			t.Fatal(err)
		}
		h.events(d.ID)
		h.checkBusy("cancel queued", 2, 0)

		e := spec(admission.Interactive)
		h.submit(e)
		h.svc.PoolDrained(h.ctx, "p")
		for _, id := range []string{b.ID, c.ID, e.ID} {
			h.events(id)
		}
		h.checkBusy("drain", 0, 0)
	})
	t.Run("over the pool registry", testBusyOverRegistry)
	t.Run("over the pool registry, concurrently", testBusyStress)
	t.Run("failover", func(t *testing.T) {
		bad := &replicaScript{tokens: []string{"x"}, failAfter: 0, err: resetErr()}
		good := newGate()
		h := newReplicaHarness(t, true, []string{"p/0", "p/1"}, map[string]engine.Replica{"p/0": bad, "p/1": good})
		h.pools.busy = map[string]int{"p/1": 1} // p/0 is the least loaded: the task tries it first
		s := spec(admission.Interactive)
		h.submit(s)
		<-good.started // failed on p/0, running on p/1
		if len(bad.requests()) != 1 {
			t.Fatalf("p/0 got %d requests, want 1", len(bad.requests()))
		}
		h.checkBusy("failover", 1, 0)
		close(good.tokens)
		h.events(s.ID)
		h.checkBusy("after failover", 0, 0)
	})
}

// TestCancelRacesDispatch: tasks are cancelled from other goroutines while earlier ones finish
// and free their slots, so that cancels land on queued tasks, on tasks granted a slot but not
// yet running, and on running ones. Every task ends exactly once, and at rest no slot is busy
// and nothing is queued: no slot was lost or freed twice.
func TestCancelRacesDispatch(t *testing.T) {
	h := newHarness(t, 64, 2, admission.Reject)
	go func() { // the engine: each generation emits one token, then ends
		for {
			select {
			case <-h.ctx.Done():
				return
			case id := <-h.eng.started:
				_ = id
				select {
				case h.eng.tokens <- "x":
				case <-h.ctx.Done():
					return
				}
				select {
				case h.eng.fail <- nil:
				case <-h.ctx.Done():
					return
				}
			}
		}
	}()
	const n = 60
	specs := make([]Spec, n)
	for i := range specs {
		specs[i] = spec(admission.Interactive)
		h.submit(specs[i])
	}
	var wg sync.WaitGroup
	for i := range specs {
		if i%3 == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.svc.Cancel(h.ctx, specs[i].ID); err != nil {
				t.Errorf("Cancel: %v", err)
			}
		}()
	}
	wg.Wait()
	for _, s := range specs {
		h.events(s.ID) // waits for the task's end
	}
	waitFor(t, func() bool { return h.running() == 0 })
	h.checkBusy("at rest", 0, 0)
	if st, _ := h.svc.Stats(h.ctx); st.Outcomes[admission.Admitted] != n {
		t.Fatalf("admitted %d, want %d", st.Outcomes[admission.Admitted], n)
	}
}
