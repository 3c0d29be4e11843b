// Package sse encodes and decodes Server-Sent Events frames as orchestratord writes them:
//
//	id: <n>\nevent: <name>\ndata: <one-line JSON>\n\n
//
// plus comment lines (": keep-alive\n\n"). The encoder appends into caller-owned buffers and
// never uses reflection, so relaying a token costs no allocation once buffers are warm. The
// decoder is the inverse, for clients and tests.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// AppendFrame appends one event frame. data must be a single line (JSON from this package or
// encoding/json never contains a raw newline).
func AppendFrame(dst []byte, id int, event string, data []byte) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendInt(dst, int64(id), 10)
	dst = append(dst, "\nevent: "...)
	dst = append(dst, event...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, '\n', '\n')
}

// AppendTokenFrame appends the frame AppendFrame(dst, id, "token", AppendTokenData(nil, text,
// index)) would, without a separate buffer for its data, and returns where the data starts in
// the result: the data is out[data : len(out)-2].
func AppendTokenFrame(dst []byte, id int, text string, index int) (out []byte, data int) {
	dst = append(dst, "id: "...)
	dst = strconv.AppendInt(dst, int64(id), 10)
	dst = append(dst, "\nevent: token\ndata: "...)
	data = len(dst)
	dst = AppendTokenData(dst, text, index)
	return append(dst, '\n', '\n'), data
}

// Heartbeat is the keep-alive comment frame.
const Heartbeat = ": keep-alive\n\n"

// AppendTokenData appends the JSON object {"t":text,"i":index}.
func AppendTokenData(dst []byte, text string, index int) []byte {
	dst = append(dst, `{"t":`...)
	dst = AppendString(dst, text)
	dst = append(dst, `,"i":`...)
	dst = strconv.AppendInt(dst, int64(index), 10)
	return append(dst, '}')
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string, escaping like encoding/json without HTML escaping:
// invalid UTF-8 becomes U+FFFD, and U+2028/U+2029 are escaped.
func AppendString(dst []byte, s string) []byte { return appendString(dst, s, false) }

// appendShortOr appends control byte b as \<short> (encoding/json's form) or as \u00XX.
func appendShortOr(dst []byte, short, b byte, asShort bool) []byte {
	if asShort {
		return append(dst, '\\', short)
	}
	return append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
}

// AppendStringAsEncodingJSON appends s quoted exactly as encoding/json's Marshal quotes it:
// as AppendString, plus HTML escaping (<, > and & as \u003c, \u003e, \u0026) and \b, \f in
// their short forms. Fingerprints compared with encoding/json's output need these bytes.
func AppendStringAsEncodingJSON(dst []byte, s string) []byte { return appendString(dst, s, true) }

// AppendStringsAsEncodingJSON appends ss as encoding/json's Marshal writes a []string: null
// for nil, else an array of AppendStringAsEncodingJSON's strings.
func AppendStringsAsEncodingJSON(dst []byte, ss []string) []byte {
	if ss == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendStringAsEncodingJSON(dst, s)
	}
	return append(dst, ']')
}

func appendString(dst []byte, s string, asEncodingJSON bool) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && (!asEncodingJSON || (b != '<' && b != '>' && b != '&')) {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = appendShortOr(dst, 'b', b, asEncodingJSON)
			case '\f':
				dst = appendShortOr(dst, 'f', b, asEncodingJSON)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Event is one decoded frame.
type Event struct {
	ID    string
	Event string
	Data  string
}

// ErrLineTooLong is returned by Reader for a line longer than its limit.
var ErrLineTooLong = errors.New("sse: line too long")

// Reader decodes frames from a stream. Comment lines are skipped; a frame ends at a blank line.
type Reader struct {
	r     *bufio.Reader
	limit int
}

// NewReader returns a Reader whose lines may be at most limit bytes (default 1 MiB when ≤ 0).
func NewReader(r io.Reader, limit int) *Reader {
	if limit <= 0 {
		limit = 1 << 20
	}
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), limit: limit}
}

// Next returns the next frame; io.EOF at a clean end of stream.
func (r *Reader) Next() (Event, error) {
	var ev Event
	var data strings.Builder
	hasField := false
	for {
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && hasField {
				return ev, io.ErrUnexpectedEOF
			}
			return ev, err
		}
		if line == "" {
			if !hasField {
				continue
			}
			ev.Data = data.String()
			return ev, nil
		}
		if line[0] == ':' {
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		hasField = true
		switch name {
		case "id":
			ev.ID = value
		case "event":
			ev.Event = value
		case "data":
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(value)
		case "retry":
		default:
			return ev, fmt.Errorf("sse: unknown field %q", name)
		}
	}
}

func (r *Reader) readLine() (string, error) {
	var sb []byte
	for {
		chunk, err := r.r.ReadSlice('\n')
		if len(sb)+len(chunk) > r.limit+1 {
			return "", ErrLineTooLong
		}
		sb = append(sb, chunk...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(sb) > 0 {
			return "", io.ErrUnexpectedEOF
		}
		return "", err
	}
	line := string(sb[:len(sb)-1])
	return strings.TrimSuffix(line, "\r"), nil
}

// NextFrame splits the first event frame off b, which holds whole frames as AppendFrame writes
// them (a reader's cursor returns such batches): its event name and data, as views into b, and
// what follows it. Comment frames are skipped. ok is false when b holds no further frame; err
// reports a frame of another shape (a field other than id, event, data or retry, a second data
// line, a frame cut short).
func NextFrame(b []byte) (event, data, rest []byte, ok bool, err error) {
	for len(b) > 0 {
		end := bytes.Index(b, frameEnd)
		if end < 0 {
			return nil, nil, nil, false, errors.New("sse: frame cut short")
		}
		frame, next := b[:end], b[end+2:]
		hasField, hasData := false, false
		for len(frame) > 0 {
			line := frame
			if i := bytes.IndexByte(frame, '\n'); i >= 0 {
				line, frame = frame[:i], frame[i+1:]
			} else {
				frame = nil
			}
			if len(line) == 0 || line[0] == ':' {
				continue
			}
			name, value := line, []byte(nil)
			if i := bytes.IndexByte(line, ':'); i >= 0 {
				name, value = line[:i], line[i+1:]
				if len(value) > 0 && value[0] == ' ' {
					value = value[1:]
				}
			}
			hasField = true
			switch string(name) {
			case "id", "retry":
			case "event":
				event = value
			case "data":
				if hasData {
					return nil, nil, nil, false, errors.New("sse: a frame with several data lines")
				}
				data, hasData = value, true
			default:
				return nil, nil, nil, false, fmt.Errorf("sse: unknown field %q", name)
			}
		}
		if hasField {
			return event, data, next, true, nil
		}
		b = next
	}
	return nil, nil, nil, false, nil
}

var frameEnd = []byte("\n\n")

// TokenText returns the JSON string literal of a token frame's text: data is
// AppendTokenData's {"t":<text>,"i":<index>}. ok is false for data of another shape.
func TokenText(data []byte) (literal []byte, ok bool) {
	const pre = `{"t":"`
	if len(data) < len(pre)+1 || string(data[:len(pre)]) != pre {
		return nil, false
	}
	for i := len(pre); i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++ // the escaped byte
		case '"':
			return data[len(pre)-1 : i+1], true
		}
	}
	return nil, false
}
