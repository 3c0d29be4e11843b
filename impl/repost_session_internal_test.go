package impl

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/task"
)

// admittingTasks answers as the task service does while the first post of a task is being
// admitted: its task is not visible yet (Task: not found, so sessionOfRepost finds nothing to
// take the session from), and a post of the same id is then answered from it: a replay for the
// same body (fingerprint), ErrConflict for another.
type admittingTasks struct {
	*fakeTasks
}

func (admittingTasks) Task(string) (*task.Task, error) { return nil, task.ErrNotFound }

func (f admittingTasks) Submit(ctx context.Context, spec task.Spec) (task.Admission, error) {
	f.mu.Lock()
	prev, ok := f.specs[spec.ID]
	f.mu.Unlock()
	if ok && (prev.Fingerprint != spec.Fingerprint || prev.Owner != spec.Owner) {
		return task.Admission{}, task.ErrConflict
	}
	return f.fakeTasks.Submit(ctx, spec)
}

// TestConcurrentRepostWithoutSessionIsOneTask: two identical posts of one task_id without
// session_id (the SDK's Submit and its retry), the second sent before the first's task is
// visible, are one request: the second gets the task's admission in the same session, not 409
// CONFLICT because each post was given a session of its own.
func TestConcurrentRepostWithoutSessionIsOneTask(t *testing.T) {
	env := newAdmitEnv(t, 0)
	env.s.opts.Tasks = admittingTasks{env.tasks}
	taskID := uuid.New()
	body := func() *api.TaskRequest {
		prompt := "Once upon a time"
		return &api.TaskRequest{TaskId: taskID, Workload: api.Completion, Engine: api.Llamacpp, ModelRef: "tiny",
			Ctx: 1024, Priority: api.Interactive, Prompt: &prompt, MaxTokens: 8, DeadlineMs: 60000}
	}
	var sessions []uuid.UUID
	for i := range 2 {
		ctx, _ := as(aliceKey)
		resp, err := env.s.createTask(ctx, api.CreateTaskRequestObject{Body: body()})
		if err != nil {
			if errors.Is(err, task.ErrConflict) {
				t.Fatalf("post %d of two identical posts of task %s: %v, want its admission", i, taskID, err)
			}
			t.Fatal(err)
		}
		sessions = append(sessions, resp.(*admitted).Body.SessionId)
	}
	if sessions[0] != sessions[1] {
		t.Fatalf("one task admitted in sessions %s and %s", sessions[0], sessions[1])
	}
}
