package impl

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzJSONValid: JSONBody's json.Valid accepts exactly the bodies singleJSONValue accepts.
func FuzzJSONValid(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1} `, `{"a":1} x`, `1 2`, `[`, `"\xff"`, ` null `, `{"a":1}{}`, "\ufeff{}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(bytes.TrimSpace(b)) == 0 {
			return
		}
		if valid, single := json.Valid(b), singleJSONValue(b) == nil; valid != single {
			t.Fatalf("%q: json.Valid %v, singleJSONValue %v", b, valid, single)
		}
	})
}
