package sdk_test

import (
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/internal/testdaemon"
	"github.com/orchestratord/orchestratord/sdk"
)

// TestConcurrentRepostWithoutSession: two identical posts of one task_id, sent at once
// without session_id (as Submit sends them), are one task: both get its admission, in the same
// session. Neither may be 409 CONFLICT for a body identical to the other's.
func TestConcurrentRepostWithoutSession(t *testing.T) {
	d := startDaemon(t, "", fake.Options{})
	c := newClient(t, d.URL, sdk.Options{})
	for i := range 20 {
		req := sdk.Completion(testdaemon.ModelID, "Once upon a time")
		req.TaskId = uuid.New()
		var wg sync.WaitGroup
		errs := make([]error, 2)
		sessions := make([]uuid.UUID, 2)
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				adm, err := c.Submit(t.Context(), req)
				errs[j] = err
				if err == nil {
					sessions[j] = adm.SessionId
				}
			}()
		}
		wg.Wait()
		for j, err := range errs {
			if err != nil {
				t.Fatalf("round %d: post %d of two identical concurrent posts of task %s: %v, want its admission", i, j, req.TaskId, err)
			}
		}
		if sessions[0] != sessions[1] {
			t.Fatalf("round %d: one task in two sessions: %s, %s", i, sessions[0], sessions[1])
		}
		_ = c.Cancel(t.Context(), req.TaskId)
	}
}
