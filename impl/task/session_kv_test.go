package task

import (
	"testing"

	"github.com/orchestratord/orchestratord/impl/admission"
)

// TestSessionKVBytesDuringATurn: a session's kv_bytes is the estimate of its last turn (the
// contract). A later turn's first token marks the session warm and leaves that estimate as it
// is; it was set to 0 then, so a session read while its next turn ran showed kv_warmth true
// with kv_bytes 0, until the turn ended.
func TestSessionKVBytesDuringATurn(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	first := spec(admission.Interactive)
	h.submit(first)
	<-h.eng.started
	h.eng.tokens <- " a"
	h.eng.tokens <- " b"
	h.eng.fail <- nil // the generation ends, successful
	if evs := h.events(first.ID); evs[len(evs)-1].Event != "end" {
		t.Fatalf("first turn: %s %s", names(evs), evs[len(evs)-1].Data)
	}
	after, ok := h.svc.opts.Sessions.Get(first.SessionID)
	if !ok || after.KVBytes <= 0 || !after.KVWarm {
		t.Fatalf("the session after its first turn: %+v, %v", after, ok)
	}

	second := spec(admission.Interactive)
	second.SessionID = first.SessionID
	h.submit(second)
	<-h.eng.started
	h.eng.tokens <- " c"
	h.eng.tokens <- " d" // taken once the first token's frame and session mark are done
	during, _ := h.svc.opts.Sessions.Get(first.SessionID)
	if during.KVBytes != after.KVBytes || !during.KVWarm {
		t.Errorf("the session while its second turn runs: kv_bytes %d, warm %v; want the first turn's %d, warm", during.KVBytes,
			during.KVWarm, after.KVBytes)
	}
	h.eng.fail <- nil
	if evs := h.events(second.ID); evs[len(evs)-1].Event != "end" {
		t.Fatalf("second turn: %s %s", names(evs), evs[len(evs)-1].Data)
	}
	if end, _ := h.svc.opts.Sessions.Get(first.SessionID); end.Turns != 2 || end.KVBytes <= 0 {
		t.Fatalf("the session after its second turn: %+v", end)
	}
}
