package httpengine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// Client sends an adapter's requests. Its fields are set once, before use; it is then safe
// for concurrent use.
type Client struct {
	// Name prefixes every error message, e.g. "openai".
	Name string
	// Unit names one stream event in the idle error: "no stream <Unit> within 30s".
	Unit string
	// EOF is the message of a stream that ends (io.EOF) where the adapter wanted more; empty:
	// the end is reported as a broken stream.
	EOF string
	// HTTP sends the requests (see DefaultHTTPClient), streamed ones too when Conns is nil.
	HTTP *http.Client
	// Conns, when set, sends the streamed requests (PostStream) to its engine: kept-alive
	// connections read by the caller's goroutine (see Conns).
	Conns *Conns
	// Idle bounds the wait for each stream event (the first one included) and each GET.
	Idle time.Duration
	// Auth, when set, is sent as the Authorization header.
	Auth string
	// OnStatus maps an answer whose status is not 200 (the body unread) to an error.
	OnStatus func(ctx context.Context, resp *http.Response) error
}

// DefaultHTTPClient is the adapters' default: 5 s dial timeout, keep-alives, no proxy, no
// compression, no overall timeout.
func DefaultHTTPClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64,
		IdleConnTimeout: 4 * time.Second, DisableCompression: true}}
}

// Bearer is the Authorization value of an API key ("" for none).
func Bearer(apiKey string) string {
	if apiKey == "" {
		return ""
	}
	return "Bearer " + apiKey
}

var (
	errIdle     = errors.New("no answer from the engine within the idle timeout")
	errFinished = errors.New("request finished")
)

// Call is one request in flight: its context is cancelled when the idle timer fires (see
// Rearm and Pause) and when End is called, which closes the connection.
type Call struct {
	c      *Client
	ctx    context.Context // the caller's
	reqCtx context.Context
	cancel context.CancelCauseFunc
	dog    *Watchdog
}

// Begin starts a call under ctx, with the idle timer running.
func (c *Client) Begin(ctx context.Context) *Call {
	reqCtx, cancel := context.WithCancelCause(ctx)
	return c.call(ctx, reqCtx, cancel)
}

func (c *Client) call(ctx, reqCtx context.Context, cancel context.CancelCauseFunc) *Call {
	return &Call{c: c, ctx: ctx, reqCtx: reqCtx, cancel: cancel, dog: NewWatchdog(c.Idle, cancel, errIdle)}
}

// End stops the timer and cancels the call's context (closing its connection).
func (q *Call) End() {
	q.dog.Stop()
	q.cancel(errFinished)
}

// Rearm restarts the idle timer, before waiting for the next event.
func (q *Call) Rearm() { q.dog.Wait() }

// Pause stops the idle timer, once an event (or an error) has come.
func (q *Call) Pause() { q.dog.Got() }

// TimedOut reports whether the idle timer ended the call.
func (q *Call) TimedOut() bool { return errors.Is(context.Cause(q.reqCtx), errIdle) }

// PostStream sends body as JSON to u asking for text/event-stream. path names the request in
// errors. With Conns the connection is kept for the next generation when the answer is read to
// its end (see Conns); without, net/http sends it on a connection of its own (closing it is the
// abort signal, and some servers close streamed connections despite answering keep-alive). An
// answer other than 200 is OnStatus's error; the caller checks the content type and closes the
// body of the answer.
func (q *Call) PostStream(u, path string, body []byte) (*http.Response, error) {
	var resp *http.Response
	if uri, ok := q.c.conns(u); ok {
		var err error
		if resp, err = q.c.Conns.Post(q.reqCtx, uri, q.c.Auth, body); err != nil {
			return nil, q.TransportError("send "+path, err)
		}
	} else {
		hreq, err := http.NewRequestWithContext(q.reqCtx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return nil, engine.Errorf(engine.KindInternal, "%s: %w", q.c.Name, err)
		}
		hreq.Header.Set("Content-Type", "application/json")
		hreq.Header.Set("Accept", "text/event-stream")
		q.c.authorize(hreq)
		hreq.Close = true
		if resp, err = q.c.HTTP.Do(hreq); err != nil {
			return nil, q.TransportError("send "+path, err)
		}
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, q.c.OnStatus(q.ctx, resp)
	}
	return resp, nil
}

// conns returns u's request target when Conns serves u.
func (c *Client) conns(u string) (string, bool) {
	if c.Conns == nil {
		return "", false
	}
	return c.Conns.RequestURI(u)
}

// TransportError classifies a failure to send what or to read its answer's head: the caller's
// context error when it ended, a decode timeout when the idle timer fired, an unreachable
// server (pool unavailable), or a reset connection (worker reset).
func (q *Call) TransportError(what string, err error) error {
	if q.ctx.Err() != nil {
		return q.ctx.Err()
	}
	name := q.c.Name
	if q.TimedOut() {
		return engine.Errorf(engine.KindDecodeTimeout, "%s: %s: no answer within %v", name, what, q.c.Idle)
	}
	var op *net.OpError
	var dns *net.DNSError
	if (errors.As(err, &op) && op.Op == "dial") || errors.As(err, &dns) || errors.Is(err, syscall.ECONNREFUSED) {
		return engine.Errorf(engine.KindPoolUnavailable, "%s: %s: %w", name, what, err)
	}
	return engine.Errorf(engine.KindWorkerReset, "%s: %s: %w", name, what, err)
}

// StreamError classifies a failure to read an answer's body: the caller's context error when
// it ended, a decode timeout when the idle timer fired, an oversized event (protocol), an
// early end (Client.EOF), or a broken stream (worker reset).
func (q *Call) StreamError(err error) error {
	if q.ctx.Err() != nil {
		return q.ctx.Err()
	}
	name := q.c.Name
	if q.TimedOut() {
		return engine.Errorf(engine.KindDecodeTimeout, "%s: no stream %s within %v", name, q.c.Unit, q.c.Idle)
	}
	if errors.Is(err, ErrEventTooLong) {
		return engine.Errorf(engine.KindProtocol, "%s: %w", name, err)
	}
	if q.c.EOF != "" && errors.Is(err, io.EOF) {
		return engine.Errorf(engine.KindWorkerReset, "%s: %s", name, q.c.EOF)
	}
	return engine.Errorf(engine.KindWorkerReset, "%s: stream broken: %w", name, err)
}

// StatusError is a GET answered with a status other than 200; it unwraps to OnStatus's error.
type StatusError struct {
	Code int
	Err  error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

func (c *Client) authorize(req *http.Request) {
	if c.Auth != "" {
		req.Header.Set("Authorization", c.Auth)
	}
}

// Get sends a GET to u bounded by Idle and returns the body (at most 16 MiB) of a 200 answer;
// another status is a *StatusError. path names the request in errors; empty: u's path.
func (c *Client) Get(ctx context.Context, u, path string) ([]byte, error) {
	reqCtx, cancel := context.WithCancelCause(ctx)
	q := c.call(ctx, reqCtx, cancel)
	defer q.End()
	hreq, err := http.NewRequestWithContext(reqCtx, http.MethodGet, u, nil)
	if err != nil {
		return nil, engine.Errorf(engine.KindInternal, "%s: %w", c.Name, err)
	}
	if path == "" {
		path = hreq.URL.Path
	}
	c.authorize(hreq)
	resp, err := c.HTTP.Do(hreq)
	if err != nil {
		return nil, q.TransportError("GET "+path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Code: resp.StatusCode, Err: c.OnStatus(ctx, resp)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, q.StreamError(err)
	}
	return b, nil
}

// Health maps the outcome of a replica's health requests: none failed is live and ready; a
// *StatusError (the server answered) is live, not ready; any other failure is not live. The
// error is non-nil only when ctx has ended.
func Health(ctx context.Context, err error) (engine.Health, error) {
	if err == nil {
		return engine.Health{Live: true, Ready: true}, nil
	}
	if ctx.Err() != nil {
		return engine.Health{}, ctx.Err()
	}
	var hs *StatusError
	if errors.As(err, &hs) {
		return engine.Health{Live: true, Detail: err.Error()}, nil
	}
	return engine.Health{Detail: err.Error()}, nil
}
