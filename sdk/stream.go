package sdk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
)

// maxFrameBytes bounds one SSE frame; a longer one is a protocol error.
const maxFrameBytes = 8 << 20

// StreamOption changes one Stream call.
type StreamOption func(*streamConfig)

type streamConfig struct {
	after   int64
	verbose bool
	keep    bool
}

// After starts the stream after the event with this id (as Last-Event-ID does), for a caller
// that resumes a stream it read before, for example in another process. After the final
// event's id, the iteration ends at once without an event or an error.
func After(id int64) StreamOption { return func(c *streamConfig) { c.after = id } }

// Verbose asks for human-readable narration in Metrics events.
func Verbose() StreamOption { return func(c *streamConfig) { c.verbose = true } }

// KeepTask keeps the task running when the caller stops iterating early (see
// Options.KeepTaskOnBreak).
func KeepTask() StreamOption { return func(c *streamConfig) { c.keep = true } }

// cancelTimeout bounds the cancel sent when the caller stops iterating early.
const cancelTimeout = 10 * time.Second

// Stream returns the task's events in order, each exactly once, ending after End or
// ErrorEvent. A dropped connection is reopened with Last-Event-ID (up to
// Options.MaxReconnects times in a row without an event in between). An error ends the
// iteration; it is yielded with a nil Event, and the task is left as it is. Breaking out of
// the loop before the last event cancels the task unless Options.KeepTaskOnBreak or KeepTask
// is set; so does ctx ending. Events of a kind this SDK does not know are skipped.
func (c *Client) Stream(ctx context.Context, id uuid.UUID, opts ...StreamOption) iter.Seq2[Event, error] {
	cfg := streamConfig{after: -1, keep: c.opts.KeepTaskOnBreak}
	for _, o := range opts {
		o(&cfg)
	}
	return func(yield func(Event, error) bool) {
		s := &stream{c: c, id: id, cfg: cfg, last: cfg.after}
		s.run(ctx, yield)
	}
}

type stream struct {
	c    *Client
	id   uuid.UUID
	cfg  streamConfig
	last int64 // id of the last event delivered; -1 before the first
}

func (s *stream) run(ctx context.Context, yield func(Event, error) bool) {
	drops := 0
	var lastErr error
	for {
		// The connection's own context: cancelling it is how an idle stream's Read is cut
		// (the transport then closes the connection).
		cctx, abort := context.WithCancel(ctx)
		body, err := s.open(cctx)
		if err != nil {
			abort()
			if ctx.Err() != nil {
				s.stop(ctx)
				yield(nil, err)
				return
			}
			var apiErr *APIError
			if errors.As(err, &apiErr) && !transientStatus(apiErr.StatusCode) {
				yield(nil, err)
				return
			}
			lastErr = err
		} else {
			progressed, done, err := s.read(ctx, body, abort, yield)
			abort()
			if done {
				return
			}
			if progressed {
				drops = 0
			}
			lastErr = err
		}
		if ctx.Err() != nil {
			s.stop(ctx)
			yield(nil, ctx.Err())
			return
		}
		if s.c.opts.MaxReconnects < 0 || drops >= s.c.opts.MaxReconnects {
			yield(nil, fmt.Errorf("sdk: stream of task %s dropped %d times in a row: %w", s.id, drops+1, lastErr))
			return
		}
		wait := s.c.opts.MaxReconnectDelay
		if drops < 30 && s.c.opts.ReconnectDelay<<drops < wait {
			wait = s.c.opts.ReconnectDelay << drops
		}
		drops++
		if err := s.c.opts.Sleep(ctx, wait); err != nil {
			s.stop(ctx)
			yield(nil, err)
			return
		}
	}
}

// open opens the stream after s.last.
func (s *stream) open(ctx context.Context) (io.ReadCloser, error) {
	params := &client.StreamTaskParams{}
	if s.last >= 0 {
		v := strconv.FormatInt(s.last, 10)
		params.LastEventID = &v
	}
	if s.cfg.verbose {
		v := true
		params.Verbose = &v
	}
	resp, err := s.c.do(ctx, func(ctx context.Context) (*http.Response, error) {
		return s.c.gen.StreamTask(ctx, s.id, params, func(_ context.Context, r *http.Request) error {
			r.Header.Set("Accept", "text/event-stream")
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, apiError(resp, b)
	}
	return resp.Body, nil
}

// read delivers the frames of one connection and closes its body. done: the iteration is over
// (last event, early break, a protocol error or a task that had already ended, all already
// handled); otherwise err says why the connection ended.
func (s *stream) read(ctx context.Context, body io.ReadCloser, abort context.CancelFunc, yield func(Event, error) bool) (progressed, done bool, err error) {
	// Deferred so that a panic (or runtime.Goexit) in the caller's loop body, which unwinds
	// through yield, still closes the connection.
	defer body.Close()
	var src io.Reader = body
	if d := s.c.opts.StreamIdleTimeout; d > 0 {
		w := &idleReader{body: body, d: d, abort: abort}
		defer w.stop()
		src = w
	}
	br := bufio.NewReaderSize(src, 16<<10)
	for {
		f, err := readFrame(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				if !progressed && s.ended(ctx) {
					return progressed, true, nil // resumed after the final event: nothing more
				}
				err = io.ErrUnexpectedEOF // the stream ended before its last event
			}
			var perr *protocolError
			if errors.As(err, &perr) {
				yield(nil, err)
				return progressed, true, nil
			}
			return progressed, false, err
		}
		if f.id <= s.last {
			continue // already delivered
		}
		ev, err := decodeEvent(f)
		if err != nil {
			yield(nil, err)
			return progressed, true, nil
		}
		s.last, progressed = f.id, true
		if ev == nil {
			continue // an event this SDK does not know (a newer daemon): skipped
		}
		last := terminal(ev)
		if !yield(ev, nil) {
			if !last {
				s.stop(ctx)
			}
			return progressed, true, nil
		}
		if last {
			return progressed, true, nil
		}
	}
}

// errStreamIdle is a stream that sent nothing, not even a heartbeat, for StreamIdleTimeout.
var errStreamIdle = errors.New("sdk: the stream sent nothing for its idle timeout (no heartbeat): connection taken as dead")

// idleReader aborts its connection (through the request's context) when one Read waits
// longer than d: a connection whose peer is gone without a FIN or RST (a host powered off, a
// NAT entry dropped) would otherwise block its Read forever. Only the time inside Read
// counts, so a caller slow with an event is no idle stream.
type idleReader struct {
	body  io.Reader
	d     time.Duration
	abort context.CancelFunc
	t     *time.Timer
	fired atomic.Bool
}

func (r *idleReader) Read(p []byte) (int, error) {
	if r.t == nil {
		r.t = time.AfterFunc(r.d, func() { r.fired.Store(true); r.abort() })
	} else {
		r.t.Reset(r.d)
	}
	n, err := r.body.Read(p)
	r.t.Stop()
	if r.fired.Load() { // the connection is being closed: what it still gave is kept, then this
		return n, errStreamIdle
	}
	return n, err
}

func (r *idleReader) stop() {
	if r.t != nil {
		r.t.Stop()
	}
}

// ended reports whether the task has ended, for a connection that closed cleanly without a new
// frame: the daemon answers a resume after the final event with nothing more, which is no drop
// to reconnect after. An error (the daemon unreachable) counts as "not known to have ended".
func (s *stream) ended(ctx context.Context) bool {
	ts, err := s.c.Task(ctx, s.id)
	if err != nil {
		return false
	}
	switch ts.State {
	case client.Succeeded, client.Failed, client.Canceled:
		return true
	}
	return false
}

// stop cancels the task when the caller gave up on it early, unless asked to keep it.
func (s *stream) stop(ctx context.Context) {
	if s.cfg.keep {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	defer cancel()
	_ = s.c.Cancel(cctx, s.id)
}

// frame is one parsed SSE frame.
type frame struct {
	id    int64
	event string
	data  string
}

// protocolError is a stream that breaks the SSE framing of the contract (reconnecting would
// not help).
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "sdk: SSE protocol error: " + e.msg }

// readFrame reads the next frame: `id`, `event` and `data` fields up to a blank line; comment
// lines (": keep-alive") and blocks with no field are skipped. io.EOF: the stream ended
// between frames; io.ErrUnexpectedEOF: inside one.
func readFrame(br *bufio.Reader) (frame, error) {
	var (
		f                      frame
		hasID, hasEvent, begun bool
		data                   []byte
		hasData                bool
		size                   int
	)
	for {
		line, err := readLine(br, maxFrameBytes-size)
		if err != nil {
			if errors.Is(err, io.EOF) && begun {
				return frame{}, io.ErrUnexpectedEOF
			}
			return frame{}, err
		}
		size += len(line) + 1
		if len(line) == 0 {
			if !hasID && !hasEvent && !hasData {
				// Only comments (a keep-alive): they are no part of the next frame, so they do
				// not count toward its size; hours of heartbeats would otherwise exceed it.
				begun, size = false, 0
				continue
			}
			switch {
			case !hasID:
				return frame{}, &protocolError{"frame without id"}
			case !hasEvent:
				return frame{}, &protocolError{fmt.Sprintf("frame %d without event", f.id)}
			case !hasData:
				return frame{}, &protocolError{fmt.Sprintf("frame %d without data", f.id)}
			}
			f.data = string(data)
			return f, nil
		}
		begun = true
		if line[0] == ':' {
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "id":
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || len(value) > 9 {
				return frame{}, &protocolError{fmt.Sprintf("bad id %q", value)}
			}
			f.id, hasID = n, true
		case "event":
			f.event, hasEvent = string(value), true
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data, hasData = append(data, value...), true
		}
	}
}

// readLine reads one line without its "\n" or "\r\n", of at most limit bytes.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > limit+1 {
			return nil, &protocolError{fmt.Sprintf("frame longer than %d bytes", maxFrameBytes)}
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			line = line[:len(line)-1]
			return bytes.TrimSuffix(line, []byte("\r")), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// transientStatus reports whether a stream's (re)open answered with a status that passes: the
// daemon stopping (503), or a proxy in front of one that is down or restarting (502, 504).
// The stream is reopened after it, as after a dropped connection.
func transientStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}
