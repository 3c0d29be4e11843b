package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newServer runs a simulator on an httptest server; it is closed at the end of the test.
func newServer(t *testing.T, opts Options) (*Sim, *httptest.Server) {
	t.Helper()
	s := New(opts)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

func post(t *testing.T, ctx context.Context, ts *httptest.Server, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readFrame returns the next SSE frame's data line payload (the text after "data: ").
func readFrame(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading data line: %v", err)
	}
	if !strings.HasPrefix(line, "data: ") {
		t.Fatalf("frame line %q does not start with data: ", line)
	}
	blank, err := br.ReadString('\n')
	if err != nil || blank != "\n" {
		t.Fatalf("frame not terminated by a blank line: %q, %v", blank, err)
	}
	return strings.TrimSuffix(strings.TrimPrefix(line, "data: "), "\n")
}

func expectEOF(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("trailing data after the last frame: %q, %v", rest, err)
	}
}

func mustStamp(t *testing.T, text string) time.Time {
	t.Helper()
	at, ok := ParseStamp(text)
	if !ok {
		t.Fatalf("token text %q is not a stamp", text)
	}
	return at
}

func TestLlamaCppStreamFrames(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		body string
		want int
	}{
		{"n_predict", Options{}, `{"prompt":"one two three","n_predict":5,"stream":true}`, 5},
		{"max_tokens alias", Options{}, `{"prompt":"x","max_tokens":2,"stream":true}`, 2},
		{"n_predict -1 uses default", Options{DefaultTokens: 3}, `{"prompt":"x","n_predict":-1,"stream":true}`, 3},
		{"fixed tokens override", Options{Tokens: 4}, `{"prompt":"x","n_predict":100,"stream":true}`, 4},
		{"capped", Options{MaxTokens: 2}, `{"prompt":"x","n_predict":100,"stream":true}`, 2},
		{"token prompt", Options{}, `{"prompt":[1,2,3,4],"n_predict":1,"stream":true}`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ts := newServer(t, tt.opts)
			resp := post(t, t.Context(), ts, "/completion", tt.body)
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("content type %q", ct)
			}
			br := bufio.NewReader(resp.Body)
			var prev time.Time
			for i := range tt.want {
				var f struct {
					Content string `json:"content"`
					Tokens  []int  `json:"tokens"`
					Stop    *bool  `json:"stop"`
				}
				if err := json.Unmarshal([]byte(readFrame(t, br)), &f); err != nil {
					t.Fatal(err)
				}
				if f.Stop == nil || *f.Stop || len(f.Tokens) != 1 || f.Tokens[0] != 1000+i {
					t.Fatalf("token frame %d = %+v", i, f)
				}
				at := mustStamp(t, f.Content)
				if at.Before(prev) {
					t.Fatalf("stamp %d went backwards", i)
				}
				prev = at
			}
			var final struct {
				Content         string `json:"content"`
				Stop            bool   `json:"stop"`
				StopType        string `json:"stop_type"`
				TokensEvaluated int    `json:"tokens_evaluated"`
				TokensCached    *int   `json:"tokens_cached"`
				Timings         struct {
					PromptN    int `json:"prompt_n"`
					PredictedN int `json:"predicted_n"`
				} `json:"timings"`
			}
			if err := json.Unmarshal([]byte(readFrame(t, br)), &final); err != nil {
				t.Fatal(err)
			}
			if !final.Stop || final.Content != "" || final.StopType != "limit" || final.TokensCached == nil ||
				final.Timings.PredictedN != tt.want || final.TokensEvaluated < 1 ||
				final.Timings.PromptN != final.TokensEvaluated {
				t.Fatalf("final frame %+v", final)
			}
			expectEOF(t, br)
		})
	}
}

func TestLlamaCppNonStream(t *testing.T) {
	_, ts := newServer(t, Options{})
	resp := post(t, t.Context(), ts, "/completion", `{"prompt":"a b","n_predict":3}`)
	defer resp.Body.Close()
	var got struct {
		Content         string `json:"content"`
		Stop            bool   `json:"stop"`
		StopType        string `json:"stop_type"`
		TokensEvaluated int    `json:"tokens_evaluated"`
		Timings         struct {
			PredictedN int `json:"predicted_n"`
		} `json:"timings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if n := EachStamp(got.Content, nil); n != 3 || len(got.Content) != 3*StampLen {
		t.Fatalf("content %q has %d stamps", got.Content, n)
	}
	if !got.Stop || got.StopType != "limit" || got.TokensEvaluated != 2 || got.Timings.PredictedN != 3 {
		t.Fatalf("got %+v", got)
	}
}

type oaChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Text         *string         `json:"text"`
		Index        int             `json:"index"`
		Delta        json.RawMessage `json:"delta"`
		FinishReason *string         `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

func decodeChunk(t *testing.T, s string) oaChunk {
	t.Helper()
	var c oaChunk
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		t.Fatalf("chunk %q: %v", s, err)
	}
	return c
}

func TestOpenAICompletionStreamFrames(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		want  int
		usage bool
	}{
		{"max_tokens", `{"model":"m","prompt":"hello world","max_tokens":3,"stream":true}`, 3, false},
		{"default max_tokens", `{"model":"m","prompt":"hello","stream":true}`, DefaultTokens, false},
		{"include usage", `{"prompt":["a b","c"],"max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}`, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ts := newServer(t, Options{Model: "sim-model"})
			resp := post(t, t.Context(), ts, "/v1/completions", tt.body)
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			br := bufio.NewReader(resp.Body)
			var id string
			check := func(c oaChunk) {
				t.Helper()
				if id == "" {
					id = c.ID
				}
				if c.ID != id || !strings.HasPrefix(c.ID, "cmpl-") || c.Object != "text_completion" ||
					c.Model != "sim-model" || c.Created == 0 {
					t.Fatalf("chunk header %+v", c)
				}
			}
			for i := range tt.want {
				c := decodeChunk(t, readFrame(t, br))
				check(c)
				if len(c.Choices) != 1 || c.Choices[0].Text == nil || c.Choices[0].FinishReason != nil {
					t.Fatalf("token chunk %d = %+v", i, c)
				}
				mustStamp(t, *c.Choices[0].Text)
			}
			c := decodeChunk(t, readFrame(t, br))
			check(c)
			if len(c.Choices) != 1 || *c.Choices[0].Text != "" || c.Choices[0].FinishReason == nil ||
				*c.Choices[0].FinishReason != "length" {
				t.Fatalf("final chunk %+v", c)
			}
			if tt.usage {
				c := decodeChunk(t, readFrame(t, br))
				check(c)
				if len(c.Choices) != 0 || c.Usage == nil || c.Usage.CompletionTokens != tt.want ||
					c.Usage.PromptTokens != 3 || c.Usage.TotalTokens != 3+tt.want {
					t.Fatalf("usage chunk %+v", c)
				}
			}
			if done := readFrame(t, br); done != "[DONE]" {
				t.Fatalf("last frame %q, want [DONE]", done)
			}
			expectEOF(t, br)
		})
	}
}

func TestOpenAIChatStreamFrames(t *testing.T) {
	_, ts := newServer(t, Options{})
	resp := post(t, t.Context(), ts, "/v1/chat/completions",
		`{"model":"enginesim","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true}`)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	c := decodeChunk(t, readFrame(t, br))
	if c.Object != "chat.completion.chunk" || string(c.Choices[0].Delta) != `{"role":"assistant","content":""}` {
		t.Fatalf("role chunk %+v", c)
	}
	for range 2 {
		c := decodeChunk(t, readFrame(t, br))
		var d struct{ Content string }
		if err := json.Unmarshal(c.Choices[0].Delta, &d); err != nil {
			t.Fatal(err)
		}
		mustStamp(t, d.Content)
	}
	c = decodeChunk(t, readFrame(t, br))
	if c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "length" {
		t.Fatalf("final chunk %+v", c)
	}
	if done := readFrame(t, br); done != "[DONE]" {
		t.Fatalf("last frame %q", done)
	}
	expectEOF(t, br)
}

func TestOpenAINonStream(t *testing.T) {
	tests := []struct {
		path, body, object string
	}{
		{"/v1/completions", `{"prompt":"x y z","max_tokens":2}`, "text_completion"},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hello"}],"max_tokens":2}`, "chat.completion"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			_, ts := newServer(t, Options{})
			resp := post(t, t.Context(), ts, tt.path, tt.body)
			defer resp.Body.Close()
			var got struct {
				Object  string `json:"object"`
				Choices []struct {
					Text    string `json:"text"`
					Message struct {
						Content string `json:"content"`
					} `json:"message"`
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
				Usage struct {
					CompletionTokens int `json:"completion_tokens"`
				} `json:"usage"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got.Object != tt.object || len(got.Choices) != 1 || got.Choices[0].FinishReason != "length" ||
				got.Usage.CompletionTokens != 2 {
				t.Fatalf("got %+v", got)
			}
			if n := EachStamp(got.Choices[0].Text+got.Choices[0].Message.Content, nil); n != 2 {
				t.Fatalf("%d stamps in %+v", n, got.Choices[0])
			}
		})
	}
}

func TestInfoEndpoints(t *testing.T) {
	_, ts := newServer(t, Options{Slots: 3, Model: "m1", NCtx: 2048})
	tests := []struct {
		path string
		want string
	}{
		{"/health", `{"status":"ok"}`},
		{"/props", `{"build_info":"enginesim","default_generation_settings":{"n_ctx":2048},"model_path":"m1","total_slots":3}`},
		{"/sim/stats", `{"active":0,"waiting":0,"requests":0,"tokens":0,"aborted":0}`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := ts.Client().Get(ts.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(b) != tt.want {
				t.Fatalf("%d %s, want %s", resp.StatusCode, b, tt.want)
			}
		})
	}
	resp, err := ts.Client().Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var models struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&models); err != nil {
		t.Fatal(err)
	}
	if models.Object != "list" || len(models.Data) != 1 || models.Data[0].ID != "m1" || models.Data[0].Object != "model" {
		t.Fatalf("models %+v", models)
	}
}

func TestBadRequests(t *testing.T) {
	_, ts := newServer(t, Options{})
	tests := []struct {
		method, path, body string
		want               int
	}{
		{http.MethodPost, "/completion", `{"prompt":`, http.StatusBadRequest},
		{http.MethodPost, "/v1/completions", `[]`, http.StatusBadRequest},
		{http.MethodGet, "/completion", ``, http.StatusMethodNotAllowed},
		{http.MethodGet, "/nope", ``, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, ts.URL+tt.path, strings.NewReader(tt.body))
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

func TestTokensFor(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		requested int
		want      int
	}{
		{"request", Options{}, 7, 7},
		{"none", Options{}, 0, DefaultTokens},
		{"negative", Options{DefaultTokens: 5}, -1, 5},
		{"fixed", Options{Tokens: 9}, 7, 9},
		{"cap", Options{MaxTokens: 4}, 7, 4},
		{"cap fixed", Options{Tokens: 9, MaxTokens: 4}, 0, 4},
		{"default cap", Options{}, 1 << 30, DefaultMaxTokens},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := New(tt.opts).tokensFor(tt.requested); got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
}

// TestDisconnectStopsGenerator checks that a client going away ends the generation (and the
// handler) before all tokens were produced; goleak (TestMain) checks nothing is left running.
func TestDisconnectStopsGenerator(t *testing.T) {
	tests := []struct {
		path, body string
	}{
		{"/completion", `{"prompt":"x","n_predict":1000000,"stream":true}`},
		{"/v1/completions", `{"prompt":"x","max_tokens":1000000,"stream":true}`},
		{"/v1/chat/completions", `{"messages":[],"max_tokens":1000000,"stream":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			finished := make(chan Finish, 1)
			s, ts := newServer(t, Options{
				MaxTokens:  1000000,
				TokenDelay: time.Millisecond,
				OnFinish:   func(f Finish) { finished <- f },
			})
			ctx, cancel := context.WithCancel(t.Context())
			resp := post(t, ctx, ts, tt.path, tt.body)
			br := bufio.NewReader(resp.Body)
			readFrame(t, br)
			readFrame(t, br)
			cancel()
			resp.Body.Close()
			f := recv(t, "the finish report", finished)
			if f.Err == nil || f.Tokens >= 1000000 || !f.Stream {
				t.Fatalf("finish %+v; want an early stop with an error", f)
			}
			// OnFinish runs before the handler returns and gives its slot back.
			waitUntil(t, "the slot to be released", func() bool { return s.Stats().Active == 0 })
			if st := s.Stats(); st.Aborted != 1 || st.Requests != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestSlotsQueueAndCancelWhileWaiting(t *testing.T) {
	finished := make(chan Finish, 2)
	s, ts := newServer(t, Options{
		Slots:      1,
		TokenDelay: time.Millisecond,
		MaxTokens:  1000000,
		OnFinish:   func(f Finish) { finished <- f },
	})
	// The first request holds the only slot.
	ctx1, cancel1 := context.WithCancel(t.Context())
	defer cancel1()
	resp1 := post(t, ctx1, ts, "/completion", `{"prompt":"x","n_predict":1000000,"stream":true}`)
	defer resp1.Body.Close()
	readFrame(t, bufio.NewReader(resp1.Body))

	// The second waits for it; cancel it while waiting.
	ctx2, cancel2 := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx2, http.MethodPost, ts.URL+"/completion",
			strings.NewReader(`{"prompt":"x","n_predict":1,"stream":true}`))
		resp, err := ts.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	waitUntil(t, "the second request to wait for the slot", func() bool { return s.Stats().Waiting == 1 })
	cancel2()
	if err := recv(t, "the second request", errc); !errors.Is(err, context.Canceled) {
		t.Fatalf("second request: %v", err)
	}
	if f := recv(t, "the waiting request's finish", finished); f.Tokens != 0 || !errors.Is(f.Err, context.Canceled) {
		t.Fatalf("waiting request finish %+v", f)
	}
	if st := s.Stats(); st.Active != 1 || st.Waiting != 0 {
		t.Fatalf("stats %+v", st)
	}
	cancel1()
	resp1.Body.Close()
	recv(t, "the first request's finish", finished)

	// The slot is free again.
	resp3 := post(t, t.Context(), ts, "/completion", `{"prompt":"x","n_predict":1}`)
	resp3.Body.Close()
	if resp3.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp3.StatusCode)
	}
	recv(t, "the third request's finish", finished)
}

func TestPromptTokens(t *testing.T) {
	tests := []struct {
		raw  string
		want int
	}{
		{``, 1},
		{`""`, 1},
		{`"one two  three\nfour"`, 4},
		{`[1,2,3]`, 3},
		{`["a b", "c", 5]`, 4},
		{`{}`, 1},
	}
	for _, tt := range tests {
		if got := promptTokens(json.RawMessage(tt.raw)); got != tt.want {
			t.Errorf("promptTokens(%s) = %d, want %d", tt.raw, got, tt.want)
		}
	}
}

// discardWriter is a minimal streaming ResponseWriter for benchmarks.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

// BenchmarkStreamToken measures the simulator's own cost per streamed token (no network).
func BenchmarkStreamToken(b *testing.B) {
	for _, path := range []string{"/completion", "/v1/completions"} {
		b.Run(path, func(b *testing.B) {
			s := New(Options{MaxTokens: 1 << 30})
			body := `{"prompt":"x","n_predict":` + itoa(b.N) + `,"max_tokens":` + itoa(b.N) + `,"stream":true}`
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			b.ReportAllocs()
			b.ResetTimer()
			s.ServeHTTP(&discardWriter{h: http.Header{}}, req)
		})
	}
}

func itoa(n int) string { return string(appendInt(nil, int64(n))) }

// waitLimit only keeps a broken simulator from hanging the suite; no assertion depends on how long
// anything takes.
const waitLimit = 30 * time.Second

// waitUntil polls cond until it holds, failing the test after waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recv receives from ch, failing the test after waitLimit.
func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("gave up waiting for %s", what)
	}
	var zero T
	return zero
}
