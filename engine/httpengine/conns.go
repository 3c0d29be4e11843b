package httpengine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// Conns holds one replica's connections for streamed requests (POST, text/event-stream over
// HTTP/1.1 on plain TCP). Unlike net/http's Transport it runs no goroutine of its own: the
// caller's goroutine writes the request and reads the answer, so a stream costs one goroutine
// (the engine read) instead of three, and an idle kept connection holds no buffer.
//
// Connections are kept alive between generations, at most MaxIdle of them, each for at most
// IdleTimeout. An engine that closes its streamed connections is detected, not configured: it
// answers "Connection: close", or a kept connection is found closed when taken for the next
// generation (a read that does not wait sees its end), or a request on a kept connection fails
// before any byte of the answer came (it is then sent again once, on a fresh connection: the
// engine closed the connection before reading it). llama-server 0.7.0 closes them despite
// answering keep-alive. That replica then gets one connection per generation ("Connection:
// close" sent), and keep-alive is tried again after ReprobeAfter generations. An engine that
// ends its answers late (the end of the body more than DrainWait after the final event) falls
// back the same way, but only after SlowEndsBeforeFallback such answers in a row: one late end
// is an engine short of CPU for a moment, and falling back then would add a connection's
// setup per generation to a machine already saturated.
//
// Safe for concurrent use.
type Conns struct {
	base    string // scheme://host[:port], no trailing slash
	addr    string // host:port to dial
	host    string // Host header
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle int
	ttl     time.Duration
	now     func() time.Time

	// drainWait bounds the wait for the end of a complete answer (DrainWait; tests shorten it).
	drainWait time.Duration
	log       *slog.Logger

	mu      sync.Mutex
	idle    []idleConn // most recently used last
	closing int        // generations left with one connection each (> 0: the engine closed kept connections)
	// slowEnds counts the complete answers in a row whose end did not come within drainWait.
	slowEnds int
	stats    engine.ConnStats
	reaping  bool // a reap is scheduled: kept connections are closed once they outlive ttl
}

type idleConn struct {
	c     net.Conn
	since time.Time
}

// ReprobeAfter is the number of one-connection generations after which a replica that closed
// kept connections is tried with keep-alive again.
const ReprobeAfter = 256

// DefaultIdleConnTimeout is how long a kept connection may wait for its next generation:
// below llama-server's 5 s keep-alive timeout, so that the engine does not close it under us.
const DefaultIdleConnTimeout = 4 * time.Second

// NewConns returns the connections to the engine at base (http://host[:port][/...]; the path is
// ignored, requests name their own). maxIdle bounds the kept connections (≤ 0: 16; a replica's
// parallel slots is the natural bound). It returns nil for another scheme (https goes through
// net/http).
func NewConns(base string, maxIdle int) *Conns {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.User != nil {
		return nil
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	if maxIdle <= 0 {
		maxIdle = 16
	}
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &Conns{base: "http://" + u.Host, addr: addr, host: u.Host, dial: d.DialContext,
		maxIdle: maxIdle, ttl: DefaultIdleConnTimeout, now: time.Now, drainWait: DrainWait,
		log: slog.New(slog.DiscardHandler)}
}

// SetLogger sets where p tells of a fallback to a connection per generation (info) and of an
// answer that ended late (debug). Call it before p's first use; nil p or l: nothing changes.
func (p *Conns) SetLogger(l *slog.Logger) {
	if p != nil && l != nil {
		p.log = l
	}
}

// Stats returns the counts so far, and what is kept now.
func (p *Conns) Stats() engine.ConnStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Idle, s.OnePerGeneration = len(p.idle), p.closing > 0
	return s
}

// EngineConns is Stats for engine.ConnReporter; ok is false for a nil p (NewConns' answer for
// an engine that net/http serves).
func (p *Conns) EngineConns() (s engine.ConnStats, ok bool) {
	if p == nil {
		return engine.ConnStats{}, false
	}
	return p.Stats(), true
}

// CloseIdle closes the kept connections.
func (p *Conns) CloseIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		_ = ic.c.Close()
	}
}

// RequestURI returns u's request target on this engine, or false when u is not on it.
func (p *Conns) RequestURI(u string) (string, bool) {
	rest, ok := strings.CutPrefix(u, p.base)
	if !ok || (rest != "" && rest[0] != '/') {
		return "", false
	}
	if rest == "" {
		rest = "/"
	}
	return rest, true
}

// take returns a kept connection, or nil; keep reports whether the answer may be kept.
func (p *Conns) take() (c net.Conn, keep bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing > 0 {
		p.closing--
		return nil, false
	}
	now := p.now()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		ic := p.idle[n-1]
		p.idle[n-1] = idleConn{}
		p.idle = p.idle[:n-1]
		if now.Sub(ic.since) < p.ttl {
			return ic.c, true
		}
		_ = ic.c.Close()
	}
	return nil, true
}

// put keeps c for the next generation, or closes it when enough are kept.
func (p *Conns) put(c net.Conn) {
	p.mu.Lock()
	if p.closing > 0 || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.idle = append(p.idle, idleConn{c: c, since: p.now()})
	if !p.reaping {
		p.reaping = true
		time.AfterFunc(p.ttl, p.reap)
	}
	p.mu.Unlock()
}

// reap closes the kept connections that have waited ttl or longer, so that a replica that gets
// no more generations (idle, replaced by a reload, the daemon stopping) holds no engine
// connection open: an engine that waits for its clients' connections to close before it exits
// (tritonserver does) is not held up. It runs again while connections are kept, when the
// oldest of them comes due; a generation that takes one in between only makes it find less.
func (p *Conns) reap() {
	p.mu.Lock()
	now := p.now()
	var expired []net.Conn
	kept := p.idle[:0]
	for _, ic := range p.idle {
		if now.Sub(ic.since) >= p.ttl {
			expired = append(expired, ic.c)
			continue
		}
		kept = append(kept, ic)
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	if len(p.idle) > 0 {
		// The oldest kept connection is the first (most recently used last).
		time.AfterFunc(max(p.ttl-now.Sub(p.idle[0].since), time.Millisecond), p.reap)
	} else {
		p.reaping = false
	}
	p.mu.Unlock()
	for _, c := range expired {
		_ = c.Close()
	}
}

// closesConns records that the engine closed a streamed connection (why): the next
// ReprobeAfter generations get a connection each, and the kept ones are dropped (they would
// fail too).
func (p *Conns) closesConns(why string) {
	p.mu.Lock()
	first := p.closing == 0
	if first {
		p.stats.Fallbacks++
	}
	p.closing = ReprobeAfter
	p.slowEnds = 0
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		_ = ic.c.Close()
	}
	if first {
		p.log.Info("engine connections: one per generation", "engine", p.base, "why", why,
			"generations", ReprobeAfter)
	}
}

// SlowEndsBeforeFallback is how many complete answers in a row whose end comes later than
// DrainWait make a replica fall back to a connection per generation.
const SlowEndsBeforeFallback = 3

// noteEnd records how the end of a complete answer came: in time, or not within drainWait
// (slow; its connection is closed). SlowEndsBeforeFallback slow ones in a row fall back.
func (p *Conns) noteEnd(slow bool) {
	p.mu.Lock()
	if !slow {
		p.slowEnds = 0
		p.mu.Unlock()
		return
	}
	p.stats.LateEnds++
	p.slowEnds++
	fall := p.slowEnds >= SlowEndsBeforeFallback
	p.mu.Unlock()
	p.log.Debug("engine answer ended late: its connection is closed", "engine", p.base, "wait", p.drainWait)
	if fall {
		p.closesConns("answers ended late")
	}
}

// respBufPool holds the buffers of answers in flight (an idle connection keeps none, nor does
// an answer waiting for the engine with nothing buffered). Engine frames are a few hundred
// bytes; a longer line is assembled by its reader.
var respBufPool = sync.Pool{New: func() any { return new([respBufBytes]byte) }}

// respBufBytes is the buffer of an answer in flight: its head, then its body's bytes.
const respBufBytes = 1024

// aLongTimeAgo is a deadline that makes every pending and future I/O on a connection fail.
var aLongTimeAgo = time.Unix(1, 0)

// alive reports whether a kept connection is still open and silent: a read that does not wait
// (Go's sockets are non-blocking) finds nothing to read. An engine that closed it after its
// answer shows as the end of the stream (or a reset); anything it sent unasked is a protocol
// error. One system call per reuse, instead of a request sent on a dead connection.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true // the request itself finds out (and is sent again once)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var rerr error
	var n int
	var one [1]byte
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), one[:])
		return true // never wait for readability
	}); err != nil {
		return false
	}
	return n <= 0 && errors.Is(rerr, syscall.EAGAIN)
}

// Post sends body (JSON) to u asking for text/event-stream and returns the answer's head; ctx
// ending (or cancelled) aborts it by closing the connection. auth, when set, is the
// Authorization value. Errors are net/http-like transport errors (a failed dial is a
// *net.OpError with Op "dial"). The caller must close the body: read to its end, the
// connection is kept for the next generation; closed early, it is closed (the engine's abort
// signal).
func (p *Conns) Post(ctx context.Context, uri, auth string, body []byte) (*http.Response, error) {
	return p.PostAbort(ctx, nil, uri, auth, body)
}

// PostAbort is Post with ab, when not nil, ending the request too (see Abort): a request
// bounded by an idle watchdog needs no context of its own.
func (p *Conns) PostAbort(ctx context.Context, ab *Abort, uri, auth string, body []byte) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		var c net.Conn
		keep := false // a retry follows a detected close
		if attempt == 0 {
			c, keep = p.take()
			if c != nil && !alive(c) {
				// The engine closed it after the answer: it does not keep streamed connections.
				_ = c.Close()
				c, keep = nil, false
				p.closesConns("a kept connection was closed")
			}
		}
		reused := c != nil
		if reused {
			p.mu.Lock()
			p.stats.Reused++
			p.mu.Unlock()
		}
		if c == nil {
			var err error
			if c, err = p.dial(ctx, "tcp", p.addr); err != nil {
				return nil, err
			}
			p.mu.Lock()
			p.stats.Dialed++
			p.mu.Unlock()
		}
		resp, nread, err := p.roundTrip(ctx, ab, c, uri, auth, body, keep)
		if err == nil {
			if resp.Close && keep {
				p.closesConns("the engine answered Connection: close")
			}
			return resp, nil
		}
		if reused && nread == 0 && ctx.Err() == nil && ab.Cause() == nil {
			// The engine had closed the kept connection: it does not keep streamed ones.
			p.closesConns("a request on a kept connection failed")
			p.mu.Lock()
			p.stats.Retried++
			p.mu.Unlock()
			continue
		}
		return nil, err
	}
}

// roundTrip writes the request on c and reads the answer's head; nread counts the bytes of
// the answer read. On error c is closed.
func (p *Conns) roundTrip(ctx context.Context, ab *Abort, c net.Conn, uri, auth string, body []byte, keep bool) (resp *http.Response, nread int64, err error) {
	cb := &connBody{p: p, c: c, ab: ab, wire: newPooledWire(c)}
	ab.attach(cb)
	cb.stop = context.AfterFunc(ctx, cb.interrupt)
	req := make([]byte, 0, 192+len(uri)+len(p.host)+len(auth)+len(body))
	req = append(req, "POST "...)
	req = append(req, uri...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, p.host...)
	req = append(req, "\r\nUser-Agent: orchestratord\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: "...)
	req = strconv.AppendInt(req, int64(len(body)), 10)
	if auth != "" {
		req = append(req, "\r\nAuthorization: "...)
		req = append(req, auth...)
	}
	if !keep {
		req = append(req, "\r\nConnection: close"...)
	}
	req = append(req, "\r\n\r\n"...)
	req = append(req, body...)
	if _, err := c.Write(req); err != nil {
		cb.release()
		cb.stop()
		ab.detach()
		_ = c.Close()
		return nil, 0, err
	}
	resp, err = cb.readFinalHead()
	if err != nil {
		nread = cb.n
		cb.release()
		cb.stop()
		ab.detach()
		_ = c.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, nread, err
	}
	cb.keep = keep && !resp.Close && resp.ProtoAtLeast(1, 1)
	resp.Body = cb
	return resp, cb.n, nil
}

// connBody is an answer's body on a Conns connection, read from the connection by the caller's
// goroutine in the answer's one buffer (see wire). It is a SliceReader.
type connBody struct {
	wire
	p      *Conns
	c      net.Conn
	stop   func() bool
	ab     *Abort
	keep   bool
	closed bool
	// complete: the caller has read the engine's final event (see Complete).
	complete bool

	// A push read on the connection's poller (pushLines): while pushing, an abort shuts the
	// connection's reading down, which wakes the poller.
	pushing, aborted atomic.Bool
	pushed           chan struct{} // the poller ended the push read
	slot             int32         // in the poller
	fd               int
}

// interrupt ends the request in flight: its connection's I/O fails at once (a deadline in the
// past), and a push read ends.
func (b *connBody) interrupt() {
	_ = b.c.SetDeadline(aLongTimeAgo)
	b.aborted.Store(true)
	if b.pushing.Load() {
		b.shutRead()
	}
}

// Abort ends a request on Conns from another goroutine (an idle watchdog): Cancel makes the
// I/O of its connection fail at once, until its body is closed. Its zero value is ready; a nil
// *Abort never cancels.
type Abort struct {
	mu    sync.Mutex
	b     *connBody // the request's answer, from its first write to its Close
	cause error
}

// Cancel ends the request in flight, if any, with cause (the first one given is kept).
func (a *Abort) Cancel(cause error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cause == nil {
		a.cause = cause
	}
	if a.b != nil {
		a.b.interrupt()
	}
}

// Cause returns Cancel's cause, or nil.
func (a *Abort) Cause() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cause
}

// attach makes b the answer that Cancel ends; a request already cancelled fails at once.
func (a *Abort) attach(b *connBody) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.b = b
	if a.cause != nil {
		b.interrupt()
	}
}

// detach ends Cancel's hold on the connection, which may then be kept for another request;
// false: the request was cancelled.
func (a *Abort) detach() bool {
	if a == nil {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.b = nil
	return a.cause == nil
}

// SliceReader is an io.Reader with bufio.Reader's ReadSlice. A body from Conns.Post is one: a
// stream splitter that reads its lines with ReadSlice uses the body's buffer instead of a
// second one of its own.
type SliceReader interface {
	io.Reader
	ReadSlice(delim byte) ([]byte, error)
}

func (b *connBody) release() {
	b.wire.release()
	b.wire = wire{}
}

// Complete tells body, an answer from Conns.Post, that its reader has read the engine's final
// event: closing it then waits (briefly) for the end of the body to keep the connection, where
// closing an answer not complete closes its connection at once (the engine's abort signal).
// Other bodies are left alone.
func Complete(body io.ReadCloser) {
	if b, ok := body.(*connBody); ok {
		b.complete = true
	}
}

// DrainWait bounds the wait, after the engine's final event, for the end of its body. An
// answer that has not ended by then gets its connection closed; SlowEndsBeforeFallback of them
// in a row, one connection per generation for the next ReprobeAfter generations.
const DrainWait = 250 * time.Millisecond

func (b *connBody) Read(buf []byte) (int, error) {
	if b.closed {
		return 0, errClosedBody
	}
	return b.wire.Read(buf)
}

// ReadSlice reads the body up to and including delim, as bufio.Reader's: the slice is valid
// until the next read or Close.
func (b *connBody) ReadSlice(delim byte) ([]byte, error) {
	if b.closed {
		return nil, errClosedBody
	}
	return b.wire.ReadSlice(delim)
}

// Close keeps the connection when the answer was read to its end and nothing follows it;
// otherwise it closes the connection. An adapter stops reading at the engine's final event,
// just before the end of the body (the last chunk). For an answer marked Complete, Close reads
// what already came after it and waits for the end at most endWaitInline; when the end has
// not come by then, a goroutine of its own waits for the rest of DrainWait and then keeps or
// closes the connection: the generation (its slot, its client's last frame) does not wait for
// a late end.
func (b *connBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	armed := b.stop()              // false: ctx ended, the connection's deadline is spent
	armed = b.ab.detach() && armed // false: ab cancelled it
	if b.keep && armed && b.err == nil && b.complete {
		// The end of the body usually follows the final event within microseconds.
		ended, err := b.endNow()
		if err == nil && !ended {
			inline := min(endWaitInline, b.p.drainWait)
			if !b.waitEnd(inline) {
				go b.awaitEnd(b.p.drainWait - inline)
				return nil
			}
		}
		if err == nil {
			b.p.noteEnd(false)
		}
	}
	return b.keepOrClose(b.keep && armed && b.ended())
}

// endWaitInline bounds Close's own wait for the end of a complete answer.
const endWaitInline = 5 * time.Millisecond

// waitEnd reads the rest of the body, waiting at most d for it (at most 4 KiB): false when d
// passed first. The read that timed out took nothing, so the body can be read on.
func (b *connBody) waitEnd(d time.Duration) bool {
	_ = b.c.SetReadDeadline(time.Now().Add(d))
	var scratch [512]byte
	timedOut := false
	for range 8 {
		if _, err := b.wire.Read(scratch[:]); err != nil {
			timedOut = errors.Is(err, os.ErrDeadlineExceeded)
			break
		}
	}
	_ = b.c.SetReadDeadline(time.Time{})
	if timedOut {
		b.err = nil
	}
	return !timedOut
}

// awaitEnd waits, at most d more, for the end of a complete answer that Close did not see
// come, and then keeps or closes the connection.
func (b *connBody) awaitEnd(d time.Duration) {
	slow := !b.waitEnd(d)
	b.p.noteEnd(slow)
	_ = b.keepOrClose(!slow && b.ended())
}

// keepOrClose gives the answer's buffer back and keeps its connection (reuse) or closes it.
func (b *connBody) keepOrClose(reuse bool) error {
	b.release()
	if !reuse {
		return b.c.Close()
	}
	b.p.put(b.c)
	return nil
}
