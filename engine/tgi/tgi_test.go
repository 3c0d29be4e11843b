package tgi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

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

// stream writes SSE events, flushing each.
func stream(w http.ResponseWriter, events ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	for _, e := range events {
		_, _ = io.WriteString(w, e+"\n\n")
		w.(http.Flusher).Flush()
	}
}

func tok(id int, text string, special bool) string {
	b, _ := json.Marshal(text)
	return fmt.Sprintf(`data:{"index":%d,"token":{"id":%d,"text":%s,"logprob":-0.5,"special":%v},"generated_text":null,"details":null,"top_tokens":null}`,
		id, id, b, special)
}

func last(id int, text string, special bool, generated, finish string, n, in int) string {
	b, _ := json.Marshal(text)
	g, _ := json.Marshal(generated)
	return fmt.Sprintf(`data:{"index":%d,"token":{"id":%d,"text":%s,"logprob":-0.5,"special":%v},"generated_text":%s,"details":{"finish_reason":%q,"generated_tokens":%d,"seed":null,"input_length":%d},"top_tokens":null}`,
		id, id, b, special, g, finish, n, in)
}

// TestGenerate: frames become one emit per non-special token; the last frame's details give
// the stop reason and tokens in and out; the request body is TGI's.
func TestGenerate(t *testing.T) {
	seed := int64(7)
	tests := []struct {
		name     string
		req      engine.Request
		events   []string
		texts    []string
		res      engine.Result
		wantBody string
	}{
		{
			name:     "length",
			req:      engine.Request{Prompt: "The", MaxTokens: 3, Deterministic: true, Seed: &seed},
			events:   []string{tok(1, " quick", false), tok(2, " brown", false), last(3, " fox", false, " quick brown fox", "length", 3, 1)},
			texts:    []string{" quick", " brown", " fox"},
			res:      engine.Result{TokensOut: 3, TokensIn: 1, Stop: engine.StopLimit},
			wantBody: `{"inputs":"The","parameters":{"max_new_tokens":3,"details":true,"decoder_input_details":false,"do_sample":false,"return_full_text":false}}`,
		},
		{
			name:     "eos as a special token is not text; sampling with a seed",
			req:      engine.Request{Prompt: "Hi there", MaxTokens: 8, Seed: &seed},
			events:   []string{tok(1, " Hello", false), last(2, "</s>", true, " Hello", "eos_token", 2, 2)},
			texts:    []string{" Hello"},
			res:      engine.Result{TokensOut: 2, TokensIn: 2, Stop: engine.StopEOS},
			wantBody: `{"inputs":"Hi there","parameters":{"max_new_tokens":8,"details":true,"decoder_input_details":false,"do_sample":true,"seed":7,"return_full_text":false}}`,
		},
		{
			// An OpenAI chat without max_tokens: TGI is sent none and generates to its
			// max_total_tokens (it refuses inputs plus max_new_tokens beyond them).
			name:     "open-ended: no max_new_tokens",
			req:      engine.Request{Prompt: "Hi there", MaxTokens: 4096, OpenEnded: true, Deterministic: true},
			events:   []string{last(1, " Hello", false, " Hello", "length", 1, 2)},
			texts:    []string{" Hello"},
			res:      engine.Result{TokensOut: 1, TokensIn: 2, Stop: engine.StopLimit},
			wantBody: `{"inputs":"Hi there","parameters":{"details":true,"decoder_input_details":false,"do_sample":false,"return_full_text":false}}`,
		},
		{
			name:   "stop sequence, details without input_length (TGI before 2.1)",
			req:    engine.Request{Prompt: "x", MaxTokens: 4},
			events: []string{tok(1, "a", false), `data: {"token":{"id":2,"text":"\n","special":false},"generated_text":"a\n","details":{"finish_reason":"stop_sequence","generated_tokens":2}}`},
			texts:  []string{"a", "\n"},
			res:    engine.Result{TokensOut: 2, Stop: engine.StopWord},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/generate_stream" || r.Header.Get("Authorization") != "Bearer k" {
					http.Error(w, "wrong request "+r.Method+" "+r.URL.Path, http.StatusNotFound)
					return
				}
				body, _ = io.ReadAll(r.Body)
				stream(w, tt.events...)
			}))
			defer ts.Close()
			var c collected
			res, err := newReplica(t, ts.URL, Options{APIKey: "k"}).Generate(t.Context(), tt.req, c.emit)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(c.texts, "|") != strings.Join(tt.texts, "|") || res != tt.res {
				t.Errorf("texts %q res %+v, want %q %+v", c.texts, res, tt.texts, tt.res)
			}
			if tt.wantBody != "" && string(body) != tt.wantBody {
				t.Errorf("body %s\nwant %s", body, tt.wantBody)
			}
		})
	}
}

// TestGenerateErrors: every way TGI fails maps to the kind that says whose fault it is.
func TestGenerateErrors(t *testing.T) {
	errFrame := func(typ string) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			stream(w, tok(1, "a", false), `data:{"error":"it failed","error_type":"`+typ+`"}`)
		}
	}
	status := func(code int, body string) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_, _ = io.WriteString(w, body)
		}
	}
	tests := []struct {
		name   string
		answer func(http.ResponseWriter)
		kind   engine.Kind
	}{
		{"validation frame", errFrame("validation"), engine.KindInvalidRequest},
		{"overloaded frame", errFrame("overloaded"), engine.KindOverload},
		{"generation frame", errFrame("generation"), engine.KindEngineFailure},
		{"incomplete generation frame", errFrame("incomplete_generation"), engine.KindWorkerReset},
		{"unknown error_type", errFrame("cosmic_ray"), engine.KindEngineFailure},
		{"422 validation", status(422, `{"error":"too long","error_type":"validation"}`), engine.KindInvalidRequest},
		{"424 generation", status(424, `{"error":"CUDA OOM","error_type":"generation"}`), engine.KindEngineFailure},
		{"429 overloaded", status(429, `{"error":"Model is overloaded","error_type":"overloaded"}`), engine.KindOverload},
		{"500 incomplete", status(500, `{"error":"Incomplete generation","error_type":"incomplete_generation"}`), engine.KindWorkerReset},
		{"503", status(503, `{"error":"not ready","error_type":"unhealthy"}`), engine.KindPoolUnavailable},
		{"401", status(401, `Unauthorized`), engine.KindPoolUnavailable},
		{"400 text body", status(400, `bad`), engine.KindInvalidRequest},
		{"502 text body", status(502, `bad gateway`), engine.KindEngineFailure},
		{"wrong content type", status(200, `{"generated_text":"x"}`), engine.KindProtocol},
		{"malformed frame", func(w http.ResponseWriter) { stream(w, tok(1, "a", false), `data:{"token":`) }, engine.KindProtocol},
		{"frame without a token", func(w http.ResponseWriter) { stream(w, `data:{"index":1}`) }, engine.KindProtocol},
		{"ends without a last frame", func(w http.ResponseWriter) { stream(w, tok(1, "a", false)) }, engine.KindWorkerReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				tt.answer(w)
			}))
			defer ts.Close()
			var c collected
			_, err := newReplica(t, ts.URL, Options{}).Generate(t.Context(), engine.Request{Prompt: "p", MaxTokens: 4}, c.emit)
			if engine.KindOf(err) != tt.kind {
				t.Errorf("kind %v (%v), want %v", engine.KindOf(err), err, tt.kind)
			}
		})
	}
}

// TestRequestRefusedLocally: requests TGI cannot serve fail as the request's fault without a
// round trip.
func TestRequestRefusedLocally(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
	}))
	defer ts.Close()
	r := newReplica(t, ts.URL, Options{})
	for _, req := range []engine.Request{
		{Prompt: "p", MaxTokens: 0},
		{Workload: engine.WorkloadChat, Messages: []engine.Message{{Role: "user", Content: "hi"}}, MaxTokens: 3},
	} {
		if _, err := r.Generate(t.Context(), req, func(engine.Token) error { return nil }); engine.KindOf(err) != engine.KindInvalidRequest {
			t.Errorf("%+v: %v", req, err)
		}
	}
}

// TestInfoHealthLoad: /info (current and pre-2.1 field names), /health and /metrics.
func TestInfoHealthLoad(t *testing.T) {
	infos := map[string]string{
		"new": `{"model_id":"bigscience/bloom-560m","max_input_tokens":1023,"max_total_tokens":1024,"version":"2.4.1"}`,
		"old": `{"model_id":"gpt2","max_input_length":511,"max_total_tokens":512,"version":"1.4.5"}`,
	}
	var old, unhealthy atomic.Bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/info":
			which := "new"
			if old.Load() {
				which = "old"
			}
			_, _ = io.WriteString(w, infos[which])
		case "/health":
			if unhealthy.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		case "/metrics":
			_, _ = io.WriteString(w, "# TYPE tgi_queue_size gauge\ntgi_queue_size 3\ntgi_batch_current_size 5\ntgi_request_count 9\n")
		}
	}))
	defer ts.Close()
	r := newReplica(t, ts.URL, Options{})
	if in, err := r.Info(t.Context()); err != nil || in != (Info{ModelID: "bigscience/bloom-560m", Version: "2.4.1", MaxInputTokens: 1023, MaxTotalTokens: 1024}) {
		t.Errorf("info %+v, %v", in, err)
	}
	old.Store(true)
	if id, err := r.Identify(t.Context()); err != nil || id != (engine.Identity{ModelID: "gpt2", Version: "1.4.5"}) {
		t.Errorf("identity %+v, %v", id, err)
	}
	if in, _ := r.Info(t.Context()); in.MaxInputTokens != 511 {
		t.Errorf("pre-2.1 max_input_length: %+v", in)
	}
	if h, err := r.Health(t.Context()); err != nil || !h.Ready || !h.Live {
		t.Errorf("health %+v, %v", h, err)
	}
	unhealthy.Store(true)
	if h, err := r.Health(t.Context()); err != nil || h.Ready || !h.Live {
		t.Errorf("unhealthy: %+v, %v", h, err)
	}
	if l, err := r.Load(t.Context()); err != nil || l != (engine.Load{Running: 5, Waiting: 3, KVUsage: -1}) {
		t.Errorf("load %+v, %v", l, err)
	}
	ts.Close()
	if h, err := r.Health(t.Context()); err != nil || h.Live {
		t.Errorf("closed server: %+v, %v", h, err)
	}
}
