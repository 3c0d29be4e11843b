package httpengine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// wire reads one HTTP/1.1 answer from a connection in a single buffer: the head (status line
// and header fields), then the body, chunked (the framing decoded in place, so that the buffer
// holds body bytes only), Content-Length delimited or delimited by the connection's end. A
// stream splitter reads the body's lines straight from the buffer (ReadSlice), so a generation
// waiting for its next frame holds one small buffer and no net/http state, and its goroutine
// waits a few frames from the read system call.
//
// The buffer is laid out as buf[r:d], body bytes not yet returned; buf[d:x], framing already
// decoded (a gap that the next compaction closes); buf[x:w], bytes read and not yet decoded.
type wire struct {
	c          io.Reader
	buf        []byte // nil while a pooled wire waits with nothing buffered
	pooled     bool   // buf is a respBufPool array
	rc         syscall.RawConn
	rawRead    func(fd uintptr) bool // b.readRaw, made once
	rn         int                   // readRaw's result
	rerr       error
	r, d, x, w int
	n          int64 // bytes read from c
	mode       bodyMode
	st         chunkState
	left       int64 // chunked: bytes left in the current chunk; length: in the body
	excess     int64 // chunked: framing beyond what the data justifies (as net/http counts it)
	err        error // the body's error once its buffered bytes are returned: io.EOF at its end
	noWait     bool  // read reads without waiting (endNow)

	// A push read of the body's lines (eachLine): the callback, the bound of a line, the
	// caller's buffer for lines longer than buf, and the outcome once the read is over.
	lines    func(line []byte) (stop bool, err error)
	lineMax  int
	tooLong  error
	long     *[]byte
	inLong   bool // a line's first part is in *long
	linesEnd bool // the push read is over: linesErr says why (nil: lines stopped it)
	linesErr error
}

type bodyMode uint8

const (
	bodyNone    bodyMode = iota // no body (1xx, 204, 304)
	bodyLength                  // Content-Length
	bodyChunked                 // Transfer-Encoding: chunked
	bodyToEOF                   // up to the connection's end
)

type chunkState uint8

const (
	stSize    chunkState = iota // a chunk-size line
	stData                      // left bytes of chunk data (or of a delimited body)
	stDataEnd                   // the CRLF after a chunk's data
	stTrailer                   // trailer fields, up to a blank line
	stDone                      // the body ended; what follows stays unread in buf[x:w]
)

// newPooledWire returns a wire of c in a respBufPool buffer. When c is a syscall.Conn, a wait
// for the engine with nothing buffered gives the buffer back to the pool and takes one when
// bytes have come: an idle open stream holds no read buffer.
func newPooledWire(c net.Conn) wire {
	b := wire{c: c, pooled: true}
	b.getBuf()
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			b.rc = rc
		}
	}
	return b
}

// buffersHeld counts the respBufPool buffers taken and not given back.
var buffersHeld atomic.Int64

func (b *wire) getBuf() {
	b.buf = respBufPool.Get().(*[respBufBytes]byte)[:]
	buffersHeld.Add(1)
}

// release gives a pooled buffer back.
func (b *wire) release() {
	if b.pooled && b.buf != nil {
		respBufPool.Put((*[respBufBytes]byte)(b.buf[:respBufBytes]))
		buffersHeld.Add(-1)
	}
	b.buf = nil
}

// read reads once into buf[w:].
func (b *wire) read() (int, error) {
	if b.noWait {
		return b.readNow()
	}
	if b.rc == nil || b.r != b.d || b.x != b.w {
		return b.c.Read(b.buf[b.w:])
	}
	// Nothing buffered: wait for the engine without a buffer.
	b.release()
	b.r, b.d, b.x, b.w = 0, 0, 0, 0
	if b.rawRead == nil {
		b.rawRead = b.readRaw
	}
	b.rn, b.rerr = 0, nil
	err := b.rc.Read(b.rawRead)
	if b.buf == nil {
		b.getBuf()
	}
	if err == nil {
		err = b.rerr
	}
	n := b.rn
	switch {
	case err != nil:
		nc := b.c.(net.Conn)
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: nc.LocalAddr(), Addr: nc.RemoteAddr(), Err: err}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// errNotYet is readNow's answer when nothing has come.
var errNotYet = errors.New("nothing to read yet")

// readNow reads once into buf[w:] without waiting: errNotYet when nothing has come.
func (b *wire) readNow() (int, error) {
	var n int
	var rerr error
	err := b.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = syscall.Read(int(fd), b.buf[b.w:])
			if rerr != syscall.EINTR {
				return true // never wait
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errors.Is(rerr, syscall.EAGAIN):
		return 0, errNotYet
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// endNow reads what already came of the body, without waiting, and reports whether its end
// is there with nothing after it (ended). ended is false with a nil error when the end has
// not come yet; an error (one the body will keep) when the body went wrong or 8 reads (up to
// a buffer, 1 KiB, each) found no end. Body bytes not yet returned are skipped. A wire without
// a RawConn cannot read without waiting: not yet.
func (b *wire) endNow() (ended bool, err error) {
	if b.rc == nil {
		return false, nil
	}
	if b.buf == nil { // a pooled wire waiting with nothing buffered
		b.getBuf()
		b.r, b.d, b.x, b.w = 0, 0, 0, 0
	}
	b.noWait = true
	defer func() { b.noWait = false }()
	for range 8 { // at most 8 reads after the final event, as a waiting drain
		b.r = b.d
		if b.err == nil && b.st == stDone {
			b.err = io.EOF
		}
		if b.err != nil {
			return b.ended(), nil
		}
		switch err := b.more(); {
		case errors.Is(err, errNotYet):
			return false, nil
		case err != nil:
			b.err = err
			return false, err
		}
	}
	b.err = errTrailing
	return false, b.err
}

// errTrailing: more than endNow reads followed an answer's final event.
var errTrailing = errors.New("more than expected after the final event")

// readRaw is the RawConn.Read callback: it reads what the engine sent into a buffer taken
// then, or reports (false) that nothing came yet, the buffer given back.
func (b *wire) readRaw(fd uintptr) bool {
	if b.buf == nil {
		b.getBuf()
	}
	for {
		n, err := syscall.Read(int(fd), b.buf)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			b.release()
			return false
		case err != nil:
			b.rerr = os.NewSyscallError("read", err)
		default:
			b.rn = n
		}
		return true
	}
}

// maxHeadBytes bounds an answer's head.
const maxHeadBytes = 1 << 20

var (
	errMalformedChunk = errors.New("malformed chunked encoding")
	errChunkLineLong  = errors.New("chunk line too long")
	errHeadTooLong    = errors.New("answer's head longer than 1 MiB")
)

// readHead reads the answer's head and prepares the body. An end of the connection within the
// head is io.ErrUnexpectedEOF.
func (b *wire) readHead() (*http.Response, error) {
	line, err := b.headLine(0)
	if err != nil {
		return nil, err
	}
	resp := &http.Response{}
	proto, status, ok := strings.Cut(string(line), " ")
	if !ok {
		return nil, badHead("malformed HTTP response", line)
	}
	resp.Proto = proto
	resp.Status = strings.TrimLeft(status, " ")
	code, _, _ := strings.Cut(resp.Status, " ")
	if len(code) != 3 {
		return nil, badHead("malformed HTTP status code", []byte(code))
	}
	if resp.StatusCode, err = strconv.Atoi(code); err != nil || resp.StatusCode < 100 {
		return nil, badHead("malformed HTTP status code", []byte(code))
	}
	if resp.ProtoMajor, resp.ProtoMinor, ok = http.ParseHTTPVersion(proto); !ok || resp.ProtoMajor != 1 {
		return nil, badHead("malformed HTTP version", []byte(proto))
	}
	size := len(line)
	// The fields' values are gathered in one buffer and made one string, and the common field
	// names are constants: a head costs a few allocations instead of three per field.
	var fieldsArr [16]headField
	var valsArr [512]byte
	fields, vals := fieldsArr[:0], valsArr[:0]
	for {
		line, err := b.headLine(size)
		if err != nil {
			return nil, err
		}
		size += len(line)
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold: a continuation of the previous field's value, which ends vals.
			if len(fields) == 0 {
				return nil, badHead("malformed MIME header initial line", line)
			}
			f := &fields[len(fields)-1]
			if f.end > f.start { // as net/http: a value empty so far takes no space first
				vals = append(vals, ' ')
			}
			vals = append(vals, bytes.Trim(line, " \t")...)
			f.end = len(vals)
			continue
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(k) == 0 || bytes.ContainsAny(k, " \t") {
			return nil, badHead("malformed MIME header line", line)
		}
		start := len(vals)
		vals = append(vals, bytes.Trim(v, " \t")...)
		fields = append(fields, headField{name: fieldName(k), start: start, end: len(vals)})
	}
	if len(fields) == 0 {
		resp.Header = http.Header{}
	} else {
		all := string(vals)
		values := make([]string, len(fields))
		resp.Header = make(http.Header, len(fields))
		for i, f := range fields {
			values[i] = all[f.start:f.end]
			if vs, ok := resp.Header[f.name]; ok {
				resp.Header[f.name] = append(vs, values[i])
			} else {
				resp.Header[f.name] = values[i : i+1 : i+1] // an append for a repeated field copies
			}
		}
	}
	if err := b.bodyOf(resp); err != nil {
		return nil, err
	}
	b.r, b.d = b.x, b.x
	b.err = b.decode() // what came with the head; an error shows once the bytes before it are read
	return resp, nil
}

func badHead(what string, b []byte) error { return fmt.Errorf("%s: %q", what, b) }

// maxInterim bounds the 1xx interim answers read before the final one, as net/http's.
const maxInterim = 5

var errTooManyInterim = errors.New("too many 1xx informational answers")

// readFinalHead reads the head of the final answer: a client reads the 1xx interim answers
// that come before it, expected or not (RFC 9110 15.2), as net/http's Transport does; 101
// (Switching Protocols) is final.
func (b *wire) readFinalHead() (*http.Response, error) {
	for n := 0; ; n++ {
		resp, err := b.readHead()
		if err != nil || resp.StatusCode >= http.StatusOK || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, err
		}
		if n == maxInterim {
			return nil, errTooManyInterim
		}
	}
}

// headField is a header field of an answer's head being read: its canonical name and where its
// value is in the gathered values.
type headField struct {
	name       string
	start, end int
}

// commonFields are the canonical names of the fields engines send with a streamed answer
// (llama-server, uvicorn, Go's net/http): fieldName returns them without allocating.
var commonFields = [...]string{"Content-Type", "Transfer-Encoding", "Content-Length", "Connection", "Keep-Alive",
	"Date", "Server", "Cache-Control", "Access-Control-Allow-Origin", "X-Accel-Buffering", "Retry-After", "Vary"}

// fieldName is textproto.CanonicalMIMEHeaderKey of k.
func fieldName(k []byte) string {
	for _, c := range commonFields {
		if asciiEqualFold(k, c) {
			return c
		}
	}
	return textproto.CanonicalMIMEHeaderKey(string(k))
}

// asciiEqualFold reports whether k and name are equal, ASCII letters compared without case.
func asciiEqualFold(k []byte, name string) bool {
	if len(k) != len(name) {
		return false
	}
	for i := range len(k) {
		a, b := k[i], name[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// bodyOf chooses how resp's body is delimited, and whether the connection closes after it.
func (b *wire) bodyOf(resp *http.Response) error {
	h := resp.Header
	resp.Close = hasToken(h["Connection"], "close") ||
		(resp.ProtoMinor == 0 && !hasToken(h["Connection"], "keep-alive"))
	resp.ContentLength = -1
	switch {
	case resp.StatusCode < 200 || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified:
		b.mode, b.st, resp.ContentLength = bodyNone, stDone, 0
	case len(h["Transfer-Encoding"]) > 0:
		te := h["Transfer-Encoding"]
		if len(te) != 1 || !strings.EqualFold(strings.TrimSpace(te[0]), "chunked") {
			return fmt.Errorf("unsupported transfer encoding: %q", te)
		}
		b.mode, b.st = bodyChunked, stSize
		resp.TransferEncoding = []string{"chunked"}
	case len(h["Content-Length"]) > 0:
		cl := h["Content-Length"]
		for _, v := range cl[1:] {
			if v != cl[0] {
				return fmt.Errorf("message cannot contain multiple Content-Length headers; got %q", cl)
			}
		}
		n, err := strconv.ParseUint(strings.TrimSpace(cl[0]), 10, 63)
		if err != nil {
			return fmt.Errorf("bad Content-Length %q", cl[0])
		}
		b.mode, resp.ContentLength, b.left, b.st = bodyLength, int64(n), int64(n), stData
		if n == 0 {
			b.st = stDone
		}
	default:
		b.mode, b.st, resp.Close = bodyToEOF, stData, true
	}
	return nil
}

// hasToken reports whether the comma-separated values hold token (case-insensitive).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// headLine returns the next line of the head without its end; a line longer than the buffer is
// assembled beside it. size is the head's length so far.
func (b *wire) headLine(size int) ([]byte, error) {
	var long []byte
	for {
		if i := bytes.IndexByte(b.buf[b.x:b.w], '\n'); i >= 0 {
			line := b.buf[b.x : b.x+i+1]
			b.x += i + 1
			if len(long) > 0 {
				line = append(long, line...)
			}
			if size+len(line) > maxHeadBytes {
				return nil, errHeadTooLong
			}
			return trimEOL(line), nil
		}
		if b.x == 0 && b.w == len(b.buf) { // one line fills the buffer
			long = append(long, b.buf[:b.w]...)
			b.x = b.w
			if size+len(long) > maxHeadBytes {
				return nil, errHeadTooLong
			}
		}
		b.compact()
		n, err := b.c.Read(b.buf[b.w:])
		b.n += int64(n)
		b.w += n
		if err != nil && n == 0 {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // as http.ReadResponse
			}
			return nil, err
		}
	}
}

// compact moves the unreturned body bytes and the undecoded bytes to the buffer's start.
func (b *wire) compact() {
	if b.r == 0 && b.d == b.x {
		return
	}
	n := copy(b.buf, b.buf[b.r:b.d])
	m := copy(b.buf[n:], b.buf[b.x:b.w])
	b.r, b.d, b.x, b.w = 0, n, n, n+m
}

// decode turns the bytes read into body bytes, up to what is complete.
func (b *wire) decode() error {
	for b.x < b.w {
		switch b.st {
		case stData:
			k := min(b.w-b.x, int(min(b.left, int64(len(b.buf)))))
			if b.mode == bodyToEOF {
				k = b.w - b.x
			}
			if b.d != b.x {
				copy(b.buf[b.d:], b.buf[b.x:b.x+k])
			}
			b.d += k
			b.x += k
			if b.mode == bodyToEOF {
				continue
			}
			b.left -= int64(k)
			if b.left > 0 {
				continue
			}
			if b.mode == bodyChunked {
				b.st = stDataEnd
			} else {
				b.st = stDone
			}
		case stSize:
			line, ok, err := b.chunkLine()
			if !ok {
				return err
			}
			size, err := chunkSize(line)
			if err != nil {
				return err
			}
			b.excess = max(b.excess+int64(len(line))+2-16-2*min(size, 1<<40), 0)
			if b.excess > 16<<10 {
				return errors.New("chunked encoding contains too much non-data")
			}
			if size == 0 {
				b.st = stTrailer
			} else {
				b.st, b.left = stData, size
			}
		case stDataEnd:
			if b.w-b.x < 2 {
				return nil
			}
			if b.buf[b.x] != '\r' || b.buf[b.x+1] != '\n' {
				return errMalformedChunk
			}
			b.x += 2
			b.st = stSize
		case stTrailer:
			// Trailer fields are read and dropped; they count as framing.
			i := bytes.IndexByte(b.buf[b.x:b.w], '\n')
			if i < 0 {
				return nil
			}
			b.x += i + 1
			if b.excess += int64(i) + 1; b.excess > 16<<10 {
				return errors.New("chunked encoding contains too much non-data")
			}
			if i == 0 || i == 1 && b.buf[b.x-2] == '\r' {
				b.st = stDone
			}
		case stDone:
			return nil
		}
	}
	return nil
}

// chunkLine returns a complete chunk-size line without its CRLF; a line that is not complete
// yet is !ok with a nil error.
func (b *wire) chunkLine() (line []byte, ok bool, err error) {
	i := bytes.IndexByte(b.buf[b.x:b.w], '\n')
	if i < 0 {
		return nil, false, nil
	}
	line = b.buf[b.x : b.x+i+1]
	b.x += i + 1
	// CRLF only (RFC 9112 errata 7633), no CR before it, as net/http.
	switch j := bytes.IndexByte(line, '\r'); {
	case j < 0:
		return nil, false, errors.New("chunked line ends with bare LF")
	case j != len(line)-2:
		return nil, false, errors.New("invalid CR in chunked line")
	}
	return line[:len(line)-2], true, nil
}

// maxChunkLen bounds a chunk's length (exclusive).
const maxChunkLen = 1 << 62

// errChunkTooLarge is a chunk length from maxChunkLen on.
var errChunkTooLarge = errors.New("http chunk length too large")

// chunkSize parses a chunk-size line (without its CRLF): hex digits, then optional extensions,
// which are ignored; trailing whitespace is dropped first (as net/http).
func chunkSize(line []byte) (int64, error) {
	line = bytes.TrimRight(line, " \t")
	line, _, _ = bytes.Cut(line, []byte(";"))
	if len(line) == 0 {
		return 0, errors.New("empty hex number for chunk length")
	}
	var n uint64
	for i, c := range line {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, errors.New("invalid byte in chunk length")
		}
		// Lengths from 2^62 on are refused. net/http takes any 16 hex digits and then doubles
		// the length in an int64 to check the framing's share, which wraps: it refuses some of
		// those lengths and reads the others' data until the body fails. No engine sends a chunk
		// of exabytes.
		if i == 16 || n >= maxChunkLen>>4 {
			return 0, errChunkTooLarge
		}
		n = n<<4 | uint64(c)
	}
	return int64(n), nil
}

// more reads from the connection once and decodes what came. bufio.ErrBufferFull: the body
// bytes not yet returned fill the buffer.
func (b *wire) more() error {
	if b.w == len(b.buf) {
		b.compact()
		if b.w == len(b.buf) {
			if b.d > b.r {
				return bufio.ErrBufferFull
			}
			return errChunkLineLong
		}
	}
	n, err := b.read()
	b.n += int64(n)
	b.w += n
	if derr := b.decode(); derr != nil {
		return derr
	}
	switch {
	case err == nil || b.st == stDone:
		return nil
	case errors.Is(err, io.EOF) && b.mode == bodyToEOF:
		b.st = stDone
		return nil
	case errors.Is(err, io.EOF):
		return io.ErrUnexpectedEOF
	}
	return err
}

// Read reads the body.
func (b *wire) Read(p []byte) (int, error) {
	for b.r == b.d {
		if b.err != nil {
			return 0, b.err
		}
		if b.st == stDone {
			b.err = io.EOF
			continue
		}
		if err := b.more(); err != nil {
			b.err = err
		}
	}
	n := copy(p, b.buf[b.r:b.d])
	b.r += n
	return n, nil
}

// ReadSlice reads the body up to and including delim, as bufio.Reader's ReadSlice: the slice
// is the buffer's, valid until the next read; bufio.ErrBufferFull when the buffer fills
// without delim; at an error (io.EOF at the body's end) what was left comes with it.
func (b *wire) ReadSlice(delim byte) ([]byte, error) {
	s := 0 // bytes of buf[r:d] searched
	for {
		if i := bytes.IndexByte(b.buf[b.r+s:b.d], delim); i >= 0 {
			line := b.buf[b.r : b.r+s+i+1]
			b.r += s + i + 1
			return line, nil
		}
		s = b.d - b.r
		err := b.err
		if err == nil && b.st == stDone {
			b.err, err = io.EOF, io.EOF
		}
		if err == nil {
			err = b.more()
			if errors.Is(err, bufio.ErrBufferFull) {
				line := b.buf[b.r:b.d]
				b.r = b.d
				return line, err
			}
			if err == nil {
				continue
			}
			b.err = err
		}
		line := b.buf[b.r:b.d]
		b.r = b.d
		return line, err
	}
}

// ended reports whether the body was read to its end with nothing after it.
func (b *wire) ended() bool { return errors.Is(b.err, io.EOF) && b.r == b.d && b.x == b.w }

// eachLine calls fn with each line of the body, without its end ("\n" or "\r\n"), until fn
// stops (true) or fails, or the body ends. A line is a view of the buffer (or of *long, where
// a line longer than the buffer is assembled, up to max bytes), valid during the call.
//
// It returns nil when fn stopped, fn's error, or the body's: io.EOF at its end after a whole
// line, io.ErrUnexpectedEOF inside one, tooLong for a line over max, or the read's error.
//
// Once the lines buffered are handed out, push (when not nil) may take the rest of the read
// over (a poller: see connBody.pushLines); false, the caller's goroutine reads on.
func (b *wire) eachLine(maxLen int, tooLong error, long *[]byte, fn func(line []byte) (stop bool, err error), push func() bool) error {
	b.lines, b.lineMax, b.tooLong, b.long = fn, maxLen, tooLong, long
	b.inLong, b.linesEnd, b.linesErr = false, false, nil
	defer func() { b.lines, b.long = nil, nil }()
	if b.settle() || push != nil && push() {
		return b.linesErr
	}
	for {
		if err := b.room(); err != nil {
			return err
		}
		n, err := b.read()
		if b.took(n, err) {
			return b.linesErr
		}
	}
}

// room makes room in the buffer for a read: it compacts it, and moves a partial line that
// fills it to *long.
func (b *wire) room() error {
	if b.w < len(b.buf) {
		return nil
	}
	b.compact()
	if b.w < len(b.buf) {
		return nil
	}
	if b.d == b.r {
		return errChunkLineLong // undecoded framing fills the buffer
	}
	if !b.inLong {
		*b.long = (*b.long)[:0]
		b.inLong = true
	}
	if len(*b.long)+b.d-b.r > b.lineMax {
		return b.tooLong
	}
	*b.long = append(*b.long, b.buf[b.r:b.d]...)
	b.r = b.d
	b.compact()
	return nil
}

// took decodes n bytes read, with the read's error, then hands out the lines (settle); true:
// the push read is over.
func (b *wire) took(n int, err error) bool {
	b.n += int64(n)
	b.w += n
	if derr := b.decode(); derr != nil {
		err = derr
	} else {
		switch {
		case err == nil || b.st == stDone:
			err = nil
		case errors.Is(err, io.EOF) && b.mode == bodyToEOF:
			b.st, err = stDone, nil
		case errors.Is(err, io.EOF):
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		b.err = err
	}
	return b.settle()
}

// settle hands the complete lines buffered to the callback, then reports whether the push
// read is over: the callback stopped or failed, or the body ended or failed.
func (b *wire) settle() bool {
	for {
		i := bytes.IndexByte(b.buf[b.r:b.d], '\n')
		if i < 0 {
			break
		}
		line := b.buf[b.r : b.r+i+1]
		b.r += i + 1
		if b.inLong {
			if len(*b.long)+len(line) > b.lineMax {
				b.linesEnd, b.linesErr = true, b.tooLong
				return true
			}
			*b.long = append(*b.long, line...)
			line = *b.long
			b.inLong = false
		}
		if stop, err := b.lines(trimEOL(line)); stop || err != nil {
			b.linesEnd, b.linesErr = true, err
			return true
		}
	}
	err := b.err
	if err == nil && b.st == stDone {
		b.err, err = io.EOF, io.EOF
	}
	if err == nil {
		return false
	}
	if errors.Is(err, io.EOF) && (b.r < b.d || b.inLong) {
		// The body ended inside a line: one already over the bound is that, as ReadLine
		// says (room checks the bound only when the line fills the buffer).
		err = io.ErrUnexpectedEOF
		partial := b.d - b.r
		if b.inLong {
			partial += len(*b.long)
		}
		if partial > b.lineMax {
			err = b.tooLong
		}
	}
	b.linesEnd, b.linesErr = true, err
	return true
}
