package contracts

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
)

// HEAD on every GET operation answers as that GET without a body (RFC 9110 §9.3.2): same status
// and headers, not 405. The contract declares no HEAD operation (RFC 9110 makes HEAD part of
// every GET; schemathesis does not probe HEAD as an unsupported method), and the validating
// transport checks a HEAD answer against the GET operation.
func TestHeadAnswersLikeGet(t *testing.T) {
	t.Parallel()
	c := mustContract(t)
	h := newHarness(t)
	h.fake.SetGated(true) // the task stays put: a HEAD on its stream must not end it

	req := taskReq(uuid.New())
	h.submit(t, req)
	task, session := req.TaskId.String(), req.SessionId.String()
	key := http.Header{"X-Api-Key": {testKey}}
	resp, body := h.do(t, http.MethodPost, "/v1/artifacts", strings.NewReader(`{"kind":"plan","content":{"steps":["a"]}}`),
		http.Header{"X-Api-Key": {testKey}, "Content-Type": {"application/json"}})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("createArtifact: %d %s", resp.StatusCode, body)
	}
	var art client.ArtifactRef
	if err := json.Unmarshal(body, &art); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		op     string // the GET operation, "" for none
		path   string
		header http.Header
		status int
		stream bool   // an event stream: compared with the contract, not with a GET that would not end
		allow  string // Allow on a 405
	}{
		{name: "task", op: "getTask", path: "/v1/tasks/" + task, header: key, status: 200},
		{name: "stream", op: "streamTask", path: "/v1/tasks/" + task + "/stream", header: key, status: 200, stream: true},
		{name: "session", op: "getSession", path: "/v1/sessions/" + session, header: key, status: 200},
		{name: "artifact", op: "getArtifact", path: "/v1/artifacts/" + string(art.Id), header: key, status: 200},
		{name: "capabilities", op: "getCapabilities", path: "/v1/capabilities", header: key, status: 200},
		{name: "pool health", op: "getPoolHealth", path: "/v1/pools/" + poolID + "/health", header: key, status: 200},
		{name: "metrics, public", op: "getMetrics", path: "/metrics", status: 200},
		{name: "contract, public", op: "getOpenAPI", path: "/openapi.json", status: 200},
		{name: "OpenAI models", op: "listModels", path: "/v1/models", header: key, status: 200},
		{name: "unknown task", path: "/v1/tasks/" + uuid.NewString(), header: key, status: 404},
		{name: "stream of an unknown task", path: "/v1/tasks/" + uuid.NewString() + "/stream", header: key, status: 404},
		{name: "invalid id", path: "/v1/tasks/not-a-uuid", header: key, status: 400},
		{name: "no API key", path: "/v1/capabilities", status: 401},
		{name: "different API keys", path: "/v1/capabilities", header: http.Header{"X-Api-Key": {testKey}, "Authorization": {"Bearer x-0123456789"}}, status: 401},
		{name: "unknown path", path: "/v1/nope", header: key, status: 404},
		{name: "no GET on the resource", path: "/v1/tasks", header: key, status: 405, allow: "POST"},
		{name: "no GET on a pool's drain", path: "/v1/pools/" + poolID + "/drain", header: key, status: 405, allow: "POST"},
	}

	var covered []string
	for _, tt := range tests {
		covered = append(covered, tt.op)
	}
	for _, item := range c.spec.Paths.Map() {
		if item.Get != nil && !slices.Contains(covered, item.Get.OperationID) {
			t.Errorf("GET operation %s has no HEAD row", item.Get.OperationID)
		}
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head, body := h.do(t, http.MethodHead, tt.path, nil, tt.header)
			if head.StatusCode != tt.status {
				t.Fatalf("HEAD %s: %d, want %d", tt.path, head.StatusCode, tt.status)
			}
			if len(body) != 0 {
				t.Errorf("HEAD %s: %d-byte body, want none", tt.path, len(body))
			}
			if tt.allow != "" {
				if got, want := methods(head.Header.Get("Allow")), methods(tt.allow); !slices.Equal(got, want) {
					t.Errorf("Allow %q, want %q", head.Header.Get("Allow"), tt.allow)
				}
			}
			if tt.stream {
				if ct := head.Header.Get("Content-Type"); ct != "text/event-stream" {
					t.Errorf("HEAD %s: Content-Type %q, want text/event-stream", tt.path, ct)
				}
				if st := h.state(t, req.TaskId).State; st == client.Canceled {
					t.Errorf("HEAD on the stream canceled the task (state %s): HEAD must be safe", st)
				}
				return
			}
			get, _ := h.do(t, http.MethodGet, tt.path, nil, tt.header)
			if get.StatusCode != head.StatusCode {
				t.Errorf("GET %d, HEAD %d", get.StatusCode, head.StatusCode)
			}
			for _, name := range []string{"Content-Type", "Allow", "Cache-Control"} {
				if g, hd := get.Header.Get(name), head.Header.Get(name); g != hd {
					t.Errorf("%s: GET %q, HEAD %q", name, g, hd)
				}
			}
			// net/http sends Content-Length for a body it buffered whole, for HEAD as for GET.
			if g, hd := get.Header.Get("Content-Length"), head.Header.Get("Content-Length"); g != "" && hd != "" && g != hd {
				t.Errorf("Content-Length: GET %s, HEAD %s", g, hd)
			}
		})
	}
	if st := h.state(t, req.TaskId).State; st != client.Queued && st != client.Running {
		t.Errorf("task %s after the HEAD requests, want it still queued or running", st)
	}
}
