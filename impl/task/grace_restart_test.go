package task

import (
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// TestRestartArmsDisconnectGrace: a task kept queued over a restart has no reader in the new
// process (its clients' streams ended with the old one). With on_disconnect: grace the restart
// is their disconnect: the task is cancelled once disconnect_grace_ms passes with no reader,
// whether it runs by then or still waits in the queue, unless a client resumes its stream
// within the grace. A task whose client only polls (no reader to lose) runs on, as it would
// without the restart. detach keeps it running for nobody, as it would have before the restart;
// so does cancel, kept queued precisely so that its clients resume it after the restart
// (README, Shutdown).
func TestRestartArmsDisconnectGrace(t *testing.T) {
	const grace = 5 * time.Second
	tests := []struct {
		name   string
		policy string
		crash  bool // the daemon dies (kill -9) instead of stopping
		behind bool // another recovered task holds the one slot: the task is still queued when the grace ends
		resume bool // a client resumes the task's stream within the grace (Last-Event-ID 0)
		stop   bool // the daemon stops again within the grace
		polled bool // its client polls the task's state: no reader ever attached
		cancel bool // the task ends cancelled when the grace passes
	}{
		{name: "grace running", policy: OnDisconnectGrace, cancel: true},
		{name: "grace queued", policy: OnDisconnectGrace, behind: true, cancel: true},
		{name: "grace after a crash", policy: OnDisconnectGrace, crash: true, cancel: true},
		{name: "grace resumed", policy: OnDisconnectGrace, resume: true},
		{name: "grace resumed while queued", policy: OnDisconnectGrace, behind: true, resume: true},
		{name: "grace, stopped within it", policy: OnDisconnectGrace, behind: true, stop: true},
		{name: "grace, its client only polls", policy: OnDisconnectGrace, polled: true},
		{name: "detach", policy: OnDisconnectDetach},
		{name: "cancel", policy: OnDisconnectCancel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
			d := startDaemon(t, dir, clock)
			blocker := spec(admission.Interactive) // holds the slot: the tasks below stay queued
			if _, err := d.svc.Submit(d.ctx, blocker); err != nil {
				t.Fatal(err)
			}
			d.eng.next(t)
			ahead := spec(admission.Interactive)
			if tt.behind {
				if _, err := d.svc.Submit(d.ctx, ahead); err != nil {
					t.Fatal(err)
				}
			}
			s := spec(admission.Interactive)
			s.OnDisconnect = tt.policy
			if tt.policy == OnDisconnectGrace {
				s.DisconnectGrace = grace
			}
			if _, err := d.svc.Submit(d.ctx, s); err != nil {
				t.Fatal(err)
			}
			if tt.polled {
				if snap, err := d.svc.Get(d.ctx, s.ID); err != nil || snap.Status != Queued {
					t.Fatalf("polled: %+v %v", snap, err)
				}
			} else {
				d.waitShown(t, s.ID, "0:started") // its client read it; the connection goes with the process
			}
			if tt.crash {
				d.j.crash(t)
			}
			d.stop()

			d = startDaemon(t, dir, clock)
			// The first generation starts once every recovered task is queued again.
			first := d.eng.next(t)
			want := s.ID
			if tt.behind {
				want = ahead.ID
			}
			if first.id != want {
				t.Fatalf("generation of %s, want %s", first.id, want)
			}
			tk, err := d.svc.Task(s.ID)
			if err != nil {
				t.Fatal(err)
			}
			tk.mu.Lock()
			armed := tk.graceStop != nil // the grace starts before the pool dispatches (resume)
			tk.mu.Unlock()
			if wantArmed := tt.policy == OnDisconnectGrace && !tt.polled; armed != wantArmed {
				t.Fatalf("grace armed after the restart: %v, want %v", armed, wantArmed)
			}
			if tt.resume {
				cur := tk.Subscribe(1, false) // GET /stream with Last-Event-ID: 0
				defer cur.Close()
			}
			if tt.stop {
				// The grace ends with the service: the shutdown does not wait for it, and the
				// task is kept for the next start again (not cancelled: its grace did not pass).
				stopped := make(chan struct{})
				go func() { defer close(stopped); d.stop() }()
				select {
				case <-stopped:
				case <-time.After(10 * time.Second):
					clock.Advance(grace) // let it end, for the cleanup
					<-stopped
					t.Fatal("the shutdown waits for the recovered task's disconnect grace")
				}
				if snap, _ := d.svc.Get(d.ctx, s.ID); snap.Status != Queued {
					t.Fatalf("task after the shutdown: %+v", snap)
				}
				return
			}
			clock.Advance(grace)

			if tt.cancel {
				select {
				case <-tk.Done():
				case <-time.After(5 * time.Second):
					t.Fatalf("%s past its disconnect grace, no reader since the restart: %v (kept for nobody)",
						tt.policy, tk.snapshot().Status)
				}
				evs := parse(t, d.log(t, s.ID, 0))
				if len(evs) == 0 || evs[len(evs)-1].Event != "end" || !strings.Contains(evs[len(evs)-1].Data, `"canceled":true`) {
					t.Fatalf("log: %s %v", ids(evs), evs)
				}
				tk.mu.Lock()
				reason := tk.cancelReason
				tk.mu.Unlock()
				if snap, _ := d.svc.Get(d.ctx, s.ID); snap.Status != Canceled || reason != "disconnect" ||
					tt.behind != snap.Started.IsZero() {
					t.Fatalf("task: %v (reason %q), started %v", snap.Status, reason, snap.Started)
				}
				if tt.behind { // the slot goes to nobody else: the task never runs
					close(first.tokens)
					d.log(t, ahead.ID, 0)
				}
				return
			}
			g := first
			if tt.behind {
				close(first.tokens)
				g = d.eng.next(t)
				if g.id != s.ID {
					t.Fatalf("generation of %s, want %s", g.id, s.ID)
				}
			}
			g.tokens <- "still here"
			close(g.tokens)
			evs := parse(t, d.log(t, s.ID, 0))
			if len(evs) == 0 || evs[len(evs)-1].Event != "end" || strings.Contains(evs[len(evs)-1].Data, `"canceled"`) {
				t.Fatalf("log: %s %v", ids(evs), evs)
			}
			if snap, _ := d.svc.Get(d.ctx, s.ID); snap.Status != Succeeded || snap.TokensOut != 1 {
				t.Fatalf("task: %+v", snap)
			}
		})
	}
}
