package triton

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxEventBytes bounds one SSE event (all its data lines together).
const maxEventBytes = 8 << 20

var errEventTooLong = errors.New("stream event longer than 8 MiB")

// eventReader splits Triton's text/event-stream body into the data of its events. Triton
// writes "data: {json}" and a blank line per response, with no event:, id: or terminator; the
// reader still follows the SSE rules (data lines joined with "\n", comments and other fields
// ignored) so that a proxy in between may reformat the stream.
type eventReader struct {
	br   *bufio.Reader
	data []byte
}

func newEventReader(r io.Reader) *eventReader {
	return &eventReader{br: bufio.NewReaderSize(r, 4096)}
}

// next returns the next event's data, valid until the next call. At a clean end of the body it
// returns io.EOF; a body cut inside a line gives io.ErrUnexpectedEOF.
func (r *eventReader) next() ([]byte, error) {
	r.data = r.data[:0]
	hasData := false
	for {
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && hasData {
				return r.data, nil
			}
			return nil, err
		}
		if len(line) == 0 {
			if hasData {
				return r.data, nil
			}
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		if string(field) != "data" {
			continue // comments (":..."), event:, id:, retry:
		}
		if hasData {
			r.data = append(r.data, '\n')
		}
		if len(r.data)+len(value) > maxEventBytes {
			return nil, errEventTooLong
		}
		r.data = append(r.data, value...)
		hasData = true
	}
}

// readLine returns one line without its end ("\n" or "\r\n"), bounded by maxEventBytes.
func (r *eventReader) readLine() ([]byte, error) {
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
		if len(long)+len(line) > maxEventBytes {
			return nil, errEventTooLong
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

// frame is one decoded response of the generate extension.
type frame struct {
	text      string // the output tensor's text ("" when the response has none)
	hasOutput bool
	model     string // model_name
	version   string // model_version

	hasError bool
	errMsg   string
}

// decodeFrame decodes one event's data: a JSON object holding model_name, model_version and
// one field per output tensor, or {"error": "..."}. The output named output is a string, or an
// array (nested for batched shapes) of strings, which are joined; any other type is an error.
func decodeFrame(data []byte, output string) (frame, error) {
	var f frame
	var w map[string]json.RawMessage
	if err := json.Unmarshal(data, &w); err != nil {
		return f, fmt.Errorf("malformed frame: %w", err)
	}
	if w == nil {
		return f, errors.New("malformed frame: null")
	}
	if raw, ok := w["error"]; ok {
		f.hasError = true
		var s string
		if json.Unmarshal(raw, &s) == nil {
			f.errMsg = s
		} else {
			f.errMsg = string(raw)
		}
		return f, nil
	}
	str := func(key string) string {
		var s string
		_ = json.Unmarshal(w[key], &s)
		return s
	}
	f.model, f.version = str("model_name"), str("model_version")
	raw, ok := w[output]
	if !ok || string(raw) == "null" {
		return f, nil
	}
	var b strings.Builder
	if err := joinText(&b, raw, 0); err != nil {
		return f, fmt.Errorf("output %q: %w", output, err)
	}
	f.text, f.hasOutput = b.String(), true
	return f, nil
}

// joinText appends a string, or the strings of a (nested) array, to b.
func joinText(b *strings.Builder, raw json.RawMessage, depth int) error {
	if depth > 8 {
		return errors.New("nested too deep")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		b.WriteString(s)
		return nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil {
		return errors.New("not a string or an array of strings")
	}
	for _, e := range arr {
		if err := joinText(b, e, depth+1); err != nil {
			return err
		}
	}
	return nil
}
