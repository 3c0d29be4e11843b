package llamacpp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"

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
}

// readBufBytes is the stream reader's buffer for a body that has none (a Conns answer reads
// its lines in its own buffer): a token frame is a few hundred bytes, so this holds a few of
// them; longer lines (the final frame repeats the prompt) are assembled in sseReader.long. A
// generation waiting for its next token holds it, so it is not 4 KiB.
const readBufBytes = 1024

var statePool = sync.Pool{New: func() any { return new(streamState) }}

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
	statePool.Put(st)
}

// next returns the name and value of the next field line, skipping blank lines and comments
// (lines starting with ':'). A line without ':' is a field with an empty value. At the end of
// the body it returns io.EOF; a body that ends inside a line gives io.ErrUnexpectedEOF.
func (r *sseReader) next() (field, value []byte, err error) {
	for {
		line, err := r.readLine()
		if err != nil {
			return nil, nil, err
		}
		if len(line) == 0 || line[0] == ':' {
			continue
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			return line, nil, nil
		}
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		return field, value, nil
	}
}

func (r *sseReader) readLine() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	switch {
	case err == nil:
		return trimEOL(line), nil
	case errors.Is(err, bufio.ErrBufferFull):
	case errors.Is(err, io.EOF) && len(line) > 0:
		return nil, io.ErrUnexpectedEOF
	default:
		return nil, err
	}
	r.long = append(r.long[:0], line...)
	for {
		line, err = r.br.ReadSlice('\n')
		if len(r.long)+len(line) > maxLineBytes {
			return nil, errLineTooLong
		}
		r.long = append(r.long, line...)
		switch {
		case err == nil:
			return trimEOL(r.long), nil
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

func trimEOL(line []byte) []byte {
	line = line[:len(line)-1] // '\n'
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line
}
