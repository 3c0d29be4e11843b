package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/httpengine"
)

// DefaultIdleTimeout is Options.IdleTimeout's default.
const DefaultIdleTimeout = 30 * time.Second

// Flavor names the /metrics dialect of the server, for Load.
type Flavor string

// Flavors.
const (
	FlavorVLLM     Flavor = "vllm"
	FlavorSGLang   Flavor = "sglang"
	FlavorLlamaCpp Flavor = "llamacpp"
)

// metricNames are the running, waiting and KV usage series of each flavor.
var metricNames = map[Flavor][3]string{
	FlavorVLLM:     {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"},
	FlavorSGLang:   {"sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage"},
	FlavorLlamaCpp: {"llamacpp:requests_processing", "llamacpp:requests_deferred", "llamacpp:kv_cache_usage_ratio"},
}

// formerKVNames are the KV usage series of a flavor's older releases, read where the current
// one is absent: vLLM's before its rename (vllm-project/vllm #18354).
var formerKVNames = map[Flavor]string{
	FlavorVLLM: "vllm:gpu_cache_usage_perc",
}

// Options configures a Replica.
type Options struct {
	// BaseURL is the server's root without /v1, e.g. "http://127.0.0.1:8000".
	BaseURL string
	// APIKey, when set, is sent as "Authorization: Bearer <key>".
	APIKey string
	// Model is the model name to request; empty: one of the ids /v1/models lists (see Prefer).
	Model string
	// Prefer are the names to look for among the ids /v1/models lists when Model is empty, in
	// order (the pool's model_ref and model_id): a server that serves several models (Ollama)
	// is asked for the pool's, not for whichever it lists first. None listed: the first id.
	Prefer []string
	// Flavor selects the /metrics names Load reads; empty: every known flavor is tried.
	Flavor Flavor
	// Client sends the requests; it must not set an overall Timeout. Default: 5 s dial timeout,
	// keep-alives, no proxy, no compression.
	Client *http.Client
	// IdleTimeout bounds the wait for each chunk (the first one included) and each GET.
	IdleTimeout time.Duration
	// MaxIdleConns bounds the connections kept alive for streamed requests when Client is nil
	// (the replica's parallel slots); ≤ 0: 16. See httpengine.Conns.
	MaxIdleConns int
	// Logger receives debug records. Default: discard.
	Logger *slog.Logger
}

// Replica is one OpenAI-compatible endpoint, safe for concurrent use.
type Replica struct {
	base   string
	client *http.Client
	http   *httpengine.Client
	log    *slog.Logger
	flavor Flavor

	mu         sync.Mutex
	model      string // configured or discovered; "" until discovered
	prefer     []string
	discovered bool // model came from /v1/models: asked again after a 404 (the engine may have been replaced)
}

var (
	_ engine.Replica      = (*Replica)(nil)
	_ engine.ConnReporter = (*Replica)(nil)
	_ engine.Identifier   = (*Replica)(nil)
	_ engine.LoadProber   = (*Replica)(nil)
)

// New returns a Replica for opts.
func New(opts Options) *Replica {
	r := &Replica{base: strings.TrimRight(opts.BaseURL, "/"), client: opts.Client, log: opts.Logger,
		flavor: opts.Flavor, model: opts.Model, prefer: opts.Prefer}
	var conns *httpengine.Conns
	if r.client == nil {
		r.client = httpengine.DefaultHTTPClient()
		conns = httpengine.NewConns(r.base, opts.MaxIdleConns)
		conns.SetLogger(opts.Logger)
	}
	idle := opts.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	r.http = &httpengine.Client{Name: "openai", Unit: "chunk", EOF: "stream ended before its end", HTTP: r.client,
		Idle: idle, Auth: httpengine.Bearer(opts.APIKey), OnStatus: statusError, Conns: conns}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
	// ContinuousUsageStats (vLLM's and SGLang's extension; other servers ignore it): usage in
	// every chunk, asked for an open-ended request only. The daemon stops reading one at its
	// MaxTokens, before the last chunk's usage, and the prompt's count then comes from the
	// chunks already read.
	ContinuousUsageStats bool `json:"continuous_usage_stats,omitempty"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// request is the body of /v1/completions and /v1/chat/completions.
type request struct {
	Model         string        `json:"model"`
	Prompt        *string       `json:"prompt,omitempty"`
	Messages      []message     `json:"messages,omitempty"`
	MaxTokens     *int          `json:"max_tokens,omitempty"`
	Stream        bool          `json:"stream"`
	StreamOptions streamOptions `json:"stream_options"`
	Seed          *int64        `json:"seed,omitempty"`
	Temperature   *float64      `json:"temperature,omitempty"`
	TopP          *float64      `json:"top_p,omitempty"`
}

var zero, one = 0.0, 1.0

// Generate implements engine.Replica (see the package documentation for the protocol).
func (r *Replica) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	start := time.Now()
	res, err := r.generate(ctx, req, emit)
	if err != nil {
		r.log.DebugContext(ctx, "openai: generation failed", "task", req.TaskID, "tokens", res.TokensOut,
			"kind", engine.KindOf(err), "err", err, "elapsed", time.Since(start))
		return res, err
	}
	r.log.DebugContext(ctx, "openai: generation done", "task", req.TaskID, "tokens_in", res.TokensIn,
		"tokens_out", res.TokensOut, "stop", res.Stop, "elapsed", time.Since(start))
	return res, nil
}

func (r *Replica) generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	if err := ctx.Err(); err != nil {
		return engine.Result{}, err
	}
	if req.MaxTokens < 1 {
		return engine.Result{}, engine.Errorf(engine.KindInvalidRequest, "openai: max tokens %d must be positive", req.MaxTokens)
	}
	body := request{Stream: true, StreamOptions: streamOptions{IncludeUsage: true}, Seed: req.Seed}
	if req.OpenEnded { // no max_tokens: vLLM refuses a prompt plus max_tokens beyond max_model_len
		body.StreamOptions.ContinuousUsageStats = true
	} else {
		body.MaxTokens = &req.MaxTokens
	}
	path := "/v1/completions"
	switch req.Workload {
	case "", engine.WorkloadCompletion:
		p := req.Prompt
		body.Prompt = &p
	case engine.WorkloadChat:
		if len(req.Messages) == 0 {
			return engine.Result{}, engine.Errorf(engine.KindInvalidRequest, "openai: a chat needs at least one message")
		}
		path = "/v1/chat/completions"
		body.Messages = make([]message, len(req.Messages))
		for i, m := range req.Messages {
			body.Messages[i] = message{Role: m.Role, Content: m.Content}
		}
	default:
		return engine.Result{}, engine.Errorf(engine.KindInvalidRequest, "openai: workload %q is not served", req.Workload)
	}
	if req.Deterministic {
		body.Temperature, body.TopP = &zero, &one
	}
	model, err := r.modelName(ctx)
	if err != nil {
		return engine.Result{}, err
	}
	body.Model = model
	b, err := json.Marshal(body)
	if err != nil {
		return engine.Result{}, engine.Errorf(engine.KindInternal, "openai: encode request: %w", err)
	}

	call := r.http.Begin(ctx)
	defer call.End() // closes the connection: the engine aborts the request
	resp, err := call.PostStream(r.base+path, path, b)
	if err != nil {
		var se *statusErr
		if errors.As(err, &se) && se.code == http.StatusNotFound {
			r.forgetModel(model)
		}
		return engine.Result{}, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return engine.Result{}, engine.Errorf(engine.KindProtocol, "openai: %s answered %q, want text/event-stream", path, ct)
	}

	var res engine.Result
	var text []byte  // the token text handed to emit
	var failed error // why the callback stopped the stream early
	finished, done := false, false
	call.Rearm()
	err = httpengine.NewEventReader(resp.Body).WithErrorField().Each(func(name, data []byte) (bool, error) {
		call.Pause()
		if err := ctx.Err(); err != nil {
			failed = err
			return true, nil
		}
		c, derr := decodeChunk(data)
		if string(name) == "error" && derr == nil && !c.hasError {
			c, derr = bareError(data) // llama-server's error field: the error object itself
		}
		switch {
		case derr != nil:
			failed = engine.Errorf(engine.KindProtocol, "openai: %v", derr)
		case string(name) == "error" && !c.hasError:
			failed = engine.Errorf(engine.KindEngineFailure, "openai: engine error event: %.512s", data)
		case c.hasError:
			failed = chunkError(c)
		case c.finishReason == "error": // vLLM: a request-level failure of the engine's (a KV load, ...)
			failed = engine.Errorf(engine.KindEngineFailure, "openai: the engine ended the generation with finish_reason error after %d tokens", res.TokensOut)
		case c.finishReason == "abort": // vLLM: the engine aborted the request
			failed = engine.Errorf(engine.KindWorkerReset, "openai: the engine aborted the generation after %d tokens", res.TokensOut)
		}
		if failed != nil {
			return true, nil
		}
		if c.done {
			done = true
			return true, nil
		}
		if c.hasUsage { // before emit: a cut there ends the stream before this chunk's usage is read
			res.TokensIn, res.TokensCached = c.promptTokens, c.cachedTokens
		}
		if c.text != "" {
			text = append(text[:0], c.text...) // a view for emit, reused for the next chunk
			if err := emit(engine.Token{Text: text, Index: res.TokensOut}); err != nil {
				failed = err
				return true, nil
			}
			res.TokensOut++
		}
		if c.finishReason != "" {
			finished = true
			res.Stop = stopReason(c.finishReason)
		}
		if c.hasUsage {
			if c.completionTokens > 0 || res.TokensOut == 0 {
				res.TokensOut = c.completionTokens
			}
		}
		call.Rearm()
		return false, nil
	})
	call.Pause()
	switch {
	case failed != nil:
		return res, failed
	case done:
	case errors.Is(err, io.EOF) && finished && ctx.Err() == nil:
		// a server that ends without [DONE] after a finish_reason
	default:
		return res, call.StreamError(err)
	}
	if !finished {
		return res, engine.Errorf(engine.KindWorkerReset, "openai: stream ended without a finish_reason")
	}
	httpengine.Complete(resp.Body) // keep the connection if the body ends here
	return res, nil
}

// stopReason maps OpenAI's finish_reason.
func stopReason(s string) engine.StopReason {
	switch s {
	case "length":
		return engine.StopLimit
	case "stop":
		return engine.StopEOS
	default:
		return engine.StopReason(s)
	}
}

// kindOf maps an HTTP status, or an in-stream error's code and type. A 404 is the replica's:
// the model it was asked for comes from the pool's configuration or the server's own list,
// never from the task (vLLM: "The model `m` does not exist").
func kindOf(code int, typ string) engine.Kind {
	switch {
	case code == http.StatusServiceUnavailable, code == http.StatusUnauthorized, code == http.StatusForbidden,
		code == http.StatusNotFound:
		return engine.KindPoolUnavailable
	case code == http.StatusTooManyRequests:
		return engine.KindOverload
	case code >= 400 && code < 500:
		return engine.KindInvalidRequest
	case code >= 500:
		return engine.KindEngineFailure
	}
	t := strings.ToLower(typ)
	switch {
	case strings.Contains(t, "invalid_request"), strings.Contains(t, "badrequest"), strings.Contains(t, "exceed_context"),
		strings.Contains(t, "not_supported"):
		return engine.KindInvalidRequest
	case strings.Contains(t, "rate_limit"), strings.Contains(t, "overload"):
		return engine.KindOverload
	case strings.Contains(t, "unavailable"):
		return engine.KindPoolUnavailable
	}
	return engine.KindEngineFailure
}

func chunkError(c chunk) error {
	msg := c.errMsg
	if msg == "" {
		msg = "engine reported an error without a message"
	}
	return engine.Errorf(kindOf(c.errCode, c.errType), "openai: engine error in stream: %.1024s", msg)
}

// statusError maps a non-200 answer, with the server's message when its body has one.
func statusError(ctx context.Context, resp *http.Response) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	msg, typ := errorBody(b)
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	kind := kindOf(resp.StatusCode, typ)
	switch {
	case resp.StatusCode < 400:
		kind = engine.KindProtocol
	case resp.StatusCode == http.StatusServiceUnavailable && busy(resp, msg):
		// A healthy server whose own queue is full (Ollama's "server busy ... maximum pending
		// requests exceeded", a Retry-After): an overload, not a fault for the breaker.
		kind = engine.KindOverload
	}
	return &statusErr{code: resp.StatusCode, err: engine.Errorf(kind, "openai: engine answered %d: %s", resp.StatusCode, msg)}
}

// statusErr is a non-200 answer's error, with its status (a 404 makes a discovered model be
// asked again).
type statusErr struct {
	code int
	err  error
}

func (e *statusErr) Error() string { return e.err.Error() }
func (e *statusErr) Unwrap() error { return e.err }

// busy reports whether a 503 says the server is busy rather than down: a Retry-After, or words
// of a full queue.
func busy(resp *http.Response, msg string) bool {
	if resp.Header.Get("Retry-After") != "" {
		return true
	}
	m := strings.ToLower(msg)
	for _, w := range []string{"busy", "overload", "queue is full", "maximum pending", "queue size"} {
		if strings.Contains(m, w) {
			return true
		}
	}
	return false
}

// bareError decodes an error object that is the event's data itself, as llama-server's error
// field carries it: {"code":400,"message":...,"type":...}.
func bareError(data []byte) (chunk, error) {
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Type    string `json:"type"`
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return chunk{}, fmt.Errorf("error event: %w", err)
	}
	if e.Message == "" && e.Code == 0 && e.Type == "" {
		return chunk{}, nil
	}
	return chunk{hasError: true, errCode: e.Code, errType: e.Type, errMsg: e.Message}, nil
}

// errorBody reads {"error":{"message","type"}}, vLLM's {"object":"error","message","type"} or
// FastAPI's {"detail": "..."}; otherwise the text itself.
func errorBody(b []byte) (msg, typ string) {
	var body struct {
		Error *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
		Message string `json:"message"`
		Type    string `json:"type"`
		Detail  any    `json:"detail"`
	}
	if json.Unmarshal(b, &body) == nil {
		switch {
		case body.Error != nil:
			return body.Error.Message, body.Error.Type
		case body.Message != "":
			return body.Message, body.Type
		case body.Detail != nil:
			return fmt.Sprint(body.Detail), ""
		}
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	return s, ""
}

// get sends a GET of path bounded by IdleTimeout and returns the body (at most 16 MiB) of a
// 200 answer.
func (r *Replica) get(ctx context.Context, path string) ([]byte, error) {
	return r.http.Get(ctx, r.base+path, path)
}

// EngineConns reports the replica's kept engine connections (engine.ConnReporter).
func (r *Replica) EngineConns() (engine.ConnStats, bool) { return r.http.Conns.EngineConns() }

// Health implements engine.Replica with GET /health: 200 is live and ready; any other status is
// live, not ready (vLLM and llama-server answer 503 while loading); an unreachable server is not
// live. A server that has no /health (404, e.g. Ollama) is ready when GET /v1/models answers
// 200. The error is non-nil only when ctx ends.
func (r *Replica) Health(ctx context.Context) (engine.Health, error) {
	_, err := r.get(ctx, "/health")
	var hs *httpengine.StatusError
	if errors.As(err, &hs) && hs.Code == http.StatusNotFound {
		// A server without /health (Ollama): ready when it lists its models.
		_, err = r.get(ctx, "/v1/models")
	}
	return httpengine.Health(ctx, err)
}

// models asks /v1/models for the served model ids.
func (r *Replica) models(ctx context.Context) ([]string, error) {
	b, err := r.get(ctx, "/v1/models")
	if err != nil {
		return nil, err
	}
	var body struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, engine.Errorf(engine.KindProtocol, "openai: decode /v1/models: %w", err)
	}
	ids := make([]string, 0, len(body.Data))
	for _, d := range body.Data {
		if d.ID != "" {
			ids = append(ids, d.ID)
		}
	}
	return ids, nil
}

// modelName returns the configured model, or the one chosen among those the server lists
// (asked once).
func (r *Replica) modelName(ctx context.Context) (string, error) {
	r.mu.Lock()
	m := r.model
	r.mu.Unlock()
	if m != "" {
		return m, nil
	}
	ids, err := r.models(ctx)
	if err != nil {
		return "", err
	}
	if len(ids) == 0 {
		return "", engine.Errorf(engine.KindPoolUnavailable, "openai: /v1/models lists no model")
	}
	r.mu.Lock()
	if r.model == "" {
		r.model, r.discovered = r.choose(ids), true
	}
	m = r.model
	r.mu.Unlock()
	return m, nil
}

// choose is the id among ids (not empty) to request: the first of r.prefer listed, else the
// first listed.
func (r *Replica) choose(ids []string) string {
	for _, p := range r.prefer {
		if p != "" && slices.Contains(ids, p) {
			return p
		}
	}
	return ids[0]
}

// forgetModel forgets a discovered model m after the engine answered that it serves no such
// model: the server at the URL was replaced by one that serves another, and the next
// generation asks /v1/models again. A configured model is the operator's: it stays.
func (r *Replica) forgetModel(m string) {
	r.mu.Lock()
	if r.discovered && r.model == m {
		r.model, r.discovered = "", false
	}
	r.mu.Unlock()
}

// Identify implements engine.Identifier: the model of /v1/models it requests and, where the server
// answers it (vLLM), the version of /version.
func (r *Replica) Identify(ctx context.Context) (engine.Identity, error) {
	ids, err := r.models(ctx)
	if err != nil {
		return engine.Identity{}, err
	}
	var id engine.Identity
	if len(ids) > 0 {
		id.ModelID = r.choose(ids)
	}
	if b, err := r.get(ctx, "/version"); err == nil {
		var v struct {
			Version string `json:"version"`
		}
		if json.Unmarshal(b, &v) == nil {
			id.Version = v.Version
		}
	}
	return id, nil
}

// Version is Identify's version, for the pool registry.
func (r *Replica) Version(ctx context.Context) (string, error) {
	id, err := r.Identify(ctx)
	return id.Version, err
}

// Load implements engine.LoadProber from /metrics, with the names of the replica's flavor (or
// of the first flavor whose names appear, when none is set). Unknown values are -1.
func (r *Replica) Load(ctx context.Context) (engine.Load, error) {
	b, err := r.get(ctx, "/metrics")
	if err != nil {
		return engine.Load{}, err
	}
	flavors := []Flavor{r.flavor}
	if r.flavor == "" {
		flavors = []Flavor{FlavorVLLM, FlavorSGLang, FlavorLlamaCpp}
	}
	for _, f := range flavors {
		n, ok := metricNames[f]
		if !ok {
			continue
		}
		names := n[:]
		former, hasFormer := formerKVNames[f]
		if hasFormer {
			names = append(names, former)
		}
		m, err := engine.ReadMetrics(bytes.NewReader(b), names...)
		if err != nil {
			return engine.Load{}, engine.Errorf(engine.KindProtocol, "openai: %w", err)
		}
		if _, current := m[n[2]]; !current && hasFormer {
			if v, ok := m[former]; ok { // an older release: its name only
				m[n[2]] = v
			}
		}
		if len(m) > 0 || r.flavor != "" {
			return engine.LoadFromMetrics(m, n[0], n[1], n[2]), nil
		}
	}
	return engine.Load{Running: -1, Waiting: -1, KVUsage: -1}, nil
}
