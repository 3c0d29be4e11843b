package task

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// TestDisconnectPastTheShutdownGrace: past the shutdown grace (journal on), the daemon closes
// the streams still open itself; that close is no client's disconnect, and
// sse_client_disconnects_total does not count it (nor does the task's policy apply). A client's
// disconnect before it is counted.
func TestDisconnectPastTheShutdownGrace(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	s := spec(admission.Interactive)
	h.submit(s)
	<-h.eng.started
	tk, err := h.svc.Task(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.svc.mu.Lock()
	h.svc.halted = true // as Shutdown sets it once the grace is over, with a journal
	h.svc.mu.Unlock()
	h.svc.Disconnected(h.ctx, tk)
	if n := testutil.ToFloat64(h.m.SSEDisconnects); n != 0 {
		t.Errorf("the daemon's own close past the shutdown grace counted as %v client disconnects, want 0", n)
	}
	h.svc.mu.Lock()
	h.svc.halted = false
	h.svc.mu.Unlock()
	h.svc.Disconnected(h.ctx, tk)
	if n := testutil.ToFloat64(h.m.SSEDisconnects); n != 1 {
		t.Errorf("a client's disconnect counted as %v, want 1", n)
	}
}
