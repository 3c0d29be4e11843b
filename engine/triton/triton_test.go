package triton

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// server answers generate_stream with status, content type and body (frames written and
// flushed one by one when body is a []string).
func server(t *testing.T, status int, ct string, frames []string, seen func(*http.Request, map[string]any)) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		if seen != nil {
			seen(r, body)
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(status)
		for _, f := range frames {
			_, _ = io.WriteString(w, f)
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(s.Close)
	return s.URL
}

func frameOf(text string) string {
	b, _ := json.Marshal(map[string]string{"model_name": "m", "model_version": "1", "text_output": text})
	return "data: " + string(b) + "\n\n"
}

func TestGenerate(t *testing.T) {
	const sse = "text/event-stream; charset=utf-8"
	tests := []struct {
		name   string
		status int
		ct     string
		frames []string
		max    int
		want   string
		stop   engine.StopReason
		kind   engine.Kind // when an error is expected
		errIn  string
	}{
		{"words to max tokens", 200, sse, []string{frameOf(" a"), frameOf(" b")}, 2, " a| b", engine.StopLimit, 0, ""},
		{"fewer than max tokens is eos", 200, sse, []string{frameOf(" a")}, 5, " a", engine.StopEOS, 0, ""},
		{"array output and an empty final response", 200, sse,
			[]string{`data: {"text_output":[" a"," b"]}` + "\n\n", `data: {"model_name":"m"}` + "\n\n"}, 5, " a b", engine.StopEOS, 0, ""},
		{"CRLF, comments and multi-line data", 200, sse,
			[]string{": hi\r\nevent: x\r\ndata: {\"text_output\":\r\ndata: \" a\"}\r\n\r\n"}, 5, " a", engine.StopEOS, 0, ""},
		{"mid-stream error frame", 200, sse, []string{frameOf(" a"), `data: {"error":"Traceback ... ValueError: boom"}` + "\n\n"},
			5, " a", "", engine.KindEngineFailure, "boom"},
		{"mid-stream error naming a too long input", 200, sse, []string{`data: {"error":"input length 9000 exceeds max 4096"}` + "\n\n"},
			5, "", "", engine.KindInvalidRequest, "exceeds"},
		{"malformed frame", 200, sse, []string{"data: {nope\n\n"}, 5, "", "", engine.KindProtocol, "malformed"},
		{"output of the wrong type", 200, sse, []string{`data: {"text_output":5}` + "\n\n"}, 5, "", "", engine.KindProtocol, "text_output"},
		{"stream cut inside a line", 200, sse, []string{frameOf(" a"), `data: {"text_ou`}, 5, " a", "", engine.KindWorkerReset, "unexpected EOF"},
		{"400 missing input", 400, "application/json", []string{`{"error":"expected 1 inputs but got 0 inputs for model 'm'"}`},
			5, "", "", engine.KindInvalidRequest, "expected 1 inputs"},
		{"404 unknown model", 404, "application/json", []string{`{"error":"Request for unknown model: 'm' is not found"}`},
			5, "", "", engine.KindPoolUnavailable, "model m is not served here"},
		{"429 overload", 429, "application/json", []string{`{"error":"busy"}`}, 5, "", "", engine.KindOverload, "busy"},
		{"503 not ready", 503, "text/plain", []string{"loading"}, 5, "", "", engine.KindPoolUnavailable, "loading"},
		{"500 server error", 500, "application/json", []string{`{"error":"internal"}`}, 5, "", "", engine.KindEngineFailure, "internal"},
		{"501 decoupled on a non-streaming route", 501, "application/json", []string{`{"error":"not supported"}`},
			5, "", "", engine.KindEngineFailure, "not supported"},
		{"200 JSON error before the stream", 200, "application/json", []string{`{"error":"generate expects model to produce exactly 1 response"}`},
			5, "", "", engine.KindEngineFailure, "exactly 1 response"},
		{"wrong content type", 200, "text/html", []string{"<html>"}, 5, "", "", engine.KindProtocol, "text/html"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := server(t, tt.status, tt.ct, tt.frames, nil)
			r := New(Options{BaseURL: base, Model: "m"})
			var got []string
			res, err := r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: tt.max}, func(tok engine.Token) error {
				got = append(got, string(tok.Text))
				return nil
			})
			if strings.Join(got, "|") != tt.want {
				t.Errorf("tokens %q, want %q", got, tt.want)
			}
			if tt.errIn == "" {
				if err != nil || res.Stop != tt.stop || res.TokensOut != len(got) {
					t.Errorf("result %+v, err %v; want stop %s", res, err, tt.stop)
				}
				return
			}
			if k := engine.KindOf(err); err == nil || k != tt.kind || !strings.Contains(err.Error(), tt.errIn) {
				t.Errorf("err %v (kind %v), want kind %v containing %q", err, k, tt.kind, tt.errIn)
			}
		})
	}
}

func TestRequestBody(t *testing.T) {
	seed := int64(42)
	tests := []struct {
		name    string
		tensors Tensors
		req     engine.Request
		want    map[string]any
	}{
		{"defaults", Tensors{}, engine.Request{Prompt: "p", MaxTokens: 3, Seed: &seed, Deterministic: true},
			map[string]any{"text_input": "p", "max_tokens": 3.0, "stream": true}},
		{"renamed, seed and temperature sent", Tensors{Input: "prompt", MaxTokens: "max_new", Seed: "random_seed", Temperature: "temperature"},
			engine.Request{Prompt: "p", MaxTokens: 3, Seed: &seed, Deterministic: true},
			map[string]any{"prompt": "p", "max_new": 3.0, "random_seed": 42.0, "temperature": 0.0}},
		{"no seed, not deterministic", Tensors{Seed: "random_seed", Temperature: "temperature"}, engine.Request{Prompt: "p", MaxTokens: 1},
			map[string]any{"text_input": "p"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body map[string]any
			var path string
			base := server(t, 200, "text/event-stream", []string{frameOf("x")}, func(r *http.Request, b map[string]any) {
				body, path = b, r.URL.Path
			})
			if _, err := New(Options{BaseURL: base, Model: "my model", Tensors: tt.tensors}).Generate(t.Context(), tt.req,
				func(engine.Token) error { return nil }); err != nil {
				t.Fatal(err)
			}
			gb, _ := json.Marshal(body)
			wb, _ := json.Marshal(tt.want)
			if string(gb) != string(wb) || path != "/v2/models/my model/generate_stream" {
				t.Errorf("POST %s %s, want %s", path, gb, wb)
			}
		})
	}
}

func TestGenerateRefusesBeforeSending(t *testing.T) {
	sent := false
	base := server(t, 200, "text/event-stream", nil, func(*http.Request, map[string]any) { sent = true })
	r := New(Options{BaseURL: base, Model: "m"})
	for _, req := range []engine.Request{{Prompt: "p", MaxTokens: 0}, {Workload: engine.WorkloadChat, MaxTokens: 1}} {
		if _, err := r.Generate(t.Context(), req, func(engine.Token) error { return nil }); engine.KindOf(err) != engine.KindInvalidRequest {
			t.Errorf("%+v: err %v", req, err)
		}
	}
	if sent {
		t.Error("a request was sent")
	}
}

// TestCancelClosesTheConnection: cancelling ctx mid-stream returns ctx's error and closes
// the connection, which the server sees as its request context ending.
func TestCancelClosesTheConnection(t *testing.T) {
	closed := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // net/http watches the connection only once the body is read
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, frameOf(" a"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(closed)
	}))
	defer s.Close()
	ctx, cancel := context.WithCancel(t.Context())
	_, err := New(Options{BaseURL: s.URL, Model: "m"}).Generate(ctx, engine.Request{Prompt: "p", MaxTokens: 9}, func(engine.Token) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	<-closed // the server saw the disconnect (the test would hang otherwise)
}

func TestEmitErrorStops(t *testing.T) {
	base := server(t, 200, "text/event-stream", []string{frameOf(" a"), frameOf(" b")}, nil)
	stop := errors.New("stop")
	n := 0
	_, err := New(Options{BaseURL: base, Model: "m"}).Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 9},
		func(engine.Token) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("err %v after %d emits", err, n)
	}
}

func TestIdleTimeout(t *testing.T) {
	release := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer s.Close()
	defer close(release)
	_, err := New(Options{BaseURL: s.URL, Model: "m", IdleTimeout: 50 * time.Millisecond}).Generate(t.Context(),
		engine.Request{Prompt: "p", MaxTokens: 9}, func(engine.Token) error { return nil })
	if engine.KindOf(err) != engine.KindDecodeTimeout {
		t.Errorf("err = %v", err)
	}
}

const metricsFixture = `# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution per-model.
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="m",version="1"} 3
nv_inference_pending_request_count{model="m",version="2"} 1
nv_inference_pending_request_count{model="other",version="1"} 50
nv_trt_llm_request_metrics{model="m",request_type="active",version="1"} 4
nv_trt_llm_request_metrics{model="m",request_type="max",version="1"} 64
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="m",version="1"} 30
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="m",version="1"} 120
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="other",version="1"} 100
`

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		model   string
		metrics string // "" : no metrics URL
		want    engine.Load
	}{
		{"TensorRT-LLM model", "m", metricsFixture, engine.Load{Running: 4, Waiting: 4, KVUsage: 0.25}},
		{"a model the server does not list", "x", metricsFixture, engine.Load{Running: -1, Waiting: -1, KVUsage: -1}},
		{"a Python-backend model: pending only", "p", `nv_inference_pending_request_count{model="p",version="1"} 0` + "\n",
			engine.Load{Running: -1, Waiting: 0, KVUsage: -1}},
		{"no metrics URL", "m", "", engine.Load{Running: -1, Waiting: -1, KVUsage: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/metrics" {
					http.NotFound(w, r)
					return
				}
				_, _ = io.WriteString(w, tt.metrics)
			}))
			defer s.Close()
			o := Options{BaseURL: "http://127.0.0.1:1", Model: tt.model}
			if tt.metrics != "" {
				o.MetricsURL = s.URL
			}
			l, err := New(o).Load(t.Context())
			if err != nil || l != tt.want {
				t.Errorf("load = %+v, %v; want %+v", l, err, tt.want)
			}
		})
	}
}

func TestHealthAndIdentify(t *testing.T) {
	tests := []struct {
		name        string
		serverReady int
		modelReady  int
		want        engine.Health
	}{
		{"ready", 200, 200, engine.Health{Live: true, Ready: true}},
		{"server not ready", 503, 200, engine.Health{Live: true}},
		{"model not ready", 200, 400, engine.Health{Live: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/v2/health/ready":
					w.WriteHeader(tt.serverReady)
				case "/v2/models/m/ready":
					w.WriteHeader(tt.modelReady)
				case "/v2/models/m":
					_, _ = io.WriteString(w, `{"name":"m","versions":["1","3"],"platform":"python"}`)
				case "/v2":
					_, _ = io.WriteString(w, `{"name":"triton","version":"2.51.0","extensions":[]}`)
				default:
					http.NotFound(w, r)
				}
			}))
			defer s.Close()
			r := New(Options{BaseURL: s.URL, Model: "m"})
			h, err := r.Health(t.Context())
			if err != nil || h.Live != tt.want.Live || h.Ready != tt.want.Ready || (!h.Ready && h.Detail == "") {
				t.Errorf("health = %+v, %v; want %+v", h, err, tt.want)
			}
			id, err := r.Identify(t.Context())
			if err != nil || id != (engine.Identity{ModelID: "m", Version: "triton 2.51.0, model version 3"}) {
				t.Errorf("identity = %+v, %v", id, err)
			}
		})
	}
	h, err := New(Options{BaseURL: "http://127.0.0.1:1", Model: "m"}).Health(t.Context())
	if err != nil || h.Live || h.Ready {
		t.Errorf("unreachable: %+v, %v", h, err)
	}
}

func TestDriverOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    engine.ReplicaOptions
		want    Options
		bad     string // checkOptions' key, when refused
		checked map[string]string
	}{
		{"defaults: the pool's model_id", engine.ReplicaOptions{BaseURL: "u", ModelID: "llama"},
			Options{BaseURL: "u", Model: "llama", Tensors: DefaultTensors()}, "", nil},
		{"every option", engine.ReplicaOptions{BaseURL: "u", ModelID: "llama", EngineOptions: map[string]string{
			OptModel: "ensemble", OptInput: "prompt", OptOutput: "out", OptMaxTokens: "", OptStream: "",
			OptSeed: "random_seed", OptTemperature: "temperature", OptMetricsURL: "http://h:8002"}},
			Options{BaseURL: "u", Model: "ensemble", MetricsURL: "http://h:8002",
				Tensors: Tensors{Input: "prompt", Output: "out", Seed: "random_seed", Temperature: "temperature"}}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OptionsFrom(tt.opts); got != tt.want {
				t.Errorf("options = %+v, want %+v", got, tt.want)
			}
			if k, err := checkOptions(tt.opts.EngineOptions); err != nil {
				t.Errorf("refused %s: %v", k, err)
			}
		})
	}
	for _, bad := range []struct{ key, value string }{{OptModel, ""}, {OptInput, ""}, {OptOutput, ""}, {OptMetricsURL, "h:8002"}, {OptMetricsURL, "ftp://h"}} {
		if k, err := checkOptions(map[string]string{bad.key: bad.value}); err == nil || k != bad.key {
			t.Errorf("%s=%q: key %q, err %v", bad.key, bad.value, k, err)
		}
	}
}

// TestConnections: a replica made by the driver (as the daemon makes it) keeps its connection
// to a server that keeps it, and against one that closes its streamed connections gets one per
// generation: a fallback it counts and tells the pool's logger of, which the driver passed on.
func TestConnections(t *testing.T) {
	for _, closes := range []bool{false, true} {
		name := "server keeps connections"
		if closes {
			name = "server closes streamed connections"
		}
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, frameOf(" a"))
			}))
			srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
				if s == http.StateIdle && closes {
					_ = c.Close()
				}
			}
			srv.Start()
			defer srv.Close()
			var logs bytes.Buffer // written by the generations' goroutine (this one) only
			rep := newReplica(engine.ReplicaOptions{BaseURL: srv.URL, ModelID: "m", Slots: 2,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			r, ok := rep.(*Replica)
			if !ok {
				t.Fatalf("driver made a %T", rep)
			}
			t.Cleanup(r.http.Conns.CloseIdle)
			const gens = 4
			for i := range gens {
				var got []string
				if _, err := r.Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 1}, func(tok engine.Token) error {
					got = append(got, string(tok.Text))
					return nil
				}); err != nil || strings.Join(got, "") != " a" {
					t.Fatalf("generation %d: %q, %v", i, got, err)
				}
			}
			s, ok := r.EngineConns()
			switch {
			case !ok:
				t.Error("no engine connections reported")
			case closes && (s.Dialed != gens || s.Fallbacks != 1 || !s.OnePerGeneration || s.Idle != 0):
				t.Errorf("%d generations from a server that closes its connections: %+v", gens, s)
			case !closes && (s.Dialed+s.Reused != gens || s.Reused < 1 || s.Fallbacks != 0 || s.OnePerGeneration):
				t.Errorf("%d generations from a server that keeps its connections: %+v", gens, s)
			}
			if got := strings.Contains(logs.String(), "engine connections: one per generation"); got != closes {
				t.Errorf("fallback logged: %v, want %v; log:\n%s", got, closes, logs.String())
			}
		})
	}
}
