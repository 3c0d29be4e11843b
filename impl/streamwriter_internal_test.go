package impl

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// deadlineRecorder is a response writer that records the write deadlines set on it.
type deadlineRecorder struct {
	*httptest.ResponseRecorder
	deadlines []time.Time
}

func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	d.deadlines = append(d.deadlines, t)
	return nil
}

// A stream's writes each get at least the write timeout, without a deadline set per write: the
// deadline moves only once less than the timeout is left.
func TestStreamWriterDeadlineNotPerWrite(t *testing.T) {
	const timeout = time.Hour
	w := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder()}
	out := streamWriter{w: w, rc: http.NewResponseController(w), timeout: timeout}
	for range 100 {
		before := time.Now()
		if err := out.write([]byte("data: x\n\n")); err != nil {
			t.Fatal(err)
		}
		if n := len(w.deadlines); n == 0 || w.deadlines[n-1].Before(before.Add(timeout)) {
			t.Fatalf("write without a deadline at least %v away: %v", timeout, w.deadlines)
		}
	}
	if len(w.deadlines) != 1 {
		t.Errorf("%d deadlines set for 100 writes within the slack, want 1", len(w.deadlines))
	}
	// Once less than timeout is left, the next write moves it.
	out.until = time.Now().Add(timeout / 2)
	if err := out.flush(); err != nil {
		t.Fatal(err)
	}
	if len(w.deadlines) != 2 || time.Until(w.deadlines[1]) < timeout {
		t.Errorf("deadline not moved when less than the timeout was left: %v", w.deadlines)
	}
}

// The heartbeat is due a full interval after the last write, however often writes came.
func TestHeartbeatDueAfterIdleInterval(t *testing.T) {
	hb := newHeartbeat(time.Hour)
	defer hb.t.Stop()
	if hb.due(time.Now()) {
		t.Error("due right after a write")
	}
	if !hb.due(time.Now().Add(-time.Hour)) {
		t.Error("not due an interval after the last write")
	}
}
