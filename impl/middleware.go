package impl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	oapimw "github.com/oapi-codegen/echo-middleware"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/orchestratord/orchestratord/impl/tenant"
)

// HeaderCorrelationID names the correlation header.
const HeaderCorrelationID = "X-Correlation-Id"

var correlationRe = regexp.MustCompile(`^[A-Za-z0-9._:/+=-]{1,128}$`)

type ctxKey int

const (
	stateKey ctxKey = iota
	headKey
)

// reqState is what the middleware learn about a request and the handlers read (CorrelationID,
// RawBody, KeyOf, responseHeader): one context value and one copy of the request for all of
// them instead of one each. Only the request's own goroutine writes it, before the handler runs.
type reqState struct {
	correlation string
	raw         []byte
	body        *rawBody // the request's Body, over raw
	checked     bool     // raw passed Validator's fast check: JSONSerializer may decode it by hand
	key         *tenant.Key
	respHeader  http.Header
	// http11: the request came as HTTP/1.1 or later over HTTP/1 framing (an event stream may
	// then take its connection over and write chunked frames itself); closeAfter: the client
	// asked for the connection's close after the answer (Connection: close).
	http11, closeAfter bool
}

func stateOf(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey).(*reqState)
	return st
}

// state returns the request's state, attaching it to the request on first use.
func state(c echo.Context) *reqState {
	r := c.Request()
	if st := stateOf(r.Context()); st != nil {
		return st
	}
	st := &reqState{http11: r.ProtoMajor == 1 && r.ProtoMinor >= 1, closeAfter: r.Close}
	c.SetRequest(r.WithContext(context.WithValue(r.Context(), stateKey, st)))
	return st
}

// CorrelationID returns the request's correlation id.
func CorrelationID(ctx context.Context) string {
	if st := stateOf(ctx); st != nil {
		return st.correlation
	}
	return ""
}

// Correlation echoes a well-formed X-Correlation-Id or, when none was given, uses the trace id
// of the request's span (otelhttp's, from the client's traceparent or a new trace) or else
// generates a UUID; it sets it on the response before anything else can write, and puts it in
// the request context. It also names the request's span after the route (POST /v2/tasks/{id}).
//
// This middleware and the others that stay on an open event stream's stack do their work in a
// function of its own that returns before next is called: their frames stay small (see
// VisitStreamTaskResponse).
func Correlation() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			correlate(c)
			return next(c)
		}
	}
}

// WriteDeadline bounds the writing of every answer: from its header on, the client has
// timeout to take it, or its connection is closed. Without it a client that reads nothing of
// a large answer (/openapi.json, /metrics, an artifact) held its connection, a
// server.max_connections slot and a goroutine forever. Event streams move the deadline
// themselves before each write (stream.write_timeout is the same bound, per write). net/http
// clears the deadline once the answer is written, before the connection's next request.
func WriteDeadline(timeout time.Duration) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if timeout <= 0 {
			return next
		}
		return func(c echo.Context) error {
			res := c.Response()
			res.Before(func() { setWriteDeadline(res.Writer, time.Now().Add(timeout)) })
			return next(c)
		}
	}
}

// setWriteDeadline sets w's write deadline: directly on net/http's writer, else through a
// ResponseController (which allocates, and looks through wrappers such as otelhttp's).
func setWriteDeadline(w http.ResponseWriter, t time.Time) {
	if d, ok := w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(t)
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(t)
}

// correlate is Correlation's work.
func correlate(c echo.Context) {
	sp := trace.SpanFromContext(c.Request().Context())
	if route := c.Path(); route != "" && sp.IsRecording() { // no name built for a span nobody records
		sp.SetName(c.Request().Method + " " + route)
		sp.SetAttributes(attribute.String("http.route", route))
	}
	id := c.Request().Header.Get(HeaderCorrelationID)
	if !correlationRe.MatchString(id) {
		if sc := sp.SpanContext(); sc.HasTraceID() {
			id = sc.TraceID().String()
		} else {
			id = uuid.NewString()
		}
	}
	c.Response().Header().Set(HeaderCorrelationID, id)
	state(c).correlation = id
}

// IsHead reports whether the request came as HEAD (HeadAsGet serves it as GET).
func IsHead(ctx context.Context) bool {
	v, _ := ctx.Value(headKey).(bool)
	return v
}

// HeadAsGet serves HEAD on every GET operation as that GET without its body (RFC 9110 §9.3.2),
// instead of 405. It wraps the whole handler, outside echo, because echo routes by the method of
// the request it was given: next sees a GET, so routing, authentication, validation, the handler
// and the error envelope are the GET's own and the status and headers match, while net/http,
// which keeps the original request, frames the answer as HEAD and discards the body written for
// it. Handlers whose GET does work for the body alone (an event stream) check IsHead. HEAD where
// no GET is defined stays 405.
func HeadAsGet(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		g := r.WithContext(context.WithValue(r.Context(), headKey, true)) // a copy: r stays HEAD
		g.Method = http.MethodGet
		next.ServeHTTP(w, g)
	})
}

// TraceContext is what otelhttp does for a request when tracing is off (a no-op tracer
// provider): the W3C trace context and baggage the client sent go into the request's context,
// so that Correlation uses the caller's trace id; no span, no response wrapper, nothing to
// allocate for a request without them.
func TraceContext(next http.Handler) http.Handler {
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.Header.Values("Traceparent")) == 0 && len(r.Header.Values("Baggage")) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r.WithContext(prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))))
	})
}

// Recover turns a panic in a handler into a 500 INTERNAL envelope and logs the stack.
func Recover(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					if err, ok := r.(error); ok && errors.Is(err, http.ErrAbortHandler) {
						panic(r) //nolint:forbidigo // net/http's contract: re-panic ErrAbortHandler so the server aborts the response
					}
					log.Error("panic in handler", "path", c.Path(), "panic", fmt.Sprint(r),
						"correlation_id", c.Response().Header().Get(HeaderCorrelationID), "stack", string(debug.Stack()))
					err = Errorf("INTERNAL", "internal error")
				}
			}()
			return next(c)
		}
	}
}

// BodyLimit refuses bodies larger than limit bytes with 413 PAYLOAD_TOO_LARGE, whether the
// length is declared or not.
//
// A request without a body keeps http.NoBody: what follows knows it has nothing to read.
// Wrapped, it made kin-openapi's validator read it and keep a 512-byte buffer for the life of
// the request, that is of an open event stream.
func BodyLimit(limit int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if r.ContentLength > limit {
				return Errorf("PAYLOAD_TOO_LARGE", "request body is larger than %d bytes", limit)
			}
			if r.Body == nil || r.Body == http.NoBody {
				return next(c)
			}
			r.Body = http.MaxBytesReader(c.Response(), r.Body, limit)
			return next(c)
		}
	}
}

// RawBody returns the request's JSON body as sent (set by JSONBody), for handlers that must see
// numbers exactly as written.
func RawBody(ctx context.Context) []byte {
	if st := stateOf(ctx); st != nil {
		return st.raw
	}
	return nil
}

// JSONBody reads a JSON request body once (within the body limit), refuses anything that is not
// exactly one JSON value (400 INVALID_PARAMS: the validator's decoder would silently ignore
// trailing data), keeps the bytes for RawBody and hands an identical body to what follows.
func JSONBody() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := readJSONBody(c); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// readJSONBody is JSONBody's work.
func readJSONBody(c echo.Context) error {
	r := c.Request()
	if r.Body != nil && r.Body != http.NoBody && noBody(r.Method) {
		return discardBody(r)
	}
	mt := r.Header.Get("Content-Type")
	if mt != "application/json" { // the common case needs no parsing
		mt, _, _ = mime.ParseMediaType(mt)
	}
	if r.Body == nil || r.Body == http.NoBody || mt != "application/json" {
		return nil
	}
	raw, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return Errorf("PAYLOAD_TOO_LARGE", "request body is larger than %d bytes", tooLarge.Limit)
	case err != nil:
		return Errorf("INVALID_PARAMS", "body: %v", err)
	}
	// json.Valid accepts exactly what singleJSONValue does, without allocating; the
	// decoder runs only to word the error.
	if len(bytes.TrimSpace(raw)) > 0 && !json.Valid(raw) {
		if err := singleJSONValue(raw); err != nil {
			return Errorf("INVALID_PARAMS", "body: %v", err)
		}
	}
	body := &rawBody{}
	body.Reset(raw)
	r.Body = body
	st := state(c)
	st.raw, st.body = raw, body
	return nil
}

// noBody reports whether the operations of method take no request body (GET, HEAD, DELETE
// in the contract).
func noBody(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodDelete
}

// discardBody reads a body that an operation does not take (within BodyLimit's bound) and
// keeps none of it: an event stream keeps its request for as long as it is open, and the
// body read to its end leaves nothing on the connection for the stream to take for a
// pipelined request.
func discardBody(r *http.Request) error {
	_, err := io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	r.Body = http.NoBody
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return Errorf("PAYLOAD_TOO_LARGE", "request body is larger than %d bytes", tooLarge.Limit)
	case err != nil:
		return Errorf("INVALID_PARAMS", "body: %v", err)
	}
	return nil
}

// releaseBody lets go of the request's body once a handler that runs on (a completion that
// waits for its task, or streams it) has taken what it needs from it.
func releaseBody(ctx context.Context) {
	if st := stateOf(ctx); st != nil {
		st.raw = nil
		if st.body != nil {
			st.body.Reset(nil)
		}
	}
}

// rawBody is the body JSONBody hands on: the bytes it read.
type rawBody struct{ bytes.Reader }

// Close does nothing.
func (*rawBody) Close() error { return nil }

// singleJSONValue checks that b holds exactly one JSON value and nothing after it but space.
func singleJSONValue(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("invalid JSON: data after the JSON value")
	}
	return nil
}

// Auth checks X-API-Key (or Authorization: Bearer) on every operation that the spec does not
// mark public (security: []): missing → 401 (and different keys in the two headers or in
// repeated ones: the request does not say who it is), unknown → 403, a key without the operation's
// x-scopes → 403. Keys are looked up in constant time via their SHA-256 digests and never logged.
// The matched key goes into the request context (KeyOf) and, for a key with rate limits, the
// x-ratelimit-* headers of its current windows onto the response (CreateTask updates them).
// Nothing here reads the body. A secured operation without x-scopes is an error: the contract
// must say what each operation needs. An operation whose security also lists the empty
// requirement ({}: /metrics) is public by default; OptionalAuth(false) secures it like the others.
func Auth(spec *openapi3.T, keys *tenant.Ring, limits *tenant.Limiter, opts ...AuthOption) (echo.MiddlewareFunc, error) {
	cfg := authConfig{optionalPublic: true}
	for _, o := range opts {
		o(&cfg)
	}
	public, scopes, err := routeScopes(spec)
	if err != nil {
		return nil, err
	}
	optional := optionalRoutes(spec)
	check := func(c echo.Context) error {
		route := c.Request().Method + " " + c.Path()
		if public[route] || (cfg.optionalPublic && optional[route]) {
			return nil
		}
		key, err := presentedKey(c.Request().Header)
		if err != nil {
			return err
		}
		if key == "" {
			return Errorf("UNAUTHORIZED", "missing API key (X-API-Key or Authorization: Bearer)")
		}
		k, ok := keys.Lookup(key)
		if !ok {
			return &Error{Code: "FORBIDDEN", Message: "invalid API key", badKey: true}
		}
		for _, need := range scopes[route] {
			if !k.Has(need) {
				return Errorf("FORBIDDEN", "key %q lacks the %q scope this operation needs", k.Name, need)
			}
		}
		if limits != nil {
			SetRateLimitHeaders(c.Response().Header(), limits.Windows(k))
		}
		st := state(c)
		st.key, st.respHeader = k, c.Response().Header()
		return nil
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := check(c); err != nil {
				return err
			}
			return next(c)
		}
	}, nil
}

// AuthOption configures Auth.
type AuthOption func(*authConfig)

type authConfig struct {
	optionalPublic bool
}

// OptionalAuth says whether the operations whose security lists the empty requirement ({}) as
// well as the API-key schemes are public (true, the default) or need a key with their x-scopes
// like any other secured operation (false). /metrics is the one such operation; configuration
// auth.metrics_public decides.
func OptionalAuth(public bool) AuthOption {
	return func(c *authConfig) { c.optionalPublic = public }
}

// KeyOf returns the key that authenticated the request (nil on a public route).
func KeyOf(ctx context.Context) *tenant.Key {
	if st := stateOf(ctx); st != nil {
		return st.key
	}
	return nil
}

// responseHeader returns the response's header map, for handlers of the strict interface that
// must set headers on an error response too (nil outside Auth).
func responseHeader(ctx context.Context) http.Header {
	if st := stateOf(ctx); st != nil {
		return st.respHeader
	}
	return nil
}

// SetRateLimitHeaders writes the OpenAI-style x-ratelimit-* headers of a key's windows: limit,
// remaining and reset (a duration such as "1.5s") for requests and for tokens, each only when the
// key has that limit. The OpenAI-compatible facade calls it too.
func SetRateLimitHeaders(h http.Header, ws []tenant.Window) {
	if h == nil {
		return
	}
	for _, w := range ws {
		h.Set("x-ratelimit-limit-"+string(w.Limit), strconv.Itoa(w.Max))
		h.Set("x-ratelimit-remaining-"+string(w.Limit), strconv.Itoa(w.Remaining))
		h.Set("x-ratelimit-reset-"+string(w.Limit), w.Reset.Round(time.Millisecond).String())
	}
}

// presentedKey returns the one API key a request presents in its X-API-Key and Authorization:
// Bearer headers ("" for none; an empty value counts as none), or 401 when they present
// different keys. Both keys are the client's own, so comparing them leaks nothing.
func presentedKey(h http.Header) (string, error) {
	var key string
	agrees := func(k string) bool {
		switch {
		case k == "":
		case key == "":
			key = k
		case k != key:
			return false
		}
		return true
	}
	for _, k := range h.Values("X-Api-Key") { // X-API-Key by its canonical name, which Values would allocate
		if !agrees(k) {
			return "", errKeyConflict()
		}
	}
	for _, v := range h.Values("Authorization") {
		if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") {
			continue // another scheme carries no API key
		}
		if !agrees(strings.TrimSpace(v[7:])) {
			return "", errKeyConflict()
		}
	}
	return key, nil
}

func errKeyConflict() error {
	return Errorf("UNAUTHORIZED", "the request presents different API keys (X-API-Key, Authorization: Bearer); send one")
}

// optionalRoutes lists, by "METHOD /echo/:path", the operations whose security lists the empty
// requirement ({}) beside API-key schemes: public or secured by configuration (OptionalAuth).
func optionalRoutes(spec *openapi3.T) map[string]bool {
	optional := map[string]bool{}
	param := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if op.Security == nil || len(*op.Security) < 2 {
				continue
			}
			if slices.ContainsFunc(*op.Security, func(r openapi3.SecurityRequirement) bool { return len(r) == 0 }) {
				optional[method+" "+param.ReplaceAllString(path, ":$1")] = true
			}
		}
	}
	return optional
}

// routeScopes lists, by "METHOD /echo/:path", the public operations (security: []) and the
// scopes (x-scopes) each secured one needs (optionally secured ones included).
func routeScopes(spec *openapi3.T) (map[string]bool, map[string][]tenant.Scope, error) {
	public := map[string]bool{}
	scopes := map[string][]tenant.Scope{}
	param := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range spec.Paths.Map() {
		echoPath := param.ReplaceAllString(path, ":$1")
		for method, op := range item.Operations() {
			route := method + " " + echoPath
			if op.Security != nil && len(*op.Security) == 0 {
				public[route] = true
				continue
			}
			raw, ok := op.Extensions["x-scopes"]
			if !ok {
				return nil, nil, fmt.Errorf("spec: %s has no x-scopes", route)
			}
			list, ok := raw.([]any)
			if !ok {
				return nil, nil, fmt.Errorf("spec: %s: x-scopes must be a list, got %T", route, raw)
			}
			for _, v := range list {
				name, _ := v.(string)
				if !slices.Contains(tenant.AllScopes, tenant.Scope(name)) {
					return nil, nil, fmt.Errorf("spec: %s: unknown scope %v", route, v)
				}
				scopes[route] = append(scopes[route], tenant.Scope(name))
			}
		}
	}
	return public, scopes, nil
}

// Validator validates every request against the spec; failures become 400 INVALID_PARAMS with
// short JSON-pointer messages (415 for a wrong content type, 413 for a body over the limit).
// A JSON body that the compiled fast check (fastcheck.go) proves valid skips kin-openapi's
// validator, which decodes the body into a generic document and walks the schema over it;
// anything else, and every error answer, goes through kin-openapi as before.
func Validator(spec *openapi3.T) echo.MiddlewareFunc {
	uuidRe := openapi3.FormatOfStringForUUIDOfRFC9562
	kin := oapimw.OapiRequestValidatorWithOptions(spec, &oapimw.Options{
		SilenceServersWarning: true,
		Options: openapi3filter.Options{
			MultiError:         true,
			KeepValidatedValue: true,
			AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, // Auth middleware ran already
			SchemaValidationOptions: []openapi3.SchemaValidationOption{
				openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(uuidRe)),
			},
		},
		MultiErrorHandler: func(me openapi3.MultiError) *echo.HTTPError {
			return &echo.HTTPError{Code: http.StatusBadRequest, Message: "validation", Internal: me}
		},
		ErrorHandler: func(_ echo.Context, he *echo.HTTPError) error {
			return validationError(he)
		},
	})
	fast := compileOps(spec, map[string]func([]byte) bool{"uuid": uuidRFC9562}) // uuidRe, by hand
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		// Applied once per route (Routes): kin-openapi's chain is built here, once too.
		slow := kin(next)
		return func(c echo.Context) error {
			r := c.Request()
			if oc := fast[route{r.Method, c.Path()}]; oc != nil {
				if st := stateOf(r.Context()); st != nil && st.raw != nil && oc.valid(r, st.raw) {
					st.checked = true
					return next(c)
				}
			}
			return slow(c)
		}
	}
}

// route is an operation as echo routes it: method and path with :params.
type route struct{ method, path string }

// compileOps compiles the fast check of every operation whose request it can check: a JSON
// body and header parameters only. The others are left to kin-openapi.
func compileOps(spec *openapi3.T, formats map[string]func([]byte) bool) map[route]*opCheck {
	out := map[route]*opCheck{}
	param := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			oc, err := compileOp(append(slices.Clone(item.Parameters), op.Parameters...), op, formats)
			if err != nil {
				continue
			}
			out[route{method, param.ReplaceAllString(path, ":$1")}] = oc
		}
	}
	return out
}

func compileOp(params openapi3.Parameters, op *openapi3.Operation, formats map[string]func([]byte) bool) (*opCheck, error) {
	if op.RequestBody == nil || op.RequestBody.Value == nil {
		return nil, errUnsupported
	}
	content := op.RequestBody.Value.Content
	mt := content.Get("application/json")
	if len(content) != 1 || mt == nil || mt.Schema == nil {
		return nil, errUnsupported
	}
	body, err := compileSchema(mt.Schema, formats)
	if err != nil {
		return nil, err
	}
	oc := &opCheck{body: body}
	for _, p := range params {
		if p.Value == nil || p.Value.In != openapi3.ParameterInHeader || p.Value.Content != nil {
			return nil, errUnsupported
		}
		hc, err := compileSchema(p.Value.Schema, formats)
		if err != nil {
			return nil, err
		}
		if hc.kind != kString {
			return nil, errUnsupported
		}
		oc.headers = append(oc.headers, headerCheck{name: http.CanonicalHeaderKey(p.Value.Name), required: p.Value.Required, check: hc})
	}
	return oc, nil
}

// validationError turns the validator's error into an API error.
func validationError(he *echo.HTTPError) error {
	var me openapi3.MultiError
	if !errors.As(he.Internal, &me) {
		if he.Internal == nil {
			return he
		}
		me = openapi3.MultiError{he.Internal}
	}
	var tooLarge *http.MaxBytesError
	if errors.As(me, &tooLarge) {
		return Errorf("PAYLOAD_TOO_LARGE", "request body is larger than %d bytes", tooLarge.Limit)
	}
	var msgs []string
	param := ""
	for i, err := range flatten(me) {
		msg := shortMessage(err)
		if strings.HasPrefix(msg, "header Content-Type has unexpected value") {
			return Errorf("UNSUPPORTED_MEDIA_TYPE", "%s; use application/json", msg)
		}
		if i == 0 {
			param = bodyParam(err)
		}
		if !slices.Contains(msgs, msg) {
			msgs = append(msgs, msg)
		}
		if len(msgs) == 8 {
			break
		}
	}
	return &Error{Code: "INVALID_PARAMS", Message: strings.Join(msgs, "; "), Param: param}
}

// bodyParam names the body field a validation error is about, as OpenAI's error `param` does
// ("max_tokens", "messages[0].content"), for the facade's errors: the first error's, which its
// message names first. "" when it is about no field: a header or parameter, a body that is
// not JSON, or a rule over the whole body.
func bodyParam(err error) string {
	var re *openapi3filter.RequestError
	if errors.As(err, &re) && re.Parameter != nil {
		return ""
	}
	var se *openapi3.SchemaError
	if !errors.As(err, &se) {
		return ""
	}
	if se.SchemaField == "not" && se.Schema != nil && se.Schema.Not != nil && se.Schema.Not.Value != nil {
		// A rule over several fields (the body's `not`) names the one at fault with x-param.
		p, _ := se.Schema.Not.Value.Extensions["x-param"].(string)
		return p
	}
	return openAIParam(se.JSONPointer())
}

func flatten(me openapi3.MultiError) []error {
	var out []error
	for _, err := range me {
		var inner openapi3.MultiError
		if errors.As(err, &inner) && len(inner) > 0 && !isSame(inner, me) {
			var re *openapi3filter.RequestError
			if errors.As(err, &re) && re.Parameter != nil {
				out = append(out, err)
				continue
			}
			out = append(out, flatten(inner)...)
			continue
		}
		out = append(out, err)
	}
	return out
}

// notReason is the description of the `not` rule a value broke: the `not` schema's own, or, for
// a `not` over several rules (`anyOf`), that of the first rule the value matches.
func notReason(not *openapi3.Schema, v any) string {
	if not.Description != "" {
		return not.Description
	}
	for _, rule := range not.AnyOf {
		if rule.Value != nil && rule.Value.VisitJSON(v) == nil && rule.Value.Description != "" {
			return rule.Value.Description
		}
	}
	return "a combination of fields the contract forbids"
}

func isSame(a, b openapi3.MultiError) bool {
	return len(a) == len(b) && len(a) > 0 && a[0] == b[0] //nolint:errorlint // identity: the same error value, not a kind of error
}

// shortMessage renders one validation error as "where: why".
func shortMessage(err error) string {
	var re *openapi3filter.RequestError
	var se *openapi3.SchemaError
	var where string
	if errors.As(err, &re) && re.Parameter != nil {
		where = fmt.Sprintf("%s parameter %q", re.Parameter.In, re.Parameter.Name)
	}
	if errors.As(err, &se) {
		ptr := "/" + strings.Join(se.JSONPointer(), "/")
		if se.SchemaField == "format" && se.Schema != nil {
			se.Reason = formatReason(se.Schema, se.Value)
		}
		if se.Reason == "" && se.SchemaField == "not" && se.Schema != nil && se.Schema.Not != nil && se.Schema.Not.Value != nil {
			// kin-openapi gives a failed `not` no reason; the contract describes each `not` rule.
			se.Reason = notReason(se.Schema.Not.Value, se.Value)
		}
		if where != "" {
			return where + ": " + se.Reason
		}
		return ptr + ": " + se.Reason
	}
	if re != nil {
		reason := re.Reason
		if reason == "" && re.Err != nil {
			reason = firstLine(re.Err.Error())
		}
		if where != "" {
			return where + ": " + reason
		}
		if re.RequestBody != nil && re.Err != nil && !strings.HasPrefix(reason, "header Content-Type") {
			return "body: " + firstLine(re.Err.Error())
		}
		return reason
	}
	return firstLine(err.Error())
}

// formatNames says what a format wants, in words.
var formatNames = map[string]string{"uuid": "a UUID (like 6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11)", "date-time": "an RFC 3339 date-time",
	"int32": "a 32-bit integer", "int64": "a 64-bit integer"}

// formatReason replaces the validator's "string doesn't match the format (regular expression
// ...)" with what is wanted; an empty string is called empty, and a field the daemon fills in
// when it is left out (x-generated-if-omitted) says so.
func formatReason(s *openapi3.Schema, v any) string {
	want, ok := formatNames[s.Format]
	if !ok {
		want = "a " + s.Format
	}
	reason := "must be " + want
	if str, isStr := v.(string); isStr && str == "" {
		reason = "is empty: it must be " + want
	}
	if gen, _ := s.Extensions["x-generated-if-omitted"].(bool); gen {
		reason += ", or be left out for the daemon to generate"
	}
	return reason
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
