package triton

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzDecodeFrame: decodeFrame never panics, accepts exactly the JSON objects encoding/json
// accepts, and its text is the output string (or the strings of an array of them).
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"model_name":"words","model_version":"1","text_output":" The"}`,
		`{"text_output":[" a",[" b"]]}`, `{"text_output":null}`, `{"text_output":5}`,
		`{"error":"Traceback ...\nValueError: boom\n"}`, `{"error":{"x":1}}`, `{}`, `null`, `[]`, "{\"text_output\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := decodeFrame(data, "text_output")
		var w map[string]json.RawMessage
		jerr := json.Unmarshal(data, &w)
		if jerr == nil && w == nil {
			jerr = errors.New("null")
		}
		if jerr != nil {
			if err == nil {
				t.Fatalf("accepted %q, which encoding/json refuses (%v)", data, jerr)
			}
			return
		}
		if fr.hasError {
			if _, ok := w["error"]; !ok || err != nil {
				t.Fatalf("error frame %+v, %v for %q", fr, err, data)
			}
			return
		}
		var s string
		if json.Unmarshal(w["text_output"], &s) == nil && (err != nil || fr.text != s) {
			t.Fatalf("text %q, %v; encoding/json reads %q from %q", fr.text, err, s, data)
		}
	})
}

// FuzzEventReader: the reader never panics and, for a body of "data: X\n\n" events whose X has
// no line breaks, gives back exactly the Xs.
func FuzzEventReader(f *testing.F) {
	f.Add([]byte("data: {\"text_output\":\" The\"}\n\ndata: x\r\n\r\n"), "a\x00b")
	f.Add([]byte(": c\nevent: e\ndata:1\ndata: 2\n\n\n"), "")
	f.Fuzz(func(t *testing.T, body []byte, payload string) {
		r := newEventReader(bytes.NewReader(body))
		for {
			if _, err := r.next(); err != nil {
				break
			}
		}
		var xs []string
		for p := range strings.SplitSeq(payload, "\x00") {
			if strings.ContainsAny(p, "\r\n") {
				return
			}
			xs = append(xs, p)
		}
		var b strings.Builder
		for _, x := range xs {
			b.WriteString("data: " + x + "\n\n")
		}
		r = newEventReader(strings.NewReader(b.String()))
		for i := 0; ; i++ {
			d, err := r.next()
			if errors.Is(err, io.EOF) {
				if i != len(xs) {
					t.Fatalf("%d events, want %d", i, len(xs))
				}
				return
			}
			if err != nil || i >= len(xs) || string(d) != xs[i] {
				t.Fatalf("event %d = %q, %v; want %q", i, d, err, xs)
			}
		}
	})
}
