package contracts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// testKey is the API key every harness is configured with.
const testKey = "contract-test-key-0123456789"

// poolID and modelID of the single pool every harness serves.
const (
	poolID  = "p0"
	modelID = "tiny"
)

// ---------------------------------------------------------------------------------------------
// The contract, loaded once from the source of truth. (The spec embedded in gen/api is pruned of
// components that no operation references, which drops the SSE event schemas; see
// TestServedSpecResolvesSSEEvents.)

// contractFile is the contract, relative to this package's directory.
const contractFile = "../openapi/orchestratord.yaml"

// openAIPath reports whether path is one of the openai tag's: the tag's errors, a wrong
// method's 405 included, are OpenAI-shaped.
func (c *contract) openAIPath(path string) bool {
	item := c.spec.Paths.Find(path)
	if item == nil {
		return false
	}
	for _, op := range item.Operations() {
		if slices.Contains(op.Tags, "openai") {
			return true
		}
	}
	return false
}

type contract struct {
	spec   *openapi3.T
	router routers.Router
	// events maps each SSE event name of streamTask's x-sse-events to its schema.
	events map[string]*openapi3.Schema
	// envelope is components/schemas/ErrorEnvelope.
	envelope *openapi3.Schema
}

var (
	contractOnce sync.Once
	theContract  *contract
	contractErr  error
)

// schemaOpts are the schema validation options the daemon itself uses (impl/middleware.go):
// format uuid is checked as RFC 9562.
var schemaOpts = []openapi3.SchemaValidationOption{
	openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562)),
}

func loadContract() (*contract, error) {
	contractOnce.Do(func() {
		spec, err := openapi3.NewLoader().LoadFromFile(contractFile)
		if err != nil {
			contractErr = fmt.Errorf("%s: %w", contractFile, err)
			return
		}
		if err := spec.Validate(context.Background()); err != nil {
			contractErr = fmt.Errorf("%s is not a valid OpenAPI document: %w", contractFile, err)
			return
		}
		spec.Servers = nil // match any host: the daemon listens on a random loopback port
		r, err := gorillamux.NewRouter(spec)
		if err != nil {
			contractErr = fmt.Errorf("router: %w", err)
			return
		}
		c := &contract{spec: spec, router: r, events: map[string]*openapi3.Schema{}}
		if ref := spec.Components.Schemas["ErrorEnvelope"]; ref != nil {
			c.envelope = ref.Value
		}
		if c.envelope == nil {
			contractErr = errors.New("components/schemas/ErrorEnvelope missing")
			return
		}
		c.events, contractErr = sseEventSchemas(spec)
		theContract = c
	})
	return theContract, contractErr
}

// sseEventSchemas resolves streamTask's x-sse-events: event name → components/schemas/<name>.
func sseEventSchemas(spec *openapi3.T) (map[string]*openapi3.Schema, error) {
	item := spec.Paths.Value("/v1/tasks/{id}/stream")
	if item == nil || item.Get == nil {
		return nil, errors.New("GET /v1/tasks/{id}/stream missing")
	}
	raw, ok := item.Get.Extensions["x-sse-events"]
	if !ok {
		return nil, errors.New("streamTask has no x-sse-events")
	}
	m, ok := raw.(map[string]any)
	if !ok || len(m) == 0 {
		return nil, fmt.Errorf("x-sse-events is %T, want a non-empty map", raw)
	}
	out := map[string]*openapi3.Schema{}
	for name, v := range m {
		obj, _ := v.(map[string]any)
		ref, _ := obj["$ref"].(string)
		const prefix = "#/components/schemas/"
		if !strings.HasPrefix(ref, prefix) {
			return nil, fmt.Errorf("x-sse-events.%s: want a $ref to %s..., got %v", name, prefix, v)
		}
		s := spec.Components.Schemas[strings.TrimPrefix(ref, prefix)]
		if s == nil || s.Value == nil {
			return nil, fmt.Errorf("x-sse-events.%s: %s does not resolve", name, ref)
		}
		out[name] = s.Value
	}
	return out, nil
}

func mustContract(t testing.TB) *contract {
	t.Helper()
	c, err := loadContract()
	if err != nil {
		t.Fatalf("loading the contract: %v", err)
	}
	return c
}

// ---------------------------------------------------------------------------------------------
// Coverage: which (operation, status) pairs the suite has seen, checked in TestMain.

var coverage sync.Map // "operationId status" → struct{}

func recordCoverage(op string, status int) { coverage.Store(op+" "+strconv.Itoa(status), struct{}{}) }

// ---------------------------------------------------------------------------------------------
// The validating transport.

var (
	correlationRe = regexp.MustCompile(`^[A-Za-z0-9._:/+=-]{1,128}$`)
	uuidRe        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
)

type tbKey struct{}

// withTB makes the validating transport report violations of requests made with ctx to t.
func withTB(ctx context.Context, t testing.TB) context.Context {
	return context.WithValue(ctx, tbKey{}, t)
}

// validatingTransport validates every response against the contract and fails the test on any
// violation. Bodies are buffered and restored; text/event-stream bodies are left alone (their
// frames are validated by the SSE reader) but their status and headers are still checked.
type validatingTransport struct {
	base     http.RoundTripper
	c        *contract
	fallback testing.TB
}

func (v *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := v.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	t, _ := req.Context().Value(tbKey{}).(testing.TB)
	if t == nil {
		t = v.fallback
	}
	if problems := v.check(req, resp); len(problems) > 0 {
		t.Errorf("contract violation by %s %s → %d:\n  %s", req.Method, req.URL.RequestURI(), resp.StatusCode,
			strings.Join(problems, "\n  "))
	}
	return resp, nil
}

// check returns every way resp breaks the contract.
func (v *validatingTransport) check(req *http.Request, resp *http.Response) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// X-Correlation-Id: on every response; a well-formed one sent is echoed, else one is generated.
	got := resp.Header.Get("X-Correlation-Id")
	sent := req.Header.Get("X-Correlation-Id")
	switch {
	case got == "":
		bad("no X-Correlation-Id header")
	case sent != "" && correlationRe.MatchString(sent) && got != sent:
		bad("X-Correlation-Id %q, want the sent %q echoed", got, sent)
	case (sent == "" || !correlationRe.MatchString(sent)) && !uuidRe.MatchString(got):
		bad("generated X-Correlation-Id %q is not a UUID v4 (sent %q)", got, sent)
	}

	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	isSSE := mediaType == "text/event-stream"
	var body []byte
	if !isSSE {
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			bad("reading the body: %v", err)
		}
		body = b
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}

	// HEAD answers as the GET of the same resource without a body (RFC 9110 §9.3.2): the contract
	// declares no HEAD, so a HEAD is checked against the GET operation, body excluded.
	isHead := req.Method == http.MethodHead
	routeReq := req
	if isHead {
		routeReq = req.Clone(req.Context())
		routeReq.Method = http.MethodGet
		if len(body) > 0 {
			bad("HEAD answered with a %d-byte body", len(body))
		}
	}
	route, params, err := v.c.router.FindRoute(routeReq)
	if err != nil {
		// No operation matches (unknown path or method): the answer must still be the error
		// envelope with the matching status. Authentication may come first (401/403).
		want := http.StatusNotFound
		if errors.Is(err, routers.ErrMethodNotAllowed) {
			want = http.StatusMethodNotAllowed
		}
		recordCoverage("(no operation)", resp.StatusCode)
		authFirst := resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden
		if resp.StatusCode != want && !authFirst {
			bad("status %d for a request that matches no operation (%v), want %d", resp.StatusCode, err, want)
		}
		switch {
		case req.Method == http.MethodHead:
		case v.c.openAIPath(req.URL.Path): // "Errors on these routes are OpenAI-shaped" (tag openai)
			problems = append(problems, checkOpenAIError(resp, body)...)
		default:
			problems = append(problems, v.checkEnvelope(resp, body, true)...)
		}
		return problems
	}
	recordCoverage(route.Operation.OperationID, resp.StatusCode)
	opts := &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: isSSE || isHead, SchemaValidationOptions: schemaOpts}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: routeReq, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                opts,
	}
	if !isSSE && !isHead {
		in.Body = io.NopCloser(bytes.NewReader(body))
	}
	if resp.StatusCode < 400 && route.Operation.Responses.Status(resp.StatusCode) == nil {
		bad("%s: success status %d is not declared (default covers errors only)", route.Operation.OperationID, resp.StatusCode)
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		bad("%s: %v", route.Operation.OperationID, err)
	}
	switch {
	case resp.StatusCode < 400 || req.Method == http.MethodHead: // a HEAD answer has no body
	case slices.Contains(route.Operation.Tags, "openai"):
		problems = append(problems, checkOpenAIError(resp, body)...)
	default:
		problems = append(problems, v.checkEnvelope(resp, body, false)...)
	}
	return problems
}

// contractStatus is the contract's one table from error code to HTTP status (info.description,
// "Errors").
func contractStatus(code string) int {
	switch code {
	case "INVALID_PARAMS", "DEADLINE_UNMET":
		return 400
	case "UNAUTHORIZED":
		return 401
	case "FORBIDDEN":
		return 403
	case "NOT_FOUND":
		return 404
	case "METHOD_NOT_ALLOWED":
		return 405
	case "CONFLICT":
		return 409
	case "PAYLOAD_TOO_LARGE":
		return 413
	case "UNSUPPORTED_MEDIA_TYPE":
		return 415
	case "ADMISSION_REJECT", "QUEUE_FULL_DROP_LRU", "RATE_LIMITED", "BUDGET_EXCEEDED":
		return 429
	case "POOL_UNAVAILABLE", "POOL_UNREADY", "REPLICA_EXHAUSTED":
		return 503
	case "STORAGE_FULL":
		return 507
	default:
		return 500
	}
}

// checkEnvelope checks an error response: a JSON ErrorEnvelope (schema-validated when
// validateSchema, the operation's response having been validated already otherwise), its code
// matching the status, and the 429 back-off headers.
func (v *validatingTransport) checkEnvelope(resp *http.Response, body []byte, validateSchema bool) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if resp.StatusCode == http.StatusConflict && resp.Request != nil && strings.HasSuffix(resp.Request.URL.Path, "/reload") {
		return nil // reloadPool's 409 is a ReloadResponse (status rollback), not an envelope
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		bad("error response Content-Type %q, want application/json", resp.Header.Get("Content-Type"))
		return problems
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		bad("error body is not JSON: %v: %q", err, body)
		return problems
	}
	if validateSchema {
		if err := v.c.envelope.VisitJSON(doc, append(schemaOpts, openapi3.VisitAsResponse())...); err != nil {
			bad("error body is not an ErrorEnvelope: %v", err)
		}
	}
	obj, _ := doc.(map[string]any)
	code, _ := obj["code"].(string)
	if want := contractStatus(code); want != resp.StatusCode {
		bad("code %s comes with status %d, the contract's table says %d", code, resp.StatusCode, want)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		ra, err1 := strconv.ParseInt(resp.Header.Get("Retry-After"), 10, 64)
		ms, err2 := strconv.ParseInt(resp.Header.Get("X-Backoff-Ms"), 10, 64)
		switch {
		case err1 != nil || ra < 1:
			bad("Retry-After %q, want an integer ≥ 1", resp.Header.Get("Retry-After"))
		case err2 != nil || ms < 1:
			bad("X-Backoff-Ms %q, want an integer ≥ 1", resp.Header.Get("X-Backoff-Ms"))
		case ra != max((ms+999)/1000, 1):
			bad("Retry-After %d is not X-Backoff-Ms %d in whole seconds rounded up", ra, ms)
		}
		if rams, ok := obj["retry_after_ms"].(float64); !ok || int64(rams) != ms {
			bad("retry_after_ms %v differs from X-Backoff-Ms %d", obj["retry_after_ms"], ms)
		}
	}
	return problems
}

// ---------------------------------------------------------------------------------------------
// The harness: the whole daemon on a loopback listener, with a fake engine.

type harnessConfig struct {
	capacity           int
	policy             string
	slots              int
	ctxMax             int
	maxTurns           int
	tokenBudget        int64
	priorServiceMs     int
	cancelOnDisconnect bool
	heartbeat          string
	clock              *tasktest.Clock   // nil: the system clock
	artifactsMaxCount  int               // 0: the default
	engine             string            // the pool's engine: llamacpp unless set
	workloads          []string          // the pool's workloads: completion unless set
	keys               string            // a keys file (YAML) beside the plain test key; "" none
	replicas           int               // external replicas of the pool (ids p0/0, p0/1, ...): 1 unless set
	metricsPublic      *bool             // auth.metrics_public; nil: not configured (the default)
	onWrite            func([]byte)      // sees each write of the daemon to a connection; nil: none
	stateDir           string            // the daemon's state directory; "": a new one
	fakeSetup          func(*fakeEngine) // prepares the fake engine before the daemon starts; nil: none
}

type option func(*harnessConfig)

func withCtxMax(n int) option { return func(c *harnessConfig) { c.ctxMax = n } }

// withEngine names the pool's engine and the workloads it serves.
func withEngine(name string, workloads ...string) option {
	return func(c *harnessConfig) { c.engine, c.workloads = name, workloads }
}

func withCapacity(n int) option      { return func(c *harnessConfig) { c.capacity = n } }
func withPolicy(p string) option     { return func(c *harnessConfig) { c.policy = p } }
func withSlots(n int) option         { return func(c *harnessConfig) { c.slots = n } }
func withMaxTurns(n int) option      { return func(c *harnessConfig) { c.maxTurns = n } }
func withTokenBudget(n int64) option { return func(c *harnessConfig) { c.tokenBudget = n } }
func withHeartbeat(d string) option  { return func(c *harnessConfig) { c.heartbeat = d } }
func withArtifactsMaxCount(n int) option {
	return func(c *harnessConfig) { c.artifactsMaxCount = n }
}

// withClock gives the task service a fake clock: task deadlines and the janitor's tick then
// follow clk.Advance, not real time.
func withClock(clk *tasktest.Clock) option { return func(c *harnessConfig) { c.clock = clk } }

// withKeys configures a keys file (YAML) beside the plain test key.
func withKeys(doc string) option { return func(c *harnessConfig) { c.keys = doc } }

// withReplicas gives the pool n external replicas (p0/0 … p0/n-1), all served by the one fake
// engine.
func withReplicas(n int) option { return func(c *harnessConfig) { c.replicas = n } }

// withStateDir gives the daemon the state directory dir, so that a second harness on dir
// restarts the daemon of a first one that was stopped (harness.stop).
func withStateDir(dir string) option { return func(c *harnessConfig) { c.stateDir = dir } }

// withFakeSetup has f prepare the fake engine before the daemon starts (before a restarted
// daemon dispatches the tasks it recovered).
func withFakeSetup(f func(*fakeEngine)) option { return func(c *harnessConfig) { c.fakeSetup = f } }

// withMetricsPublic configures auth.metrics_public.
func withMetricsPublic(b bool) option { return func(c *harnessConfig) { c.metricsPublic = &b } }

// withServerWrites calls f with each write of the daemon to a client connection, on the
// daemon's writing goroutine, before the bytes go out: a test acts at the exact moment a
// response reaches the wire (f may block it).
func withServerWrites(f func([]byte)) option { return func(c *harnessConfig) { c.onWrite = f } }

// hookedListener's connections call onWrite before each write.
type hookedListener struct {
	net.Listener
	onWrite func([]byte)
}

func (l hookedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return hookedConn{Conn: c, onWrite: l.onWrite}, nil
}

type hookedConn struct {
	net.Conn
	onWrite func([]byte)
}

func (c hookedConn) Write(b []byte) (int, error) {
	c.onWrite(b)
	return c.Conn.Write(b)
}

func withCancelOnDisconnect(b bool) option {
	return func(c *harnessConfig) { c.cancelOnDisconnect = b }
}

type harness struct {
	cfg    harnessConfig
	fake   *fakeEngine
	url    string
	client *client.ClientWithResponses
	// raw is an http.Client with the validating transport and no API key: for requests the
	// generated client cannot build.
	raw *http.Client
	c   *contract
	// stop stops the daemon and waits until it has (once; the test's cleanup calls it too).
	stop func()
}

var corrSeq atomic.Int64

func newHarness(t testing.TB, opts ...option) *harness {
	t.Helper()
	c := mustContract(t)
	cfg := harnessConfig{capacity: 8, policy: "reject", slots: 1, ctxMax: 4096, maxTurns: 100,
		priorServiceMs: 1500, cancelOnDisconnect: true, heartbeat: "15s", engine: "llamacpp", workloads: []string{"completion"},
		replicas: 1}
	for _, o := range opts {
		o(&cfg)
	}
	dir := t.TempDir()
	stateDir := cfg.stateDir
	if stateDir == "" {
		stateDir = filepath.Join(dir, "state")
	}
	yaml := fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
log_level: warn
body_limit_bytes: 1048576
admission:
  capacity: %d
  policy: %s
sessions:
  ttl: 10m
  max_turns: %d
  token_budget: %d
stream:
  heartbeat: %s
  cancel_on_disconnect: %t
artifacts:
  max_count: %d
shutdown_grace: 50ms
pools:
  - id: %s
    engine: %s
    workloads: [%s]
    model_ref: models/tiny.gguf
    model_id: %s
    ctx_max: %d
    slots: %d
    kv_bytes_per_token: 512
    prior_service_ms: %d
    prior_tokens_per_s: 50
    replicas:
`, stateDir, cfg.capacity, cfg.policy, cfg.maxTurns, cfg.tokenBudget, cfg.heartbeat,
		cfg.cancelOnDisconnect, cfg.artifactsMaxCount, poolID, cfg.engine, strings.Join(cfg.workloads, ", "), modelID, cfg.ctxMax, cfg.slots, cfg.priorServiceMs)
	for i := range cfg.replicas {
		yaml += fmt.Sprintf("      - url: http://127.0.0.1:%d\n", i+1)
	}
	if cfg.metricsPublic != nil {
		yaml += fmt.Sprintf("auth:\n  metrics_public: %t\n", *cfg.metricsPublic)
	}
	if cfg.keys != "" {
		if err := os.WriteFile(filepath.Join(dir, "keys.yaml"), []byte(cfg.keys), 0o600); err != nil {
			t.Fatal(err)
		}
		yaml = "keys_file: keys.yaml\n" + yaml
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	conf, err := config.Load(config.Overrides{ConfigFile: path, APIKeys: testKey})
	if err != nil {
		t.Fatalf("config: %v", err)
	}

	fake := newFakeEngine()
	if cfg.fakeSetup != nil {
		cfg.fakeSetup(fake)
	}
	gpus := dgxh200.New()
	gpus.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	aopts := app.Options{
		Logger:         slog.New(slog.NewTextHandler(tbWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		NewReplica:     func(pool.Spec, pool.Endpoint) engine.Replica { return fake },
		NVML:           gpus,
		Registry:       prometheus.NewRegistry(),
		HealthInterval: 20 * time.Millisecond,
	}
	if cfg.clock != nil {
		aopts.TaskClock = cfg.clock
	}
	a, err := app.New(conf, aopts)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.onWrite != nil {
		ln = hookedListener{Listener: ln, onWrite: cfg.onWrite}
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()

	base := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16, DisableCompression: true}
	vt := &validatingTransport{base: base, c: c, fallback: t}
	hc := &http.Client{Transport: vt}
	h := &harness{cfg: cfg, fake: fake, url: "http://" + ln.Addr().String(), raw: hc, c: c}
	h.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		base.CloseIdleConnections()
	})
	t.Cleanup(h.stop)
	h.client = h.as(t, testKey)
	h.waitReady(t)
	return h
}

// as returns a client of the harness's daemon that presents key.
func (h *harness) as(t testing.TB, key string) *client.ClientWithResponses {
	t.Helper()
	cl, err := client.NewClientWithResponses(h.url, client.WithHTTPClient(h.raw),
		client.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			req.Header.Set("X-API-Key", key)
			if req.Header.Get("X-Correlation-Id") == "" {
				req.Header.Set("X-Correlation-Id", "ct-"+strconv.FormatInt(corrSeq.Add(1), 10))
			}
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// waitReady waits until the pool is ready and known to the queue (its health then carries the
// queue's measured rates), so that a task can be admitted and dispatched.
func (h *harness) waitReady(t testing.TB) {
	t.Helper()
	ctx := h.ctx(t)
	eventually(t, "pool ready and known to the queue", func() bool {
		r, err := h.client.GetPoolHealthWithResponse(ctx, poolID, nil)
		return err == nil && r.JSON200 != nil && r.JSON200.Ready && r.JSON200.Metrics.MeanServiceMs != nil
	})
}

// ctx returns a request context that reports contract violations to t.
func (h *harness) ctx(t testing.TB) context.Context {
	return withTB(t.Context(), t)
}

type tbWriter struct{ t testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// eventually polls cond until it holds. The bound only keeps a broken daemon from hanging the
// suite; no assertion depends on how long anything takes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------------------------
// Requests.

func ptr[T any](v T) *T { return &v }

// taskReq is a valid task for the harness's pool.
func taskReq(session uuid.UUID) client.TaskRequest {
	return client.TaskRequest{
		TaskId: uuid.New(), SessionId: session, Workload: client.Completion, ModelRef: modelID,
		Engine: client.Llamacpp, Ctx: 2048, Priority: client.Interactive, Prompt: ptr("Once upon a time"),
		MaxTokens: 64, DeadlineMs: 60000,
	}
}

// submit posts req and requires a 202.
func (h *harness) submit(t testing.TB, req client.TaskRequest) *client.CreateTaskResponse {
	t.Helper()
	r, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, req)
	if err != nil {
		t.Fatalf("createTask: %v", err)
	}
	if r.StatusCode() != http.StatusAccepted || r.JSON202 == nil {
		t.Fatalf("createTask: %d %s", r.StatusCode(), r.Body)
	}
	return r
}

// state returns a task's state.
func (h *harness) state(t testing.TB, id uuid.UUID) client.TaskState {
	t.Helper()
	r, err := h.client.GetTaskWithResponse(h.ctx(t), id, nil)
	if err != nil {
		t.Fatalf("getTask: %v", err)
	}
	if r.JSON200 == nil {
		t.Fatalf("getTask: %d %s", r.StatusCode(), r.Body)
	}
	return *r.JSON200
}

// waitState waits for a task to reach state st.
func (h *harness) waitState(t testing.TB, id uuid.UUID, st client.TaskStatus) client.TaskState {
	t.Helper()
	var last client.TaskState
	eventually(t, fmt.Sprintf("task %s %s", id, st), func() bool {
		last = h.state(t, id)
		return last.State == st
	})
	return last
}

// waitPlaced waits until the task runs and its placement is recorded: a task is running from
// its dispatch on, and placed on a replica a moment later (its placement is null in between).
func (h *harness) waitPlaced(t testing.TB, id uuid.UUID) client.TaskState {
	t.Helper()
	var last client.TaskState
	eventually(t, fmt.Sprintf("task %s running and placed", id), func() bool {
		last = h.state(t, id)
		return last.State == client.Running && last.Placement != nil
	})
	return last
}

// cancel cancels a task and requires 204.
func (h *harness) cancel(t testing.TB, id uuid.UUID) {
	t.Helper()
	r, err := h.client.CancelTaskWithResponse(h.ctx(t), id, nil)
	if err != nil {
		t.Fatalf("cancelTask: %v", err)
	}
	if r.StatusCode() != http.StatusNoContent {
		t.Fatalf("cancelTask: %d %s", r.StatusCode(), r.Body)
	}
}

// do sends a raw request through the validating transport. key "" sends no credentials.
func (h *harness) do(t testing.TB, method, path string, body io.Reader, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(h.ctx(t), method, h.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := h.raw.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// envelope decodes an error envelope.
func envelope(t testing.TB, body []byte) client.ErrorEnvelope {
	t.Helper()
	var e client.ErrorEnvelope
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e
}
