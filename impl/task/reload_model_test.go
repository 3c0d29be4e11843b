package task

import (
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/pool"
)

// TestReloadDoesNotRunQueuedTasksOnAnotherModel: a task queued for the model a pool served
// when it was admitted is failed, retriable, when a reload has given the pool another model
// by the time a slot frees; it never reaches the new model's engine. A reload that keeps the
// pool's model_id (new weights under the same name) runs it as before.
func TestReloadDoesNotRunQueuedTasksOnAnotherModel(t *testing.T) {
	for _, tc := range []struct {
		name    string
		derived bool // the model_id follows the model_ref's file name, so the reload changes it
		wantRun bool
	}{
		{name: "model_id changes", derived: true, wantRun: false},
		{name: "model_id kept", derived: false, wantRun: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newRegHarness(t, 1, 1, 1, func(rs *regSetup) {
				rs.pool = func(s *pool.Spec) { s.ModelIDDerived = tc.derived }
			})
			running := h.submitN(1)[0]
			queued := spec(0)
			h.submit(queued)
			if _, err := h.reg.Reload(h.ctx, "p", "tiny2"); err != nil {
				t.Fatal(err)
			}
			h.end(running)
			if !tc.wantRun {
				evs := h.events(queued.ID)
				last := evs[len(evs)-1]
				if last.Event != "error" || !strings.Contains(strings.ToUpper(string(last.Data)), `"POOL_UNAVAILABLE"`) ||
					!strings.Contains(string(last.Data), "now serves model tiny2, not tiny") ||
					!strings.Contains(string(last.Data), `"retriable":true`) {
					t.Fatalf("the queued task ended with %s %s, want a retriable POOL_UNAVAILABLE naming the reload", last.Event, last.Data)
				}
				select {
				case s := <-h.started:
					t.Fatalf("task %s started on %s after the reload", s.task, s.eng.url)
				default:
				}
				h.check("at rest")
				return
			}
			if got := h.next(); got.task != queued.ID || !strings.HasSuffix(got.eng.url, "@tiny2") {
				t.Fatalf("started %s on %s, want %s on the reloaded engine", got.task, got.eng.url, queued.ID)
			}
			h.end(queued.ID)
			h.check("at rest")
		})
	}
}
