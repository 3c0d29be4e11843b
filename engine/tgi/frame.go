package tgi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxEventBytes bounds one SSE event (all its data lines together).
const maxEventBytes = 8 << 20

var errEventTooLong = errors.New("stream event longer than 8 MiB")

// eventReader splits a text/event-stream body into events: the data lines of an event are
// joined with "\n" and the event is dispatched at a blank line (or at the end of the body, when
// the last event was complete up to its last line). The "event:" field is kept; id:, retry: and
// comments are ignored.
type eventReader struct {
	br   *bufio.Reader
	data []byte
	name []byte
}

func newEventReader(r io.Reader) *eventReader {
	return &eventReader{br: bufio.NewReaderSize(r, 4096)}
}

// next returns the next event's name ("" for the default "message") and data. The slices are
// valid until the next call. At a clean end of the body it returns io.EOF; a body cut inside a
// line gives io.ErrUnexpectedEOF.
func (r *eventReader) next() (name, data []byte, err error) {
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
			if len(r.data)+len(value) > maxEventBytes {
				return nil, nil, errEventTooLong
			}
			r.data = append(r.data, value...)
			hasData = true
		case "event":
			r.name = append(r.name[:0], value...)
		}
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

// frame is one decoded /generate_stream event, reduced to what the adapter uses.
type frame struct {
	text    string // token.text
	special bool   // token.special: a special token (e.g. the end-of-sequence token), not text
	hasText bool   // the frame carries a token

	final           bool   // generated_text or details is set: the last frame of the generation
	finishReason    string // details.finish_reason
	generatedTokens int    // details.generated_tokens
	inputLength     int    // details.input_length (TGI ≥ 2.1; 0 when absent)

	hasError bool
	errType  string // error_type: generation, incomplete_generation, overloaded, validation
	errMsg   string
}

// wireFrame is the JSON shape of a TGI stream event (StreamResponse, or ErrorResponse).
type wireFrame struct {
	Token *struct {
		ID      *int64  `json:"id"`
		Text    *string `json:"text"`
		Special bool    `json:"special"`
	} `json:"token"`
	GeneratedText *string `json:"generated_text"`
	Details       *struct {
		FinishReason    string `json:"finish_reason"`
		GeneratedTokens int    `json:"generated_tokens"`
		InputLength     int    `json:"input_length"`
	} `json:"details"`
	Error     *string `json:"error"`
	ErrorType string  `json:"error_type"`
}

// decodeFrame decodes one event's data. An object that is neither a token frame nor an error
// frame is an error, like a document that is not JSON.
func decodeFrame(data []byte) (frame, error) {
	var f frame
	var w wireFrame
	if err := json.Unmarshal(data, &w); err != nil {
		return f, fmt.Errorf("malformed frame: %w", err)
	}
	if w.Error != nil {
		f.hasError = true
		f.errType, f.errMsg = w.ErrorType, *w.Error
		return f, nil
	}
	if w.Token == nil || w.Token.Text == nil {
		return f, fmt.Errorf("frame without token.text: %.256s", data)
	}
	f.hasText, f.text, f.special = true, *w.Token.Text, w.Token.Special
	if w.GeneratedText != nil || w.Details != nil {
		f.final = true
	}
	if d := w.Details; d != nil {
		f.finishReason, f.generatedTokens, f.inputLength = d.FinishReason, d.GeneratedTokens, d.InputLength
	}
	return f, nil
}
