package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
)

// Defaults of Options.
const (
	DefaultMaxRetries   = 3
	DefaultMaxRetryWait = 30 * time.Second
	// DefaultMaxReconnects and the delays below carry a stream over about a minute without a
	// daemon (0.2 s doubling to 5 s, 16 times): a restart, whose queued tasks' streams end
	// without their final frame for their clients to resume after it.
	DefaultMaxReconnects     = 16
	DefaultReconnectDelay    = 200 * time.Millisecond
	DefaultMaxReconnectDelay = 5 * time.Second
	// DefaultStreamIdleTimeout is four of the daemon's default heartbeats (15 s): a stream
	// silent that long is taken as a dead connection (a peer gone without a FIN or RST).
	DefaultStreamIdleTimeout = time.Minute
)

// Options configures a Client. The zero value is usable: no API key, a private HTTP transport
// and the defaults above.
type Options struct {
	// APIKey is sent as X-API-Key on every request (not on a redirect to another host).
	APIKey string
	// HTTPClient sends the requests. It must not have a Timeout: streams last as long as their
	// task. Default: a client with its own transport, whose idle connections Close releases.
	// The Client sends through a copy of it whose redirect policy keeps the key off other hosts.
	HTTPClient *http.Client
	// MaxRetries is how many times a 429 is retried (after its Retry-After) when its envelope
	// says retriable (or it has none). Negative: never. 0: DefaultMaxRetries.
	MaxRetries int
	// MaxRetryWait caps each wait before a retry. 0: DefaultMaxRetryWait.
	MaxRetryWait time.Duration
	// MaxReconnects is how many times in a row a dropped stream is reopened without an event
	// in between. Negative: never. 0: DefaultMaxReconnects. A reopen answered 502, 503 or 504
	// (the daemon stopping, a proxy in front of one that restarts) counts as a drop too.
	MaxReconnects int
	// ReconnectDelay is waited before the first reopen after an event; it doubles with each
	// drop in a row, up to MaxReconnectDelay. 0: DefaultReconnectDelay.
	ReconnectDelay time.Duration
	// MaxReconnectDelay caps the wait between reopens. 0: DefaultMaxReconnectDelay.
	MaxReconnectDelay time.Duration
	// StreamIdleTimeout is how long a stream may wait for its next byte (an event or the
	// daemon's heartbeat) before the connection is taken as dead, closed and reopened with
	// Last-Event-ID (a drop, as MaxReconnects counts them). Only the time spent waiting on the
	// network counts, not the caller's time with an event. Set it above the daemon's
	// stream.heartbeat. Negative: never. 0: DefaultStreamIdleTimeout.
	StreamIdleTimeout time.Duration
	// KeepTaskOnBreak keeps a task running when the caller stops iterating its stream early.
	// By default the task is canceled.
	KeepTaskOnBreak bool
	// Sleep waits d or until ctx ends (tests inject a fake). Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Client talks to one orchestratord.
type Client struct {
	base string
	hc   *http.Client
	own  bool
	gen  *client.ClientWithResponses
	opts Options
}

// New returns a Client for the daemon at baseURL (for example http://127.0.0.1:8080).
func New(baseURL string, opts Options) (*Client, error) {
	baseURL = strings.TrimRight(baseURL, "/")
	if baseURL == "" {
		return nil, errors.New("sdk: empty base URL")
	}
	c := &Client{base: baseURL, hc: opts.HTTPClient}
	if c.hc == nil {
		tr, ok := http.DefaultTransport.(*http.Transport)
		if !ok { // replaced by the program: start from the standard settings' zero value
			tr = &http.Transport{Proxy: http.ProxyFromEnvironment}
		}
		c.hc = &http.Client{Transport: tr.Clone()}
		c.own = true
	}
	hc := *c.hc // a copy: a caller's client keeps its own redirect policy
	hc.CheckRedirect = keyStaysHome(hc.CheckRedirect)
	c.hc = &hc
	if opts.MaxRetries == 0 {
		opts.MaxRetries = DefaultMaxRetries
	}
	if opts.MaxRetryWait <= 0 {
		opts.MaxRetryWait = DefaultMaxRetryWait
	}
	if opts.MaxReconnects == 0 {
		opts.MaxReconnects = DefaultMaxReconnects
	}
	if opts.ReconnectDelay <= 0 {
		opts.ReconnectDelay = DefaultReconnectDelay
	}
	if opts.MaxReconnectDelay <= 0 {
		opts.MaxReconnectDelay = DefaultMaxReconnectDelay
	}
	opts.MaxReconnectDelay = max(opts.MaxReconnectDelay, opts.ReconnectDelay)
	if opts.StreamIdleTimeout == 0 {
		opts.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	c.opts = opts
	g, err := client.NewClientWithResponses(baseURL, client.WithHTTPClient(c.hc),
		client.WithRequestEditorFn(c.authorize))
	if err != nil {
		return nil, fmt.Errorf("sdk: %w", err)
	}
	c.gen = g
	return c, nil
}

// Generated returns the generated client this Client wraps, authorized with the same key, for
// operations the SDK does not wrap.
func (c *Client) Generated() *client.ClientWithResponses { return c.gen }

// Close releases the idle connections of the Client's own transport (not of an
// Options.HTTPClient).
func (c *Client) Close() {
	if c.own {
		c.hc.CloseIdleConnections()
	}
}

func (c *Client) authorize(_ context.Context, r *http.Request) error {
	if c.opts.APIKey != "" {
		r.Header.Set("X-API-Key", c.opts.APIKey)
	}
	return nil
}

// maxRedirects is net/http's own limit, kept when the HTTP client has no redirect policy.
const maxRedirects = 10

// keyStaysHome wraps a redirect policy (nil: net/http's default) so that a redirect to another
// host, or from https to plain http, goes without the API key. net/http drops Authorization and
// cookies there, but forwards every other header: X-API-Key went to whatever host a proxy in
// front of the daemon, or an open redirect, named.
func keyStaysHome(policy func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if first := via[0].URL; req.URL.Host != first.Host || (first.Scheme == "https" && req.URL.Scheme != "https") {
			req.Header.Del("X-API-Key")
		}
		if policy != nil {
			return policy(req, via)
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return nil
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// APIError is a non-2xx answer of the daemon.
type APIError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Envelope is the daemon's error envelope. A body that is not one (a proxy's answer) is
	// reported with Code "" and the body's start as Message.
	Envelope client.ErrorEnvelope
	// RetryAfter is the Retry-After of a 429 (0 when absent).
	RetryAfter time.Duration
	// CorrelationID is the X-Correlation-Id of the answer.
	CorrelationID string
}

func (e *APIError) Error() string {
	if e.Envelope.Code == "" {
		return fmt.Sprintf("HTTP %d: %s", e.StatusCode, e.Envelope.Message)
	}
	return fmt.Sprintf("%s (HTTP %d %s)", e.Envelope.Message, e.StatusCode, e.Envelope.Code)
}

// Retriable reports what the daemon said about retrying.
func (e *APIError) Retriable() bool { return e.Envelope.Retriable }

// apiError builds an APIError from an answer whose body has been read.
func apiError(resp *http.Response, body []byte) *APIError {
	e := &APIError{StatusCode: resp.StatusCode, CorrelationID: resp.Header.Get("X-Correlation-Id"),
		RetryAfter: retryAfter(resp.Header)}
	if err := json.Unmarshal(body, &e.Envelope); err != nil || e.Envelope.Message == "" {
		msg := strings.TrimSpace(string(body))
		if len(msg) > 512 {
			msg = msg[:512]
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		e.Envelope = client.ErrorEnvelope{Message: msg}
	}
	return e
}

// retryAfter reads Retry-After: whole seconds (the daemon's form) or an HTTP-date (a proxy
// may send one; RFC 9110 allows both), measured from now; 0 when absent, unreadable or past.
func retryAfter(h http.Header) time.Duration {
	return retryAfterAt(h, time.Now())
}

func retryAfterAt(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(min(max(n, 0), 1<<30)) * time.Second // capped: no overflow to a negative wait
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// do sends the request built by call, retrying retriable 429 answers (see retriable429) after
// their Retry-After, and returns the first answer with another status (its body unread) or the
// last 429 as an *APIError. The caller closes the body.
func (c *Client) do(ctx context.Context, call func(context.Context) (*http.Response, error)) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := call(ctx)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusTooManyRequests {
			return resp, nil
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		e := apiError(resp, body)
		if !retriable429(e) || c.opts.MaxRetries < 0 || attempt >= c.opts.MaxRetries {
			return nil, e
		}
		wait := e.RetryAfter
		if wait <= 0 {
			wait = time.Second
		}
		wait = min(wait, c.opts.MaxRetryWait)
		if err := c.opts.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// retriable429 reports whether waiting may help a 429: the daemon's envelope says so (a spent
// budget says retriable: false and would only fail again after every wait), or there is no
// envelope to ask (a proxy's 429), where the status alone means "later".
func retriable429(e *APIError) bool {
	return e.Envelope.Code == "" || e.Envelope.Retriable
}

// call sends a request and decodes a JSON answer with status want into out (out may be nil).
// Other statuses are returned as *APIError.
func (c *Client) call(ctx context.Context, want int, out any, send func(context.Context) (*http.Response, error)) error {
	resp, err := c.do(ctx, send)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return apiError(resp, body)
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if n, ok := out.(numbersAsSent); ok {
		dec.UseNumber()
		out = n.out
	}
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("sdk: decoding the answer of %s: %w", resp.Request.URL.Path, err)
	}
	return nil
}

// numbersAsSent is a call's out whose free-form JSON (an artifact's content and metadata) keeps
// its numbers as the daemon sent them, as json.Number: an artifact's id is defined on those
// digits, and float64 would round 9007199254740993 and turn 1.0 into 1.
type numbersAsSent struct{ out any }

// Completion returns a completion task for model with the daemon's usual defaults: engine
// llamacpp, interactive priority, ctx 2048, 64 tokens at most, a 60 s deadline. Submit fills
// the ids.
func Completion(model, prompt string) client.TaskRequest {
	return client.TaskRequest{
		Workload: client.Completion, Engine: client.Llamacpp, ModelRef: model, Prompt: &prompt,
		Ctx: 2048, Priority: client.Interactive, MaxTokens: 64, DeadlineMs: 60000,
	}
}

// Submit admits a task. A zero TaskId is replaced by a new random UUID, so that a retry
// re-posts the same task; a zero SessionId is left out for the daemon to fill in: a new
// session for a new task, the task's own for a re-post (a random one here would make every
// re-post another request, 409 CONFLICT). req is passed by value: read the ids from the
// answer. A retriable 429 is retried (see Options.MaxRetries).
func (c *Client) Submit(ctx context.Context, req client.TaskRequest) (*client.AdmissionResponse, error) {
	if req.TaskId == uuid.Nil {
		req.TaskId = uuid.New()
	}
	var out client.AdmissionResponse
	err := c.call(ctx, http.StatusAccepted, &out, func(ctx context.Context) (*http.Response, error) {
		return c.gen.CreateTask(ctx, nil, req)
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Task returns a task's state.
func (c *Client) Task(ctx context.Context, id uuid.UUID) (*client.TaskState, error) {
	var out client.TaskState
	if err := c.call(ctx, http.StatusOK, &out, func(ctx context.Context) (*http.Response, error) {
		return c.gen.GetTask(ctx, id, nil)
	}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Cancel cancels a task (idempotent: a finished task is left as it is).
func (c *Client) Cancel(ctx context.Context, id uuid.UUID) error {
	return c.call(ctx, http.StatusNoContent, nil, func(ctx context.Context) (*http.Response, error) {
		return c.gen.CancelTask(ctx, id, nil)
	})
}

// Session returns a session's metadata.
func (c *Client) Session(ctx context.Context, id uuid.UUID) (*client.SessionInfo, error) {
	var out client.SessionInfo
	if err := c.call(ctx, http.StatusOK, &out, func(ctx context.Context) (*http.Response, error) {
		return c.gen.GetSession(ctx, id, nil)
	}); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteSession deletes a session (idempotent).
func (c *Client) DeleteSession(ctx context.Context, id uuid.UUID) error {
	return c.call(ctx, http.StatusNoContent, nil, func(ctx context.Context) (*http.Response, error) {
		return c.gen.DeleteSession(ctx, id, nil)
	})
}

// PutArtifact stores an artifact and returns its content-addressed reference.
func (c *Client) PutArtifact(ctx context.Context, a client.Artifact) (*client.ArtifactRef, error) {
	var out client.ArtifactRef
	if err := c.call(ctx, http.StatusCreated, &out, func(ctx context.Context) (*http.Response, error) {
		return c.gen.CreateArtifact(ctx, nil, a)
	}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Artifact reads a stored artifact. The numbers of its Content and Metadata are json.Number,
// exactly as stored, so that PutArtifact of what it returns stores the same artifact (same id).
func (c *Client) Artifact(ctx context.Context, id string) (*client.StoredArtifact, error) {
	var out client.StoredArtifact
	if err := c.call(ctx, http.StatusOK, numbersAsSent{&out}, func(ctx context.Context) (*http.Response, error) {
		return c.gen.GetArtifact(ctx, id, nil)
	}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Capabilities returns the engines and pools the daemon serves.
func (c *Client) Capabilities(ctx context.Context) (*client.Capabilities, error) {
	var out client.Capabilities
	if err := c.call(ctx, http.StatusOK, &out, func(ctx context.Context) (*http.Response, error) {
		return c.gen.GetCapabilities(ctx, nil)
	}); err != nil {
		return nil, err
	}
	return &out, nil
}

// PoolHealth returns a pool's health.
func (c *Client) PoolHealth(ctx context.Context, pool string) (*client.PoolHealth, error) {
	var out client.PoolHealth
	if err := c.call(ctx, http.StatusOK, &out, func(ctx context.Context) (*http.Response, error) {
		return c.gen.GetPoolHealth(ctx, pool, nil)
	}); err != nil {
		return nil, err
	}
	return &out, nil
}

// DrainPool stops admission to a pool; in-flight work may finish until deadline has passed.
func (c *Client) DrainPool(ctx context.Context, pool string, deadline time.Duration) (*client.DrainResponse, error) {
	var out client.DrainResponse
	if err := c.call(ctx, http.StatusAccepted, &out, func(ctx context.Context) (*http.Response, error) {
		return c.gen.DrainPool(ctx, pool, nil, client.DrainRequest{DeadlineMs: deadline.Milliseconds()})
	}); err != nil {
		return nil, err
	}
	return &out, nil
}

// DrainReplica stops placement on one replica of a pool (its id as PoolHealth shows it); the
// tasks running on it may finish until deadline has passed.
func (c *Client) DrainReplica(ctx context.Context, pool, replica string, deadline time.Duration) (*client.DrainResponse, error) {
	var out client.DrainResponse
	if err := c.call(ctx, http.StatusAccepted, &out, func(ctx context.Context) (*http.Response, error) {
		return c.gen.DrainReplica(ctx, pool, replica, nil, client.DrainRequest{DeadlineMs: deadline.Milliseconds()})
	}); err != nil {
		return nil, err
	}
	return &out, nil
}

// ResumeReplica ends a replica's drain and returns the replica as pool health shows it.
func (c *Client) ResumeReplica(ctx context.Context, pool, replica string) (*client.ReplicaHealth, error) {
	var out client.ReplicaHealth
	if err := c.call(ctx, http.StatusOK, &out, func(ctx context.Context) (*http.Response, error) {
		return c.gen.ResumeReplica(ctx, pool, replica, nil)
	}); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReloadPool switches a managed pool to another model. A rollback (409) is returned as an
// *APIError whose Envelope.Message is the daemon's message.
func (c *Client) ReloadPool(ctx context.Context, pool, modelRef string) (*client.ReloadResponse, error) {
	var out client.ReloadResponse
	if err := c.call(ctx, http.StatusOK, &out, func(ctx context.Context) (*http.Response, error) {
		return c.gen.ReloadPool(ctx, pool, nil, client.ReloadRequest{NewModelRef: modelRef})
	}); err != nil {
		return nil, err
	}
	return &out, nil
}
