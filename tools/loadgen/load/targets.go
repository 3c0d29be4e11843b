package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

// Limits on what is read from a response.
const (
	maxAdmitBody   = 1 << 20
	maxPlainBody   = 64 << 20
	maxDrainOnDone = 64 << 10
	// streamDrainWait is how long the rest of a stream's body (normally only the end of the
	// chunked encoding) may take after the final frame before the request is canceled; reading
	// it lets the connection be reused, canceling it guards against a server that keeps the
	// stream open.
	streamDrainWait = 50 * time.Millisecond
)

var errTruncated = errors.New("stream ended before its final frame")

// prepare builds the static parts of the requests.
func (r *runner) prepare() error {
	o := r.o
	switch o.Target {
	case TargetOrchdAdmit, TargetOrchdStream:
		r.endpoint = r.base.JoinPath("/v1/tasks").String()
		rest, err := json.Marshal(struct {
			Workload   string `json:"workload"`
			ModelRef   string `json:"model_ref"`
			Engine     string `json:"engine"`
			Ctx        int    `json:"ctx"`
			Priority   string `json:"priority"`
			Prompt     string `json:"prompt"`
			MaxTokens  int    `json:"max_tokens"`
			DeadlineMs int64  `json:"deadline_ms"`
		}{"completion", o.Model, o.Engine, o.Ctx, o.Priority, o.Prompt, o.Tokens, o.DeadlineMs})
		if err != nil {
			return err
		}
		r.taskRest = rest[1:] // without '{'
		r.sessions = make([]string, o.Sessions)
		for i := range r.sessions {
			r.sessions[i] = uuid.NewString()
		}
		if o.APIKey != "" {
			r.authHeader, r.authValue = "X-API-Key", o.APIKey
		}
		return nil
	case TargetLlamaCppStream:
		r.endpoint = r.base.JoinPath("/completion").String()
		b, err := json.Marshal(map[string]any{
			"prompt": o.Prompt, "n_predict": o.Tokens, "stream": !o.NoStream, "cache_prompt": false,
		})
		r.body = b
		if err != nil {
			return err
		}
	case TargetOpenAIStream:
		r.endpoint = r.base.JoinPath("/v1/completions").String()
		b, err := json.Marshal(map[string]any{
			"model": o.Model, "prompt": o.Prompt, "max_tokens": o.Tokens, "stream": !o.NoStream,
		})
		r.body = b
		if err != nil {
			return err
		}
	}
	if o.APIKey != "" {
		r.authHeader, r.authValue = "Authorization", "Bearer "+o.APIKey
	}
	return nil
}

func (r *runner) newRequest(ctx context.Context, method, u string, body []byte, stream bool) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if stream {
		req.Header.Set("Accept", "text/event-stream")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	if r.authHeader != "" {
		req.Header.Set(r.authHeader, r.authValue)
	}
	return req, nil
}

// taskBody returns a fresh orchestratord TaskRequest for ticket t.
func (r *runner) taskBody(t int) (body []byte, taskID string) {
	taskID = uuid.NewString()
	b := make([]byte, 0, 96+len(r.taskRest))
	b = append(b, `{"task_id":"`...)
	b = append(b, taskID...)
	b = append(b, `","session_id":"`...)
	b = append(b, r.sessions[t%len(r.sessions)]...)
	b = append(b, `",`...)
	b = append(b, r.taskRest...)
	return b, taskID
}

// drain reads up to limit bytes of the rest of body and closes it, so that the connection can
// be reused.
func drain(body io.ReadCloser, limit int64) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, limit))
	_ = body.Close()
}

// finishStream drains and closes a stream body within streamDrainWait, then cancels its request.
func finishStream(body io.ReadCloser, cancel context.CancelFunc) {
	t := time.AfterFunc(streamDrainWait, cancel)
	drain(body, maxDrainOnDone)
	t.Stop()
	cancel()
}

func httpClass(prefix string, status int) string { return prefix + "http_" + strconv.Itoa(status) }

// admit posts one task; it returns the admission response body on 202.
func (r *runner) admit(ctx context.Context, t int, oc *outcome) (admission []byte, taskID string) {
	body, taskID := r.taskBody(t)
	req, err := r.newRequest(ctx, http.MethodPost, r.endpoint, body, false)
	if err != nil {
		oc.class, oc.err = "protocol", err
		return nil, ""
	}
	resp, err := r.client.Do(req)
	if err != nil {
		oc.err = err
		return nil, ""
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAdmitBody))
	drain(resp.Body, maxDrainOnDone)
	if resp.StatusCode != http.StatusAccepted {
		oc.class, oc.err = httpClass("", resp.StatusCode), fmt.Errorf("POST /v1/tasks: %s: %.200s", resp.Status, b)
		return nil, ""
	}
	if err != nil {
		oc.err = err
		return nil, ""
	}
	return b, taskID
}

// orchdAdmit: POST /v1/tasks; success is 202.
func (r *runner) orchdAdmit(ctx context.Context, t int, oc *outcome) {
	r.admit(ctx, t, oc)
}

// orchdStream: POST /v1/tasks, then GET its SSE stream until `end`.
func (r *runner) orchdStream(ctx context.Context, t int, start time.Time, oc *outcome) {
	adm, taskID := r.admit(ctx, t, oc)
	if adm == nil {
		return
	}
	var ar struct {
		TaskID  string `json:"task_id"`
		Streams struct {
			SSE string `json:"sse"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(adm, &ar); err != nil {
		oc.class, oc.err = "protocol", fmt.Errorf("admission response: %w", err)
		return
	}
	streamURL := r.base.JoinPath("/v1/tasks", taskID, "stream").String()
	if ar.Streams.SSE != "" {
		u, err := url.Parse(ar.Streams.SSE)
		if err != nil {
			oc.class, oc.err = "protocol", fmt.Errorf("streams.sse: %w", err)
			return
		}
		u = r.base.ResolveReference(u)
		if !IsLoopbackHost(u.Hostname()) {
			oc.class, oc.err = "protocol", fmt.Errorf("streams.sse %q is not loopback", ar.Streams.SSE)
			return
		}
		streamURL = u.String()
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := r.newRequest(sctx, http.MethodGet, streamURL, nil, true)
	if err != nil {
		oc.class, oc.err = "protocol", err
		return
	}
	resp, err := r.client.Do(req)
	if err != nil {
		oc.err = err
		return
	}
	defer finishStream(resp.Body, cancel)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		oc.class, oc.err = httpClass("stream_", resp.StatusCode), fmt.Errorf("GET stream: %s: %s", resp.Status, b)
		return
	}
	sr := NewSSEReader(resp.Body)
	for {
		ev, err := sr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				oc.class, oc.err = "truncated", errTruncated
			} else {
				oc.err = err
			}
			return
		}
		now := time.Now()
		switch ev.Type {
		case "token":
			text, ok := fastStringField(ev.Data, "t")
			if !ok {
				var tok struct {
					T *string `json:"t"`
				}
				if json.Unmarshal(ev.Data, &tok) != nil || tok.T == nil {
					oc.class, oc.err = "protocol", fmt.Errorf("token frame %.200q", ev.Data)
					return
				}
				text = *tok.T
			}
			if oc.ttft < 0 {
				oc.ttft = now.Sub(start)
			}
			r.recordToken(oc, text, now)
		case "end":
			oc.end = now
			var end struct {
				Canceled bool `json:"canceled"`
			}
			if err := json.Unmarshal(ev.Data, &end); err != nil {
				oc.class, oc.err = "protocol", fmt.Errorf("end frame %.200q: %w", ev.Data, err)
			} else if end.Canceled {
				oc.class, oc.err = "sse_canceled", errors.New("stream ended canceled")
			}
			return
		case "error":
			oc.end = now
			var e struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(ev.Data, &e)
			oc.class, oc.err = sseErrorClass(e.Code), fmt.Errorf("error frame: %s: %s", e.Code, e.Message)
			return
		}
	}
}

// sseErrorClass maps an orchd error code to a bounded class name.
func sseErrorClass(code string) string {
	if code == "" || len(code) > 40 {
		return "sse_error"
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; (c < 'A' || c > 'Z') && c != '_' {
			return "sse_error"
		}
	}
	return "sse_" + code
}

// engineStream: POST a streaming completion straight to llama.cpp or an OpenAI-compatible
// server, and read frames until the final one.
func (r *runner) engineStream(ctx context.Context, start time.Time, oc *outcome) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := r.newRequest(sctx, http.MethodPost, r.endpoint, r.body, true)
	if err != nil {
		oc.class, oc.err = "protocol", err
		return
	}
	resp, err := r.client.Do(req)
	if err != nil {
		oc.err = err
		return
	}
	defer finishStream(resp.Body, cancel)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		oc.class, oc.err = httpClass("", resp.StatusCode), fmt.Errorf("POST %s: %s: %s", r.endpoint, resp.Status, b)
		return
	}
	parse := parseLlamaFrame
	if r.o.Target == TargetOpenAIStream {
		parse = parseOpenAIFrame
	}
	sr := NewSSEReader(resp.Body)
	for {
		ev, err := sr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				oc.class, oc.err = "truncated", errTruncated
			} else {
				oc.err = err
			}
			return
		}
		now := time.Now()
		f := parse(ev.Data)
		switch {
		case f.err != nil:
			oc.end = now
			oc.class, oc.err = f.class, f.err
			return
		case f.text != "":
			if oc.ttft < 0 {
				oc.ttft = now.Sub(start)
			}
			r.recordToken(oc, f.text, now)
		}
		if f.done {
			oc.end = now
			return
		}
	}
}

// frame is one parsed engine stream frame.
type frame struct {
	text  string
	done  bool   // the final frame
	class string // with err: a failure
	err   error
}

// parseLlamaFrame parses a llama.cpp /completion stream frame.
func parseLlamaFrame(data []byte) frame {
	if text, ok := fastStringField(data, "content"); ok && bytes.Contains(data, []byte(`"stop":false`)) {
		return frame{text: text}
	}
	var f struct {
		Content string `json:"content"`
		Stop    bool   `json:"stop"`
		Error   *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return frame{class: "protocol", err: fmt.Errorf("llama.cpp frame %.200q: %w", data, err)}
	}
	if f.Error != nil {
		return frame{class: "sse_error", err: fmt.Errorf("llama.cpp error frame: %s", f.Error.Message)}
	}
	return frame{text: f.Content, done: f.Stop}
}

// parseOpenAIFrame parses an OpenAI completions stream chunk; "[DONE]" is the final frame.
func parseOpenAIFrame(data []byte) frame {
	if string(data) == "[DONE]" {
		return frame{done: true}
	}
	if text, ok := fastStringField(data, "text"); ok && bytes.Contains(data, []byte(`"finish_reason":null`)) {
		return frame{text: text}
	}
	var f struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return frame{class: "protocol", err: fmt.Errorf("openai chunk %.200q: %w", data, err)}
	}
	if f.Error != nil {
		return frame{class: "sse_error", err: fmt.Errorf("openai error chunk: %s", f.Error.Message)}
	}
	var out frame
	for _, c := range f.Choices {
		out.text += c.Text
	}
	return out
}

// plainRequest: POST a non-stream completion and read its one JSON response.
func (r *runner) plainRequest(ctx context.Context, oc *outcome) {
	req, err := r.newRequest(ctx, http.MethodPost, r.endpoint, r.body, false)
	if err != nil {
		oc.class, oc.err = "protocol", err
		return
	}
	resp, err := r.client.Do(req)
	if err != nil {
		oc.err = err
		return
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPlainBody))
	drain(resp.Body, maxDrainOnDone)
	oc.end = time.Now()
	if resp.StatusCode != http.StatusOK {
		oc.class, oc.err = httpClass("", resp.StatusCode), fmt.Errorf("POST %s: %s: %.200s", r.endpoint, resp.Status, b)
		return
	}
	if err != nil {
		oc.err = err
		return
	}
	var f struct {
		Content *string `json:"content"`
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &f); err != nil || (f.Content == nil && len(f.Choices) == 0) {
		oc.class, oc.err = "protocol", fmt.Errorf("response %.200q: %v", b, err) //nolint:errorlint // err is nil when the JSON parsed but held no token
		return
	}
	text := ""
	if f.Content != nil {
		text = *f.Content
	}
	for _, c := range f.Choices {
		text += c.Text
	}
	// Tokens arrived all at once: count them, but there is no per-token latency to take.
	if n := sim.EachStamp(text, nil); n > 0 {
		oc.tokens, oc.stamped = int64(n), int64(n)
	} else if text != "" {
		oc.tokens = 1
	}
}

// fastStringField extracts the value of the JSON string member key from a flat JSON object
// without decoding it, when that is unambiguous: the member's name must follow '{' or ',' and
// its value must hold no escapes. It reports false otherwise; the caller then decodes the JSON.
func fastStringField(data []byte, key string) (string, bool) {
	off := 0
	for {
		i := indexQuoted(data[off:], key)
		if i < 0 {
			return "", false
		}
		i += off
		off = i + len(key) + 2
		// What precedes the name must be '{' or ',' (after optional whitespace).
		j := i - 1
		for j >= 0 && isSpace(data[j]) {
			j--
		}
		if j < 0 || (data[j] != '{' && data[j] != ',') {
			continue
		}
		k := off
		for k < len(data) && isSpace(data[k]) {
			k++
		}
		if k >= len(data) || data[k] != ':' {
			continue
		}
		k++
		for k < len(data) && isSpace(data[k]) {
			k++
		}
		if k >= len(data) || data[k] != '"' {
			return "", false
		}
		k++
		end := bytes.IndexByte(data[k:], '"')
		if end < 0 || bytes.IndexByte(data[k:k+end], '\\') >= 0 {
			return "", false
		}
		v := data[k : k+end]
		for _, c := range v {
			if c < 0x20 {
				return "", false
			}
		}
		if !utf8.Valid(v) { // encoding/json replaces invalid bytes with U+FFFD: let it decode
			return "", false
		}
		return string(v), true
	}
}

// indexQuoted returns the index of `"key"` in data, or -1.
func indexQuoted(data []byte, key string) int {
	for off := 0; ; {
		i := bytes.Index(data[off:], []byte(key))
		if i < 0 {
			return -1
		}
		i += off
		if i >= 1 && i+len(key) < len(data) && data[i-1] == '"' && data[i+len(key)] == '"' {
			return i - 1
		}
		off = i + 1
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
