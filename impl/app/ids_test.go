package app_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/fake"
)

// Ids a client leaves out are the daemon's to choose and come back in the admission; an
// empty or nil id is refused with a message that says what to send, not a regular expression.
func TestGeneratedIDs(t *testing.T) {
	d := startFakeDaemon(t, "", fake.Options{}, nil)
	body := func(ids string) string {
		return `{` + ids + `"workload": "completion", "model_ref": "fake", "engine": "llamacpp", "ctx": 32768,
			"priority": "interactive", "prompt": "Once upon a time", "max_tokens": 4, "deadline_ms": 600000}`
	}
	t.Run("omitted", func(t *testing.T) {
		var seen []string
		for range 2 {
			res, err := d.do("POST", "/v1/tasks", body(""))
			if err != nil {
				t.Fatal(err)
			}
			var adm struct {
				TaskID    uuid.UUID `json:"task_id"`
				SessionID uuid.UUID `json:"session_id"`
				Streams   struct{ SSE string }
			}
			if res.status != 202 || json.Unmarshal(res.body, &adm) != nil || adm.TaskID == uuid.Nil || adm.SessionID == uuid.Nil {
				t.Fatalf("answer %d %s", res.status, res.body)
			}
			if adm.Streams.SSE != "/v1/tasks/"+adm.TaskID.String()+"/stream" {
				t.Errorf("stream URL %q for task %s", adm.Streams.SSE, adm.TaskID)
			}
			got, err := d.do("GET", "/v1/tasks/"+adm.TaskID.String(), "")
			if err != nil || got.status != 200 || !strings.Contains(string(got.body), `"session_id":"`+adm.SessionID.String()+`"`) {
				t.Fatalf("the task: %d %s %v", got.status, got.body, err)
			}
			seen = append(seen, adm.TaskID.String(), adm.SessionID.String())
		}
		if seen[0] == seen[2] || seen[1] == seen[3] || seen[0] == seen[1] {
			t.Errorf("ids are not new each time: %v", seen)
		}
	})
	sid := uuid.NewString()
	tests := []struct {
		name, ids, want string
	}{
		{"empty task_id", `"task_id": "", `, "/task_id: is empty: it must be a UUID (like 6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11), or be left out for the daemon to generate"},
		{"empty session_id", `"session_id": "", `, "/session_id: is empty: it must be a UUID"},
		{"malformed task_id", `"task_id": "abc", `, "/task_id: must be a UUID"},
		{"nil task_id", `"task_id": "00000000-0000-0000-0000-000000000000", "session_id": "` + sid + `", `, "/task_id: the nil UUID is not an id; send a UUID, or leave task_id out for the daemon to generate"},
		{"nil session_id", `"session_id": "00000000-0000-0000-0000-000000000000", `, "/session_id: the nil UUID is not an id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := d.do("POST", "/v1/tasks", body(tt.ids))
			if err != nil {
				t.Fatal(err)
			}
			var env envelopeBody
			if res.status != 400 || json.Unmarshal(res.body, &env) != nil || env.Code != "INVALID_PARAMS" ||
				!strings.Contains(env.Message, tt.want) || strings.Contains(env.Message, "regular expression") {
				t.Fatalf("answer %d %s, want 400 INVALID_PARAMS saying %q", res.status, res.body, tt.want)
			}
		})
	}
}
