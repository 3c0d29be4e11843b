package sim

import (
	"encoding/json"
	"net/http"
	"time"
)

// llamaRequest is the subset of llama.cpp's /completion body the simulator reads.
type llamaRequest struct {
	Prompt    json.RawMessage `json:"prompt"`
	NPredict  *int            `json:"n_predict"`
	MaxTokens *int            `json:"max_tokens"`
	Stream    bool            `json:"stream"`
}

const (
	llamaTokenPrefix = `data: {"content":"`
	llamaTokenMid    = `","tokens":[`
	llamaTokenSuffix = "],\"stop\":false}\n\n"
)

// llamaCompletion serves POST /completion.
func (s *Sim) llamaCompletion(w http.ResponseWriter, r *http.Request) {
	var req llamaRequest
	if !decodeBody(w, r, &req) {
		return
	}
	s.requests.Add(1)
	requested := 0
	switch {
	case req.NPredict != nil:
		requested = *req.NPredict
	case req.MaxTokens != nil:
		requested = *req.MaxTokens
	}
	n := s.tokensFor(requested)
	p := promptTokens(req.Prompt)
	ctx := r.Context()
	const endpoint = "/completion"
	fault := s.currentFault()
	if llamaPersonality.refuse(w, fault.Mode, p, n, s.opts.NCtx) {
		s.finish(endpoint, req.Stream, 0, errRefused)
		return
	}

	release, err := s.acquire(ctx)
	if err != nil {
		s.finish(endpoint, req.Stream, 0, err)
		return
	}
	defer release()
	start := time.Now()

	if !req.Stream {
		text := make([]byte, 0, n*StampLen)
		got, err := s.generate(ctx, n, fault, func(_ int, now time.Time) error {
			text = AppendStamp(text, now)
			return nil
		})
		if err == nil {
			body := make([]byte, 0, len(text)+256)
			body = append(body, `{"content":"`...)
			body = append(body, text...)
			body = append(body, `","stop":true,`...)
			body = s.appendLlamaTail(body, got, p, time.Since(start))
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
	buf := make([]byte, 0, 128)
	got, err := s.generate(ctx, n, fault, s.faultEmit(w, sw, fault, &llamaPersonality, func(i int, now time.Time) error {
		buf = append(buf[:0], llamaTokenPrefix...)
		buf = AppendStamp(buf, now)
		buf = append(buf, llamaTokenMid...)
		buf = appendInt(buf, int64(1000+i))
		buf = append(buf, llamaTokenSuffix...)
		return sw.frame(buf)
	}))
	if err == nil {
		buf = append(buf[:0], `data: {"content":"","stop":true,`...)
		buf = s.appendLlamaTail(buf, got, p, time.Since(start))
		buf = append(buf, "\n\n"...)
		err = sw.frame(buf)
	}
	release() // the slot is free before OnFinish reports the end
	s.finish(endpoint, true, got, err)
}

// appendLlamaTail appends the final object's fields after "stop":true, and its closing brace.
func (s *Sim) appendLlamaTail(b []byte, n, p int, elapsed time.Duration) []byte {
	b = append(b, `"stop_type":"limit","stopping_word":"","model":`...)
	b = append(b, s.modelJSON...)
	b = append(b, `,"tokens_predicted":`...)
	b = appendInt(b, int64(n))
	b = append(b, `,"tokens_evaluated":`...)
	b = appendInt(b, int64(p))
	b = append(b, `,"tokens_cached":0,"timings":{"prompt_n":`...)
	b = appendInt(b, int64(p))
	b = append(b, `,"prompt_ms":`...)
	b = appendMillis(b, s.opts.FirstTokenDelay)
	b = append(b, `,"predicted_n":`...)
	b = appendInt(b, int64(n))
	b = append(b, `,"predicted_ms":`...)
	b = appendMillis(b, elapsed)
	b = append(b, `}}`...)
	return b
}
