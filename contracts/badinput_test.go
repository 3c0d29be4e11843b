package contracts

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
)

// validTask is a valid createTask body as a generic object, for mutation.
func validTask() map[string]any {
	return map[string]any{
		"task_id": uuid.NewString(), "session_id": uuid.NewString(), "workload": "completion",
		"model_ref": modelID, "engine": "llamacpp", "ctx": 2048, "priority": "interactive",
		"prompt": "Once upon a time", "max_tokens": 16, "deadline_ms": 30000,
	}
}

func jsonBody(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func with(edit func(map[string]any)) string {
	m := validTask()
	edit(m)
	return jsonBody(m)
}

// chunked hides a body's length so that it is sent with Transfer-Encoding: chunked.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestBadInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.SetGated(true) // admitted tasks stay put; nothing here depends on them finishing
	key := http.Header{"X-Api-Key": {testKey}, "Content-Type": {"application/json"}}
	hdr := func(kv ...string) http.Header {
		out := key.Clone()
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				out.Del(kv[i])
			} else {
				out.Set(kv[i], kv[i+1])
			}
		}
		return out
	}
	big := strings.Repeat("a", 65537) // prompt maxLength + 1
	overLimit := `{"prompt":"` + strings.Repeat("a", 1<<20) + `"}`

	tests := []struct {
		name    string
		method  string
		path    string
		body    io.Reader
		header  http.Header
		status  int
		code    client.ErrorKind
		mention string // the message must mention this (the offending field), when set
	}{
		{name: "malformed JSON", method: "POST", path: "/v1/tasks", body: strings.NewReader(`{"task_id":`), header: key, status: 400, code: client.INVALIDPARAMS},
		{name: "not an object", method: "POST", path: "/v1/tasks", body: strings.NewReader(`[1,2]`), header: key, status: 400, code: client.INVALIDPARAMS},
		{name: "empty body", method: "POST", path: "/v1/tasks", body: strings.NewReader(``), header: key, status: 400, code: client.INVALIDPARAMS},
		{name: "unknown field", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { m["temperature"] = 0.7 })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "temperature"},
		{name: "wrong enum", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { m["priority"] = "urgent" })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "priority"},
		{name: "wrong type", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { m["ctx"] = "2048" })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "ctx"},
		{name: "fractional integer", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { m["max_tokens"] = 1.5 })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "max_tokens"},
		{name: "missing required", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { delete(m, "workload") })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "workload"},
		{name: "empty task_id", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { m["task_id"] = "" })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "/task_id: is empty: it must be a UUID"},
		{name: "nil session_id", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { m["session_id"] = "00000000-0000-0000-0000-000000000000" })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "the nil UUID is not an id"},
		{name: "max_tokens 0", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { m["max_tokens"] = 0 })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "max_tokens"},
		{name: "deadline_ms 0", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { m["deadline_ms"] = 0 })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "deadline_ms"},
		{name: "malformed task_id", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { m["task_id"] = "not-a-uuid" })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "task_id"},
		{name: "prompt over maxLength", method: "POST", path: "/v1/tasks", body: strings.NewReader(with(func(m map[string]any) { m["prompt"] = big })), header: key, status: 400, code: client.INVALIDPARAMS, mention: "prompt"},
		{name: "body over the limit, declared", method: "POST", path: "/v1/tasks", body: strings.NewReader(overLimit), header: key, status: 413, code: client.PAYLOADTOOLARGE},
		{name: "body over the limit, chunked", method: "POST", path: "/v1/tasks", body: chunked{strings.NewReader(overLimit)}, header: key, status: 413, code: client.PAYLOADTOOLARGE},
		{name: "artifact over the limit, chunked", method: "POST", path: "/v1/artifacts", body: chunked{strings.NewReader(`{"kind":"plan","content":{"x":"` + strings.Repeat("a", 1<<20) + `"}}`)}, header: key, status: 413, code: client.PAYLOADTOOLARGE},
		{name: "wrong content type", method: "POST", path: "/v1/tasks", body: strings.NewReader(jsonBody(validTask())), header: hdr("Content-Type", "text/plain"), status: 415, code: client.UNSUPPORTEDMEDIATYPE},
		{name: "JSON with a charset", method: "POST", path: "/v1/tasks", body: strings.NewReader(jsonBody(validTask())), header: hdr("Content-Type", "application/json; charset=utf-8"), status: 202},
		{name: "no content type", method: "POST", path: "/v1/tasks", body: strings.NewReader(jsonBody(validTask())), header: hdr("Content-Type", ""), status: 415, code: client.UNSUPPORTEDMEDIATYPE},
		{name: "drain body of the wrong type", method: "POST", path: "/v1/pools/" + poolID + "/drain", body: strings.NewReader(`deadline_ms=5`), header: hdr("Content-Type", "application/x-www-form-urlencoded"), status: 415, code: client.UNSUPPORTEDMEDIATYPE},
		{name: "drain deadline 0", method: "POST", path: "/v1/pools/" + poolID + "/drain", body: strings.NewReader(`{"deadline_ms":0}`), header: key, status: 400, code: client.INVALIDPARAMS, mention: "deadline_ms"},
		{name: "reload without a model", method: "POST", path: "/v1/pools/" + poolID + "/reload", body: strings.NewReader(`{}`), header: key, status: 400, code: client.INVALIDPARAMS, mention: "new_model_ref"},
		{name: "artifact of an unknown kind", method: "POST", path: "/v1/artifacts", body: strings.NewReader(`{"kind":"poem","content":{}}`), header: key, status: 400, code: client.INVALIDPARAMS, mention: "kind"},
		{name: "artifact content not an object", method: "POST", path: "/v1/artifacts", body: strings.NewReader(`{"kind":"plan","content":[1]}`), header: key, status: 400, code: client.INVALIDPARAMS, mention: "content"},
		{name: "invalid UUID in path", method: "GET", path: "/v1/tasks/not-a-uuid", header: key, status: 400, code: client.INVALIDPARAMS},
		{name: "invalid UUID in stream path", method: "GET", path: "/v1/tasks/1234/stream", header: key, status: 400, code: client.INVALIDPARAMS},
		{name: "invalid session id", method: "DELETE", path: "/v1/sessions/xyz", header: key, status: 400, code: client.INVALIDPARAMS},
		{name: "malformed Last-Event-ID", method: "GET", path: "/v1/tasks/" + uuid.NewString() + "/stream", header: hdr("Last-Event-ID", "abc"), status: 400, code: client.INVALIDPARAMS, mention: "Last-Event-ID"},
		{name: "malformed verbose", method: "GET", path: "/v1/tasks/" + uuid.NewString() + "/stream?verbose=maybe", header: key, status: 400, code: client.INVALIDPARAMS, mention: "verbose"},
		{name: "unknown task", method: "GET", path: "/v1/tasks/" + uuid.NewString(), header: key, status: 404, code: client.NOTFOUND},
		{name: "stream of an unknown task", method: "GET", path: "/v1/tasks/" + uuid.NewString() + "/stream", header: key, status: 404, code: client.NOTFOUND},
		{name: "missing API key", method: "GET", path: "/v1/capabilities", header: http.Header{}, status: 401, code: client.UNAUTHORIZED},
		{name: "missing API key on a POST", method: "POST", path: "/v1/tasks", body: strings.NewReader(jsonBody(validTask())), header: hdr("X-Api-Key", ""), status: 401, code: client.UNAUTHORIZED},
		{name: "wrong API key", method: "GET", path: "/v1/capabilities", header: http.Header{"X-Api-Key": {"wrong-key-0123456789abcdef"}}, status: 403, code: client.FORBIDDEN},
		{name: "wrong Bearer token", method: "GET", path: "/v1/capabilities", header: http.Header{"Authorization": {"Bearer wrong-key-0123456789"}}, status: 403, code: client.FORBIDDEN},
		{name: "empty Bearer token", method: "GET", path: "/v1/capabilities", header: http.Header{"Authorization": {"Bearer "}}, status: 401, code: client.UNAUTHORIZED},
		{name: "Bearer auth", method: "GET", path: "/v1/capabilities", header: http.Header{"Authorization": {"Bearer " + testKey}}, status: 200},
		{name: "bearer auth, any case", method: "GET", path: "/v1/capabilities", header: http.Header{"Authorization": {"bearer " + testKey}}, status: 200},
		{name: "Bearer createTask", method: "POST", path: "/v1/tasks", body: strings.NewReader(jsonBody(validTask())), header: hdr("X-Api-Key", "", "Authorization", "Bearer "+testKey), status: 202},
		// Both headers: the same key is fine; different keys are 401 whichever one is valid (no
		// "first wins").
		{name: "X-API-Key and Bearer, same key", method: "GET", path: "/v1/capabilities", header: http.Header{"X-Api-Key": {testKey}, "Authorization": {"Bearer " + testKey}}, status: 200},
		{name: "X-API-Key valid, Bearer another", method: "GET", path: "/v1/capabilities", header: http.Header{"X-Api-Key": {testKey}, "Authorization": {"Bearer other-key-0123456789"}}, status: 401, code: client.UNAUTHORIZED, mention: "different API keys"},
		{name: "Bearer valid, X-API-Key another", method: "GET", path: "/v1/capabilities", header: http.Header{"X-Api-Key": {"other-key-0123456789"}, "Authorization": {"Bearer " + testKey}}, status: 401, code: client.UNAUTHORIZED, mention: "different API keys"},
		{name: "different keys on a POST", method: "POST", path: "/v1/tasks", body: strings.NewReader(jsonBody(validTask())), header: hdr("Authorization", "Bearer other-key-0123456789"), status: 401, code: client.UNAUTHORIZED, mention: "different API keys"},
		{name: "two X-API-Key headers, different keys", method: "GET", path: "/v1/capabilities", header: http.Header{"X-Api-Key": {testKey, "other-key-0123456789"}}, status: 401, code: client.UNAUTHORIZED, mention: "different API keys"},
		{name: "X-API-Key and an empty Bearer", method: "GET", path: "/v1/capabilities", header: http.Header{"X-Api-Key": {testKey}, "Authorization": {"Bearer "}}, status: 200},
		{name: "X-API-Key and Basic credentials", method: "GET", path: "/v1/capabilities", header: http.Header{"X-Api-Key": {testKey}, "Authorization": {"Basic dXNlcjpwYXNz"}}, status: 200},
		{name: "both headers on a public path", method: "GET", path: "/metrics", header: http.Header{"X-Api-Key": {testKey}, "Authorization": {"Bearer other-key-0123456789"}}, status: 200},
		{name: "unknown path", method: "GET", path: "/v1/nope", header: key, status: 404, code: client.NOTFOUND},
		{name: "unknown path, v2", method: "POST", path: "/v2/tasks", body: strings.NewReader(`{}`), header: key, status: 404, code: client.NOTFOUND},
		{name: "wrong method", method: "DELETE", path: "/v1/tasks", header: key, status: 405, code: client.METHODNOTALLOWED},
		{name: "wrong method on a task", method: "PUT", path: "/v1/tasks/" + uuid.NewString(), header: key, status: 405, code: client.METHODNOTALLOWED},
		{name: "wrong method on /metrics", method: "POST", path: "/metrics", header: key, status: 405, code: client.METHODNOTALLOWED},
		{name: "unknown path without a key", method: "GET", path: "/v1/nope", header: http.Header{}, status: 401, code: client.UNAUTHORIZED},
		{name: "public /metrics", method: "GET", path: "/metrics", header: http.Header{}, status: 200},
		{name: "public /openapi.json", method: "GET", path: "/openapi.json", header: http.Header{}, status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.do(t, tt.method, tt.path, tt.body, tt.header)
			if resp.StatusCode != tt.status {
				t.Fatalf("%s %s: %d %s, want %d", tt.method, tt.path, resp.StatusCode, body, tt.status)
			}
			if tt.status < 300 {
				return
			}
			e := envelope(t, body)
			if e.Code != tt.code {
				t.Errorf("code %s, want %s (%s)", e.Code, tt.code, e.Message)
			}
			if e.Retriable {
				t.Errorf("retriable true for a request error %s", e.Code)
			}
			if e.Message == "" || (tt.mention != "" && !strings.Contains(e.Message, tt.mention)) {
				t.Errorf("message %q, want one naming %q", e.Message, tt.mention)
			}
		})
	}
}

// A body that is not one JSON value is malformed JSON, whatever its first value is.
func TestTrailingDataAfterJSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.SetGated(true)
	key := http.Header{"X-Api-Key": {testKey}, "Content-Type": {"application/json"}}
	tests := []struct{ name, path, body string }{
		{name: "createTask, garbage", path: "/v1/tasks", body: jsonBody(validTask()) + " xyz"},
		{name: "createTask, two objects", path: "/v1/tasks", body: jsonBody(validTask()) + jsonBody(validTask())},
		{name: "createArtifact, garbage", path: "/v1/artifacts", body: `{"kind":"plan","content":{"a":1}} trailing`},
	}
	var accepted []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.do(t, http.MethodPost, tt.path, strings.NewReader(tt.body), key)
			switch {
			case resp.StatusCode < 300:
				accepted = append(accepted, fmt.Sprintf("%s → %d", tt.name, resp.StatusCode))
			case resp.StatusCode != http.StatusBadRequest || envelope(t, body).Code != client.INVALIDPARAMS:
				t.Errorf("%d %s, want 400 INVALID_PARAMS", resp.StatusCode, body)
			}
		})
	}
	if len(accepted) > 0 {
		t.Skipf("BUG: bodies with data after the JSON value are accepted (%s), want 400 INVALID_PARAMS: "+
			"the request validator (impl/middleware.go Validator, kin-openapi's default application/json body "+
			"decoder) decodes the first JSON value and ignores the rest, and the strict handler binds that value",
			strings.Join(accepted, "; "))
	}
}

func TestCorrelationID(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name   string
		sent   string
		path   string
		header http.Header
		echo   bool
	}{
		{name: "echoed", sent: "req-42:a/b+c=d.e_f", path: "/v1/capabilities", echo: true},
		{name: "echoed on an error", sent: "err-1", path: "/v1/tasks/" + uuid.NewString(), echo: true},
		{name: "echoed on a 401", sent: "auth-1", path: "/v1/capabilities", header: http.Header{}, echo: true},
		{name: "echoed on an unknown path", sent: "nf-1", path: "/nope", echo: true},
		{name: "malformed replaced", sent: "bad id with spaces", path: "/v1/capabilities"},
		{name: "too long replaced", sent: strings.Repeat("x", 129), path: "/v1/capabilities"},
		{name: "generated when absent", path: "/v1/capabilities"},
		{name: "generated on a public path", path: "/metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hd := tt.header
			if hd == nil {
				hd = http.Header{"X-Api-Key": {testKey}}
			}
			hd = hd.Clone()
			if tt.sent != "" {
				hd.Set("X-Correlation-Id", tt.sent)
			}
			resp, body := h.do(t, http.MethodGet, tt.path, nil, hd)
			got := resp.Header.Get("X-Correlation-Id")
			switch {
			case tt.echo && got != tt.sent:
				t.Errorf("X-Correlation-Id %q, want %q echoed (%d %s)", got, tt.sent, resp.StatusCode, body)
			case !tt.echo && (got == tt.sent || !uuidRe.MatchString(got)):
				t.Errorf("X-Correlation-Id %q for sent %q, want a generated UUID", got, tt.sent)
			}
		})
	}

	t.Run("generated client, on a stream", func(t *testing.T) {
		r := taskReq(uuid.New())
		h.submit(t, r)
		resp, err := h.client.StreamTask(h.ctx(t), r.TaskId, &client.StreamTaskParams{XCorrelationId: ptr("stream-7")})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if got := resp.Header.Get("X-Correlation-Id"); got != "stream-7" {
			t.Errorf("stream X-Correlation-Id %q, want stream-7", got)
		}
	})
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withHeartbeat("10ms"))
	h.fake.SetGated(true) // the task produces nothing: the stream is idle
	r := taskReq(uuid.New())
	h.submit(t, r)
	resp, err := h.client.StreamTask(h.ctx(t), r.TaskId, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == ": keep-alive" {
			break
		}
	}
	if sc.Err() != nil {
		t.Fatalf("reading the stream: %v", sc.Err())
	}
	h.cancel(t, r.TaskId)
}

// recTB records what the validating transport reports instead of failing the test.
type recTB struct {
	testing.TB
	msgs []string
}

func (r *recTB) Errorf(format string, args ...any) {
	r.msgs = append(r.msgs, strings.TrimSpace(strings.ReplaceAll(strings.TrimSpace(fmt.Sprintf(format, args...)), "\n", " ")))
}
func (r *recTB) Helper() {}

// The validating transport must catch what it claims to catch: a server breaking the contract
// in one way per case.
func TestValidatorCatchesViolations(t *testing.T) {
	t.Parallel()
	c := mustContract(t)
	env := `{"code":"NOT_FOUND","message":"x","retriable":false}`
	state := `{"task_id":"6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11","session_id":"0a9d7b6e-2f39-4f47-8f0e-8b1c0c0f7c22","state":"queued","priority":"batch","pool_id":"p","tokens_out":0,"created_ms":1}`
	tests := []struct {
		name    string
		method  string
		path    string
		corr    string
		handler func(w http.ResponseWriter)
		want    string // "" for a valid response
	}{
		{name: "valid", method: "GET", path: "/v1/tasks/" + uuid.NewString(), handler: jsonResp(200, state)},
		{name: "no correlation id", method: "GET", path: "/v1/tasks/" + uuid.NewString(), handler: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			_, _ = w.Write([]byte(state))
		}, want: "no X-Correlation-Id"},
		{name: "correlation id not echoed", corr: "abc", method: "GET", path: "/v1/tasks/" + uuid.NewString(), handler: jsonResp(200, state), want: "want the sent"},
		{name: "body off schema", method: "GET", path: "/v1/tasks/" + uuid.NewString(), handler: jsonResp(200, `{"state":"weird"}`), want: "getTask"},
		{name: "bad uuid format in body", method: "GET", path: "/v1/tasks/" + uuid.NewString(), handler: jsonResp(200, strings.Replace(state, "6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11", "nope", 1)), want: "getTask"},
		{name: "wrong content type", method: "GET", path: "/v1/tasks/" + uuid.NewString(), handler: func(w http.ResponseWriter) {
			w.Header().Set("X-Correlation-Id", uuid.NewString())
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(200)
		}, want: "getTask"},
		{name: "error not an envelope", method: "GET", path: "/v1/tasks/" + uuid.NewString(), handler: jsonResp(404, `{"error":"nope"}`), want: "getTask"},
		{name: "code and status disagree", method: "GET", path: "/v1/tasks/" + uuid.NewString(), handler: jsonResp(500, env), want: "the contract's table says 404"},
		{name: "429 without Retry-After", method: "POST", path: "/v1/tasks", handler: jsonResp(429, `{"code":"ADMISSION_REJECT","message":"x","retriable":true,"retry_after_ms":5,"policy_label":"reject"}`), want: "Retry-After"},
		{name: "stream with a wrong status", method: "GET", path: "/v1/tasks/" + uuid.NewString() + "/stream", handler: func(w http.ResponseWriter) {
			w.Header().Set("X-Correlation-Id", uuid.NewString())
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(201)
		}, want: "not declared"},
		{name: "unknown path answered 200", method: "GET", path: "/nope", handler: jsonResp(200, `{}`), want: "matches no operation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				tt.handler(w)
			}))
			defer srv.Close()
			base := &http.Transport{}
			defer base.CloseIdleConnections()
			rec := &recTB{TB: t}
			hc := &http.Client{Transport: &validatingTransport{base: base, c: c, fallback: rec}}
			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, bytes.NewReader(nil))
			if err != nil {
				t.Fatal(err)
			}
			if tt.corr != "" {
				req.Header.Set("X-Correlation-Id", tt.corr)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			got := strings.Join(rec.msgs, " | ")
			if tt.want == "" && got != "" {
				t.Fatalf("valid response reported: %s", got)
			}
			if tt.want != "" && !strings.Contains(got, tt.want) {
				t.Fatalf("want a violation containing %q, got %q", tt.want, got)
			}
		})
	}
}

func jsonResp(status int, body string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("X-Correlation-Id", uuid.NewString())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}
