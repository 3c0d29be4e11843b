package openai

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
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

// chunk is one decoded stream event, reduced to what the adapter uses.
type chunk struct {
	done         bool   // the "[DONE]" terminator
	text         string // choices[0].text or choices[0].delta.content
	hasChoice    bool
	finishReason string // choices[0].finish_reason ("" while generating)

	hasUsage         bool
	promptTokens     int
	completionTokens int
	cachedTokens     int

	hasError bool
	errCode  int // HTTP-like status of an in-stream error (0 when the engine gave none)
	errType  string
	errMsg   string
}

// wireChunk is the JSON shape of a chunk, for completions and chat alike.
type wireChunk struct {
	Object  string `json:"object"`
	Choices []struct {
		Text  *string `json:"text"`
		Delta *struct {
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		PromptTokensDetails *struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
	Error *wireError `json:"error"`
	// vLLM's error object is the chunk itself: {"object":"error","message":..,"type":..,"code":400}.
	wireError
}

type wireError struct {
	Message string          `json:"message"`
	Type    string          `json:"type"`
	Code    json.RawMessage `json:"code"`
}

// decodeChunk decodes one event's data.
func decodeChunk(data []byte) (chunk, error) {
	var c chunk
	if string(bytes.TrimSpace(data)) == "[DONE]" {
		c.done = true
		return c, nil
	}
	var w wireChunk
	if err := json.Unmarshal(data, &w); err != nil {
		return c, fmt.Errorf("malformed chunk: %w", err)
	}
	switch {
	case w.Error != nil:
		c.hasError = true
		c.errCode, c.errType, c.errMsg = codeOf(w.Error.Code), w.Error.Type, w.Error.Message
		return c, nil
	case w.Object == "error":
		c.hasError = true
		c.errCode, c.errType, c.errMsg = codeOf(w.Code), w.Type, w.Message
		return c, nil
	}
	if len(w.Choices) > 0 {
		ch := w.Choices[0]
		c.hasChoice = true
		switch {
		case ch.Text != nil:
			c.text = *ch.Text
		case ch.Delta != nil && ch.Delta.Content != nil:
			c.text = *ch.Delta.Content
		}
		if ch.FinishReason != nil {
			c.finishReason = *ch.FinishReason
		}
	}
	if u := w.Usage; u != nil {
		c.hasUsage = true
		c.promptTokens, c.completionTokens = u.PromptTokens, u.CompletionTokens
		if u.PromptTokensDetails != nil {
			c.cachedTokens = u.PromptTokensDetails.CachedTokens
		}
	}
	return c, nil
}

// codeOf reads an error code that is a number ("code": 400) or a numeric string; other codes
// (OpenAI's "context_length_exceeded", null) give 0.
func codeOf(raw json.RawMessage) int {
	s := string(bytes.Trim(bytes.TrimSpace(raw), `"`))
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}
