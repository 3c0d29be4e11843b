package contracts

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// Regressions for what `make fuzz` (schemathesis) found. The placement and cross-field cases
// are rows of TestPlacementRefusals.

// A 405 names the methods the resource supports (RFC 9110 §15.5.6). schemathesis
// (unsupported_method): every 405 lacked Allow, because the request validator answered before
// echo's own 405 handler could set it. HEAD is listed wherever GET is (HeadAsGet serves it).
func TestMethodNotAllowedListsAllow(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := http.Header{"X-Api-Key": {testKey}}
	tests := []struct{ method, path, allow string }{
		{"TRACE", "/v1/tasks", "POST"},
		{"DELETE", "/v1/tasks", "POST"},
		{"PUT", "/v1/tasks/" + uuid.NewString(), "GET, HEAD"},
		{"PATCH", "/v1/sessions/" + uuid.NewString(), "DELETE, GET, HEAD"},
		{"OPTIONS", "/v1/capabilities", "GET, HEAD"},
		{"POST", "/metrics", "GET, HEAD"},
		{"DELETE", "/v1/pools/" + poolID + "/reload", "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := h.do(t, tt.method, tt.path, nil, key)
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("%d %s, want 405", resp.StatusCode, body)
			}
			if got, want := methods(resp.Header.Get("Allow")), methods(tt.allow); !slices.Equal(got, want) {
				t.Errorf("Allow %q, want the documented methods %q", resp.Header.Get("Allow"), tt.allow)
			}
		})
	}
}

func methods(allow string) []string {
	var out []string
	for _, m := range strings.Split(allow, ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}

// Every frame of a stream matches the schema the contract gives streamTask's text/event-stream
// response: one frame (OpenAPI before 3.2 documents an event stream by the schema of one event).
// schemathesis (response_schema_conformance) found it was `type: string`, which it, like other
// tools, applies to each frame, so that every stream violated the contract.
func TestStreamFramesMatchTheStreamSchema(t *testing.T) {
	t.Parallel()
	c := mustContract(t)
	resp := c.spec.Paths.Value("/v1/tasks/{id}/stream").Get.Responses.Status(http.StatusOK)
	mt := resp.Value.Content.Get("text/event-stream")
	if mt == nil || mt.Schema == nil || mt.Schema.Value == nil {
		t.Fatal("streamTask 200 has no text/event-stream schema")
	}
	schema := mt.Schema.Value
	h := newHarness(t)
	req := taskReq(uuid.New())
	h.submit(t, req)
	frames := h.openStream(t, req.TaskId, streamOpts{verbose: true}).rest()
	if len(frames) < 3 {
		t.Fatalf("only %d frames", len(frames))
	}
	for _, f := range frames {
		obj := map[string]any{"id": strconv.Itoa(f.ID), "event": f.Event, "data": f.Raw}
		if err := schema.VisitJSON(obj, schemaOpts...); err != nil {
			t.Errorf("frame %d %s does not match the stream schema: %v", f.ID, f.Event, err)
		}
	}
	// The schema is not vacuous: an undeclared event or a frame without data does not match.
	for _, bad := range []map[string]any{
		{"id": "0", "event": "progress", "data": "{}"},
		{"id": "0", "event": "token"},
		{"id": "x", "event": "token", "data": "{}"},
	} {
		if schema.VisitJSON(bad, schemaOpts...) == nil {
			t.Errorf("frame %v matches the stream schema", bad)
		}
	}
}
