package impl

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/orchestratord/orchestratord/impl/connwatch"
	"github.com/orchestratord/orchestratord/impl/sse"
)

// An event stream over HTTP/1.1 takes its connection over from net/http (Hijack) once its
// request is authenticated, validated and answered by the handler, and the handler returns.
// What net/http keeps per connection while a handler runs — its goroutine and stack, a
// goroutine blocked in a background read to notice the client leaving, a 4 KiB reader, a 4 KiB
// writer, the chunk writer, the request and its headers — then goes, for the life of a stream
// that may stay open for minutes. What replaces it per stream: the stream's own goroutine,
// whose frames are shallow (its stack shrinks to the runtime's minimum while it waits), its
// batch buffer, and a registration in one epoll set (connwatch) that tells when the client
// hangs up. Frames go out in HTTP/1.1 chunks, each batch in one write, and the stream ends
// with the last chunk and the connection's close (the response says Connection: close).

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
// (CloseStreams) waits for them to end, then closes what is left.
type hijackedStreams struct {
	watch connwatch.Watcher

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	pending int  // streams between add and their connection's registration (or their fallback)
	closing bool // CloseStreams began: new streams stay on net/http
	empty   chan struct{}
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

// attach registers the stream's connection (conn nil: the hijack did not happen).
func (h *hijackedStreams) attach(conn net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pending--
	if conn != nil {
		if h.conns == nil {
			h.conns = make(map[net.Conn]struct{})
		}
		h.conns[conn] = struct{}{}
	}
	h.signalIfEmptyLocked()
}

// remove forgets a connection its stream closed.
func (h *hijackedStreams) remove(conn net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, conn)
	h.signalIfEmptyLocked()
}

func (h *hijackedStreams) signalIfEmptyLocked() {
	if h.empty != nil && len(h.conns) == 0 && h.pending == 0 {
		close(h.empty)
		h.empty = nil
	}
}

// CloseStreams is the shutdown of the event streams on hijacked connections, which
// http.Server.Shutdown does not see: new streams stay on net/http from now on, open ones get
// until ctx ends to write their last frames, and the connections of those still open then are
// closed (their streams end as if the clients had gone).
func (s *Server) CloseStreams(ctx context.Context) {
	h := &s.streams
	h.mu.Lock()
	h.closing = true
	var empty chan struct{}
	if len(h.conns) > 0 || h.pending > 0 {
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
	conns := make([]net.Conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// openHijacked opens the stream on its connection, taken over from net/http. hijacked is
// false when the connection cannot be taken (not HTTP/1.1, an HTTP/2 stream, a shutdown under
// way): the caller serves the stream through w. st is nil when there is nothing to follow (the
// client already gone).
func (r *sseResponse) openHijacked(w http.ResponseWriter) (st *sseStream, hijacked bool) {
	if rs := stateOf(r.ctx); rs == nil || !rs.http11 {
		return nil, false
	}
	h := &r.s.streams
	if !h.add() {
		return nil, false
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.attach(nil)
		return nil, false
	}
	h.attach(conn)
	// The request's context ends when the handler returns, now: the stream keeps its values.
	r.ctx = context.WithoutCancel(r.ctx)
	hdr := w.Header()
	r.setHeaders(hdr)
	hdr.Set("Connection", "close")
	st = &sseStream{r: r, out: streamWriter{conn: conn, timeout: r.s.opts.StreamWriteTimeout}}
	// The reader is attached before its 200 goes out, as on net/http's path.
	st.cur = r.t.Subscribe(r.from, r.verbose)
	st.out.extend()
	if _, err := conn.Write(responseHead(hdr)); err != nil {
		r.disconnected(st.cur, false)
		st.cur.Close()
		_ = conn.Close()
		h.remove(conn)
		return nil, true
	}
	r.s.opts.Metrics.StreamsOpen.Inc()
	st.stopWatch = h.watch.Watch(conn, st.hangup)
	st.interval = r.s.opts.Heartbeat
	st.hb = time.AfterFunc(st.interval, st.heartbeatDue)
	return st, true
}

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

// run is a hijacked stream's goroutine: it writes the stream until it is over, then ends the
// body and closes the connection.
func (st *sseStream) run() {
	defer st.close()
	st.loop()
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

// closeHijacked releases what openHijacked took, ends the body of a complete stream and closes
// the connection.
func (st *sseStream) closeHijacked() {
	st.hb.Stop()
	st.stopWatch()
	st.r.s.opts.Metrics.StreamsOpen.Dec()
	st.cur.Close()
	conn := st.out.conn
	if st.complete {
		st.out.extend()
		_, _ = conn.Write(lastChunk)
	}
	_ = conn.Close()
	st.r.s.streams.remove(conn)
}
