package load

import (
	"bytes"
	"errors"
	"io"
)

// ErrSSELineTooLong is returned by SSEReader.Next when a line exceeds the reader's limit.
var ErrSSELineTooLong = errors.New("sse: line too long")

// DefaultSSEMaxLine is the line-length limit of NewSSEReader.
const DefaultSSEMaxLine = 1 << 20

// Event is one dispatched Server-Sent Event. Its byte slices are valid until the next call to
// Next.
type Event struct {
	// Type is the event field ("message" when none was given). Common names are interned, so
	// reading it does not allocate.
	Type string
	// Data is the data fields' values joined by '\n'.
	Data []byte
	// ID is the last event ID seen on the stream (it persists across events, as the
	// specification requires); HasID reports whether any id field was seen.
	ID    []byte
	HasID bool
}

// SSEReader parses a text/event-stream per the WHATWG HTML specification's interpretation
// rules: lines end with CRLF, LF or CR; a line starting with ':' is a comment; "field: value"
// with one optional space after the colon; a line without a colon is a field with an empty
// value; data values are joined by '\n'; a blank line dispatches the event unless no data field
// was seen; "retry" and unknown fields are ignored; an incomplete event at the end of the input
// is discarded. A leading UTF-8 byte-order mark is skipped. It allocates only to grow its
// buffers, so it can parse tens of thousands of frames per second.
type SSEReader struct {
	r       io.Reader
	buf     []byte
	start   int
	end     int
	err     error
	maxLine int
	skipLF  bool // the previous line ended with CR; a following LF belongs to it
	started bool // past the optional BOM

	data     []byte
	hasData  bool
	typ      []byte
	id       []byte
	hasID    bool
	comments int
}

// NewSSEReader returns a reader with DefaultSSEMaxLine.
func NewSSEReader(r io.Reader) *SSEReader { return NewSSEReaderSize(r, DefaultSSEMaxLine) }

// NewSSEReaderSize returns a reader that fails with ErrSSELineTooLong on lines longer than
// maxLine bytes.
func NewSSEReaderSize(r io.Reader, maxLine int) *SSEReader {
	return &SSEReader{r: r, buf: make([]byte, 4096), maxLine: max(maxLine, 16)}
}

// Comments returns the number of comment lines (such as ": keep-alive") read so far.
func (s *SSEReader) Comments() int { return s.comments }

// Next returns the next event. At the end of the input it returns io.EOF (an incomplete
// trailing event is dropped); other read errors are returned as they are.
func (s *SSEReader) Next() (Event, error) {
	for {
		line, err := s.readLine()
		if err != nil {
			return Event{}, err
		}
		if len(line) == 0 {
			if !s.hasData {
				s.typ = s.typ[:0]
				continue
			}
			ev := Event{Type: internType(s.typ), Data: s.data, ID: s.id, HasID: s.hasID}
			s.data = s.data[:0]
			s.hasData = false
			s.typ = s.typ[:0]
			// The returned Data aliases s.data; the next append overwrites it only after the
			// caller's next Next call, as documented.
			return ev, nil
		}
		if line[0] == ':' {
			s.comments++
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if s.hasData {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, value...)
			s.hasData = true
		case "event":
			s.typ = append(s.typ[:0], value...)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				s.id = append(s.id[:0], value...)
				s.hasID = true
			}
		}
	}
}

func internType(b []byte) string {
	switch string(b) {
	case "", "message":
		return "message"
	case "token":
		return "token"
	case "started":
		return "started"
	case "metrics":
		return "metrics"
	case "end":
		return "end"
	case "error":
		return "error"
	}
	return string(b)
}

// readLine returns the next line without its terminator; the slice is valid until the next call.
func (s *SSEReader) readLine() ([]byte, error) {
	for {
		if s.start < s.end {
			if s.skipLF {
				s.skipLF = false
				if s.buf[s.start] == '\n' {
					s.start++
					continue
				}
			}
			if !s.started {
				if s.end-s.start < 3 && s.err == nil && bytes.HasPrefix([]byte("\xEF\xBB\xBF"), s.buf[s.start:s.end]) {
					// Could still be a BOM; read more before deciding.
					if err := s.fill(); err != nil && s.start == s.end {
						return nil, err
					}
					continue
				}
				s.started = true
				if bytes.HasPrefix(s.buf[s.start:s.end], []byte("\xEF\xBB\xBF")) {
					s.start += 3
					continue
				}
			}
			b := s.buf[s.start:s.end]
			if i := indexEOL(b); i >= 0 {
				if i > s.maxLine {
					return nil, ErrSSELineTooLong
				}
				line := b[:i]
				s.start += i + 1
				if b[i] == '\r' {
					s.skipLF = true
				}
				return line, nil
			}
		}
		if s.err != nil {
			// An unterminated last line can only belong to an incomplete event: drop it.
			s.start, s.end = 0, 0
			return nil, s.err
		}
		if s.end-s.start > s.maxLine {
			return nil, ErrSSELineTooLong
		}
		_ = s.fill() // a read error is kept in s.err
	}
}

// fill reads more input into the buffer, compacting or growing it; a read error is kept in s.err.
func (s *SSEReader) fill() error {
	if s.start > 0 {
		n := copy(s.buf, s.buf[s.start:s.end])
		s.start, s.end = 0, n
	}
	if s.end == len(s.buf) {
		nb := make([]byte, min(2*len(s.buf), s.maxLine+2))
		if len(nb) <= len(s.buf) {
			nb = make([]byte, len(s.buf)*2)
		}
		copy(nb, s.buf[:s.end])
		s.buf = nb
	}
	for range 100 {
		n, err := s.r.Read(s.buf[s.end:])
		s.end += n
		if err != nil {
			s.err = err
			return err
		}
		if n > 0 {
			return nil
		}
	}
	s.err = io.ErrNoProgress
	return s.err
}

// indexEOL returns the index of the first CR or LF in b, or -1.
func indexEOL(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return bytes.IndexByte(b, '\r')
	}
	if j := bytes.IndexByte(b[:i], '\r'); j >= 0 {
		return j
	}
	return i
}
