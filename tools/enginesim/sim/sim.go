package sim

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultModel         = "enginesim"
	DefaultTokens        = 16    // tokens when a request names none (OpenAI's max_tokens default)
	DefaultMaxTokens     = 32768 // cap on tokens per request
	DefaultNCtx          = 4096
	DefaultUnlimitedSlot = 64 // total_slots reported by /props when Slots is 0 (unlimited)
	maxBodyBytes         = 8 << 20
)

// Options configures a simulator. The zero value is usable: unlimited slots, no delays, the
// request's own token count.
type Options struct {
	// Logger receives one debug line per finished request; nil discards.
	Logger *slog.Logger
	// Model is the model id reported by /v1/models and in OpenAI responses (DefaultModel).
	Model string
	// Tokens, when positive, fixes the number of tokens of every generation, ignoring the
	// request's n_predict / max_tokens.
	Tokens int
	// DefaultTokens is used when a request does not name a positive token count
	// (DefaultTokens when 0).
	DefaultTokens int
	// MaxTokens caps the tokens of one generation (DefaultMaxTokens when 0).
	MaxTokens int
	// FirstTokenDelay is the time from acquiring a slot to the first token (prefill).
	FirstTokenDelay time.Duration
	// TokenDelay is the time between consecutive tokens (decode).
	TokenDelay time.Duration
	// Slots bounds concurrent generations; further requests wait for a slot. 0 is unlimited.
	Slots int
	// TotalSlots is the total_slots reported by /props; 0 reports Slots, or
	// DefaultUnlimitedSlot when Slots is 0.
	TotalSlots int
	// NCtx is the n_ctx reported by /props (DefaultNCtx when 0).
	NCtx int
	// OnFinish, when set, is called once per generation request after it ended (completed,
	// canceled or failed), on the request's goroutine before the handler returns.
	OnFinish func(Finish)
	// Fault is injected into every generation request until SetFault replaces it.
	Fault Fault
	// OnCrash is called by FaultCrash after it cut the connection; the enginesim command
	// exits from it. Nil: only the connection dies.
	OnCrash func()
}

// Finish describes one ended generation request; see Options.OnFinish.
type Finish struct {
	Endpoint string // "/completion", "/v1/completions" or "/v1/chat/completions"
	Stream   bool
	Tokens   int   // tokens emitted
	Err      error // nil when all tokens were emitted; the context's or the write's error otherwise
}

// Stats is a snapshot of the simulator's counters, also served as JSON by GET /sim/stats.
type Stats struct {
	Active   int64  `json:"active"`   // generations holding a slot
	Waiting  int64  `json:"waiting"`  // requests waiting for a slot
	Requests uint64 `json:"requests"` // generation requests received
	Tokens   uint64 `json:"tokens"`   // tokens emitted
	Aborted  uint64 `json:"aborted"`  // generations stopped early (disconnect or write error)
}

// Sim is the simulator; it implements http.Handler.
type Sim struct {
	opts      Options
	log       *slog.Logger
	mux       *http.ServeMux
	slots     chan struct{}
	created   int64
	modelJSON []byte
	props     []byte
	models    []byte
	info      []byte

	seq      atomic.Uint64
	active   atomic.Int64
	waiting  atomic.Int64
	requests atomic.Uint64
	tokens   atomic.Uint64
	aborted  atomic.Uint64
	fault    atomic.Pointer[Fault]
}

// NewHandler returns a simulator as an http.Handler.
func NewHandler(opts Options) http.Handler { return New(opts) }

// New returns a simulator with opts' zero fields defaulted.
func New(opts Options) *Sim {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Model == "" {
		opts.Model = DefaultModel
	}
	if opts.DefaultTokens <= 0 {
		opts.DefaultTokens = DefaultTokens
	}
	if opts.MaxTokens <= 0 {
		opts.MaxTokens = DefaultMaxTokens
	}
	if opts.NCtx <= 0 {
		opts.NCtx = DefaultNCtx
	}
	if opts.TotalSlots <= 0 {
		opts.TotalSlots = opts.Slots
		if opts.TotalSlots <= 0 {
			opts.TotalSlots = DefaultUnlimitedSlot
		}
	}
	s := &Sim{opts: opts, log: opts.Logger, created: time.Now().Unix()}
	s.SetFault(opts.Fault)
	if opts.Slots > 0 {
		s.slots = make(chan struct{}, opts.Slots)
	}
	s.modelJSON, _ = json.Marshal(opts.Model)
	s.props, _ = json.Marshal(map[string]any{
		"total_slots":                 opts.TotalSlots,
		"default_generation_settings": map[string]any{"n_ctx": opts.NCtx},
		"build_info":                  "enginesim",
		"model_path":                  opts.Model,
	})
	s.info, _ = json.Marshal(map[string]any{
		"model_id": opts.Model, "model_sha": nil, "model_dtype": "float16", "model_device_type": "cpu",
		"model_pipeline_tag": "text-generation", "max_concurrent_requests": opts.TotalSlots, "max_best_of": 1,
		"max_stop_sequences": 4, "max_input_tokens": opts.NCtx - 1, "max_total_tokens": opts.NCtx,
		"validation_workers": 2, "max_client_batch_size": 4, "router": "text-generation-router",
		"version": "enginesim", "sha": nil, "docker_label": nil,
	})
	s.models, _ = json.Marshal(map[string]any{
		"object": "list",
		"data": []map[string]any{{
			"id": opts.Model, "object": "model", "created": s.created, "owned_by": "enginesim",
		}},
	})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /props", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.props) })
	mux.HandleFunc("POST /completion", s.llamaCompletion)
	mux.HandleFunc("POST /completions", s.llamaCompletion)
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.models) })
	mux.HandleFunc("POST /v1/completions", s.openaiCompletion)
	mux.HandleFunc("POST /v1/chat/completions", s.openaiChat)
	mux.HandleFunc("POST /generate_stream", s.tgiGenerateStream)
	mux.HandleFunc("POST /generate", s.tgiGenerate)
	mux.HandleFunc("POST /{$}", s.tgiCompat)
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.info) })
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("GET /sim/stats", func(w http.ResponseWriter, _ *http.Request) {
		b, _ := json.Marshal(s.Stats())
		writeJSON(w, http.StatusOK, b)
	})
	s.mux = mux
	return s
}

// ServeHTTP implements http.Handler.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Stats returns a snapshot of the counters.
func (s *Sim) Stats() Stats {
	return Stats{
		Active:   s.active.Load(),
		Waiting:  s.waiting.Load(),
		Requests: s.requests.Load(),
		Tokens:   s.tokens.Load(),
		Aborted:  s.aborted.Load(),
	}
}

func (s *Sim) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

// tokensFor resolves the number of tokens to generate from the request's count (<= 0: none).
func (s *Sim) tokensFor(requested int) int {
	n := requested
	switch {
	case s.opts.Tokens > 0:
		n = s.opts.Tokens
	case n <= 0:
		n = s.opts.DefaultTokens
	}
	return min(n, s.opts.MaxTokens)
}

// acquire waits for a slot; it returns a release func, or ctx's error.
func (s *Sim) acquire(ctx context.Context) (func(), error) {
	if s.slots != nil {
		select {
		case s.slots <- struct{}{}:
		default:
			s.waiting.Add(1)
			select {
			case s.slots <- struct{}{}:
				s.waiting.Add(-1)
			case <-ctx.Done():
				s.waiting.Add(-1)
				return nil, ctx.Err()
			}
		}
	}
	s.active.Add(1)
	var once sync.Once
	return func() { // idempotent: handlers release before reporting the end, and defer it too
		once.Do(func() {
			s.active.Add(-1)
			if s.slots != nil {
				<-s.slots
			}
		})
	}, nil
}

// generate paces n tokens, calling emit for each with its index and emission time. It returns
// how many tokens were emitted and why it stopped early (ctx's error or emit's), if it did.
func (s *Sim) generate(ctx context.Context, n int, f Fault, emit func(i int, now time.Time) error) (int, error) {
	first := s.opts.FirstTokenDelay
	if f.Mode == FaultSlowFirstToken {
		first += f.Delay
	}
	start := time.Now()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	done := ctx.Done()
	for i := range n {
		if due := first + time.Duration(i)*s.opts.TokenDelay; due > 0 {
			if d := due - time.Since(start); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				select {
				case <-done:
					return i, ctx.Err()
				case <-timer.C:
				}
			}
		}
		select {
		case <-done:
			return i, ctx.Err()
		default:
		}
		if err := emit(i, time.Now()); err != nil {
			return i, err
		}
		s.tokens.Add(1)
	}
	return n, nil
}

// finish records the end of a generation request.
func (s *Sim) finish(endpoint string, stream bool, tokens int, err error) {
	if err != nil {
		s.aborted.Add(1)
	}
	s.log.Debug("generation ended", "endpoint", endpoint, "stream", stream, "tokens", tokens, "err", err)
	if s.opts.OnFinish != nil {
		s.opts.OnFinish(Finish{Endpoint: endpoint, Stream: stream, Tokens: tokens, Err: err})
	}
}

// sseWriter writes whole frames and flushes after each.
type sseWriter struct {
	w     io.Writer
	flush func() error
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{w: w}
	if f, ok := w.(http.Flusher); ok {
		sw.flush = func() error { f.Flush(); return nil }
	} else {
		sw.flush = http.NewResponseController(w).Flush
	}
	return sw
}

func (sw *sseWriter) frame(b []byte) error {
	if _, err := sw.w.Write(b); err != nil {
		return err
	}
	return sw.flush()
}

// decodeBody decodes a JSON request body into v, answering 400 itself on failure.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid request body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError answers in the error shape shared by llama.cpp's server and OpenAI.
func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"code": status, "message": msg, "type": "invalid_request_error",
	}})
	writeJSON(w, status, b)
}

// promptTokens estimates the prompt's token count: words of a string, elements of an array
// (token ids, or strings counted by words); at least 1.
func promptTokens(raw json.RawMessage) int {
	n := 0
	if len(raw) > 0 {
		switch raw[0] {
		case '"':
			var s string
			if json.Unmarshal(raw, &s) == nil {
				n = countWords(s)
			}
		case '[':
			var items []json.RawMessage
			if json.Unmarshal(raw, &items) == nil {
				for _, it := range items {
					if len(it) > 0 && it[0] == '"' {
						n += promptTokens(it)
					} else {
						n++
					}
				}
			}
		}
	}
	return max(n, 1)
}

func countWords(s string) int {
	n, in := 0, false
	for i := 0; i < len(s); i++ {
		sp := s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'
		if !sp && !in {
			n++
		}
		in = !sp
	}
	return n
}

func appendInt(b []byte, v int64) []byte { return strconv.AppendInt(b, v, 10) }

func appendMillis(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', 3, 64)
}
