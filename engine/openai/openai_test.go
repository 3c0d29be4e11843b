package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

func newReplica(t *testing.T, url string, o Options) *Replica {
	t.Helper()
	o.BaseURL = url + "/"
	r := New(o)
	t.Cleanup(r.client.CloseIdleConnections)
	return r
}

type collected struct{ texts []string }

func (c *collected) emit(tok engine.Token) error {
	if tok.Index != len(c.texts) {
		return fmt.Errorf("token index %d, want %d", tok.Index, len(c.texts))
	}
	c.texts = append(c.texts, string(tok.Text))
	return nil
}

// waitGone reads the request body (so that the server notices the client leaving) and waits
// for the request's end.
func waitGone(r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

// stream writes SSE events, flushing each.
func stream(w http.ResponseWriter, events ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	for _, e := range events {
		io.WriteString(w, e+"\n\n")
		w.(http.Flusher).Flush()
	}
}

func textChunk(s string) string {
	b, _ := json.Marshal(s)
	return `data: {"object":"text_completion","choices":[{"index":0,"text":` + string(b) + `,"finish_reason":null}]}`
}

func deltaChunk(s string) string {
	b, _ := json.Marshal(s)
	return `data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":` + string(b) + `},"finish_reason":null}]}`
}

const usage = `"usage":{"prompt_tokens":6,"completion_tokens":3,"total_tokens":9,"prompt_tokens_details":{"cached_tokens":2}}`

func TestGenerate(t *testing.T) {
	tests := []struct {
		name   string
		req    engine.Request
		path   string
		events []string
		texts  []string
		res    engine.Result
	}{
		{
			name: "completion, usage in a chunk of its own (vLLM)",
			req:  engine.Request{Prompt: "Hi", MaxTokens: 3},
			path: "/v1/completions",
			events: []string{textChunk(" The"), textChunk(" quick"),
				`data: {"choices":[{"index":0,"text":" brown","finish_reason":"length"}]}`,
				`data: {"choices":[],` + usage + `}`, "data: [DONE]"},
			texts: []string{" The", " quick", " brown"},
			res:   engine.Result{TokensOut: 3, TokensIn: 6, TokensCached: 2, Stop: engine.StopLimit},
		},
		{
			name: "completion, usage with the finish (llama-server), empty last text",
			req:  engine.Request{Prompt: "Hi", MaxTokens: 3},
			path: "/v1/completions",
			events: []string{textChunk(" The"), textChunk(" quick"), textChunk(" brown"),
				`data: {"choices":[{"index":0,"text":"","finish_reason":"stop"}],` + usage + `}`, "data: [DONE]"},
			texts: []string{" The", " quick", " brown"},
			res:   engine.Result{TokensOut: 3, TokensIn: 6, TokensCached: 2, Stop: engine.StopEOS},
		},
		{
			name: "chat: role chunk, deltas, multi-line data, comments",
			req:  engine.Request{Workload: engine.WorkloadChat, Messages: []engine.Message{{Role: "user", Content: "Hi"}}, MaxTokens: 5},
			path: "/v1/chat/completions",
			events: []string{": keep-alive", `data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}`,
				deltaChunk("Hel"), "data: {\"choices\":[{\"index\":0,\n" + `data: "delta":{"content":"lo"}}]}`,
				`data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`, "data: [DONE]"},
			texts: []string{"Hel", "lo"},
			res:   engine.Result{TokensOut: 2, Stop: "tool_calls"},
		},
		{
			name:   "finish without [DONE] at the end of the body",
			req:    engine.Request{Prompt: "Hi", MaxTokens: 1},
			path:   "/v1/completions",
			events: []string{`data: {"choices":[{"index":0,"text":"x","finish_reason":"length"}]}`},
			texts:  []string{"x"},
			res:    engine.Result{TokensOut: 1, Stop: engine.StopLimit},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got struct {
				path, auth string
				body       map[string]any
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got.path, got.auth = r.URL.Path, r.Header.Get("Authorization")
				_ = json.NewDecoder(r.Body).Decode(&got.body)
				stream(w, tt.events...)
			}))
			defer srv.Close()
			r := newReplica(t, srv.URL, Options{Model: "m1", APIKey: "k-123"})
			var c collected
			res, err := r.Generate(t.Context(), tt.req, c.emit)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(c.texts, "|") != strings.Join(tt.texts, "|") || res != tt.res {
				t.Errorf("texts %q, result %+v; want %q, %+v", c.texts, res, tt.texts, tt.res)
			}
			if got.path != tt.path || got.auth != "Bearer k-123" || got.body["model"] != "m1" || got.body["stream"] != true ||
				got.body["stream_options"].(map[string]any)["include_usage"] != true {
				t.Errorf("request %s auth=%q body=%v", got.path, got.auth, got.body)
			}
		})
	}
}

func TestGenerateRequestBody(t *testing.T) {
	seed := int64(42)
	var body map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&body)
		stream(w, `data: {"choices":[{"text":"","finish_reason":"length"}]}`, "data: [DONE]")
	}))
	defer srv.Close()
	r := newReplica(t, srv.URL, Options{Model: "m"})
	_, err := r.Generate(t.Context(), engine.Request{Workload: engine.WorkloadChat, MaxTokens: 7, Seed: &seed, Deterministic: true,
		Messages: []engine.Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "b"}, {Role: "user", Content: "c"}}},
		func(engine.Token) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(body)
	want := `{"max_tokens":7,"messages":[{"content":"a","role":"user"},{"content":"b","role":"assistant"},{"content":"c","role":"user"}],` +
		`"model":"m","seed":42,"stream":true,"stream_options":{"include_usage":true},"temperature":0,"top_p":1}`
	if string(b) != want {
		t.Errorf("body %s\nwant %s", b, want)
	}
}

func TestGenerateDiscoversModel(t *testing.T) {
	var mu sync.Mutex
	var modelsAsked int
	var models []any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/v1/models":
			modelsAsked++
			io.WriteString(w, `{"object":"list","data":[{"id":"served-name","object":"model"},{"id":"other"}]}`)
		case "/v1/completions":
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			models = append(models, body["model"])
			stream(w, `data: {"choices":[{"text":"x","finish_reason":"length"}]}`, "data: [DONE]")
		}
	}))
	defer srv.Close()
	r := newReplica(t, srv.URL, Options{})
	for range 2 {
		if _, err := r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 1}, func(engine.Token) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if modelsAsked != 1 || fmt.Sprint(models) != "[served-name served-name]" {
		t.Errorf("asked /v1/models %d times; models sent %v", modelsAsked, models)
	}
}

func TestGenerateErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		idle    time.Duration
		kind    engine.Kind
		msg     string
		tokens  int
	}{
		{"context too long (vLLM 400)", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			io.WriteString(w, `{"object":"error","message":"This model's maximum context length is 2048 tokens","type":"BadRequestError","param":null,"code":400}`)
		}, 0, engine.KindInvalidRequest, "maximum context length", 0},
		{"context too long (llama-server 400)", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			io.WriteString(w, `{"error":{"code":400,"message":"request (5002 tokens) exceeds the available context size","type":"exceed_context_size_error"}}`)
		}, 0, engine.KindInvalidRequest, "exceeds the available context size", 0},
		{"unknown parameter (FastAPI 422)", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(422)
			io.WriteString(w, `{"detail":"bad field"}`)
		}, 0, engine.KindInvalidRequest, "bad field", 0},
		{"busy 429", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(429)
			io.WriteString(w, `{"error":{"message":"too many requests","type":"rate_limit_error"}}`)
		}, 0, engine.KindOverload, "too many requests", 0},
		{"loading 503", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":{"message":"Loading model","code":503}}`, http.StatusServiceUnavailable)
		}, 0, engine.KindPoolUnavailable, "Loading model", 0},
		{"key refused 401", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":"Unauthorized"}`, http.StatusUnauthorized)
		}, 0, engine.KindPoolUnavailable, "401", 0},
		{"500", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "Internal Server Error", 500)
		}, 0, engine.KindEngineFailure, "Internal Server Error", 0},
		{"not a stream", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"choices":[]}`)
		}, 0, engine.KindProtocol, "text/event-stream", 0},
		{"malformed chunk", func(w http.ResponseWriter, r *http.Request) {
			stream(w, textChunk(" The"), `data: {"choices":[{"text":`)
		}, 0, engine.KindProtocol, "malformed chunk", 1},
		{"in-stream error object", func(w http.ResponseWriter, r *http.Request) {
			stream(w, textChunk(" The"), `data: {"error":{"message":"CUDA out of memory","type":"InternalServerError","code":500}}`)
		}, 0, engine.KindEngineFailure, "CUDA out of memory", 1},
		{"in-stream vLLM error", func(w http.ResponseWriter, r *http.Request) {
			stream(w, `data: {"object":"error","message":"bad logits processor","type":"BadRequestError","code":400}`)
		}, 0, engine.KindInvalidRequest, "bad logits processor", 0},
		{"error event", func(w http.ResponseWriter, r *http.Request) {
			stream(w, "event: error\ndata: engine exploded")
		}, 0, engine.KindProtocol, "malformed chunk", 0},
		{"stream cut mid-token", func(w http.ResponseWriter, r *http.Request) {
			stream(w, textChunk(" The"))
			io.WriteString(w, `data: {"choices":[{"te`)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}, 0, engine.KindWorkerReset, "", 1},
		{"stream ends without finish", func(w http.ResponseWriter, r *http.Request) {
			stream(w, textChunk(" The"))
		}, 0, engine.KindWorkerReset, "stream ended", 1},
		{"[DONE] without finish", func(w http.ResponseWriter, r *http.Request) {
			stream(w, textChunk(" The"), "data: [DONE]")
		}, 0, engine.KindWorkerReset, "without a finish_reason", 1},
		{"slow first token", func(w http.ResponseWriter, r *http.Request) {
			waitGone(r)
		}, 20 * time.Millisecond, engine.KindDecodeTimeout, "no answer", 0},
		{"stall mid-stream", func(w http.ResponseWriter, r *http.Request) {
			stream(w, textChunk(" The"))
			waitGone(r)
		}, 20 * time.Millisecond, engine.KindDecodeTimeout, "no stream chunk", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			r := newReplica(t, srv.URL, Options{Model: "m", IdleTimeout: tt.idle})
			var c collected
			res, err := r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 5}, c.emit)
			if k := engine.KindOf(err); k != tt.kind || !strings.Contains(fmt.Sprint(err), tt.msg) {
				t.Errorf("err = %v (kind %v), want kind %v with %q", err, k, tt.kind, tt.msg)
			}
			if res.TokensOut != tt.tokens || len(c.texts) != tt.tokens {
				t.Errorf("tokens = %d emitted %d, want %d", res.TokensOut, len(c.texts), tt.tokens)
			}
		})
	}
}

func TestGenerateConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := newReplica(t, "http://"+addr, Options{Model: "m"})
	_, err = r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 1}, func(engine.Token) error { return nil })
	if k := engine.KindOf(err); k != engine.KindPoolUnavailable || k.Fault() != engine.FaultReplica {
		t.Errorf("kind = %v (%v)", k, err)
	}
}

func TestGenerateRefusesLocally(t *testing.T) {
	r := New(Options{BaseURL: "http://127.0.0.1:9", Model: "m"})
	for _, req := range []engine.Request{{Prompt: "p"}, {Workload: engine.WorkloadChat, MaxTokens: 1}, {Workload: "embedding", MaxTokens: 1}} {
		if _, err := r.Generate(t.Context(), req, nil); engine.KindOf(err) != engine.KindInvalidRequest {
			t.Errorf("%+v: err = %v, want invalid request", req, err)
		}
	}
}

// TestCancelAbortsRequest: cancelling ctx mid-stream returns ctx's error at once and the
// server sees its request end (the connection closes).
func TestCancelAbortsRequest(t *testing.T) {
	gone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stream(w, textChunk(" The"), textChunk(" quick"))
		waitGone(r)
		close(gone)
	}))
	defer srv.Close()
	r := newReplica(t, srv.URL, Options{Model: "m"})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := r.Generate(ctx, engine.Request{Prompt: "p", MaxTokens: 100}, func(tok engine.Token) error {
		if tok.Index == 1 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	<-gone // the engine saw the abort (the test hangs otherwise)
}

func TestHealthIdentifyLoad(t *testing.T) {
	metrics := `# HELP vllm:num_requests_running Number of requests
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m",engine="0"} 3.0
vllm:num_requests_running{model_name="m",engine="1"} 1.0
vllm:num_requests_waiting{model_name="m"} 5.0
vllm:kv_cache_usage_perc{model_name="m{x}"} 0.25
sglang:num_running_reqs{model_name="m"} 7
sglang:num_queue_reqs 2
sglang:token_usage 0.5
`
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" && r.URL.Path != "/health" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/health":
			if !ready {
				http.Error(w, "loading", http.StatusServiceUnavailable)
			}
		case "/v1/models":
			io.WriteString(w, `{"data":[{"id":"served"}]}`)
		case "/version":
			io.WriteString(w, `{"version":"0.11.0"}`)
		case "/metrics":
			io.WriteString(w, metrics)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	r := newReplica(t, srv.URL, Options{APIKey: "k", Flavor: FlavorVLLM})
	if h, err := r.Health(t.Context()); err != nil || h != (engine.Health{Live: true, Ready: true}) {
		t.Errorf("health = %+v, %v", h, err)
	}
	ready = false
	if h, _ := r.Health(t.Context()); h.Ready || !h.Live || !strings.Contains(h.Detail, "loading") {
		t.Errorf("health while loading = %+v", h)
	}
	if id, err := r.Identify(t.Context()); err != nil || id != (engine.Identity{ModelID: "served", Version: "0.11.0"}) {
		t.Errorf("identify = %+v, %v", id, err)
	}
	tests := []struct {
		flavor Flavor
		want   engine.Load
	}{
		{FlavorVLLM, engine.Load{Running: 4, Waiting: 5, KVUsage: 0.25}},
		{FlavorSGLang, engine.Load{Running: 7, Waiting: 2, KVUsage: 0.5}},
		{FlavorLlamaCpp, engine.Load{Running: -1, Waiting: -1, KVUsage: -1}},
		{"", engine.Load{Running: 4, Waiting: 5, KVUsage: 0.25}},
	}
	for _, tt := range tests {
		r := newReplica(t, srv.URL, Options{APIKey: "k", Flavor: tt.flavor})
		if l, err := r.Load(t.Context()); err != nil || l != tt.want {
			t.Errorf("%s: load = %+v, %v; want %+v", tt.flavor, l, err, tt.want)
		}
	}
	srv.Close()
	if h, err := r.Health(t.Context()); err != nil || h.Live {
		t.Errorf("health of a stopped server = %+v, %v", h, err)
	}
}

// TestHealthWithoutHealthEndpoint: a server that answers 404 on /health (Ollama) is ready when
// /v1/models answers, and not ready when that fails too.
func TestHealthWithoutHealthEndpoint(t *testing.T) {
	for _, modelsOK := range []bool{true, false} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v1/models" && modelsOK {
				io.WriteString(w, `{"data":[{"id":"llama3.2"}]}`)
				return
			}
			http.NotFound(w, r)
		}))
		r := newReplica(t, srv.URL, Options{})
		h, err := r.Health(t.Context())
		if err != nil || h.Ready != modelsOK || !h.Live {
			t.Errorf("models answer %v: health = %+v, %v", modelsOK, h, err)
		}
		srv.Close()
	}
}

func TestDrivers(t *testing.T) {
	reg, err := engine.NewRegistry(VLLMDriver(), SGLangDriver(), GenericDriver())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{NameVLLM, NameSGLang} {
		d, _ := reg.Lookup(name)
		argv := strings.Join(d.Managed.Argv, " ")
		if d.Managed == nil || !strings.Contains(argv, "{port}") || !strings.Contains(argv, "127.0.0.1") ||
			!strings.Contains(argv+strings.Join(d.Managed.Env, " "), "{api_key}") || !strings.Contains(strings.Join(d.Managed.Env, " "), "CUDA_VISIBLE_DEVICES={devices}") {
			t.Errorf("%s: managed template %+v", name, d.Managed)
		}
	}
	if d, _ := reg.Lookup(NameOpenAI); d.Managed != nil {
		t.Errorf("openai must be external only")
	}
}

// The model requested from a server that lists several: the first of Prefer it lists, else
// the first it lists.
func TestChooseModel(t *testing.T) {
	tests := []struct {
		prefer []string
		ids    []string
		want   string
	}{
		{nil, []string{"a", "b"}, "a"},
		{[]string{"b"}, []string{"a", "b"}, "b"},
		{[]string{"", "b"}, []string{"a", "b"}, "b"},
		{[]string{"c", "b"}, []string{"a", "b", "c"}, "c"},
		{[]string{"x"}, []string{"a", "b"}, "a"},
	}
	for _, tt := range tests {
		r := New(Options{BaseURL: "http://127.0.0.1:1", Prefer: tt.prefer})
		if got := r.choose(tt.ids); got != tt.want {
			t.Errorf("prefer %q, ids %q: chose %q, want %q", tt.prefer, tt.ids, got, tt.want)
		}
	}
}

// A vLLM server run with data parallelism (--data-parallel-size 2) reports one
// vllm:kv_cache_usage_perc series per engine (label engine="0", "1", ...), each a ratio in
// 0..1, as it does for vllm:num_requests_running. The requests add up; the KV usage is the
// engines' mean (summed, two half-full caches read 110 % in kv_cache_usage_ratio, and placement
// saw a replica fuller than full).
func TestKVUsageOfDataParallelVLLMIsARatio(t *testing.T) {
	const metrics = `vllm:num_requests_running{model_name="m",engine="0"} 3.0
vllm:num_requests_running{model_name="m",engine="1"} 1.0
vllm:num_requests_waiting{model_name="m",engine="0"} 0.0
vllm:num_requests_waiting{model_name="m",engine="1"} 0.0
vllm:kv_cache_usage_perc{model_name="m",engine="0"} 0.5
vllm:kv_cache_usage_perc{model_name="m",engine="1"} 0.6
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			_, _ = io.WriteString(w, metrics)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	r := newReplica(t, srv.URL, Options{Flavor: FlavorVLLM})
	l, err := r.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if l.Running != 4 {
		t.Errorf("running = %d, want 4 (the engines' sum)", l.Running)
	}
	if l.KVUsage < 0 || l.KVUsage > 1 {
		t.Errorf("KVUsage = %v for two engines at 0.5 and 0.6, want a ratio in 0..1 (their mean, 0.55)", l.KVUsage)
	}
}

// An open-ended request (an OpenAI chat that named no max_tokens: MaxTokens is the context's
// bound) is sent without max_tokens, since vLLM refuses a prompt plus max_tokens beyond its
// max_model_len, and asks for usage in every chunk; a bounded one carries its max_tokens.
func TestOpenEndedSendsNoMaxTokens(t *testing.T) {
	for _, open := range []bool{false, true} {
		var body map[string]any
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewDecoder(r.Body).Decode(&body)
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}`+"\n\n"+"data: [DONE]\n\n")
		}))
		r := newReplica(t, srv.URL, Options{Model: "m"})
		c := &collected{}
		_, err := r.Generate(t.Context(), engine.Request{Workload: engine.WorkloadChat, MaxTokens: 4096, OpenEnded: open,
			Messages: []engine.Message{{Role: "user", Content: "Hi"}}}, c.emit)
		srv.Close()
		if err != nil {
			t.Fatalf("open %v: %v", open, err)
		}
		mt, has := body["max_tokens"]
		if open && has {
			t.Errorf("open-ended: max_tokens %v sent", mt)
		}
		if !open && mt != float64(4096) {
			t.Errorf("bounded: max_tokens %v, want 4096", mt)
		}
		so, _ := body["stream_options"].(map[string]any)
		if cont := so["continuous_usage_stats"] == true; cont != open || so["include_usage"] != true {
			t.Errorf("open %v: stream_options %v, want include_usage, and continuous_usage_stats only when open-ended", open, so)
		}
	}
}

// TestLoadOfAnOlderVLLM: vLLM before the rename of its KV cache gauge (vllm-project/vllm
// #18354) exposes vllm:gpu_cache_usage_perc; its replicas' KV usage is read from it, for
// placement, rather than unknown. A server with both names is read from the new one.
func TestLoadOfAnOlderVLLM(t *testing.T) {
	const older = `vllm:num_requests_running{model_name="m"} 2.0
vllm:num_requests_waiting{model_name="m"} 1.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.75
`
	tests := []struct {
		name, metrics string
		flavor        Flavor
		want          engine.Load
	}{
		{"older vLLM", older, FlavorVLLM, engine.Load{Running: 2, Waiting: 1, KVUsage: 0.75}},
		{"older vLLM, flavor not set", older, "", engine.Load{Running: 2, Waiting: 1, KVUsage: 0.75}},
		{"both names", older + "vllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\n", FlavorVLLM, engine.Load{Running: 2, Waiting: 1, KVUsage: 0.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/metrics" {
					io.WriteString(w, tt.metrics)
					return
				}
				http.NotFound(w, r)
			}))
			defer srv.Close()
			r := newReplica(t, srv.URL, Options{Flavor: tt.flavor, Model: "m"})
			if l, err := r.Load(t.Context()); err != nil || l != tt.want {
				t.Errorf("load = %+v, %v; want %+v", l, err, tt.want)
			}
		})
	}
}
