package sim

import (
	"encoding/json"
	"net/http"
	"time"
)

// openaiRequest is the subset of an OpenAI completions / chat completions body the simulator
// reads.
type openaiRequest struct {
	Prompt        json.RawMessage `json:"prompt"`
	Messages      json.RawMessage `json:"messages"`
	MaxTokens     *int            `json:"max_tokens"`
	MaxCompletion *int            `json:"max_completion_tokens"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
		// ContinuousUsageStats (vLLM's and SGLang's extension): usage in every chunk too.
		ContinuousUsageStats bool `json:"continuous_usage_stats"`
	} `json:"stream_options"`
}

func (req *openaiRequest) requested() int {
	switch {
	case req.MaxTokens != nil:
		return *req.MaxTokens
	case req.MaxCompletion != nil:
		return *req.MaxCompletion
	}
	return 0
}

// openaiKind holds what differs between /v1/completions and /v1/chat/completions.
type openaiKind struct {
	endpoint    string
	idPrefix    string
	object      string // non-stream object
	chunkObject string // stream object
	tokenOpen   string // choice up to the token text
	tokenClose  string // choice after the token text
	final       string // the final chunk's choice
}

var (
	completionKind = openaiKind{
		endpoint:    "/v1/completions",
		idPrefix:    "cmpl-sim-",
		object:      "text_completion",
		chunkObject: "text_completion",
		tokenOpen:   `{"text":"`,
		tokenClose:  `","index":0,"logprobs":null,"finish_reason":null}`,
		final:       `{"text":"","index":0,"logprobs":null,"finish_reason":"length"}`,
	}
	chatKind = openaiKind{
		endpoint:    "/v1/chat/completions",
		idPrefix:    "chatcmpl-sim-",
		object:      "chat.completion",
		chunkObject: "chat.completion.chunk",
		tokenOpen:   `{"index":0,"delta":{"content":"`,
		tokenClose:  `"},"logprobs":null,"finish_reason":null}`,
		final:       `{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}`,
	}
)

// openaiCompletion serves POST /v1/completions.
func (s *Sim) openaiCompletion(w http.ResponseWriter, r *http.Request) {
	s.openai(w, r, &completionKind)
}

// openaiChat serves POST /v1/chat/completions.
func (s *Sim) openaiChat(w http.ResponseWriter, r *http.Request) { s.openai(w, r, &chatKind) }

func (s *Sim) openai(w http.ResponseWriter, r *http.Request, k *openaiKind) {
	var req openaiRequest
	if !decodeBody(w, r, &req) {
		return
	}
	s.requests.Add(1)
	n := s.tokensFor(req.requested())
	var p int
	if k == &chatKind {
		p = max(1, len(req.Messages)/4)
	} else {
		p = promptTokens(req.Prompt)
	}
	ctx := r.Context()
	fault := s.currentFault()
	if openaiPersonality.refuse(w, fault.Mode, p, n, s.opts.NCtx) {
		s.finish(k.endpoint, req.Stream, 0, errRefused)
		return
	}

	release, err := s.acquire(ctx)
	if err != nil {
		s.finish(k.endpoint, req.Stream, 0, err)
		return
	}
	defer release()

	// head is `{"id":"…","object":"…","created":…,"model":…,"choices":[` for this request.
	seq := s.seq.Add(1)
	object := k.object
	if req.Stream {
		object = k.chunkObject
	}
	head := make([]byte, 0, 128)
	head = append(head, `{"id":"`...)
	head = append(head, k.idPrefix...)
	head = appendInt(head, int64(seq))
	head = append(head, `","object":"`...)
	head = append(head, object...)
	head = append(head, `","created":`...)
	head = appendInt(head, time.Now().Unix())
	head = append(head, `,"model":`...)
	head = append(head, s.modelJSON...)
	head = append(head, `,"choices":[`...)

	if !req.Stream {
		text := make([]byte, 0, n*StampLen)
		got, err := s.generate(ctx, n, fault, func(_ int, now time.Time) error {
			text = AppendStamp(text, now)
			return nil
		})
		if err == nil {
			body := make([]byte, 0, len(head)+len(text)+256)
			body = append(body, head...)
			if k == &chatKind {
				body = append(body, `{"index":0,"message":{"role":"assistant","content":"`...)
				body = append(body, text...)
				body = append(body, `"},"logprobs":null,"finish_reason":"length"}]`...)
			} else {
				body = append(body, `{"text":"`...)
				body = append(body, text...)
				body = append(body, `","index":0,"logprobs":null,"finish_reason":"length"}]`...)
			}
			body = appendUsage(body, p, got)
			body = append(body, '}')
			writeJSON(w, http.StatusOK, body)
		}
		release() // the slot is free before OnFinish reports the end
		s.finish(k.endpoint, false, got, err)
		return
	}

	sw := newSSEWriter(w)
	buf := make([]byte, 0, len(head)+128)
	chunk := func(choice string) []byte {
		buf = append(buf[:0], "data: "...)
		buf = append(buf, head...)
		buf = append(buf, choice...)
		buf = append(buf, "]}\n\n"...)
		return buf
	}
	if k == &chatKind {
		err = sw.frame(chunk(`{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}`))
	} else {
		err = sw.flush()
	}
	if err != nil {
		release() // the slot is free before OnFinish reports the end
		s.finish(k.endpoint, true, 0, err)
		return
	}
	continuous := req.StreamOptions != nil && req.StreamOptions.IncludeUsage && req.StreamOptions.ContinuousUsageStats
	got, err := s.generate(ctx, n, fault, s.faultEmit(w, sw, fault, &openaiPersonality, func(i int, now time.Time) error {
		buf = append(buf[:0], "data: "...)
		buf = append(buf, head...)
		buf = append(buf, k.tokenOpen...)
		buf = AppendStamp(buf, now)
		buf = append(buf, k.tokenClose...)
		buf = append(buf, ']')
		if continuous { // the counts so far, this token included
			buf = appendUsage(buf, p, i+1)
		}
		buf = append(buf, "}\n\n"...)
		return sw.frame(buf)
	}))
	if err == nil {
		err = sw.frame(chunk(k.final))
	}
	if err == nil && req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		buf = append(buf[:0], "data: "...)
		buf = append(buf, head...)
		buf = append(buf, ']')
		buf = appendUsage(buf, p, got)
		buf = append(buf, "}\n\n"...)
		err = sw.frame(buf)
	}
	if err == nil {
		err = sw.frame([]byte("data: [DONE]\n\n"))
	}
	release() // the slot is free before OnFinish reports the end
	s.finish(k.endpoint, true, got, err)
}

// appendUsage appends `,"usage":{…}`.
func appendUsage(b []byte, p, n int) []byte {
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = appendInt(b, int64(p))
	b = append(b, `,"completion_tokens":`...)
	b = appendInt(b, int64(n))
	b = append(b, `,"total_tokens":`...)
	b = appendInt(b, int64(p+n))
	b = append(b, '}')
	return b
}
