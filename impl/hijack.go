package impl

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/orchestratord/orchestratord/impl/connwatch"
	"github.com/orchestratord/orchestratord/impl/sse"
)

// An event stream over HTTP/1.1 takes its connection over from net/http (Hijack) once its
// request is authenticated, validated and answered by the handler, and the handler returns.
// What net/http keeps per connection while a handler runs — its goroutine and stack, a
// goroutine blocked in a background read to notice the client leaving, a 4 KiB reader, a 4 KiB
// writer, the chunk writer, the request and its headers — then goes, for the life of a stream
// that may stay open for minutes. What replaces it per stream: a few heap objects (the
// stream, its cursor, its batch buffer, a keep-alive timer) and a registration in one epoll
// set (connwatch) that tells when the client hangs up. The stream has no goroutine while it
// waits: the journal's goroutine writes frames as it shows them when the socket takes them at
// once (see shown), and otherwise one starts when frames are ready and ends when they are
// written (see notify). Frames go out in HTTP/1.1 chunks, each batch in one write, and the
// stream ends with the last chunk. Its connection then goes back to net/http through a
// ReturnListener, to serve the client's next request (keep-alive, see giveBack), unless the
// client asked for its close or the stream did not end cleanly.

// chunkHeadroom is the room kept in front of a batch for its chunk-size line: up to 16 hex
// digits and CRLF.
const chunkHeadroom = 16 + 2

// appendChunk frames b[pre:] as one chunk: its size line goes right before the data, in
// b[:pre], and CRLF after it. It returns b and where the chunk starts.
func appendChunk(b []byte, pre int) ([]byte, int) {
	n := len(b) - pre
	var hexbuf [16]byte
	digits := strconv.AppendInt(hexbuf[:0], int64(n), 16)
	start := pre - 2 - len(digits)
	copy(b[start:], digits)
	b[pre-2], b[pre-1] = '\r', '\n'
	return append(b, '\r', '\n'), start
}

// heartbeatChunk is the keep-alive comment as one chunk; lastChunk ends a chunked body.
var (
	heartbeatChunk = fmt.Appendf(nil, "%x\r\n%s\r\n", len(sse.Heartbeat), sse.Heartbeat)
	lastChunk      = []byte("0\r\n\r\n")
)

// hijackedStreams are the open streams on connections taken over from net/http. A shutdown
// (CloseStreams) waits for them to end, then ends what is left.
type hijackedStreams struct {
	watch connwatch.Watcher

	mu      sync.Mutex
	open    map[net.Conn]*sseStream
	pending int  // streams between add and attach
	closing bool // CloseStreams began: new streams stay on net/http
	empty   chan struct{}
	// ret takes back the connection of a stream that ended cleanly, to serve the client's
	// next request (ReturnConnections); nil: such connections are closed.
	ret func(net.Conn) bool
	// idle bounds the wait of a given-back connection for its next request; idleConns are
	// those waiting (giveBack).
	idle      time.Duration
	idleConns map[*idleConn]struct{}
}

// ReturnConnections makes streams that end cleanly give their connections to ret (a
// ReturnListener's Return) instead of closing them, and answer without Connection: close.
// Call it before serving.
//
// idle bounds how long such a connection waits for the client's next request (the server's
// idle timeout; 0: no bound of its own). It waits without a goroutine or buffers: one epoll
// registration (connwatch) and a timer; net/http gets it back once the client sends (or hangs
// up). Given back at once, it would wait as a new connection, that is only as long as
// net/http's header read timeout.
func (s *Server) ReturnConnections(ret func(net.Conn) bool, idle time.Duration) {
	s.streams.ret, s.streams.idle = ret, idle
}

// idleConn is a connection given back after its stream, waiting for the client's next request
// (giveBack). Whichever of its input, its timer and a shutdown comes first settles it, once.
type idleConn struct {
	h     *hijackedStreams
	conn  net.Conn
	mu    sync.Mutex
	done  bool
	stop  func() // ends the input watch
	timer *time.Timer
}

// giveBack hands a stream's connection back to net/http for the client's next request, once
// the client sends it (see ReturnConnections); false: the connection could not be given back
// and the caller closes it. pending: the client already sent something (pipelined), which
// net/http reads now.
func (h *hijackedStreams) giveBack(conn net.Conn, pending bool) bool {
	if pending || h.idle <= 0 {
		return h.ret(conn)
	}
	ic := &idleConn{h: h, conn: conn}
	// Held until the wait is set up: once recorded, a shutdown (CloseStreams) may settle it, and
	// the watch may fire before WatchInput returns.
	ic.mu.Lock()
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		ic.mu.Unlock()
		return false
	}
	if h.idleConns == nil {
		h.idleConns = make(map[*idleConn]struct{})
	}
	h.idleConns[ic] = struct{}{}
	h.mu.Unlock()
	stop, ok := h.watch.WatchInput(conn, func() { ic.settle(true) })
	if !ok {
		ic.done = true // a shutdown's settle does nothing: the connection goes back now
		ic.mu.Unlock()
		h.forgetIdle(ic)
		return h.ret(conn)
	}
	ic.stop = stop
	ic.timer = time.AfterFunc(h.idle, func() { ic.settle(false) })
	ic.mu.Unlock()
	return true
}

// settle ends the idle wait: input (or a hang-up) gives the connection to net/http, which reads
// the request (or the end); otherwise (the idle timeout, a shutdown) it is closed.
func (ic *idleConn) settle(input bool) {
	ic.mu.Lock()
	if ic.done {
		ic.mu.Unlock()
		return
	}
	ic.done = true
	ic.mu.Unlock()
	ic.timer.Stop()
	ic.stop()
	ic.h.forgetIdle(ic)
	if !input || !ic.h.ret(ic.conn) {
		_ = ic.conn.Close()
	}
}

func (h *hijackedStreams) forgetIdle(ic *idleConn) {
	h.mu.Lock()
	delete(h.idleConns, ic)
	h.mu.Unlock()
}

// add reserves a place for a stream about to hijack its connection; false once shutting down.
func (h *hijackedStreams) add() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.pending++
	return true
}

// attach registers the stream on its connection (conn nil: the hijack did not happen).
func (h *hijackedStreams) attach(conn net.Conn, st *sseStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pending--
	if conn != nil {
		if h.open == nil {
			h.open = make(map[net.Conn]*sseStream)
		}
		h.open[conn] = st
	}
	h.signalIfEmptyLocked()
}

// remove forgets a connection its stream closed.
func (h *hijackedStreams) remove(conn net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.open, conn)
	h.signalIfEmptyLocked()
}

func (h *hijackedStreams) signalIfEmptyLocked() {
	if h.empty != nil && len(h.open) == 0 && h.pending == 0 {
		close(h.empty)
		h.empty = nil
	}
}

// CloseStreams is the shutdown of the event streams on hijacked connections, which
// http.Server.Shutdown does not see: new streams stay on net/http from now on, open ones get
// until ctx ends to write their last frames, and those still open then end as if their
// clients had gone (their connections are closed, which also ends a write blocked on a
// client that stopped reading).
func (s *Server) CloseStreams(ctx context.Context) {
	h := &s.streams
	h.mu.Lock()
	h.closing = true
	idle := make([]*idleConn, 0, len(h.idleConns))
	for ic := range h.idleConns {
		idle = append(idle, ic)
	}
	h.mu.Unlock()
	for _, ic := range idle { // connections waiting for a next request are closed, as net/http closes its idle ones
		ic.settle(false)
	}
	h.mu.Lock()
	var empty chan struct{}
	if len(h.open) > 0 || h.pending > 0 {
		empty = make(chan struct{})
		h.empty = empty
	}
	h.mu.Unlock()
	if empty == nil {
		return
	}
	select {
	case <-empty:
		return
	case <-ctx.Done():
	}
	h.mu.Lock()
	left := make(map[net.Conn]*sseStream, len(h.open))
	maps.Copy(left, h.open)
	h.mu.Unlock()
	for c, st := range left {
		_ = c.Close()
		if st != nil {
			st.hangup()
		}
	}
}

// openHijacked opens the stream on its connection, taken over from net/http. hijacked is
// false when the connection cannot be taken (not HTTP/1.1, an HTTP/2 stream, a shutdown under
// way): the caller serves the stream through w. st is nil when there is nothing to follow (the
// client already gone).
//
// The stream has no goroutine of its own while it waits. Its cursor calls notify when frames
// are logged (and its heartbeat timer and the hang-up watch signal it the same way): notify
// starts a goroutine that writes what is ready and ends once nothing is (drain). An idle open
// stream is then a few heap objects, a timer and an epoll registration.
func (r *sseResponse) openHijacked(w http.ResponseWriter) (st *sseStream, hijacked bool) {
	rs := stateOf(r.ctx)
	if rs == nil || !rs.http11 {
		return nil, false
	}
	h := &r.s.streams
	if !h.add() {
		return nil, false
	}
	st = &sseStream{r: r, out: streamWriter{timeout: r.s.opts.StreamWriteTimeout}}
	st.state.Store(streamRunning) // openHijacked is the stream's first drain
	// The reader is attached before its 200 goes out, as on net/http's path.
	st.cur = r.t.SubscribeFunc(r.from, r.verbose, st.notify, st.shown)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		st.cur.Close()
		h.attach(nil, nil)
		return nil, false
	}
	st.out.conn, st.out.raw = conn, socketWriter(conn)
	h.attach(conn, st)
	// The request's context ends when the handler returns, now: the stream keeps its values.
	r.ctx = context.WithoutCancel(r.ctx)
	hdr := w.Header()
	r.setHeaders(hdr)
	if st.keepAlive = h.ret != nil && !rs.closeAfter; st.keepAlive {
		// What the client sent after its request (pipelined) is kept for the next one.
		if n := brw.Reader.Buffered(); n > 0 {
			b, _ := brw.Peek(n)
			st.pre = append([]byte(nil), b...)
		}
	} else {
		hdr.Set("Connection", "close")
	}
	st.out.extend()
	if _, err := conn.Write(responseHead(hdr)); err != nil {
		r.disconnected(st.cur, false)
		st.cur.Close()
		_ = conn.Close()
		h.remove(conn)
		return nil, true
	}
	forgetResponse(w)
	rs.respHeader = nil // net/http's header map, written: the stream's context keeps the state
	if tr := r.s.opts.Tracer; tr != nil && trace.SpanFromContext(r.ctx).IsRecording() {
		// The request's span ends as the handler returns, now: the stream's own covers its life.
		_, st.span = tr.Start(r.ctx, "task.stream", trace.WithAttributes(attribute.String("task.id", r.t.ID()),
			attribute.Int("sse.from", r.from)))
	}
	r.s.opts.Metrics.StreamsOpen.Inc()
	st.stopWatch = h.watch.Watch(conn, st.hangup)
	st.interval = r.s.opts.Heartbeat
	st.hb = time.AfterFunc(st.interval, st.heartbeatDue)
	return st, true
}

// forgetResponse drops echo's reference to net/http's response of a hijacked connection. echo
// keeps its request contexts in a sync.Pool, each with the last response it served; a pooled
// context of a hijacked stream would keep net/http's per-connection state (its 4 KiB reader and
// writer among it) reachable until the pool's next clean-up, which needs two garbage
// collections, which an idle daemon does not run. What echo may still do with the response
// after the handler returns (nothing, for a stream) finds the connection hijacked.
func forgetResponse(w http.ResponseWriter) {
	if er, ok := w.(*echo.Response); ok {
		er.Writer = hijackedResponse{}
	}
}

// hijackedResponse answers for a response whose connection was hijacked.
type hijackedResponse struct{}

func (hijackedResponse) Header() http.Header       { return http.Header{} }
func (hijackedResponse) Write([]byte) (int, error) { return 0, http.ErrHijacked }
func (hijackedResponse) WriteHeader(int)           {}

// responseHead is a stream's status line and headers, chunked.
func responseHead(hdr http.Header) []byte {
	var b headBuffer
	b = append(b, "HTTP/1.1 200 OK\r\n"...)
	_ = hdr.Write(&b)
	b = append(b, "Date: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\nTransfer-Encoding: chunked\r\n\r\n"...)
	return b
}

// headBuffer is an io.Writer appending to itself.
type headBuffer []byte

func (b *headBuffer) Write(p []byte) (int, error) {
	*b = append(*b, p...)
	return len(p), nil
}

// WriteString lets http.Header.Write skip a conversion per header.
func (b *headBuffer) WriteString(s string) (int, error) {
	*b = append(*b, s...)
	return len(s), nil
}

// States of a hijacked stream's drain: idle (no goroutine), running (one goroutine writes).
const (
	streamIdle int32 = iota
	streamRunning
)

// notify is the cursor's signal: something may be ready. It starts the stream's drain unless
// one runs, which then sees pending and goes round again. It runs under the task's lock (it
// only sets flags and may start a goroutine).
func (st *sseStream) notify() {
	st.pending.Store(true)
	if st.state.CompareAndSwap(streamIdle, streamRunning) {
		go st.drain()
	}
}

// shownRounds bounds how many batches of one stream the journal's goroutine writes in a row
// (frames shown while it wrote): past it, a drain goroutine takes over the stream.
const shownRounds = 4

// shown is the journal's call once frames the stream waits for are shown (see
// task.SubscribeFunc). When no drain runs, the journal's goroutine writes them itself, as one
// write that does not wait for the socket; a goroutine takes over what that cannot finish: a
// write the socket took only part of, a failed write, a due keep-alive comment, the client
// gone, the stream's end. A stream whose client keeps up thus costs no goroutine per batch:
// starting one, and waking a thread to run it, cost more than the write.
func (st *sseStream) shown() {
	st.pending.Store(true)
	if !st.state.CompareAndSwap(streamIdle, streamRunning) {
		return
	}
	if st.out.raw == nil {
		go st.drain()
		return
	}
	for range shownRounds {
		st.pending.Store(false)
		if st.hbFired.Load() || st.gone.Load() || !st.sendNow() {
			go st.drain()
			return
		}
		again, wait := st.afterSend()
		if wait {
			go st.drain()
			return
		}
		if !again {
			return
		}
	}
	go st.drain()
}

// afterSend ends a round of writing: it arranges for the stream to be told when frames held
// back for the journal are shown, and hands the stream back to idle. again: the writer goes
// round once more (frames were shown meanwhile, or a signal came and left the round to it);
// wait: the journal cannot tell, and the writer waits on the cursor's Flushed.
func (st *sseStream) afterSend() (again, wait bool) {
	if st.cur.Flushed() != nil {
		registered, supported := st.cur.NotifyWhenShown()
		if !supported {
			return false, true
		}
		if !registered {
			return true, false // shown in the meantime
		}
	}
	st.state.Store(streamIdle)
	// A signal between the send and the store above found the writer running and left it to
	// this one: take it back, unless a new drain already did.
	if !st.pending.Load() || !st.state.CompareAndSwap(streamIdle, streamRunning) {
		return false, false
	}
	return true, false
}

// sendNow is send with a write that does not wait: true when everything ready went out and the
// stream goes on. Otherwise a drain finishes: it writes what the socket did not take (unsent),
// ends a stream whose write failed (wfail) and ends a complete one (its Next reports it again).
func (st *sseStream) sendNow() bool {
	pre := chunkHeadroom
	if cap(st.buf) < pre {
		st.buf = make([]byte, pre, 256)
	}
	var complete bool
	st.buf, complete = st.cur.Next(st.buf[:pre])
	if len(st.buf) > pre {
		b, start := appendChunk(st.buf, pre)
		st.buf = b
		n, err := st.out.tryWrite(b[start:])
		if err != nil {
			st.wfail = true
			return false
		}
		if start+n < len(b) {
			st.unsent = b[start+n:]
			return false
		}
		st.r.s.batches.journal.Inc()
	}
	if complete {
		return false
	}
	if cap(st.buf) > 1<<20 { // do not keep a huge buffer after a burst
		st.buf = nil
	}
	return true
}

// drain writes what is ready (frames, a due keep-alive comment) and returns once nothing is,
// or closes the stream once it is over. One drain runs at a time (state): the goroutine that
// moved state from idle to running owns the stream's buffers and writer until it moves it back.
func (st *sseStream) drain() {
	if st.wfail || len(st.unsent) > 0 { // left by shown
		if !st.wfail {
			st.out.extend()
			_, err := st.out.conn.Write(st.unsent)
			st.wfail = err != nil
		}
		st.unsent = nil
		if st.wfail {
			st.r.disconnected(st.cur, false)
			st.closeHijacked()
			return
		}
	}
	for {
		st.pending.Store(false)
		if !st.send() || !st.woke() {
			st.closeHijacked()
			return
		}
		// Frames that wait for the journal's write, a moment away, are shown by the journal,
		// which calls shown; where it cannot tell, they are waited for here (a signal, the
		// client gone, ends the wait too).
		again, wait := st.afterSend()
		if wait {
			select {
			case <-st.cur.Flushed():
			case <-st.cur.Wake():
			}
			continue
		}
		if !again {
			return
		}
	}
}

// hangup is the watcher's report that the client went away.
func (st *sseStream) hangup() {
	st.gone.Store(true)
	st.cur.Signal()
}

// clientGone reports whether the client went away (net/http's path: the request's context
// ended).
func (st *sseStream) clientGone() bool {
	if st.out.conn != nil {
		return st.gone.Load()
	}
	return st.r.ctx.Err() != nil
}

// closeHijacked releases what openHijacked took and ends the body of a complete stream. Its
// connection goes back to serve the client's next request when the stream ended cleanly and
// keep-alive was answered; otherwise it is closed. The stream's state stays running: no drain
// starts again.
func (st *sseStream) closeHijacked() {
	if st.span != nil {
		st.span.SetAttributes(attribute.Bool("sse.complete", st.complete), attribute.Bool("sse.client_gone", st.gone.Load()))
		st.span.End()
	}
	st.hb.Stop()
	st.stopWatch()
	st.r.s.opts.Metrics.StreamsOpen.Dec()
	st.r.s.closeStream(&st.r.streamKey)
	st.cur.Close()
	conn := st.out.conn
	h := &st.r.s.streams
	reuse := false
	if st.complete {
		st.out.extend()
		_, err := conn.Write(lastChunk)
		reuse = err == nil && st.keepAlive && !st.gone.Load()
	}
	h.remove(conn)
	if reuse && conn.SetDeadline(time.Time{}) == nil {
		back, pre := conn, st.pre
		if pc, ok := conn.(*prefixConn); ok {
			// Handed back before with bytes of its own: what net/http did not read of them
			// comes after what it did (st.pre). One wrapper, not one more per pipelined stream.
			back, pre = pc.Conn, append(slices.Clip(pre), pc.pre...)
		}
		if len(pre) > 0 {
			back = &prefixConn{Conn: back, pre: pre}
		}
		if h.giveBack(back, len(pre) > 0) {
			return
		}
	}
	_ = conn.Close()
}

// socketWriter returns the handle of conn's socket for writes that do not wait, looking
// through wrappers whose writes go to the connection they wrap unchanged (WriteConn); nil for
// any other connection (TLS among them), whose streams write from a drain goroutine only.
func socketWriter(conn net.Conn) syscall.RawConn {
	for {
		switch c := conn.(type) {
		case *net.TCPConn:
			rc, err := c.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		case interface{ WriteConn() net.Conn }:
			conn = c.WriteConn()
		default:
			return nil
		}
	}
}

// tryWrite writes b to the socket without waiting for it: n is what the socket took (0 when
// its buffer is full).
func (o *streamWriter) tryWrite(b []byte) (n int, err error) {
	o.extend()
	var werr error
	err = o.raw.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), b)
			if werr != syscall.EINTR {
				return true // never wait
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if werr == syscall.EAGAIN {
		return 0, nil
	}
	if werr != nil {
		return 0, werr
	}
	return n, nil
}
