package contracts

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/gen/client"
)

// The OpenAI-compatible routes (tag openai): each completion is a task of the same queue, its
// errors are OpenAI-shaped.

// openAIStatus is the contract's table for the facade's errors: (type, code) → status.
func openAIStatus(typ, code string) (int, bool) {
	switch typ + "/" + code {
	case "invalid_request_error/invalid_value":
		return 400, true
	case "invalid_request_error/invalid_api_key":
		return 401, true
	case "invalid_request_error/insufficient_permissions":
		return 403, true
	case "invalid_request_error/model_not_found":
		return 404, true
	case "invalid_request_error/payload_too_large":
		return 413, true
	case "invalid_request_error/unsupported_media_type":
		return 415, true
	case "invalid_request_error/method_not_allowed":
		return 405, true
	case "invalid_request_error/task_canceled":
		return 409, true
	case "requests/rate_limit_exceeded", "insufficient_quota/insufficient_quota":
		return 429, true
	case "server_error/service_unavailable":
		return 503, true
	case "server_error/internal_error":
		return 500, true
	}
	return 0, false
}

// checkOpenAIError checks an error answer of a facade route: an OpenAI error object whose type
// and code go with the status, and on 429 the back-off and x-ratelimit headers.
func checkOpenAIError(resp *http.Response, body []byte) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		bad("error Content-Type %q, want application/json", resp.Header.Get("Content-Type"))
		return problems
	}
	var e struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Code == nil || e.Error.Message == "" {
		bad("not an OpenAI error object: %q", body)
		return problems
	}
	if want, ok := openAIStatus(e.Error.Type, *e.Error.Code); !ok || want != resp.StatusCode {
		bad("error type %s code %s comes with status %d (table: %d)", e.Error.Type, *e.Error.Code, resp.StatusCode, want)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		ra, err1 := strconv.ParseInt(resp.Header.Get("Retry-After"), 10, 64)
		ms, err2 := strconv.ParseInt(resp.Header.Get("X-Backoff-Ms"), 10, 64)
		if err1 != nil || err2 != nil || ra != max((ms+999)/1000, 1) {
			bad("Retry-After %q / X-Backoff-Ms %q", resp.Header.Get("Retry-After"), resp.Header.Get("X-Backoff-Ms"))
		}
		if resp.Header.Get("x-ratelimit-remaining-requests") != "0" || !strings.HasSuffix(resp.Header.Get("x-ratelimit-reset-requests"), "s") {
			bad("x-ratelimit headers %v", resp.Header)
		}
	}
	return problems
}

// openAIErr decodes an OpenAI error body.
func openAIErr(t *testing.T, body []byte) (typ, code, param string) {
	t.Helper()
	var e struct {
		Error struct {
			Type  string  `json:"type"`
			Code  *string `json:"code"`
			Param *string `json:"param"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == nil {
		t.Fatalf("not an OpenAI error: %q (%v)", body, err)
	}
	if e.Error.Param != nil {
		param = *e.Error.Param
	}
	return e.Error.Type, *e.Error.Code, param
}

func bearer(key string) http.Header {
	return http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"}}
}

// chunk is a streamed chunk of either endpoint.
type chunk struct {
	Object  string `json:"object"`
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

// readChunks reads a facade stream to its end: the chunks and whether [DONE] came last.
func readChunks(t *testing.T, r io.Reader) ([]chunk, bool) {
	t.Helper()
	var out []chunk
	sc := bufio.NewScanner(r)
	done := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, ":") {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("unexpected stream line %q", line)
		}
		if done {
			t.Fatalf("data after [DONE]: %q", data)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out, done
}

// chunkText joins the text of the chunks (chat deltas or completion texts).
func chunkText(cs []chunk) string {
	var sb strings.Builder
	for _, c := range cs {
		for _, ch := range c.Choices {
			sb.WriteString(ch.Text + ch.Delta.Content)
		}
	}
	return sb.String()
}

// taskOf returns the task of a facade answer (X-Task-Id), checking it is a valid id.
func taskOf(t *testing.T, resp *http.Response) uuid.UUID {
	t.Helper()
	id, err := uuid.Parse(resp.Header.Get("X-Task-Id"))
	if err != nil {
		t.Fatalf("X-Task-Id %q: %v", resp.Header.Get("X-Task-Id"), err)
	}
	return id
}

func TestOpenAINonStreaming(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name, path, body string
		object           string
		maxTokens        int
		prompt           string
		finish           string
	}{
		{"chat", "/v1/chat/completions",
			`{"model":"` + modelID + `","max_tokens":4,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":" there"}]}]}`,
			"chat.completion", 4, "System: Be brief.\nUser: Hi there\nAssistant:", "length"},
		{"chat with max_completion_tokens over max_tokens", "/v1/chat/completions",
			`{"model":"` + modelID + `","max_tokens":9,"max_completion_tokens":2,"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":null},{"role":"developer","content":"x"}]}`,
			"chat.completion", 2, "User: Hi\nAssistant: \nSystem: x\nAssistant:", "length"},
		{"chat to the end of the model's text", "/v1/chat/completions",
			`{"model":"` + modelID + `","messages":[{"role":"user","content":"Hi"}]}`,
			"chat.completion", len(defaultTokens), "User: Hi\nAssistant:", "stop"},
		{"completion defaults to 16 tokens, the fake has 10", "/v1/completions",
			`{"model":"` + modelID + `","prompt":"Once"}`, "text_completion", len(defaultTokens), "Once", "stop"},
		{"stream false with stream_options null", "/v1/chat/completions",
			`{"model":"` + modelID + `","max_tokens":2,"stream":false,"stream_options":null,"messages":[{"role":"user","content":"Hi"}]}`,
			"chat.completion", 2, "User: Hi\nAssistant:", "length"},
		{"completion by model_ref, prompt array", "/v1/completions",
			`{"model":"models/tiny.gguf","prompt":["Once upon"],"max_tokens":3,"temperature":0,"seed":7}`, "text_completion", 3, "Once upon", "length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.do(t, http.MethodPost, tt.path, strings.NewReader(tt.body), bearer(testKey))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			id := taskOf(t, resp)
			var got struct {
				ID      string `json:"id"`
				Object  string `json:"object"`
				Model   string `json:"model"`
				Choices []struct {
					Text    string `json:"text"`
					Message struct {
						Role, Content string
					} `json:"message"`
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
				Usage struct {
					PromptTokens     int `json:"prompt_tokens"`
					CompletionTokens int `json:"completion_tokens"`
					TotalTokens      int `json:"total_tokens"`
				} `json:"usage"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			text := got.Choices[0].Text + got.Choices[0].Message.Content
			if got.Object != tt.object || !strings.HasSuffix(got.ID, id.String()) || text != h.fake.Text(tt.maxTokens) ||
				got.Choices[0].FinishReason != tt.finish {
				t.Errorf("got %s", body)
			}
			if tt.object == "chat.completion" && got.Choices[0].Message.Role != "assistant" {
				t.Errorf("role %q", got.Choices[0].Message.Role)
			}
			wantIn := len(strings.Fields(tt.prompt)) // what the fake reports
			if got.Usage.CompletionTokens != tt.maxTokens || got.Usage.PromptTokens != wantIn || got.Usage.TotalTokens != wantIn+tt.maxTokens {
				t.Errorf("usage %+v, want %d in, %d out", got.Usage, wantIn, tt.maxTokens)
			}
			st := h.state(t, id)
			if st.State != client.Succeeded || int(st.TokensOut) != tt.maxTokens {
				t.Errorf("task %+v", st)
			}
			prompts := h.fake.Prompts()
			if !strings.Contains(strings.Join(prompts, "\x00"), tt.prompt) {
				t.Errorf("the engine never got the prompt %q: %q", tt.prompt, prompts)
			}
		})
	}
}

func TestOpenAIStreaming(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name, path, body string
		object           string
		n                int
		usage            bool
	}{
		{"chat with usage", "/v1/chat/completions",
			`{"model":"` + modelID + `","stream":true,"stream_options":{"include_usage":true},"max_tokens":3,"messages":[{"role":"user","content":"Hi"}]}`,
			"chat.completion.chunk", 3, true},
		{"chat without usage", "/v1/chat/completions",
			`{"model":"` + modelID + `","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"Hi"}]}`,
			"chat.completion.chunk", 5, false},
		{"completion with usage", "/v1/completions",
			`{"model":"` + modelID + `","stream":true,"stream_options":{"include_usage":true},"max_tokens":2,"prompt":"a b"}`,
			"text_completion", 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(h.ctx(t), http.MethodPost, h.url+tt.path, strings.NewReader(tt.body))
			req.Header = bearer(testKey)
			resp, err := h.raw.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
			id := taskOf(t, resp)
			cs, done := readChunks(t, resp.Body)
			if !done {
				t.Error("no [DONE]")
			}
			if got := chunkText(cs); got != h.fake.Text(tt.n) {
				t.Errorf("text %q, want %q", got, h.fake.Text(tt.n))
			}
			// n token chunks, one finishing chunk, and a usage chunk when asked.
			want := tt.n + 1
			if tt.usage {
				want++
			}
			if len(cs) != want {
				t.Fatalf("%d chunks, want %d: %+v", len(cs), want, cs)
			}
			for i, c := range cs {
				if c.Object != tt.object || c.ID == "" || c.Model != modelID || !strings.HasSuffix(c.ID, id.String()) {
					t.Errorf("chunk %d: %+v", i, c)
				}
			}
			if tt.object == "chat.completion.chunk" && cs[0].Choices[0].Delta.Role != "assistant" {
				t.Errorf("the first chunk does not announce the assistant: %+v", cs[0])
			}
			fin := cs[tt.n]
			if len(fin.Choices) != 1 || fin.Choices[0].FinishReason == nil || *fin.Choices[0].FinishReason != "length" || fin.Usage != nil {
				t.Errorf("finishing chunk %+v", fin)
			}
			if tt.usage {
				u := cs[len(cs)-1]
				if len(u.Choices) != 0 || u.Usage == nil || u.Usage.CompletionTokens != tt.n || u.Usage.TotalTokens != u.Usage.PromptTokens+tt.n || u.Usage.PromptTokens == 0 {
					t.Errorf("usage chunk %+v", u)
				}
			}
			if st := h.state(t, id); st.State != client.Succeeded {
				t.Errorf("task %+v", st)
			}
		})
	}
}

func TestOpenAIModels(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	resp, body := h.do(t, http.MethodGet, "/v1/models", nil, bearer(testKey))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var got struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object, OwnedBy string
			Created             int64
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Object != "list" || len(got.Data) != 1 || got.Data[0].ID != modelID || got.Data[0].Object != "model" || got.Data[0].Created <= 0 {
		t.Errorf("models %s", body)
	}
	resp, body = h.do(t, http.MethodGet, "/v1/models", nil, nil)
	if typ, code, _ := openAIErr(t, body); resp.StatusCode != 401 || typ != "invalid_request_error" || code != "invalid_api_key" {
		t.Errorf("no key: %d %s", resp.StatusCode, body)
	}
}

func TestOpenAIErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCtxMax(64))
	chat := func(extra string) string {
		return `{"model":"` + modelID + `","messages":[{"role":"user","content":"Hi"}]` + extra + `}`
	}
	tests := []struct {
		name, path, body string
		header           http.Header
		status           int
		code, param      string
	}{
		{"no key", "/v1/chat/completions", chat(""), http.Header{"Content-Type": {"application/json"}}, 401, "invalid_api_key", ""},
		{"wrong key is 401 too", "/v1/chat/completions", chat(""), bearer("not-the-key"), 401, "invalid_api_key", ""},
		{"wrong key, completions", "/v1/completions", `{"model":"x","prompt":"p"}`, bearer("nope"), 401, "invalid_api_key", ""},
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}`, bearer(testKey), 404, "model_not_found", "model"},
		{"unknown model, completions", "/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"p"}`, bearer(testKey), 404, "model_not_found", "model"},
		{"no messages", "/v1/chat/completions", `{"model":"` + modelID + `"}`, bearer(testKey), 400, "invalid_value", "messages"},
		{"empty messages", "/v1/chat/completions", `{"model":"` + modelID + `","messages":[]}`, bearer(testKey), 400, "invalid_value", "messages"},
		{"tool role", "/v1/chat/completions", `{"model":"` + modelID + `","messages":[{"role":"tool","content":"x"}]}`, bearer(testKey), 400, "invalid_value", "messages[0].role"},
		{"image part", "/v1/chat/completions", `{"model":"` + modelID + `","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, bearer(testKey), 400, "invalid_value", "messages[0].content"},
		{"content a number", "/v1/chat/completions", `{"model":"` + modelID + `","messages":[{"role":"user","content":5}]}`, bearer(testKey), 400, "invalid_value", "messages[0].content"},
		{"n 2", "/v1/chat/completions", chat(`,"n":2`), bearer(testKey), 400, "invalid_value", "n"},
		{"stop", "/v1/chat/completions", chat(`,"stop":["\n"]`), bearer(testKey), 400, "invalid_value", "stop"},
		{"stop a number", "/v1/chat/completions", chat(`,"stop":3`), bearer(testKey), 400, "invalid_value", "stop"},
		{"max_tokens over the context", "/v1/chat/completions", chat(`,"max_tokens":65`), bearer(testKey), 400, "invalid_value", "max_tokens"},
		{"max_tokens 0", "/v1/chat/completions", chat(`,"max_tokens":0`), bearer(testKey), 400, "invalid_value", "max_tokens"},
		{"max_tokens not an integer", "/v1/chat/completions", chat(`,"max_tokens":2.5`), bearer(testKey), 400, "invalid_value", "max_tokens"},
		{"temperature 3", "/v1/chat/completions", chat(`,"temperature":3`), bearer(testKey), 400, "invalid_value", "temperature"},
		{"stream_options without stream", "/v1/chat/completions", chat(`,"stream_options":{"include_usage":true}`), bearer(testKey), 400, "invalid_value", "stream_options"},
		{"stream_options with stream false", "/v1/chat/completions", chat(`,"stream":false,"stream_options":{"include_usage":true}`), bearer(testKey), 400, "invalid_value", "stream_options"},
		{"stream_options with stream null", "/v1/chat/completions", chat(`,"stream":null,"stream_options":{}`), bearer(testKey), 400, "invalid_value", "stream_options"},
		{"stream_options without stream, completions", "/v1/completions", `{"model":"` + modelID + `","prompt":"a","stream_options":{"include_usage":false}}`, bearer(testKey), 400, "invalid_value", "stream_options"},
		{"a tool", "/v1/chat/completions", chat(`,"tools":[{"type":"function","function":{"name":"f"}}]`), bearer(testKey), 400, "invalid_value", "tools"},
		{"a function", "/v1/chat/completions", chat(`,"functions":[{"name":"f"}]`), bearer(testKey), 400, "invalid_value", "functions"},
		{"tool_choice required", "/v1/chat/completions", chat(`,"tool_choice":"required"`), bearer(testKey), 400, "invalid_value", "tool_choice"},
		{"tool_choice a tool", "/v1/chat/completions", chat(`,"tool_choice":{"type":"function","function":{"name":"f"}}`), bearer(testKey), 400, "invalid_value", "tool_choice"},
		{"function_call a function", "/v1/chat/completions", chat(`,"function_call":{"name":"f"}`), bearer(testKey), 400, "invalid_value", "function_call"},
		{"JSON output", "/v1/chat/completions", chat(`,"response_format":{"type":"json_object"}`), bearer(testKey), 400, "invalid_value", "response_format.type"},
		{"a JSON schema", "/v1/chat/completions", chat(`,"response_format":{"type":"json_schema","json_schema":{"name":"x"}}`), bearer(testKey), 400, "invalid_value", "response_format.type"},
		{"empty prompt", "/v1/completions", `{"model":"` + modelID + `","prompt":""}`, bearer(testKey), 400, "invalid_value", "prompt"},
		{"token prompt", "/v1/completions", `{"model":"` + modelID + `","prompt":[1,2]}`, bearer(testKey), 400, "invalid_value", "prompt"},
		{"batch prompt", "/v1/completions", `{"model":"` + modelID + `","prompt":["a","b"]}`, bearer(testKey), 400, "invalid_value", "prompt"},
		{"echo", "/v1/completions", `{"model":"` + modelID + `","prompt":"a","echo":true}`, bearer(testKey), 400, "invalid_value", "echo"},
		{"logprobs", "/v1/completions", `{"model":"` + modelID + `","prompt":"a","logprobs":1}`, bearer(testKey), 400, "invalid_value", "logprobs"},
		{"not JSON", "/v1/completions", `{"model":`, bearer(testKey), 400, "invalid_value", ""},
		{"form body", "/v1/completions", `model=x`, http.Header{"Authorization": {"Bearer " + testKey}, "Content-Type": {"application/x-www-form-urlencoded"}}, 415, "unsupported_media_type", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.do(t, http.MethodPost, tt.path, strings.NewReader(tt.body), tt.header)
			typ, code, param := openAIErr(t, body)
			if resp.StatusCode != tt.status || code != tt.code || param != tt.param {
				t.Errorf("%d %s (type %s code %s param %q), want %d %s %q", resp.StatusCode, body, typ, code, param, tt.status, tt.code, tt.param)
			}
			if resp.Header.Get("X-Task-Id") != "" {
				t.Errorf("a refused request has a task: %s", resp.Header.Get("X-Task-Id"))
			}
		})
	}
	if h.fake.Started() != 0 {
		t.Errorf("%d generations started for refused requests", h.fake.Started())
	}
}

// A full queue is a 429 with the back-off headers, as a task's would be.
func TestOpenAIRateLimited(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCapacity(1), withPolicy("reject"))
	h.fake.SetGated(true)
	running := h.submit(t, taskReq(uuid.New())).JSON202.TaskId
	h.waitState(t, running, client.Running)
	queued := h.submit(t, taskReq(uuid.New())).JSON202.TaskId
	for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
		body := `{"model":"` + modelID + `","prompt":"x","messages":[{"role":"user","content":"Hi"}]}`
		resp, b := h.do(t, http.MethodPost, path, strings.NewReader(body), bearer(testKey))
		typ, code, _ := openAIErr(t, b)
		if resp.StatusCode != http.StatusTooManyRequests || typ != "requests" || code != "rate_limit_exceeded" ||
			resp.Header.Get("Retry-After") == "" || resp.Header.Get("X-Backoff-Ms") == "" || resp.Header.Get("x-should-retry") != "" {
			t.Errorf("%s: %d %v %s", path, resp.StatusCode, resp.Header, b)
		}
	}
	h.cancel(t, queued)
	h.cancel(t, running)
}

// Closing the stream cancels the task; a non-streaming client that goes away does too.
func TestOpenAIDisconnectCancels(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.SetGated(true)
	for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
		t.Run(path, func(t *testing.T) {
			body := `{"model":"` + modelID + `","stream":true,"max_tokens":8,"prompt":"x","messages":[{"role":"user","content":"Hi"}]}`
			req, _ := http.NewRequestWithContext(h.ctx(t), http.MethodPost, h.url+path, strings.NewReader(body))
			req.Header = bearer(testKey)
			resp, err := h.raw.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			id := taskOf(t, resp)
			h.fake.Allow(1)
			br := bufio.NewReader(resp.Body)
			line, err := br.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "data: {") {
				t.Fatalf("first line %q %v", line, err)
			}
			_ = resp.Body.Close()
			st := h.waitState(t, id, client.Canceled)
			if st.TokensOut != 1 {
				t.Errorf("task %+v", st)
			}
		})
	}
	t.Run("not streaming", func(t *testing.T) {
		canceled := h.fake.Canceled()
		disconnects := func() string { // its sample line: no stream was open, none is counted
			for _, l := range strings.Split(h.metricsText(t), "\n") {
				if strings.HasPrefix(l, "sse_client_disconnects_total ") {
					return l
				}
			}
			return ""
		}
		before := disconnects()
		ctx, cancel := context.WithCancel(h.ctx(t))
		body := `{"model":"` + modelID + `","max_tokens":8,"messages":[{"role":"user","content":"Hi"}]}`
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header = bearer(testKey)
		done := make(chan error, 1)
		go func() {
			resp, err := h.raw.Do(req)
			if err == nil {
				_ = resp.Body.Close()
			}
			done <- err
		}()
		eventually(t, "the generation started", func() bool { return h.fake.Active() == 1 })
		cancel()
		if err := <-done; err == nil {
			t.Error("the request was answered after its client went away")
		}
		eventually(t, "the engine request canceled", func() bool { return h.fake.Canceled() == canceled+1 })
		if after := disconnects(); after != before {
			t.Errorf("a non-streaming request's client left: %q, was %q (no stream was open)", after, before)
		}
	})
}

// A task that fails mid-stream ends the stream with an error object and no [DONE]; one that fails
// before a non-streaming answer is an OpenAI error that names the task.
func TestOpenAIEngineFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.FailAt(2)
	resp, body := h.do(t, http.MethodPost, "/v1/chat/completions",
		strings.NewReader(`{"model":"`+modelID+`","stream":true,"messages":[{"role":"user","content":"Hi"}]}`), bearer(testKey))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	cs, done := readChunks(t, strings.NewReader(string(body)))
	if done || len(cs) != 3 || chunkText(cs) != h.fake.Text(2) || cs[2].Error == nil || cs[2].Error.Type != "server_error" {
		t.Errorf("stream %s", body)
	}
	if st := h.state(t, taskOf(t, resp)); st.State != client.Failed {
		t.Errorf("task %+v", st)
	}

	resp, body = h.do(t, http.MethodPost, "/v1/completions", strings.NewReader(`{"model":"`+modelID+`","prompt":"x"}`), bearer(testKey))
	typ, code, _ := openAIErr(t, body)
	if resp.StatusCode != http.StatusInternalServerError || typ != "server_error" || code != "internal_error" {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
	if st := h.state(t, taskOf(t, resp)); st.State != client.Failed {
		t.Errorf("task %+v", st)
	}
}

// A chat reaches an engine that serves the chat workload as its messages (a chat task), and one
// that does not as a transcript (a completion task).
func TestOpenAIChatWorkload(t *testing.T) {
	t.Parallel()
	body := `{"model":"` + modelID + `","max_tokens":2,"messages":[{"role":"developer","content":"Be brief."},` +
		`{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"},{"role":"user","content":[{"type":"text","text":"Again"}]}]}`
	tests := []struct {
		engine    string
		workloads []string
		workload  string
		prompt    string
		messages  []engine.Message
	}{
		{"openai", []string{"completion", "chat"}, "chat", "Be brief.HiHelloAgain", []engine.Message{
			{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello"}, {Role: "user", Content: "Again"}}},
		{"llamacpp", []string{"completion"}, "completion", "System: Be brief.\nUser: Hi\nAssistant: Hello\nUser: Again\nAssistant:", nil},
	}
	for _, tt := range tests {
		t.Run(tt.engine, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, withEngine(tt.engine, tt.workloads...))
			resp, out := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(body), bearer(testKey))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%d %s", resp.StatusCode, out)
			}
			reqs := h.fake.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d engine requests", len(reqs))
			}
			r := reqs[0]
			if r.Workload != tt.workload || r.Prompt != tt.prompt || !slices.Equal(r.Messages, tt.messages) {
				t.Errorf("engine request workload %q prompt %q messages %+v", r.Workload, r.Prompt, r.Messages)
			}
		})
	}
}

// TestOpenAIBudgetStopIsLength: a completion cut short by the token budget (here the
// session's, sessions.token_budget 3, below the request's max_tokens 8) did not end because the
// model ended: finish_reason must be "length" (OpenAIFinishReason: "`stop`: the model ended (end
// of sequence)"), not "stop", streamed or not.
func TestOpenAIBudgetStopIsLength(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withTokenBudget(3))
	body := `{"model":"` + modelID + `","max_tokens":8,"messages":[{"role":"user","content":"Hi"}]}`
	resp, out := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(body), bearer(testKey))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	var got struct {
		Choices []struct {
			Message      struct{ Content string } `json:"message"`
			FinishReason string                   `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Usage.CompletionTokens != 3 || got.Choices[0].Message.Content != h.fake.Text(3) {
		t.Fatalf("not cut at the budget: %s", out)
	}
	if got.Choices[0].FinishReason != "length" {
		t.Errorf("non-streamed: finish_reason %q for a completion the budget cut after 3 of 8 tokens, want \"length\": %s",
			got.Choices[0].FinishReason, out)
	}

	sbody := `{"model":"` + modelID + `","stream":true,"max_tokens":8,"prompt":"Once"}`
	req, _ := http.NewRequestWithContext(h.ctx(t), http.MethodPost, h.url+"/v1/completions", strings.NewReader(sbody))
	req.Header = bearer(testKey)
	sresp, err := h.raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	cs, done := readChunks(t, sresp.Body)
	if !done || len(cs) != 4 || chunkText(cs) != h.fake.Text(3) {
		t.Fatalf("stream: done %v, %d chunks %+v", done, len(cs), cs)
	}
	fin := cs[3].Choices[0].FinishReason
	if fin == nil || *fin != "length" {
		got := "<nil>"
		if fin != nil {
			got = *fin
		}
		t.Errorf("streamed: finish_reason %q for a completion the budget cut after 3 of 8 tokens, want \"length\"", got)
	}
}

// TestOpenAIValidKeyIsNotAnInvalidKey: the facade answers 401 invalid_api_key (the openai
// client's AuthenticationError) only to a missing key or one that is none. A valid key without
// the tasks scope is 403 insufficient_permissions (PermissionDeniedError); a key whose
// max_priority is batch runs its completions as batch tasks.
func TestOpenAIValidKeyIsNotAnInvalidKey(t *testing.T) {
	t.Parallel()
	const daveKey = "dave-contract-key-0123456789"
	h := newHarness(t, withKeys(keysDoc+"  - {name: dave, key: "+daveKey+", scopes: [tasks], max_priority: batch}\n"))
	body := `{"model":"` + modelID + `","max_tokens":2,"messages":[{"role":"user","content":"Hi"}]}`
	for _, tc := range []struct {
		name, key  string
		status     int
		code, task string
	}{
		{"batch key", daveKey, http.StatusOK, "", "batch"},
		{"key without the tasks scope", opsKey, http.StatusForbidden, "insufficient_permissions", ""},
		{"no key at all", "not-a-key-0123456789abcdef", http.StatusUnauthorized, "invalid_api_key", ""},
	} {
		resp, out := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(body), bearer(tc.key))
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, out, tc.status)
			continue
		}
		if tc.code != "" {
			if _, code, _ := openAIErr(t, out); code != tc.code {
				t.Errorf("%s: code %q, want %q: %s", tc.name, code, tc.code, out)
			}
			continue
		}
		id := resp.Header.Get("X-Task-Id")
		g, err := h.as(t, tc.key).GetTaskWithResponse(h.ctx(t), uuid.MustParse(id), nil)
		if err != nil || g.JSON200 == nil || string(g.JSON200.Priority) != tc.task {
			t.Errorf("%s: its task %s: %v %s, want a %s task", tc.name, id, err, g.Body, tc.task)
		}
	}
}

// TestOpenAIParamNamesTheFieldSent: a chat whose max_completion_tokens (the field OpenAI's
// current clients send; max_tokens is deprecated for chat) exceeds the context is refused with
// param "max_tokens", a field the request does not have. OpenAI's param names the offending
// field of the request.
func TestOpenAIParamNamesTheFieldSent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCtxMax(64))
	body := `{"model":"` + modelID + `","max_completion_tokens":65,"messages":[{"role":"user","content":"Hi"}]}`
	resp, out := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(body), bearer(testKey))
	_, code, param := openAIErr(t, out)
	if resp.StatusCode != http.StatusBadRequest || code != "invalid_value" {
		t.Fatalf("%d %s", resp.StatusCode, out)
	}
	if param != "max_completion_tokens" {
		t.Errorf("max_completion_tokens over the context: param %q, want \"max_completion_tokens\": %s", param, out)
	}
}

// TestOpenAISpentBudgetIsInsufficientQuota: a key whose token budget is spent is refused as
// OpenAI refuses a spent quota, 429 insufficient_quota, with x-should-retry: false: OpenAI's
// clients retry every 429 otherwise (twice by default), for the same answer. A full queue's
// 429 (retriable) carries no such header.
func TestOpenAISpentBudgetIsInsufficientQuota(t *testing.T) {
	t.Parallel()
	const erinKey = "erin-contract-key-0123456789"
	h := newHarness(t, withKeys(keysDoc+"  - {name: erin, key: "+erinKey+", scopes: [tasks], token_budget: 4}\n"))
	body := `{"model":"` + modelID + `","max_tokens":4,"messages":[{"role":"user","content":"Hi"}]}`
	if resp, out := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(body), bearer(erinKey)); resp.StatusCode != http.StatusOK {
		t.Fatalf("the budget's first completion: %d %s", resp.StatusCode, out)
	}
	resp, out := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(body), bearer(erinKey))
	typ, code, _ := openAIErr(t, out)
	if resp.StatusCode != http.StatusTooManyRequests || typ != "insufficient_quota" || code != "insufficient_quota" {
		t.Errorf("a spent budget: %d %s, want 429 insufficient_quota", resp.StatusCode, out)
	}
	if got := resp.Header.Get("x-should-retry"); got != "false" {
		t.Errorf("a spent budget: x-should-retry %q, want false", got)
	}
	for _, p := range checkOpenAIError(resp, out) {
		t.Error(p)
	}
}

// TestOpenAIChatWithoutMaxTokensIsOpenEnded: a chat that names no max_tokens (OpenAI's clients
// send none by default) runs to the model's context: the engine request is open-ended, so the
// vLLM adapter sends no max_tokens (vLLM refuses a prompt plus max_tokens beyond its context).
// A chat that names one is bounded by it.
func TestOpenAIChatWithoutMaxTokensIsOpenEnded(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withEngine("openai", "completion", "chat"))
	for _, tc := range []struct {
		body string
		open bool
	}{
		{`{"model":"` + modelID + `","messages":[{"role":"user","content":"Hi"}]}`, true},
		{`{"model":"` + modelID + `","max_tokens":3,"messages":[{"role":"user","content":"Hi"}]}`, false},
	} {
		before := len(h.fake.Requests())
		resp, out := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(tc.body), bearer(testKey))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.body, resp.StatusCode, out)
		}
		reqs := h.fake.Requests()
		if len(reqs) != before+1 {
			t.Fatalf("%d engine requests", len(reqs)-before)
		}
		if r := reqs[len(reqs)-1]; r.OpenEnded != tc.open {
			t.Errorf("%s: engine request open-ended %v (max_tokens %d), want %v", tc.body, r.OpenEnded, r.MaxTokens, tc.open)
		}
	}
}

// TestOpenAINoToolsAccepted: what a client sends when it has no tools and wants text (an empty
// tools array, tool_choice none or auto, response_format text) is a plain chat, answered.
func TestOpenAINoToolsAccepted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, extra := range []string{
		`,"tools":[],"tool_choice":"none"`,
		`,"tools":null,"tool_choice":"auto","functions":[],"function_call":"none"`,
		`,"response_format":{"type":"text"}`,
	} {
		body := `{"model":"` + modelID + `","max_tokens":2,"messages":[{"role":"user","content":"Hi"}]` + extra + `}`
		resp, out := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(body), bearer(testKey))
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(out), `"finish_reason"`) {
			t.Errorf("%s: %d %s, want the chat answered", extra, resp.StatusCode, out)
		}
	}
}
