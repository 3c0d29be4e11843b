package httpengine

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// MaxEventBytes bounds one SSE event (all its data lines together).
const MaxEventBytes = 8 << 20

// ErrEventTooLong is the error of an event (or a line) longer than MaxEventBytes.
var ErrEventTooLong = errors.New("stream event longer than 8 MiB")

// EventReader splits a text/event-stream body into events: the data lines of an event are
// joined with "\n" and the event is dispatched at a blank line (or at the end of the body, when
// the last event was complete up to its last line). The "event:" field is kept; id:, retry: and
// comments are ignored.
type EventReader struct {
	br   SliceReader // a SliceReader body itself, or a bufio.Reader of the body
	data []byte
	name []byte
}

// eventBufBytes is an EventReader's buffer: a streamed chunk is a few hundred bytes, and
// longer lines are assembled beside it.
const eventBufBytes = 1024

// NewEventReader returns an EventReader of r. A SliceReader (a body from Conns.Post) is read
// in its own buffer; another reader gets one.
func NewEventReader(r io.Reader) *EventReader {
	if sr, ok := r.(SliceReader); ok {
		return &EventReader{br: sr}
	}
	return &EventReader{br: bufio.NewReaderSize(r, eventBufBytes)}
}

// Next returns the next event's name ("" for the default "message") and data. The slices are
// valid until the next call. At a clean end of the body it returns io.EOF; a body cut inside a
// line gives io.ErrUnexpectedEOF.
func (r *EventReader) Next() (name, data []byte, err error) {
	r.data, r.name = r.data[:0], r.name[:0]
	hasData := false
	for {
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && hasData {
				return r.name, r.data, nil
			}
			return nil, nil, err
		}
		if len(line) == 0 {
			if hasData {
				return r.name, r.data, nil
			}
			r.name = r.name[:0]
			continue
		}
		if line[0] == ':' {
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
			if hasData {
				r.data = append(r.data, '\n')
			}
			if len(r.data)+len(value) > MaxEventBytes {
				return nil, nil, ErrEventTooLong
			}
			r.data = append(r.data, value...)
			hasData = true
		case "event":
			r.name = append(r.name[:0], value...)
		}
	}
}

// readLine returns one line without its end ("\n" or "\r\n"), bounded by MaxEventBytes.
func (r *EventReader) readLine() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if err == nil {
		return trimEOL(line), nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	long := append([]byte(nil), line...)
	for {
		line, err = r.br.ReadSlice('\n')
		if len(long)+len(line) > MaxEventBytes {
			return nil, ErrEventTooLong
		}
		long = append(long, line...)
		switch {
		case err == nil:
			return trimEOL(long), nil
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

func trimEOL(line []byte) []byte {
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line
}
