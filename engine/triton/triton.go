package triton

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/httpengine"
)

// DefaultIdleTimeout is Options.IdleTimeout's default.
const DefaultIdleTimeout = 30 * time.Second

// Tensors names the model's inputs and output the adapter uses. An empty name other than
// Input and Output means "not sent".
type Tensors struct {
	Input       string // prompt text (BYTES); default "text_input"
	Output      string // generated text (BYTES); default "text_output"
	MaxTokens   string // max tokens (INT32); default "max_tokens"
	Stream      string // streaming switch (BOOL), sent true; default "stream"
	Seed        string // sampler seed, sent when the task has one; default: not sent
	Temperature string // sent 0 for deterministic tasks; default: not sent
}

// DefaultTensors are the TensorRT-LLM and vLLM backends' conventional names.
func DefaultTensors() Tensors {
	return Tensors{Input: "text_input", Output: "text_output", MaxTokens: "max_tokens", Stream: "stream"}
}

// Options configures a Replica.
type Options struct {
	// BaseURL is Triton's HTTP endpoint, e.g. "http://127.0.0.1:8000".
	BaseURL string
	// Model is the Triton model to run (required).
	Model string
	// Tensors are the model's input and output names. The zero value is DefaultTensors(); an
	// empty Input or Output takes its default; other empty names are not sent.
	Tensors Tensors
	// MetricsURL is Triton's metrics endpoint root (its own port, 8002 by default), e.g.
	// "http://127.0.0.1:8002"; empty: Load reports unknown.
	MetricsURL string
	// APIKey, when set, is sent as "Authorization: Bearer <key>" (for a proxy in front of Triton;
	// Triton itself does not check it).
	APIKey string
	// Client sends the requests; it must not set an overall Timeout.
	Client *http.Client
	// IdleTimeout bounds the wait for each frame (the first one included) and each GET.
	IdleTimeout time.Duration
	// MaxIdleConns bounds the connections kept alive for streamed requests when Client is nil
	// (the replica's parallel slots); ≤ 0: 16. See httpengine.Conns.
	MaxIdleConns int
	// Logger receives debug records. Default: discard.
	Logger *slog.Logger
}

// Replica is one Triton model on one server, safe for concurrent use.
type Replica struct {
	base, metrics string
	model         string
	tensors       Tensors
	http          *httpengine.Client
	log           *slog.Logger
}

var (
	_ engine.Replica      = (*Replica)(nil)
	_ engine.ConnReporter = (*Replica)(nil)
	_ engine.Identifier   = (*Replica)(nil)
	_ engine.LoadProber   = (*Replica)(nil)
)

// New returns a Replica for opts.
func New(opts Options) *Replica {
	t := opts.Tensors
	d := DefaultTensors()
	if t == (Tensors{}) {
		t = d
	}
	if t.Input == "" {
		t.Input = d.Input
	}
	if t.Output == "" {
		t.Output = d.Output
	}
	r := &Replica{base: strings.TrimRight(opts.BaseURL, "/"), metrics: strings.TrimRight(opts.MetricsURL, "/"),
		model: opts.Model, tensors: t, log: opts.Logger}
	client := opts.Client
	var conns *httpengine.Conns
	if client == nil {
		client = httpengine.DefaultHTTPClient()
		conns = httpengine.NewConns(r.base, opts.MaxIdleConns)
		conns.SetLogger(opts.Logger)
	}
	idle := opts.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	r.http = &httpengine.Client{Name: "triton", Unit: "frame", HTTP: client, Idle: idle,
		Auth: httpengine.Bearer(opts.APIKey), OnStatus: r.statusError, Conns: conns}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r
}

func (r *Replica) modelPath(suffix string) string {
	return "/v2/models/" + url.PathEscape(r.model) + suffix
}

// Generate implements engine.Replica (see the package documentation for the protocol).
func (r *Replica) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	start := time.Now()
	res, err := r.generate(ctx, req, emit)
	if err != nil {
		r.log.DebugContext(ctx, "triton: generation failed", "task", req.TaskID, "tokens", res.TokensOut,
			"kind", engine.KindOf(err), "err", err, "elapsed", time.Since(start))
		return res, err
	}
	r.log.DebugContext(ctx, "triton: generation done", "task", req.TaskID, "tokens_out", res.TokensOut,
		"stop", res.Stop, "elapsed", time.Since(start))
	return res, nil
}

func (r *Replica) body(req engine.Request) ([]byte, error) {
	m := map[string]any{r.tensors.Input: req.Prompt}
	t := r.tensors
	if t.MaxTokens != "" {
		m[t.MaxTokens] = req.MaxTokens
	}
	if t.Stream != "" {
		m[t.Stream] = true
	}
	if t.Seed != "" && req.Seed != nil {
		m[t.Seed] = *req.Seed
	}
	if t.Temperature != "" && req.Deterministic {
		m[t.Temperature] = 0.0
	}
	return json.Marshal(m)
}

func (r *Replica) generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	if err := ctx.Err(); err != nil {
		return engine.Result{}, err
	}
	if req.MaxTokens < 1 {
		return engine.Result{}, engine.Errorf(engine.KindInvalidRequest, "triton: max tokens %d must be positive", req.MaxTokens)
	}
	if req.Workload != "" && req.Workload != engine.WorkloadCompletion {
		return engine.Result{}, engine.Errorf(engine.KindInvalidRequest, "triton: workload %q is not served", req.Workload)
	}
	if r.model == "" {
		return engine.Result{}, engine.Errorf(engine.KindInternal, "triton: no model configured")
	}
	b, err := r.body(req)
	if err != nil {
		return engine.Result{}, engine.Errorf(engine.KindInternal, "triton: encode request: %w", err)
	}
	path := r.modelPath("/generate_stream")

	call := r.http.Begin(ctx)
	defer call.End() // closes the connection: the only abort signal HTTP has
	resp, err := call.PostStream(r.base+path, path, b)
	if err != nil {
		return engine.Result{}, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		// A 200 JSON body is an error Triton reports before streaming.
		if strings.HasPrefix(ct, "application/json") {
			return engine.Result{}, r.statusError(ctx, resp)
		}
		return engine.Result{}, engine.Errorf(engine.KindProtocol, "triton: %s answered %q, want text/event-stream", path, ct)
	}

	var res engine.Result
	var text []byte  // the token text handed to emit
	var failed error // why the callback stopped the stream
	call.Rearm()
	err = httpengine.NewEventReader(resp.Body).Each(func(_, data []byte) (bool, error) {
		call.Pause()
		if err := ctx.Err(); err != nil {
			failed = err
			return true, nil
		}
		f, derr := decodeFrame(data, r.tensors.Output)
		if derr != nil {
			failed = engine.Errorf(engine.KindProtocol, "triton: %v", derr)
			return true, nil
		}
		if f.hasError {
			failed = engine.Errorf(kindOfMessage(f.errMsg), "triton: engine error in stream: %.1024s", f.errMsg)
			return true, nil
		}
		if f.text != "" { // a response without text (e.g. an empty final response) carries nothing
			text = append(text[:0], f.text...) // a view for emit, reused for the next response
			if err := emit(engine.Token{Text: text, Index: res.TokensOut}); err != nil {
				failed = err
				return true, nil
			}
			res.TokensOut++
		}
		call.Rearm()
		return false, nil
	})
	call.Pause()
	switch {
	case failed != nil:
		return res, failed
	case errors.Is(err, io.EOF) && ctx.Err() == nil && !call.TimedOut():
		// Triton ends the stream without a terminator
	default:
		return res, call.StreamError(err)
	}
	res.Stop = engine.StopEOS
	if res.TokensOut >= req.MaxTokens {
		res.Stop = engine.StopLimit
	}
	return res, nil
}

// kindOf maps an HTTP status. 404 is the configured model missing on this server: the
// replica's fault, not the request's.
func kindOf(code int) engine.Kind {
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
	return engine.KindProtocol
}

// kindOfMessage classifies an error Triton sends inside the stream (or with a 503), which has no
// code: a full queue is an overload; the backends' words for a request that cannot run are the
// request's fault; anything else (a model exception) is the replica's.
func kindOfMessage(msg string) engine.Kind {
	m := strings.ToLower(msg)
	// A full queue first (Triton's scheduler: "Exceeds maximum queue size"; TensorRT-LLM's
	// "... please try again later"): the replica is busy, not broken, nor the request wrong.
	for _, s := range []string{"maximum queue size", "queue is full", "try again later"} {
		if strings.Contains(m, s) {
			return engine.KindOverload
		}
	}
	for _, s := range []string{"exceeds", "too long", "too large", "invalid argument", "must be less", "must be greater",
		"longer than the maximum", "maximum model length"} { // the vLLM backend's prompt past the context
		if strings.Contains(m, s) {
			return engine.KindInvalidRequest
		}
	}
	if strings.Contains(m, "not ready") || strings.Contains(m, "unavailable") {
		return engine.KindPoolUnavailable
	}
	return engine.KindEngineFailure
}

// statusError maps an answer that is not a stream, with Triton's {"error": "..."} message.
func (r *Replica) statusError(ctx context.Context, resp *http.Response) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	msg := errorBody(b)
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	kind := kindOf(resp.StatusCode)
	if resp.StatusCode == http.StatusOK ||
		resp.StatusCode == http.StatusServiceUnavailable && kindOfMessage(msg) == engine.KindOverload {
		kind = kindOfMessage(msg)
	}
	if resp.StatusCode == http.StatusNotFound {
		msg = "model " + r.model + " is not served here: " + msg
	}
	return engine.Errorf(kind, "triton: engine answered %d: %s", resp.StatusCode, msg)
}

// errorBody reads {"error": "..."}; otherwise the text itself.
func errorBody(b []byte) string {
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &body) == nil && body.Error != "" {
		return body.Error
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	return s
}

// get sends a GET to u bounded by IdleTimeout and returns the body (at most 16 MiB) of a 200
// answer.
func (r *Replica) get(ctx context.Context, u string) ([]byte, error) {
	return r.http.Get(ctx, u, "")
}

// EngineConns reports the replica's kept engine connections (engine.ConnReporter).
func (r *Replica) EngineConns() (engine.ConnStats, bool) { return r.http.Conns.EngineConns() }

// Health implements engine.Replica: live when GET /v2/health/ready answers at all, ready when
// it and GET /v2/models/{model}/ready both answer 200. The error is non-nil only when ctx ends.
func (r *Replica) Health(ctx context.Context) (engine.Health, error) {
	_, err := r.get(ctx, r.base+"/v2/health/ready")
	if err == nil {
		_, err = r.get(ctx, r.base+r.modelPath("/ready"))
	}
	return httpengine.Health(ctx, err)
}

// Identify implements engine.Identifier from GET /v2/models/{model} (the model's name and its
// newest version) and GET /v2 (Triton's version): ModelID is the name, Version is e.g.
// "triton 2.51.0, model version 1".
func (r *Replica) Identify(ctx context.Context) (engine.Identity, error) {
	b, err := r.get(ctx, r.base+r.modelPath(""))
	if err != nil {
		return engine.Identity{}, err
	}
	var md struct {
		Name     string   `json:"name"`
		Versions []string `json:"versions"`
	}
	if err := json.Unmarshal(b, &md); err != nil || md.Name == "" {
		return engine.Identity{}, engine.Errorf(engine.KindProtocol, "triton: model metadata without a name: %.256s", b)
	}
	id := engine.Identity{ModelID: md.Name}
	var parts []string
	if b, err := r.get(ctx, r.base+"/v2"); err == nil {
		var sv struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		}
		if json.Unmarshal(b, &sv) == nil && sv.Version != "" {
			parts = append(parts, strings.TrimSpace(sv.Name+" "+sv.Version))
		}
	}
	if n := len(md.Versions); n > 0 {
		parts = append(parts, "model version "+md.Versions[n-1])
	}
	id.Version = strings.Join(parts, ", ")
	return id, nil
}

// Version is Identify's version, for the pool registry.
func (r *Replica) Version(ctx context.Context) (string, error) {
	id, err := r.Identify(ctx)
	return id.Version, err
}

// Metric names Load reads from Triton's metrics port.
const (
	metricPending   = "nv_inference_pending_request_count" // per model and version
	metricTRTLLMReq = "nv_trt_llm_request_metrics"         // TensorRT-LLM backend, request_type="active"
	metricTRTLLMKV  = "nv_trt_llm_kv_cache_block_metrics"  // kv_cache_block_type="used" / "max"
)

// Load implements engine.LoadProber from Triton's metrics port: Waiting is
// nv_inference_pending_request_count of the model; Running and KVUsage come from the
// TensorRT-LLM backend's nv_trt_llm_request_metrics{request_type="active"} and
// nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used"|"max"} where the model has
// them. Triton itself has no gauge of requests being executed, so Running is -1 for other
// backends. Without a MetricsURL every value is -1.
func (r *Replica) Load(ctx context.Context) (engine.Load, error) {
	l := engine.Load{Running: -1, Waiting: -1, KVUsage: -1}
	if r.metrics == "" {
		return l, nil
	}
	b, err := r.get(ctx, r.metrics+"/metrics")
	if err != nil {
		return engine.Load{}, err
	}
	s, err := scanMetrics(b, r.model)
	if err != nil {
		return engine.Load{}, engine.Errorf(engine.KindProtocol, "triton: %w", err)
	}
	if v, ok := s[metricPending]; ok {
		l.Waiting = int(v)
	}
	if v, ok := s[metricTRTLLMReq+"/active"]; ok {
		l.Running = int(v)
	}
	used, uok := s[metricTRTLLMKV+"/used"]
	maxb, mok := s[metricTRTLLMKV+"/max"]
	if uok && mok && maxb > 0 {
		l.KVUsage = used / maxb
	}
	return l, nil
}

// scanMetrics sums, over the samples of model (label model="..."), the pending count, and the
// TensorRT-LLM series by their request_type or kv_cache_block_type label ("name/type").
func scanMetrics(b []byte, model string) (map[string]float64, error) {
	var keep bytes.Buffer
	typed := map[string]string{} // line key → sample
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	modelLabel := `model="` + strings.ReplaceAll(strings.ReplaceAll(model, `\`, `\\`), `"`, `\"`) + `"`
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "nv_") || !strings.Contains(line, modelLabel) {
			continue
		}
		switch {
		case strings.HasPrefix(line, metricPending):
			keep.WriteString(line + "\n")
		case strings.HasPrefix(line, metricTRTLLMReq) && strings.Contains(line, `request_type="active"`):
			typed[metricTRTLLMReq+"/active"] += line + "\n"
		case strings.HasPrefix(line, metricTRTLLMKV) && strings.Contains(line, `kv_cache_block_type="used"`):
			typed[metricTRTLLMKV+"/used"] += line + "\n"
		case strings.HasPrefix(line, metricTRTLLMKV) && strings.Contains(line, `kv_cache_block_type="max"`):
			typed[metricTRTLLMKV+"/max"] += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out, err := engine.SumMetrics(&keep, metricPending)
	if err != nil {
		return nil, err
	}
	for key, lines := range typed {
		name := key[:strings.IndexByte(key, '/')]
		m, err := engine.SumMetrics(strings.NewReader(lines), name)
		if err != nil {
			return nil, err
		}
		if v, ok := m[name]; ok {
			out[key] = v
		}
	}
	return out, nil
}
