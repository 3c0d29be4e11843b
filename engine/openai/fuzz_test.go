package openai

import (
	"bytes"
	"encoding/json"
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
