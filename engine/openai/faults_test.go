package openai

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/orchestratord/orchestratord/engine"
)

// llama-server (served through its OpenAI-compatible /v1 routes, which this adapter claims)
// reports a failure inside a stream as the SSE field "error: {json}" followed by "data: [DONE]"
// (server.cpp: server_sent_event(sink, "error", error_data); then ev_done). A prompt longer than
// the slot's context is such an error with code 400: the task's fault, not the replica's.
func TestLlamaServerErrorFieldInOpenAIStream(t *testing.T) {
	tests := []struct {
		name   string
		events []string
		kind   engine.Kind
		msg    string
	}{
		{"context too long before any token",
			[]string{`error: {"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}`, "data: [DONE]"},
			engine.KindInvalidRequest, "exceeds the available context size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				stream(w, tt.events...)
			}))
			defer srv.Close()
			r := newReplica(t, srv.URL, Options{Model: "m"})
			var c collected
			_, err := r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 5}, c.emit)
			if k := engine.KindOf(err); k != tt.kind || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %v (kind %v, fault %v), want kind %v (fault %v) with %q", err, k, k.Fault(), tt.kind, tt.kind.Fault(), tt.msg)
			}
		})
	}
}

// Ollama (named by the package documentation) refuses a request when its queue is full with
// 503 "server busy, please try again.  maximum pending requests exceeded" (OLLAMA_MAX_QUEUE):
// the replica is healthy but busy; the task should wait, the breaker should not count it.
func TestServerBusy503IsOverload(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"message":"server busy, please try again.  maximum pending requests exceeded","type":"api_error"}}`)
	}))
	defer srv.Close()
	r := newReplica(t, srv.URL, Options{Model: "m"})
	_, err := r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 5}, func(engine.Token) error { return nil })
	if k := engine.KindOf(err); k.Fault() != engine.FaultOverload {
		t.Errorf("err = %v (kind %v, fault %v), want an overload", err, k, k.Fault())
	}
}

// vLLM answers 404 NotFoundError when the model named is not served ("The model `m` does not
// exist."). The model name is the daemon's (configured or discovered), not the task's: the
// replica cannot serve this pool's tasks and another replica would; the task is not invalid.
func TestModelNotFoundIsReplicaFault(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"message":"The model `+"`m`"+` does not exist.","type":"NotFoundError","param":"model","code":404}}`)
	}))
	defer srv.Close()
	r := newReplica(t, srv.URL, Options{Model: "m"})
	_, err := r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 5}, func(engine.Token) error { return nil })
	if k := engine.KindOf(err); k.Fault() != engine.FaultReplica {
		t.Errorf("err = %v (kind %v, fault %v), want a replica fault", err, k, k.Fault())
	}
}

// The model name discovered from /v1/models is remembered for the Replica's life. When the
// engine behind the URL is replaced by one serving another model (a new incarnation), every
// generation keeps sending the old name and gets vLLM's 404 "does not exist": each task fails
// as the task's own fault, the breaker never hears of it, and the name is never asked again.
func TestDiscoveredModelOfAReplacedEngine(t *testing.T) {
	var mu sync.Mutex
	served := "old-model"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cur := served
		mu.Unlock()
		switch r.URL.Path {
		case "/v1/models":
			io.WriteString(w, `{"object":"list","data":[{"id":"`+cur+`","object":"model"}]}`)
		case "/v1/completions":
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			if body["model"] != cur {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"error":{"message":"The model `+"`"+fmt.Sprint(body["model"])+"`"+` does not exist.","type":"NotFoundError","param":"model","code":404}}`)
				return
			}
			stream(w, `data: {"choices":[{"text":"x","finish_reason":"length"}]}`, "data: [DONE]")
		}
	}))
	defer srv.Close()
	r := newReplica(t, srv.URL, Options{})
	gen := func() error {
		_, err := r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 1}, func(engine.Token) error { return nil })
		return err
	}
	if err := gen(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	served = "new-model" // the engine was replaced
	mu.Unlock()
	var errs []error
	for range 3 {
		err := gen()
		if err == nil {
			return
		}
		if k := engine.KindOf(err); k.Fault() == engine.FaultRequest {
			t.Errorf("generation on the replaced engine failed as the task's fault: %v", err)
		}
		errs = append(errs, err)
	}
	t.Errorf("3 generations after the engine was replaced all failed: %v", errs)
}

// vLLM's finish reasons include "error" ("retryable request-level internal error (e.g. KV
// load failure)", vllm/v1/engine) and "abort" (the engine aborted the request): the answer is
// cut short by the engine, not ended. Reporting them as a successful end hands the user a
// truncated answer with stop reason "error"/"abort", and the task is neither retried nor
// migrated.
func TestFinishReasonErrorIsNotSuccess(t *testing.T) {
	for _, reason := range []string{"error", "abort"} {
		t.Run(reason, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				stream(w, textChunk(" The"), `data: {"choices":[{"index":0,"text":"","finish_reason":"`+reason+`"}]}`,
					`data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`, "data: [DONE]")
			}))
			defer srv.Close()
			r := newReplica(t, srv.URL, Options{Model: "m"})
			res, err := r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 50}, func(engine.Token) error { return nil })
			if err == nil {
				t.Errorf("finish_reason %q: success %+v, want a failure (the generation was cut short)", reason, res)
			}
		})
	}
}
