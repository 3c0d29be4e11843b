package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestTasksGetExplains: tasks get prints the admission explanation and the placement, every
// candidate with its score or why it was excluded; --json prints the state as it came.
func TestTasksGetExplains(t *testing.T) {
	const id = "6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11"
	queued := `{"task_id":"` + id + `","session_id":"7f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11","state":"queued",
		"pool_id":"p0","priority":"batch","created_ms":1,"tokens_out":0,"queue_position":4,"predicted_start_ms":1500,
		"admission":{"key_name":"bob","class":"batch","virtual_start":12.5,"position":4,
			"ahead_by_class":{"interactive":3,"batch":1}}}`
	running := `{"task_id":"` + id + `","session_id":"7f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11","state":"running",
		"pool_id":"p0","priority":"interactive","created_ms":1,"tokens_out":7,
		"placement":{"pool_id":"p0","replica_id":"p0/1","reason":"least_loaded","candidates":[
			{"replica_id":"p0/0","score":0,"excluded_because":"draining"},
			{"replica_id":"p0/1","score":0.5},
			{"replica_id":"edge","score":0.25}]}}`
	refused := `{"task_id":"` + id + `","session_id":"7f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11","state":"failed",
		"pool_id":"p0","priority":"batch","created_ms":1,"tokens_out":0,
		"admission":{"key_name":"alice","class":"batch","reason_if_refused":"QUEUE_FULL_DROP_LRU"},
		"error":{"code":"QUEUE_FULL_DROP_LRU","message":"evicted by a newer task","retriable":true}}`
	tests := []struct {
		name  string
		body  string
		args  []string
		want  []string
		never []string
	}{
		{"queued", queued, nil, []string{
			"task " + id + ": queued on pool p0, batch, 0 tokens out",
			"queued at position 4, predicted start in 1.5s",
			"admission: key bob, class batch, position 4, virtual start 12.5, ahead: 3 interactive, 1 batch",
		}, []string{"placement:"}},
		{"running", running, nil, []string{
			"placement: replica p0/1 of pool p0 (least_loaded)",
			"p0/0  excluded: draining\n",
			"p0/1  score 0.500, chosen\n",
			"edge  score 0.250\n",
		}, []string{"admission:"}},
		{"refused", refused, nil, []string{
			"admission: key alice, class batch, refused: QUEUE_FULL_DROP_LRU",
			"error: QUEUE_FULL_DROP_LRU evicted by a newer task (retriable)",
		}, nil},
		{"json", running, []string{"--json"}, []string{`"excluded_because": "draining"`, `"replica_id": "p0/1"`}, []string{"placement:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/tasks/"+id {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			args := append([]string{"tasks", "get"}, tt.args...)
			r := orchctl(t, map[string]string{"ORCHD_URL": srv.URL, "ORCHD_API_KEY": "k"}, "", append(args, id)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
				}
			}
			for _, n := range tt.never {
				if strings.Contains(r.stdout, n) {
					t.Errorf("stdout has %q:\n%s", n, r.stdout)
				}
			}
		})
	}
}

// TestRefusalLine: a 429 is reported in one line naming the limit or policy that refused it
// and when to retry.
func TestRefusalLine(t *testing.T) {
	tests := []struct {
		name       string
		envelope   map[string]any
		retryAfter string
		want       string
	}{
		{"rate limit", map[string]any{"code": "RATE_LIMITED", "message": "key bob is over its rpm", "retriable": true,
			"limit": "requests", "policy_label": "rate-limit", "retry_after_ms": 2000}, "2",
			"orchctl: refused: key bob is over its rpm (HTTP 429 RATE_LIMITED; limit requests; policy rate-limit; retry after 2s)"},
		{"budget", map[string]any{"code": "BUDGET_EXCEEDED", "message": "key alice has no token budget left", "retriable": false,
			"policy_label": "budget"}, "60",
			"orchctl: refused: key alice has no token budget left (HTTP 429 BUDGET_EXCEEDED; policy budget; retry after 1m0s)"},
		{"queue full, no Retry-After header", map[string]any{"code": "ADMISSION_REJECT", "message": "queue is full", "retriable": true,
			"policy_label": "reject", "retry_after_ms": 1500}, "",
			"orchctl: refused: queue is full (HTTP 429 ADMISSION_REJECT; policy reject; retry after 1.5s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(http.StatusTooManyRequests)
				_ = json.NewEncoder(w).Encode(tt.envelope)
			}))
			defer srv.Close()
			r := orchctl(t, map[string]string{"ORCHD_URL": srv.URL, "ORCHD_API_KEY": "k"}, "", "--retries", "0", "capabilities")
			if r.code != exitBackpressure || strings.TrimSpace(r.stderr) != tt.want {
				t.Fatalf("exit %d, stderr %q; want %d, %q", r.code, r.stderr, exitBackpressure, tt.want)
			}
		})
	}
}
