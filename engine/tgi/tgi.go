package tgi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/httpengine"
)

// DefaultIdleTimeout is Options.IdleTimeout's default.
const DefaultIdleTimeout = 30 * time.Second

// TGI's /metrics names read by Load: requests in the running batch, requests queued.
const (
	MetricBatchSize = "tgi_batch_current_size"
	MetricQueueSize = "tgi_queue_size"
)

// Options configures a Replica.
type Options struct {
	// BaseURL is the server's root, e.g. "http://127.0.0.1:3000".
	BaseURL string
	// APIKey, when set, is sent as "Authorization: Bearer <key>" (TGI's --api-key).
	APIKey string
	// Client sends the requests; it must not set an overall Timeout. Default: 5 s dial timeout,
	// keep-alives, no proxy, no compression.
	Client *http.Client
	// IdleTimeout bounds the wait for each frame (the first one included) and each GET.
	IdleTimeout time.Duration
	// MaxIdleConns bounds the connections kept alive for streamed requests when Client is nil
	// (the replica's parallel slots); ≤ 0: 16. See httpengine.Conns.
	MaxIdleConns int
	// Logger receives debug records. Default: discard.
	Logger *slog.Logger
}

// Replica is one TGI endpoint, safe for concurrent use.
type Replica struct {
	base   string
	client *http.Client
	http   *httpengine.Client
	log    *slog.Logger
}

var (
	_ engine.Replica      = (*Replica)(nil)
	_ engine.ConnReporter = (*Replica)(nil)
	_ engine.Identifier   = (*Replica)(nil)
	_ engine.LoadProber   = (*Replica)(nil)
)

// New returns a Replica for opts.
func New(opts Options) *Replica {
	r := &Replica{base: strings.TrimRight(opts.BaseURL, "/"), client: opts.Client, log: opts.Logger}
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
	r.http = &httpengine.Client{Name: "tgi", Unit: "frame", EOF: "stream ended before its last frame", HTTP: r.client,
		Idle: idle, Auth: httpengine.Bearer(opts.APIKey), OnStatus: statusError, Conns: conns}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r
}

// parameters is the "parameters" object of /generate_stream.
type parameters struct {
	MaxNewTokens        *int   `json:"max_new_tokens,omitempty"`
	Details             bool   `json:"details"`
	DecoderInputDetails bool   `json:"decoder_input_details"`
	DoSample            bool   `json:"do_sample"`
	Seed                *int64 `json:"seed,omitempty"`
	ReturnFullText      bool   `json:"return_full_text"`
}

type request struct {
	Inputs     string     `json:"inputs"`
	Parameters parameters `json:"parameters"`
}

// Generate implements engine.Replica (see the package documentation for the protocol).
func (r *Replica) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	start := time.Now()
	res, err := r.generate(ctx, req, emit)
	if err != nil {
		r.log.DebugContext(ctx, "tgi: generation failed", "task", req.TaskID, "tokens", res.TokensOut,
			"kind", engine.KindOf(err), "err", err, "elapsed", time.Since(start))
		return res, err
	}
	r.log.DebugContext(ctx, "tgi: generation done", "task", req.TaskID, "tokens_in", res.TokensIn,
		"tokens_out", res.TokensOut, "stop", res.Stop, "elapsed", time.Since(start))
	return res, nil
}

func (r *Replica) generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	if err := ctx.Err(); err != nil {
		return engine.Result{}, err
	}
	if req.MaxTokens < 1 {
		return engine.Result{}, engine.Errorf(engine.KindInvalidRequest, "tgi: max tokens %d must be positive", req.MaxTokens)
	}
	if req.Workload != "" && req.Workload != engine.WorkloadCompletion {
		return engine.Result{}, engine.Errorf(engine.KindInvalidRequest, "tgi: workload %q is not served", req.Workload)
	}
	// Sampling is TGI's default (do_sample false: greedy) unless the request is not
	// deterministic and names a seed, which only matters when sampling.
	body := request{Inputs: req.Prompt, Parameters: parameters{Details: true}}
	if !req.OpenEnded { // else none: TGI then generates to max_total_tokens, and refuses more
		body.Parameters.MaxNewTokens = &req.MaxTokens
	}
	if !req.Deterministic && req.Seed != nil {
		body.Parameters.DoSample, body.Parameters.Seed = true, req.Seed
	}
	b, err := json.Marshal(body)
	if err != nil {
		return engine.Result{}, engine.Errorf(engine.KindInternal, "tgi: encode request: %w", err)
	}

	call := r.http.Begin(ctx)
	defer call.End() // closes the connection: TGI drops the request from its batch
	const path = "/generate_stream"
	resp, err := call.PostStream(r.base+path, path, b)
	if err != nil {
		return engine.Result{}, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return engine.Result{}, engine.Errorf(engine.KindProtocol, "tgi: %s answered %q, want text/event-stream", path, ct)
	}

	var res engine.Result
	var text []byte  // the token text handed to emit
	var failed error // why the callback stopped the stream before its final frame
	final := false
	call.Rearm()
	err = httpengine.NewEventReader(resp.Body).Each(func(_, data []byte) (bool, error) {
		call.Pause()
		if err := ctx.Err(); err != nil {
			failed = err
			return true, nil
		}
		f, derr := decodeFrame(data)
		if derr != nil {
			failed = engine.Errorf(engine.KindProtocol, "tgi: %v", derr)
			return true, nil
		}
		if f.hasError {
			failed = frameError(f.errType, f.errMsg)
			return true, nil
		}
		if !f.special {
			text = append(text[:0], f.text...) // a view for emit, reused for the next frame
			if err := emit(engine.Token{Text: text, Index: res.TokensOut}); err != nil {
				failed = err
				return true, nil
			}
			res.TokensOut++
		}
		if f.final {
			final = true
			res.Stop = stopReason(f.finishReason)
			if f.generatedTokens > 0 {
				res.TokensOut = f.generatedTokens
			}
			res.TokensIn = f.inputLength
			return true, nil
		}
		call.Rearm()
		return false, nil
	})
	call.Pause()
	switch {
	case failed != nil:
		return res, failed
	case !final:
		return res, call.StreamError(err)
	}
	httpengine.Complete(resp.Body) // keep the connection if the body ends here
	return res, nil
}

// stopReason maps TGI's finish_reason.
func stopReason(s string) engine.StopReason {
	switch s {
	case "length":
		return engine.StopLimit
	case "eos_token":
		return engine.StopEOS
	case "stop_sequence":
		return engine.StopWord
	default:
		return engine.StopReason(s)
	}
}

// kindOfType maps TGI's error_type.
func kindOfType(typ string) (engine.Kind, bool) {
	switch typ {
	case "validation":
		return engine.KindInvalidRequest, true // e.g. inputs + max_new_tokens beyond max_total_tokens
	case "overloaded":
		return engine.KindOverload, true // --max-concurrent-requests reached
	case "incomplete_generation":
		return engine.KindWorkerReset, true // the shard dropped the request before its end
	case "generation":
		return engine.KindEngineFailure, true // the model server failed (e.g. out of memory)
	}
	return engine.KindInternal, false
}

// kindOfStatus maps an HTTP status: TGI answers 422 validation, 424 generation, 429
// overloaded, 500 incomplete generation, 503 while it cannot serve.
func kindOfStatus(code int) engine.Kind {
	switch {
	case code == http.StatusServiceUnavailable, code == http.StatusUnauthorized, code == http.StatusForbidden:
		return engine.KindPoolUnavailable
	case code == http.StatusTooManyRequests:
		return engine.KindOverload
	case code == http.StatusFailedDependency:
		return engine.KindEngineFailure
	case code >= 400 && code < 500:
		return engine.KindInvalidRequest
	case code >= 500:
		return engine.KindEngineFailure
	}
	return engine.KindProtocol
}

func frameError(typ, msg string) error {
	if msg == "" {
		msg = "engine reported an error without a message"
	}
	kind, ok := kindOfType(typ)
	if !ok {
		kind = engine.KindEngineFailure
	}
	return engine.Errorf(kind, "tgi: engine error in stream (%s): %.1024s", typ, msg)
}

// statusError maps a non-200 answer; TGI's body {"error","error_type"} decides the kind when
// its error_type is known, the status otherwise.
func statusError(ctx context.Context, resp *http.Response) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	msg, typ := errorBody(b)
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	kind := kindOfStatus(resp.StatusCode)
	if k, ok := kindOfType(typ); ok && resp.StatusCode >= 400 && kind != engine.KindPoolUnavailable {
		kind = k
	}
	return engine.Errorf(kind, "tgi: engine answered %d: %s", resp.StatusCode, msg)
}

// errorBody reads TGI's {"error": "...", "error_type": "..."}; otherwise the text itself.
func errorBody(b []byte) (msg, typ string) {
	var body struct {
		Error     *string `json:"error"`
		ErrorType string  `json:"error_type"`
	}
	if json.Unmarshal(b, &body) == nil && body.Error != nil {
		return *body.Error, body.ErrorType
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

// Health implements engine.Replica with GET /health: 200 is live and ready (TGI answers it
// once its shards serve); any other status is live, not ready; an unreachable server is not
// live. The error is non-nil only when ctx ends.
func (r *Replica) Health(ctx context.Context) (engine.Health, error) {
	_, err := r.get(ctx, "/health")
	return httpengine.Health(ctx, err)
}

// Info is what TGI's GET /info says of the served model and the server.
type Info struct {
	ModelID        string
	Version        string
	MaxInputTokens int // longest prompt (max_input_tokens; max_input_length before TGI 2.1)
	MaxTotalTokens int // prompt plus generated tokens
}

// Info reads GET /info.
func (r *Replica) Info(ctx context.Context) (Info, error) {
	b, err := r.get(ctx, "/info")
	if err != nil {
		return Info{}, err
	}
	var w struct {
		ModelID        string `json:"model_id"`
		Version        string `json:"version"`
		MaxInputTokens int    `json:"max_input_tokens"`
		MaxInputLength int    `json:"max_input_length"`
		MaxTotalTokens int    `json:"max_total_tokens"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return Info{}, engine.Errorf(engine.KindProtocol, "tgi: decode /info: %w", err)
	}
	in := Info{ModelID: w.ModelID, Version: w.Version, MaxInputTokens: w.MaxInputTokens, MaxTotalTokens: w.MaxTotalTokens}
	if in.MaxInputTokens == 0 {
		in.MaxInputTokens = w.MaxInputLength
	}
	if in.ModelID == "" {
		return in, engine.Errorf(engine.KindProtocol, "tgi: /info names no model_id")
	}
	return in, nil
}

// Identify implements engine.Identifier from /info's model_id and version.
func (r *Replica) Identify(ctx context.Context) (engine.Identity, error) {
	in, err := r.Info(ctx)
	if err != nil {
		return engine.Identity{}, err
	}
	return engine.Identity{ModelID: in.ModelID, Version: in.Version}, nil
}

// Version is Identify's version, for the pool registry.
func (r *Replica) Version(ctx context.Context) (string, error) {
	id, err := r.Identify(ctx)
	return id.Version, err
}

// Load implements engine.LoadProber from /metrics: tgi_batch_current_size (running) and
// tgi_queue_size (waiting). TGI publishes no KV cache usage; KVUsage is -1.
func (r *Replica) Load(ctx context.Context) (engine.Load, error) {
	b, err := r.get(ctx, "/metrics")
	if err != nil {
		return engine.Load{}, err
	}
	m, err := engine.ReadMetrics(bytes.NewReader(b), MetricBatchSize, MetricQueueSize)
	if err != nil {
		return engine.Load{}, engine.Errorf(engine.KindProtocol, "tgi: %w", err)
	}
	return engine.LoadFromMetrics(m, MetricBatchSize, MetricQueueSize, ""), nil
}

// String names the replica in logs.
func (r *Replica) String() string { return fmt.Sprintf("tgi %s", r.base) }
