package llamacpp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"sync"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/httpengine"
)

// maxLineBytes bounds one SSE line. llama-server's final frame repeats the whole prompt, so
// it is as long as the prompt (a 128k-token context is well under this).
const maxLineBytes = 32 << 20

// errLineTooLong is returned by sseReader for a line over maxLineBytes.
var errLineTooLong = errors.New("stream line longer than 32 MiB")

// sseReader splits a text/event-stream body into field lines ("data: {...}"). llama-server
// writes one JSON document per "data:" line followed by a blank line, so each data line is
// treated as one event (multi-line data events, which llama-server never sends, are not
// joined). Lines end in "\n" or "\r\n".
//
// Short lines are returned as slices of the bufio.Reader's buffer; longer ones are assembled
// in long, which is kept for reuse. Either way a line is valid until the next call.
type sseReader struct {
	br   httpengine.SliceReader // the body itself (a Conns answer), or buf reading it
	buf  *bufio.Reader          // allocated for the first body that is not a SliceReader
	long []byte
}

// streamState is the per-generation reusable state, pooled across generations.
type streamState struct {
	sse sseReader
	dec frameDecoder
	f   frame

	// The generation's, for the pushed lines (line): set by generate, cleared by putState.
	ctx    context.Context
	dog    *httpengine.Watchdog
	emit   engine.EmitFunc
	res    engine.Result
	err    error                      // why line stopped before the final frame
	onLine func([]byte) (bool, error) // st.line, made once
}

// readBufBytes is the stream reader's buffer for a body that has none (a Conns answer reads
// its lines in its own buffer): a token frame is a few hundred bytes, so this holds a few of
// them; longer lines (the final frame repeats the prompt) are assembled in sseReader.long. A
// generation waiting for its next token holds it, so it is not 4 KiB.
const readBufBytes = 1024

var statePool = sync.Pool{New: func() any {
	st := new(streamState)
	st.onLine = st.line
	return st
}}

func getState(body io.Reader) *streamState {
	st := statePool.Get().(*streamState)
	if sr, ok := body.(httpengine.SliceReader); ok {
		st.sse.br = sr
		st.sse.buf = nil // not held through this generation (a plain body's, pooled with st)
		return st
	}
	if st.sse.buf == nil {
		st.sse.buf = bufio.NewReaderSize(nil, readBufBytes)
	}
	st.sse.buf.Reset(body)
	st.sse.br = st.sse.buf
	return st
}

func putState(st *streamState) {
	st.sse.br = nil
	if st.sse.buf != nil {
		st.sse.buf.Reset(nil)
	}
	if cap(st.sse.long) > 64<<10 {
		st.sse.long = nil
	}
	if cap(st.dec.scratch) > 64<<10 {
		st.dec.scratch = nil
	}
	st.f = frame{}
	st.ctx, st.dog, st.emit, st.res, st.err = nil, nil, nil, engine.Result{}, nil
	statePool.Put(st)
}

// next returns the name and value of the next field line, skipping blank lines and comments
// (lines starting with ':'). A line without ':' is a field with an empty value. At the end of
// the body it returns io.EOF; a body that ends inside a line gives io.ErrUnexpectedEOF.
func (r *sseReader) next() (field, value []byte, err error) {
	for {
		line, err := httpengine.ReadLine(r.br, maxLineBytes, errLineTooLong, &r.long)
		if err != nil {
			return nil, nil, err
		}
		if field, value, ok := splitField(line); ok {
			return field, value, nil
		}
	}
}

// each calls fn with each field line (see next) until fn stops or fails or the body ends, as
// httpengine.EachLine: a Conns answer pushes its lines, with one read per wait for the engine.
func (r *sseReader) each(fn func(line []byte) (stop bool, err error)) error {
	return httpengine.EachLine(r.br, maxLineBytes, errLineTooLong, &r.long, fn)
}

// splitField splits a field line into its name and value; !ok for a blank line or a comment.
func splitField(line []byte) (field, value []byte, ok bool) {
	if len(line) == 0 || line[0] == ':' {
		return nil, nil, false
	}
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return line, nil, true
	}
	field, value = line[:i], line[i+1:]
	if len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	return field, value, true
}
