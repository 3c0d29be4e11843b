package impl

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestIntegralNumbers(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		changed  bool
	}{
		{`{"a": 1, "b": 2.5, "c": "x"}`, `{"a": 1, "b": 2.5, "c": "x"}`, false},
		{`{"a": 600000.0, "b": 6e5, "c": -3.00, "d": 30E-1}`, `{"a": 600000, "b": 600000, "c": -3, "d": 3}`, true},
		{`{"s": "1.0", "t": "a\"2.0\\", "u": 2.0}`, `{"s": "1.0", "t": "a\"2.0\\", "u": 2}`, true},
		{`[1e300, 9007199254740992.0, 9007199254740994.0, -0.0]`, `[1e300, 9007199254740992, 9007199254740994.0, 0]`, true},
		{`{"x": 1.5e1, "y": 1.25e1}`, `{"x": 15, "y": 1.25e1}`, true},
	} {
		got, changed := integralNumbers([]byte(tc.in))
		if string(got) != tc.want || changed != tc.changed {
			t.Errorf("integralNumbers(%s) = %s, %v; want %s, %v", tc.in, got, changed, tc.want, tc.changed)
		}
	}
}

// FuzzIntegralNumbers: the rewrite of a JSON document is a JSON document with the same value
// (numbers compared as float64, which every rewritten one is exactly).
func FuzzIntegralNumbers(f *testing.F) {
	f.Add([]byte(`{"a": 600000.0, "b": "6e5", "c": [1.0, 2.5, -0e3]}`))
	f.Add([]byte(`"\\\"1.0"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var before any
		if json.Unmarshal(b, &before) != nil {
			return
		}
		out, _ := integralNumbers(b)
		var after any
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("%s rewritten as %s: %v", b, out, err)
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("%s rewritten as %s: %v, was %v", b, out, after, before)
		}
	})
}
