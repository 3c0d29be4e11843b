package tgi

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeFrame: decodeFrame never panics; a document encoding/json refuses is an error;
// what it reads as token text, finish and error is what encoding/json reads.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"index":1,"token":{"id":5,"text":" The","logprob":-0.1,"special":false},"generated_text":null,"details":null,"top_tokens":null}`,
		`{"index":3,"token":{"id":2,"text":"</s>","logprob":0,"special":true},"generated_text":" The fox","details":{"finish_reason":"eos_token","generated_tokens":3,"seed":null,"input_length":4}}`,
		`{"error":"Input validation error: ` + "`inputs`" + ` tokens + ` + "`max_new_tokens`" + ` must be <= 4096","error_type":"validation"}`,
		`{"error":"Model is overloaded","error_type":"overloaded"}`, `{}`, `null`, `[]`, `{"token":null}`,
		"{\"token\":{\"text\":\"\xff\"}}", `{"token":{"text":"\u00e9\ud83d\ude00"},"details":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := decodeFrame(data)
		var w wireFrame
		if jerr := json.Unmarshal(data, &w); jerr != nil {
			if err == nil {
				t.Fatalf("decodeFrame accepted %q, which encoding/json refuses (%v)", data, jerr)
			}
			return
		}
		switch {
		case w.Error != nil:
			if err != nil || !fr.hasError || fr.errMsg != *w.Error || fr.errType != w.ErrorType {
				t.Fatalf("error frame %q read as %+v, %v", data, fr, err)
			}
		case w.Token == nil || w.Token.Text == nil:
			if err == nil {
				t.Fatalf("frame without token text %q accepted: %+v", data, fr)
			}
		default:
			if err != nil || fr.text != *w.Token.Text || fr.special != w.Token.Special {
				t.Fatalf("token frame %q read as %+v, %v", data, fr, err)
			}
			if !utf8.ValidString(fr.text) {
				t.Fatalf("text %q is not valid UTF-8", fr.text)
			}
			if fr.final != (w.GeneratedText != nil || w.Details != nil) {
				t.Fatalf("final %v for %q", fr.final, data)
			}
		}
	})
}
