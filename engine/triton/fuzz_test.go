package triton

import (
	"encoding/json"
	"errors"
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
