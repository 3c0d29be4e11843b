package task

import (
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
)

// A finished task stays for tasks.retention (up to tasks.max_retained: 1024 by default) only to
// answer GET, streams and re-posts, none of which reads its prompt (a re-post compares the
// Fingerprint). It lets go of its prompt, a chat's messages and the text streamed: kept, a
// client could pin max_retained × 2 × body_limit_bytes (about 2 GiB with the defaults) with
// tasks it cancels at once.
func TestFinishedTaskReleasesItsPrompt(t *testing.T) {
	h := newHarness(t, 4, 1, admission.Reject)
	const size = 256 << 10
	s := spec(admission.Interactive)
	s.Workload = "completion"
	s.Prompt = strings.Repeat("p", size)
	s.Messages = []engine.Message{{Role: "user", Content: strings.Repeat("m", size)}}
	h.submit(s)
	<-h.eng.started
	close(h.eng.tokens)
	tk, err := h.svc.Task(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-tk.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("task did not finish")
	}
	// Still retained (within tasks.retention), as it must be for GET and re-posts.
	if _, err := h.svc.Get(h.ctx, s.ID); err != nil {
		t.Fatalf("finished task not retained: %v", err)
	}
	tk.mu.Lock()
	retained := len(tk.spec.Prompt) + tk.text.Cap()
	for _, m := range tk.spec.Messages {
		retained += len(m.Content)
	}
	tk.mu.Unlock()
	if retained > 4<<10 {
		t.Fatalf("a finished task still holds %d bytes of prompt/messages (sent %d); want them released once final", retained, 2*size)
	}
}
