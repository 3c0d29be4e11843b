package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// tgiRequest is the subset of TGI's /generate, /generate_stream and compat POST / body the
// simulator reads.
type tgiRequest struct {
	Inputs     string `json:"inputs"`
	Parameters struct {
		MaxNewTokens *int  `json:"max_new_tokens"`
		Details      bool  `json:"details"`
		Seed         *int  `json:"seed"`
		DoSample     *bool `json:"do_sample"`
	} `json:"parameters"`
	Stream bool `json:"stream"`
}

var tgiPersonality = personality{
	endpoint:  "/generate_stream",
	malformed: []byte("data:{\"index\":2,\"token\n\n"),
}

// tgiRefuse answers a refusing fault as TGI does: validation and overload errors arrive as an
// error frame of a 200 event stream (TGI validates inside the stream); 503 as an error body.
func tgiRefuse(w http.ResponseWriter, stream bool, f FaultMode, prompt, tokens, nCtx int) bool {
	var msg, typ string
	var status int // of a non-stream answer; a stream's error frame comes with 200
	switch f {
	case FaultOverload:
		msg, typ, status = "Model is overloaded", "overloaded", http.StatusTooManyRequests
	case FaultUnavailable:
		writeJSON(w, http.StatusServiceUnavailable, []byte(`{"error":"the model is not ready","error_type":"unhealthy"}`))
		return true
	case FaultContextTooLong:
		msg = fmt.Sprintf("`inputs` tokens + `max_new_tokens` must be <= %d. Given: %d `inputs` tokens and %d `max_new_tokens`",
			nCtx, prompt, tokens)
		typ, status = "validation", http.StatusUnprocessableEntity
	default:
		return false
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // TGI's messages hold "<="
	_ = enc.Encode(map[string]string{"error": msg, "error_type": typ})
	b := bytes.TrimSpace(buf.Bytes())
	if stream {
		sw := newSSEWriter(w)
		_ = sw.frame(append(append([]byte("data:"), b...), "\n\n"...))
		return true
	}
	writeJSON(w, status, b)
	return true
}

// tgiGenerateStream serves POST /generate_stream.
func (s *Sim) tgiGenerateStream(w http.ResponseWriter, r *http.Request) {
	var req tgiRequest
	if !decodeBody(w, r, &req) {
		return
	}
	s.tgi(w, r, &req, true, false)
}

// tgiGenerate serves POST /generate: one JSON object after the whole generation.
func (s *Sim) tgiGenerate(w http.ResponseWriter, r *http.Request) {
	var req tgiRequest
	if !decodeBody(w, r, &req) {
		return
	}
	s.tgi(w, r, &req, false, false)
}

// tgiCompat serves TGI's POST /: a stream when "stream" is true, otherwise a JSON list of one
// generation (what the text-generation client's Client(url) posts to).
func (s *Sim) tgiCompat(w http.ResponseWriter, r *http.Request) {
	var req tgiRequest
	if !decodeBody(w, r, &req) {
		return
	}
	s.tgi(w, r, &req, req.Stream, true)
}

func (s *Sim) tgi(w http.ResponseWriter, r *http.Request, req *tgiRequest, stream, list bool) {
	s.requests.Add(1)
	requested := 0
	if req.Parameters.MaxNewTokens != nil {
		requested = *req.Parameters.MaxNewTokens
	}
	n := s.tokensFor(requested)
	p := max(countWords(req.Inputs), 1)
	ctx := r.Context()
	endpoint := r.URL.Path
	fault := s.currentFault()
	if tgiRefuse(w, stream, fault.Mode, p, n, s.opts.NCtx) {
		s.finish(endpoint, stream, 0, errRefused)
		return
	}
	release, err := s.acquire(ctx)
	if err != nil {
		s.finish(endpoint, stream, 0, err)
		return
	}
	defer release()

	text := make([]byte, 0, n*StampLen)
	if !stream {
		tokens := make([]byte, 0, n*64)
		got, err := s.generate(ctx, n, fault, func(i int, now time.Time) error {
			start := len(text)
			text = AppendStamp(text, now)
			if i > 0 {
				tokens = append(tokens, ',')
			}
			tokens = appendTGIToken(tokens, i, text[start:])
			return nil
		})
		if err == nil {
			body := make([]byte, 0, len(text)+len(tokens)+256)
			if list {
				body = append(body, '[')
			}
			body = append(body, `{"generated_text":"`...)
			body = append(body, text...)
			body = append(body, `","details":{"finish_reason":"length","generated_tokens":`...)
			body = appendInt(body, int64(got))
			body = append(body, `,"seed":null,"prefill":[],"tokens":[`...)
			body = append(body, tokens...)
			body = append(body, `]}}`...)
			if list {
				body = append(body, ']')
			}
			writeJSON(w, http.StatusOK, body)
		}
		release() // the slot is free before OnFinish reports the end
		s.finish(endpoint, false, got, err)
		return
	}

	sw := newSSEWriter(w)
	if err := sw.flush(); err != nil {
		release() // the slot is free before OnFinish reports the end
		s.finish(endpoint, true, 0, err)
		return
	}
	buf := make([]byte, 0, 256+n*StampLen)
	got, err := s.generate(ctx, n, fault, s.faultEmit(w, sw, fault, &tgiPersonality, func(i int, now time.Time) error {
		start := len(text)
		text = AppendStamp(text, now)
		buf = append(buf[:0], `data:{"index":`...)
		buf = appendInt(buf, int64(i+1))
		buf = append(buf, `,"token":`...)
		buf = appendTGIToken(buf, i, text[start:])
		if i < n-1 {
			buf = append(buf, `,"generated_text":null,"details":null,"top_tokens":null}`...)
		} else {
			buf = append(buf, `,"generated_text":"`...)
			buf = append(buf, text...)
			buf = append(buf, `","details":{"finish_reason":"length","generated_tokens":`...)
			buf = appendInt(buf, int64(n))
			buf = append(buf, `,"seed":null,"input_length":`...)
			buf = appendInt(buf, int64(p))
			buf = append(buf, `},"top_tokens":null}`...)
		}
		buf = append(buf, "\n\n"...)
		return sw.frame(buf)
	}))
	release() // the slot is free before OnFinish reports the end
	s.finish(endpoint, true, got, err)
}

// appendTGIToken appends {"id","text","logprob","special"} for token i (text needs no escaping:
// it is a stamp).
func appendTGIToken(b []byte, i int, text []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendInt(b, int64(1000+i))
	b = append(b, `,"text":"`...)
	b = append(b, text...)
	b = append(b, `","logprob":0.0,"special":false}`...)
	return b
}

// metrics serves GET /metrics with the load series of every personality's engine: vLLM,
// SGLang, TGI and llama.cpp names, all from the same counters (requests holding a slot,
// requests waiting for one, slots in use over total slots).
func (s *Sim) metrics(w http.ResponseWriter, _ *http.Request) {
	active, waiting := s.active.Load(), s.waiting.Load()
	usage := float64(active) / float64(s.opts.TotalSlots)
	b := fmt.Appendf(nil, `# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name=%[4]q} %[1]d
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=%[4]q} %[2]d
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name=%[4]q} %[3]g
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name=%[4]q} %[1]d
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name=%[4]q} %[2]d
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name=%[4]q} %[3]g
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size %[1]d
# TYPE tgi_queue_size gauge
tgi_queue_size %[2]d
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing %[1]d
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred %[2]d
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio %[3]g
`, active, waiting, usage, s.opts.Model)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write(b)
}
