package sdk_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/internal/testdaemon"
	"github.com/orchestratord/orchestratord/sdk"
)

// TestSubmitRepostWithoutSessionIsIdempotent: re-posting a task_id with the same body is
// idempotent, and a body without session_id gets the session the daemon generated at the first
// post. Submit filled a zero SessionId with a new random one on every call, so a re-post
// (after a timeout, say) of the same request was 409 CONFLICT instead of the task's admission.
func TestSubmitRepostWithoutSessionIsIdempotent(t *testing.T) {
	d := startDaemon(t, "", fake.Options{})
	c := newClient(t, d.URL, sdk.Options{})
	req := sdk.Completion(testdaemon.ModelID, "Once upon a time")
	req.TaskId = uuid.New()
	first, err := c.Submit(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Submit(t.Context(), req)
	if err != nil {
		t.Fatalf("re-post of task %s: %v, want its admission again", req.TaskId, err)
	}
	if again.TaskId != first.TaskId || again.SessionId != first.SessionId {
		t.Fatalf("re-post admitted task %s in session %s, want task %s in session %s", again.TaskId, again.SessionId,
			first.TaskId, first.SessionId)
	}
}
