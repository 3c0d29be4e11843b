package task

import (
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// TestReplicaDrained: a replica's drain deadline cancels the tasks running on that replica
// only (POOL_UNAVAILABLE, retriable, naming the replica's drain); queued tasks stay queued
// for the pool's other replicas.
func TestReplicaDrained(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	run, queued := spec(admission.Interactive), spec(admission.Interactive)
	h.submit(run)
	<-h.eng.started
	h.submit(queued)

	h.svc.ReplicaDrained(h.ctx, "p", "p/9") // another replica: nothing of this pool runs there
	h.svc.ReplicaDrained(h.ctx, "q", "p/0") // another pool
	if st, err := h.svc.Get(h.ctx, run.ID); err != nil || st.Status != Running {
		t.Fatalf("the running task after other replicas' deadlines: %+v, %v", st.Status, err)
	}

	h.svc.ReplicaDrained(h.ctx, "p", "p/0")
	evs := h.events(run.ID)
	last := evs[len(evs)-1].Data
	if !strings.Contains(last, `"code":"pool_unavailable"`) || !strings.Contains(last, "replica's drain deadline") {
		t.Fatalf("the task on the drained replica ends with %s", last)
	}
	if st, err := h.svc.Get(h.ctx, queued.ID); err != nil || st.Status.Final() {
		t.Fatalf("the queued task after the replica's deadline: %+v, %v", st.Status, err)
	}
}
