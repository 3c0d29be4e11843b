package llamacpp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/httpengine"
)

// DefaultIdleTimeout is Options.IdleTimeout's default.
const DefaultIdleTimeout = 30 * time.Second

// Options configures a Replica.
type Options struct {
	// BaseURL is the server's root, e.g. "http://127.0.0.1:8080" (a trailing slash is ignored).
	BaseURL string
	// Client sends the requests. It must not set an overall Timeout (streams are long); the
	// default has a 5 s dial timeout, keep-alives with up to 256 idle connections to the
	// server, idle connections dropped after 4 s (before llama-server's 5 s keep-alive timeout
	// closes them under us), no proxy and no compression. With the default, completions go
	// through an httpengine.Conns instead (kept-alive connections read by the generating
	// goroutine, one per generation for a server that closes them: see Generate); the client
	// serves Health, Props and Load. A Client given here sends completions too, each on a
	// connection of its own.
	Client *http.Client
	// IdleTimeout bounds the wait for each stream frame, including the first one (prompt
	// processing, and queueing inside llama-server when all its slots are busy). It also bounds
	// Health and Props. Default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Logger receives debug records of each generation. Default: discard.
	Logger *slog.Logger
	// APIKey, when set, is sent on every request as "Authorization: Bearer <key>" (the server's
	// --api-key / --api-key-file).
	APIKey string
	// MaxIdleConns bounds the connections kept alive for completions when Client is nil (the
	// server's slots, -np); ≤ 0: 16.
	MaxIdleConns int
}

// Replica is one llama-server endpoint. It holds no per-request state and is safe for
// concurrent use.
type Replica struct {
	base   string
	client *http.Client
	idle   time.Duration
	log    *slog.Logger
	auth   string // "Bearer <key>", or ""
	slots  *slotAffinity
	conns  *httpengine.Conns // nil: completions through client, a connection each
}

var (
	_ engine.Replica      = (*Replica)(nil)
	_ engine.ConnReporter = (*Replica)(nil)
)

// New returns a Replica for opts.
func New(opts Options) *Replica {
	r := &Replica{
		base:   strings.TrimRight(opts.BaseURL, "/"),
		client: opts.Client,
		idle:   opts.IdleTimeout,
		log:    opts.Logger,
		slots:  newSlotAffinity(),
	}
	if opts.APIKey != "" {
		r.auth = "Bearer " + opts.APIKey
	}
	if r.client == nil {
		r.client = newClient()
		// Conns only where it serves the base URL as spelled (not a scheme in capitals, nor a
		// query): generate aborts a Conns request through its Abort and any other through a
		// context of its own, so the idle watchdog must know which one sends it.
		if c := httpengine.NewConns(r.base, opts.MaxIdleConns); c != nil {
			if _, ok := c.RequestURI(r.base + completionPath); ok {
				r.conns = c
				r.conns.SetLogger(opts.Logger)
			}
		}
	}
	if r.idle <= 0 {
		r.idle = DefaultIdleTimeout
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r
}

func newClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     4 * time.Second,
		DisableCompression:  true,
	}}
}

// completionRequest is the body of POST /completion.
type completionRequest struct {
	Prompt      string   `json:"prompt"`
	NPredict    int      `json:"n_predict"`
	Stream      bool     `json:"stream"`
	CachePrompt bool     `json:"cache_prompt"`
	IDSlot      *int     `json:"id_slot,omitempty"`
	Seed        *int64   `json:"seed,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	TopK        *int     `json:"top_k,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
}

var (
	zero, one = 0.0, 1.0
	topKOne   = 1
)

// Causes of the request context's cancellation, to tell them apart from the caller's.
var (
	errIdle     = errors.New("no frame from the engine within the idle timeout")
	errFinished = errors.New("generation finished")
)

// Generate implements engine.Replica: it POSTs req to /completion with "stream": true and
// calls emit once per token frame, in order, as llama-server writes it.
//
// Token frames (as llama-server 0.7.0 sends them): one frame per sampled token, with these
// exceptions. A token that ends inside a UTF-8 sequence sends no frame; its bytes arrive with
// the frame of the token that completes the character. A token that may begin a stop word
// sends a frame with empty content; its text arrives with a later frame, or never if the
// stop word matches (or the generation ends first). The end-of-sequence token sends a frame
// with empty content. Generate emits every frame that carries content or token ids, so
// Token.Text may be empty (consumers that forward text should skip those) and may hold the
// text of several tokens. Result.TokensOut is the engine's own count (tokens_predicted, which
// includes the end-of-sequence token); it equals the number of emitted tokens except after
// split UTF-8 sequences. On failure Result.TokensOut counts the tokens emitted.
// Result.TokensIn is the prompt's length in tokens (tokens_evaluated) and TokensCached the
// part of it reused from the slot's KV cache (timings.cache_n; the final frame's
// "tokens_cached" is the slot's whole cache and is not used).
//
// The turns of a session (req.SessionID) ask for the slot that served the session's last
// turn ("id_slot", with "cache_prompt": true) when that slot is known to be free, so its KV
// cache still holds the conversation (see slotAffinity); otherwise llama-server chooses.
//
// req.Ctx is not sent: llama-server's context size is fixed per slot (see Props).
func (r *Replica) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	start := time.Now()
	slot, served := r.slots.acquire(req.SessionID), -1
	res, err := r.generate(ctx, &req, slot, &served, emit)
	r.slots.release(req.SessionID, slot, served)
	r.logGeneration(ctx, &req, &res, err, slot, served, time.Since(start))
	return res, err
}

// logGeneration logs the end of a generation. It is kept out of Generate, whose frame stays on
// the stack of an open stream's goroutine for the whole generation.
func (r *Replica) logGeneration(ctx context.Context, req *engine.Request, res *engine.Result, err error, slot, served int, elapsed time.Duration) {
	if err != nil {
		r.log.DebugContext(ctx, "llamacpp: generation failed", "task", req.TaskID, "tokens", res.TokensOut,
			"kind", engine.KindOf(err), "err", err, "cause", context.Cause(ctx), "elapsed", elapsed)
		return
	}
	r.log.DebugContext(ctx, "llamacpp: generation done", "task", req.TaskID, "tokens_in", res.TokensIn,
		"tokens_cached", res.TokensCached, "tokens_out", res.TokensOut, "stop", res.Stop, "id_slot", slot, "served_by_slot", served,
		"elapsed", elapsed)
}

// generate runs one generation, asking for slot when it is >= 0; *served is set to the slot
// the final frame names.
func (r *Replica) generate(ctx context.Context, req *engine.Request, slot int, served *int, emit engine.EmitFunc) (engine.Result, error) {
	if err := ctx.Err(); err != nil {
		return engine.Result{}, err
	}
	body, err := completionBody(req, slot)
	if err != nil {
		return engine.Result{}, err
	}

	// The idle watchdog ends the request through ab on Conns, with no context of its own: a
	// context per generation is an object, a done channel and a child in its parent's map
	// that an open stream holds. A configured Client's request has one.
	reqCtx, ab := ctx, (*httpengine.Abort)(nil)
	var cancel context.CancelCauseFunc
	if r.conns != nil {
		ab = new(httpengine.Abort)
		cancel = ab.Cancel
	} else {
		reqCtx, cancel = context.WithCancelCause(ctx)
		defer cancel(errFinished) // aborts the request (and frees the engine slot) on every early return
	}
	dog := httpengine.NewWatchdog(r.idle, cancel, errIdle)
	defer dog.Stop()
	idle := func() bool { return errors.Is(ab.Cause(), errIdle) || errors.Is(context.Cause(reqCtx), errIdle) }

	resp, err := r.postCompletion(reqCtx, ab, body)
	if err != nil {
		return engine.Result{}, r.transportError(ctx, idle(), "send completion", err)
	}
	rb := resp.Body // resp (its head) is not kept for the generation
	defer rb.Close()
	if resp.StatusCode != http.StatusOK {
		return engine.Result{}, statusError(ctx, resp)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return engine.Result{}, notEventStream(ct)
	}

	st := getState(rb)
	defer putState(st)
	st.ctx, st.dog, st.emit = ctx, dog, emit
	if err := st.sse.each(st.onLine); err != nil {
		return st.res, r.streamReadError(ctx, idle(), err)
	}
	if st.err != nil {
		return st.res, st.err
	}
	res := st.res
	fillResult(&res, &st.f)
	*served = st.f.idSlot
	httpengine.Complete(rb) // keep the connection if the body ends here
	return res, nil
}

// line handles one line of the stream (streamState.onLine): it decodes a frame and emits its
// token. It stops (true) at the final frame, or with st.err at a failure, an engine's error
// or the end of st.ctx.
func (st *streamState) line(line []byte) (bool, error) {
	field, value, ok := splitField(line)
	if !ok {
		return false, nil // a blank line (a frame's end) or a comment: the wait goes on
	}
	st.dog.Got()
	// Frames already buffered are handled without touching the connection: stop emitting as
	// soon as ctx ends (an emit may have cancelled it).
	if err := st.ctx.Err(); err != nil {
		st.err = err
		return true, nil
	}
	f := &st.f
	switch string(field) {
	case "data":
		if string(value) == "[DONE]" { // OpenAI-style terminator; /completion does not send it
			st.dog.Wait()
			return false, nil
		}
		if err := st.dec.decode(value, f); err != nil {
			st.err = malformedStream("frame", err)
			return true, nil
		}
	case "error":
		if err := st.dec.decodeError(value, f); err != nil {
			st.err = malformedStream("error", err)
			return true, nil
		}
	default: // event:, id:, retry: and unknown fields carry nothing for us
		st.dog.Wait()
		return false, nil
	}
	if f.hasError {
		st.err = frameError(f)
		return true, nil
	}
	if len(f.content) > 0 || (!f.stop && f.nTokens > 0) {
		// The text is a view into the decoder's input or scratch, valid until the next frame.
		if err := st.emit(engine.Token{Text: f.content, Index: st.res.TokensOut}); err != nil {
			st.err = err
			return true, nil
		}
		st.res.TokensOut++
	}
	if f.stop {
		return true, nil
	}
	st.dog.Wait()
	return false, nil
}

// notEventStream and malformedStream word protocol errors. They are kept out of generate, as
// completionBody is: a call with variadic arguments takes room in the caller's frame.
//
//go:noinline
func notEventStream(ct string) error {
	return engine.Errorf(engine.KindProtocol, "llamacpp: completion answered %q, want text/event-stream", ct)
}

//go:noinline
func malformedStream(what string, err error) error {
	return engine.Errorf(engine.KindProtocol, "llamacpp: malformed stream %s: %w", what, err)
}

// completionBody encodes req as a streamed /completion request, asking for slot when it is
// >= 0. It is kept out of generate, whose frame stays on the stack of an open stream's
// goroutine for the whole generation.
func completionBody(req *engine.Request, slot int) ([]byte, error) {
	if req.MaxTokens < 1 {
		return nil, engine.Errorf(engine.KindInvalidRequest, "llamacpp: max tokens %d must be positive", req.MaxTokens)
	}
	cr := completionRequest{Prompt: req.Prompt, NPredict: req.MaxTokens, Stream: true, CachePrompt: true, Seed: req.Seed}
	if slot >= 0 {
		cr.IDSlot = &slot
	}
	if req.Deterministic {
		cr.Temperature, cr.TopK, cr.TopP = &zero, &topKOne, &one
	}
	body, err := json.Marshal(cr)
	if err != nil {
		return nil, engine.Errorf(engine.KindInternal, "llamacpp: encode request: %w", err)
	}
	return body, nil
}

// completionPath is llama-server's streamed completion endpoint.
const completionPath = "/completion"

// postCompletion sends POST /completion. llama-server (0.7.0) closes the connection after
// every streamed response although it answers "Keep-Alive": Conns detects that and gives such a
// server one connection per generation, keeping them alive with servers that keep them. A
// configured Client gets one connection per generation (a pooled one would race with that
// close and fail the next request with EOF).
func (r *Replica) postCompletion(ctx context.Context, ab *httpengine.Abort, body []byte) (*http.Response, error) {
	if r.conns != nil {
		if uri, ok := r.conns.RequestURI(r.base + completionPath); ok {
			return r.conns.PostAbort(ctx, ab, uri, r.auth, body)
		}
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+completionPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "text/event-stream")
	if r.auth != "" {
		hreq.Header.Set("Authorization", r.auth)
	}
	hreq.Close = true
	return r.client.Do(hreq)
}

// fillResult copies the final frame's counters into res (whose TokensOut counts the emitted
// tokens, kept when the engine does not report its own count).
func fillResult(res *engine.Result, f *frame) {
	switch {
	case f.tokensPredicted >= 0:
		res.TokensOut = f.tokensPredicted
	case f.predictedN >= 0:
		res.TokensOut = f.predictedN
	}
	switch {
	case f.tokensEvaluated >= 0:
		res.TokensIn = f.tokensEvaluated
	case f.promptN >= 0:
		res.TokensIn = f.promptN + max(f.cacheN, 0)
	}
	res.TokensCached = max(f.cacheN, 0)
	switch string(f.stopType) {
	case "limit":
		res.Stop = engine.StopLimit
	case "eos":
		res.Stop = engine.StopEOS
	case "word":
		res.Stop = engine.StopWord
	default:
		res.Stop = engine.StopReason(f.stopType)
	}
}

// frameError maps an error the engine reported inside the stream.
func frameError(f *frame) error {
	msg := string(f.errMessage)
	if msg == "" {
		msg = "engine reported an error without a message"
	}
	return engine.Errorf(kindOf(f.errCode, string(f.errType)), "llamacpp: engine error in stream: %s", msg)
}

// kindOf maps an HTTP status (or an error object's code) and llama-server's error type to
// whose fault it is: 503 (loading, unavailable) and other 5xx are the replica's, 429 is
// overload, other 4xx (context too long, bad parameter) are the request's.
func kindOf(code int, typ string) engine.Kind {
	switch {
	case code == http.StatusServiceUnavailable:
		return engine.KindPoolUnavailable
	case code == http.StatusTooManyRequests:
		return engine.KindOverload
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		// The daemon holds the wrong key: the replica cannot serve anyone through us.
		return engine.KindPoolUnavailable
	case code >= 400 && code < 500:
		return engine.KindInvalidRequest
	case code >= 500:
		return engine.KindEngineFailure
	}
	switch typ {
	case "unavailable_error":
		return engine.KindPoolUnavailable
	case "invalid_request_error", "exceed_context_size_error", "not_supported_error":
		return engine.KindInvalidRequest
	case "server_error":
		return engine.KindEngineFailure
	}
	return engine.KindEngineFailure
}

// statusError maps a non-200 answer, with the engine's message from its JSON error body
// ({"error":{"code":..,"message":..,"type":..}}) when there is one.
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
	if resp.StatusCode < 400 {
		kind = engine.KindProtocol
	}
	return engine.Errorf(kind, "llamacpp: engine answered %d: %s", resp.StatusCode, msg)
}

// errorBody extracts message and type from an engine error body, or returns its text.
func errorBody(b []byte) (msg, typ string) {
	var body struct {
		Error *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &body) == nil && body.Error != nil {
		return body.Error.Message, body.Error.Type
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	return s, ""
}

// transportError maps a failure to get a response.
func (r *Replica) transportError(ctx context.Context, idle bool, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if idle {
		return engine.Errorf(engine.KindDecodeTimeout, "llamacpp: %s: no answer within %v", what, r.idle)
	}
	if isDialError(err) {
		return engine.Errorf(engine.KindPoolUnavailable, "llamacpp: %s: %w", what, err)
	}
	return engine.Errorf(engine.KindWorkerReset, "llamacpp: %s: %w", what, err)
}

// streamReadError maps a failure to read the next stream line.
func (r *Replica) streamReadError(ctx context.Context, idle bool, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if idle {
		return engine.Errorf(engine.KindDecodeTimeout, "llamacpp: no stream frame within %v", r.idle)
	}
	if errors.Is(err, errLineTooLong) {
		return engine.Errorf(engine.KindProtocol, "llamacpp: %w", err)
	}
	if errors.Is(err, io.EOF) {
		return engine.Errorf(engine.KindWorkerReset, "llamacpp: stream ended before the final frame")
	}
	return engine.Errorf(engine.KindWorkerReset, "llamacpp: stream broken before the final frame: %w", err)
}

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns) || errors.Is(err, syscall.ECONNREFUSED)
}

// EngineConns reports the replica's kept engine connections (engine.ConnReporter).
func (r *Replica) EngineConns() (engine.ConnStats, bool) { return r.conns.EngineConns() }

// Health implements engine.Replica with GET /health: 200 is live and ready; 503 (model
// loading) is live but not ready, with the engine's message ("Loading model") as Detail; any
// other status is live, not ready. An engine that cannot be reached, or does not answer within
// IdleTimeout, is not live. The error is non-nil only when ctx ends.
func (r *Replica) Health(ctx context.Context) (engine.Health, error) {
	resp, err := r.get(ctx, "/health")
	if err != nil {
		if ctx.Err() != nil {
			return engine.Health{}, ctx.Err()
		}
		return engine.Health{Detail: err.Error()}, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		if ctx.Err() != nil {
			return engine.Health{}, ctx.Err()
		}
		return engine.Health{Detail: "health: " + err.Error()}, nil
	}
	if resp.StatusCode == http.StatusOK {
		return engine.Health{Live: true, Ready: true}, nil
	}
	msg, _ := errorBody(b)
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		msg = fmt.Sprintf("health answered %d: %s", resp.StatusCode, msg)
	}
	return engine.Health{Live: true, Detail: msg}, nil
}

// Props is what the daemon uses of llama-server's GET /props.
type Props struct {
	// TotalSlots is the number of parallel slots (-np), "total_slots".
	TotalSlots int
	// NCtx is the context size of one slot, "default_generation_settings.n_ctx": with -c N,
	// N divided among the slots; without -c, the model's training context for each slot.
	NCtx int
	// BuildInfo is the server build, "build_info" (e.g. "b11669-Debian").
	BuildInfo string
	// ModelPath is the model file the server loaded, "model_path".
	ModelPath string
}

// Props asks GET /props. Errors are *engine.Error: an unreachable engine or a 503 is
// KindPoolUnavailable.
func (r *Replica) Props(ctx context.Context) (Props, error) {
	resp, err := r.get(ctx, "/props")
	if err != nil {
		if ctx.Err() != nil {
			return Props{}, ctx.Err()
		}
		return Props{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Props{}, statusError(ctx, resp)
	}
	var body struct {
		TotalSlots int `json:"total_slots"`
		Defaults   struct {
			NCtx int `json:"n_ctx"`
		} `json:"default_generation_settings"`
		BuildInfo string `json:"build_info"`
		ModelPath string `json:"model_path"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&body); err != nil {
		if ctx.Err() != nil {
			return Props{}, ctx.Err()
		}
		return Props{}, engine.Errorf(engine.KindProtocol, "llamacpp: decode props: %w", err)
	}
	return Props{TotalSlots: body.TotalSlots, NCtx: body.Defaults.NCtx, BuildInfo: body.BuildInfo, ModelPath: body.ModelPath}, nil
}

// get sends a GET bounded by IdleTimeout; transport errors come back as *engine.Error.
func (r *Replica) get(ctx context.Context, path string) (*http.Response, error) {
	reqCtx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(r.idle, func() { cancel(errIdle) })
	hreq, err := http.NewRequestWithContext(reqCtx, http.MethodGet, r.base+path, nil)
	if err != nil {
		timer.Stop()
		cancel(errFinished)
		return nil, engine.Errorf(engine.KindInternal, "llamacpp: %w", err)
	}
	if r.auth != "" {
		hreq.Header.Set("Authorization", r.auth)
	}
	resp, err := r.client.Do(hreq)
	if err != nil {
		timer.Stop()
		err = r.transportError(ctx, errors.Is(context.Cause(reqCtx), errIdle), "GET "+path, err)
		cancel(errFinished)
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, stop: func() { timer.Stop(); cancel(errFinished) }}
	return resp, nil
}

// cancelBody releases the request's timer and context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	stop func()
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.stop()
	return err
}
