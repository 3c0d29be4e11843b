package task

import (
	"bytes"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// TestVerboseStreamAfterRestart: a finished task's verbose stream (?verbose=true, the 202's
// sse_verbose) reads the same after a restart as before it. A replayed record without a
// verbose variant was decoded with an empty, non-nil one, which the log took as a variant:
// every started and token frame then came back to verbose readers with an empty data line.
func TestVerboseStreamAfterRestart(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	d := startDaemon(t, dir, clock)
	s := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, s); err != nil {
		t.Fatal(err)
	}
	g := d.eng.next(t)
	g.tokens <- "Hel"
	g.tokens <- "lo"
	close(g.tokens)
	before := d.readLog(t, s.ID, 0, true)
	plainBefore := d.log(t, s.ID, 0)
	d.stop()

	d = startDaemon(t, dir, clock)
	if got := d.log(t, s.ID, 0); !bytes.Equal(got, plainBefore) {
		t.Fatalf("plain log changed:\n%s\nbefore:\n%s", got, plainBefore)
	}
	after := d.readLog(t, s.ID, 0, true)
	if !bytes.Equal(after, before) {
		t.Fatalf("verbose stream of a finished task after a restart:\n%s\nbefore the restart:\n%s", after, before)
	}
	for _, ev := range parse(t, after) {
		if ev.Data == "" {
			t.Fatalf("event %s (%s) has empty data after the restart", ev.ID, ev.Event)
		}
	}
}
