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
	br      SliceReader // a SliceReader body itself, or a bufio.Reader of the body
	data    []byte
	name    []byte
	hasData bool
	long    []byte // a line longer than br's buffer

	fn     func(name, data []byte) (bool, error) // Each's
	onLine func([]byte) (bool, error)            // r.eachLine, made once
	// errorField: an "error:" line is an event named error whose data is the line's value
	// (llama-server's way to report a failure inside a stream), not a field to ignore.
	errorField bool
}

// WithErrorField makes r read "error: <json>" lines, which llama-server sends for a failure in
// the middle of a stream (then "data: [DONE]"), as events named "error". It returns r.
func (r *EventReader) WithErrorField() *EventReader {
	r.errorField = true
	return r
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
	r.data, r.name, r.hasData = r.data[:0], r.name[:0], false
	for {
		line, err := ReadLine(r.br, MaxEventBytes, ErrEventTooLong, &r.long)
		if err != nil {
			if errors.Is(err, io.EOF) && r.hasData {
				return r.name, r.data, nil
			}
			return nil, nil, err
		}
		if ev, err := r.line(line); err != nil {
			return nil, nil, err
		} else if ev {
			return r.name, r.data, nil
		}
	}
}

// Each calls fn with each event's name and data (as Next returns them) until fn stops (true)
// or fails, or the body ends. It returns nil when fn stopped, fn's error, or the body's, as
// Next: io.EOF at a clean end. A body from Conns.Post pushes its lines (see EachLine): a wait
// for the engine costs one read system call instead of two.
func (r *EventReader) Each(fn func(name, data []byte) (stop bool, err error)) error {
	r.data, r.name, r.hasData = r.data[:0], r.name[:0], false
	if r.onLine == nil {
		r.onLine = r.eachLine
	}
	r.fn = fn
	defer func() { r.fn = nil }()
	err := EachLine(r.br, MaxEventBytes, ErrEventTooLong, &r.long, r.onLine)
	if errors.Is(err, io.EOF) && r.hasData { // the last event, complete up to its last line
		if stop, ferr := fn(r.name, r.data); stop || ferr != nil {
			return ferr
		}
	}
	return err
}

// eachLine is Each's line callback.
func (r *EventReader) eachLine(line []byte) (bool, error) {
	ev, err := r.line(line)
	if err != nil || !ev {
		return false, err
	}
	stop, err := r.fn(r.name, r.data)
	r.data, r.name, r.hasData = r.data[:0], r.name[:0], false
	return stop, err
}

// line takes one line of the stream; true: it ended an event, in r.name and r.data.
func (r *EventReader) line(line []byte) (bool, error) {
	if len(line) == 0 {
		if r.hasData {
			return true, nil
		}
		r.name = r.name[:0]
		return false, nil
	}
	if line[0] == ':' {
		return false, nil
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
		if r.hasData {
			r.data = append(r.data, '\n')
		}
		if len(r.data)+len(value) > MaxEventBytes {
			return false, ErrEventTooLong
		}
		r.data = append(r.data, value...)
		r.hasData = true
	case "event":
		r.name = append(r.name[:0], value...)
	case "error":
		if !r.errorField {
			break
		}
		if len(value) > MaxEventBytes {
			return false, ErrEventTooLong
		}
		r.name = append(r.name[:0], "error"...)
		r.data = append(r.data[:0], value...)
		r.hasData = true
	}
	return false, nil
}

func trimEOL(line []byte) []byte {
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line
}
