package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeChunk: decodeChunk never panics; it accepts exactly the documents encoding/json
// accepts as a chunk object (or the [DONE] terminator); and what it reads as text is what
// encoding/json reads.
func FuzzDecodeChunk(f *testing.F) {
	for _, s := range []string{
		`{"choices":[{"index":0,"text":" The","finish_reason":null}]}`,
		`{"choices":[{"index":0,"delta":{"content":"\u00e9\ud83d\ude00"},"finish_reason":"length"}],"usage":{"prompt_tokens":6,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":1}}}`,
		`{"object":"error","message":"too long","type":"BadRequestError","code":400}`,
		`{"error":{"message":"x","type":"server_error","code":"500"}}`,
		`[DONE]`, ` [DONE] `, `{}`, `null`, `{"choices":null}`, "{\"choices\":[{\"text\":\"\xff\"}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeChunk(data)
		if c.done {
			if string(bytes.TrimSpace(data)) != "[DONE]" || err != nil {
				t.Fatalf("done for %q (%v)", data, err)
			}
			return
		}
		var w wireChunk
		jerr := json.Unmarshal(data, &w)
		if (err == nil) != (jerr == nil) {
			t.Fatalf("decodeChunk err %v, encoding/json err %v for %q", err, jerr, data)
		}
		if err != nil || c.hasError {
			return
		}
		if !utf8.ValidString(c.text) {
			t.Fatalf("text %q is not valid UTF-8", c.text)
		}
		if len(w.Choices) > 0 && w.Choices[0].Text != nil && c.text != *w.Choices[0].Text {
			t.Fatalf("text %q, want %q", c.text, *w.Choices[0].Text)
		}
	})
}

// FuzzEventReader: any body splits into events without panicking, each within the bound, and
// a body made of well-formed events gives back exactly their data.
func FuzzEventReader(f *testing.F) {
	f.Add([]byte("data: a\n\ndata: b\r\n\r\n"), "x")
	f.Add([]byte(": c\nevent: error\ndata: x\ndata: y\n\n"), "y\nz")
	f.Add([]byte("data: cut"), "")
	f.Fuzz(func(t *testing.T, body []byte, payload string) {
		r := newEventReader(bytes.NewReader(body))
		for range len(body) + 1 {
			_, data, err := r.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errEventTooLong) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if len(data) > maxEventBytes {
				t.Fatalf("event of %d bytes", len(data))
			}
		}
		// Round trip: payload written as data lines comes back as one event.
		lines := strings.Split(strings.ReplaceAll(payload, "\r", ""), "\n")
		var b strings.Builder
		for _, l := range lines {
			b.WriteString("data: " + l + "\n")
		}
		b.WriteString("\n")
		r = newEventReader(strings.NewReader(b.String()))
		_, data, err := r.next()
		if err != nil || string(data) != strings.Join(lines, "\n") {
			t.Fatalf("round trip of %q: %q, %v", payload, data, err)
		}
	})
}
