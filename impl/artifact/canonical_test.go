package artifact

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestCanonicalVectors(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"null", nil, `null`},
		{"bools", []any{true, false}, `[true,false]`},
		{"sorted keys", map[string]any{"b": 1, "a": 2, "A": 3, "aa": 4}, `{"A":3,"a":2,"aa":4,"b":1}`},
		{"nested sorted", map[string]any{"z": map[string]any{"y": 1, "x": []any{map[string]any{"d": 1, "c": 2}}}}, `{"z":{"x":[{"c":2,"d":1}],"y":1}}`},
		{"number literal kept", json.Number("12345678901234567890.50"), `12345678901234567890.50`},
		{"number exponent kept", json.Number("1E+2"), `1E+2`},
		{"float64", 0.1, `0.1`},
		{"float64 integer", float64(3), `3`},
		{"float64 large", 1e21, `1e+21`},
		{"float64 small", 1e-7, `1e-7`},
		{"ints", []any{int(-1), int64(math.MaxInt64), uint64(math.MaxUint64), uint8(7)}, `[-1,9223372036854775807,18446744073709551615,7]`},
		{"escapes", "\"\\\b\f\n\r\t\x00\x1f", `"\"\\\b\f\n\r\t\u0000\u001f"`},
		{"no html escaping", "<a href='x'>&</a>", `"<a href='x'>&</a>"`},
		{"unicode literal", "é世\u2028\U0001F600\x7f", "\"é世\u2028\U0001F600\x7f\""},
		{"utf8 byte order", map[string]any{"\uffff": 1, "\U00010000": 2, "é": 3}, "{\"é\":3,\"\uffff\":1,\"\U00010000\":2}"},
		{"string slice", []string{"b", "a"}, `["b","a"]`},
		{"empty containers", map[string]any{"a": []any{}, "o": map[string]any{}}, `{"a":[],"o":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonical(tt.in)
			if err != nil {
				t.Fatalf("Canonical: %v", err)
			}
			if string(got) != tt.want {
				t.Fatalf("Canonical = %s, want %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Fatalf("not valid JSON: %s", got)
			}
		})
	}
}

func TestCanonicalInvalid(t *testing.T) {
	deep := any(map[string]any{})
	for range MaxDepth + 1 {
		deep = []any{deep}
	}
	tests := []struct {
		name string
		in   any
	}{
		{"nan", math.NaN()},
		{"inf", math.Inf(-1)},
		{"bad number", json.Number("01")},
		{"bad number 2", json.Number("1.")},
		{"bad number 3", json.Number("")},
		{"bad number 4", json.Number("NaN")},
		{"invalid utf8 value", "\xff"},
		{"invalid utf8 key", map[string]any{"\xfe": 1}},
		{"struct", struct{ A int }{1}},
		{"map of int", map[string]int{"a": 1}},
		{"too deep", deep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := Canonical(tt.in); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Canonical = %q, %v; want ErrInvalid", got, err)
			}
		})
	}
}

func TestValidNumber(t *testing.T) {
	for _, s := range []string{"0", "-0", "1", "-12", "1.5", "0.0001", "1e5", "1E-5", "-1.25e+10"} {
		if !validNumber(s) {
			t.Errorf("validNumber(%q) = false", s)
		}
	}
	for _, s := range []string{"", "-", "+1", "01", "1.", ".5", "1e", "1e+", "0x1", "1 ", "Infinity", "--1"} {
		if validNumber(s) {
			t.Errorf("validNumber(%q) = true", s)
		}
	}
}

func TestIdentifyVectors(t *testing.T) {
	tests := []struct {
		name          string
		a             Artifact
		wantCanonical string
		wantID        string
	}{
		{
			name:          "openapi example",
			a:             Artifact{Kind: "plan", Content: map[string]any{"steps": []any{"read", "write"}}, Tags: []string{"demo"}},
			wantCanonical: `{"content":{"steps":["read","write"]},"kind":"plan","tags":["demo"]}`,
			wantID:        "sha256:643fdb540f6bfbbcb6c51e8aaf82557f4181780de070ce77945db1d9f0ad5db4",
		},
		{
			name:          "empty optionals omitted",
			a:             Artifact{Kind: "other", Content: map[string]any{}, Tags: []string{}, Metadata: map[string]any{}},
			wantCanonical: `{"content":{},"kind":"other"}`,
			wantID:        "sha256:699db83ecba208a694bd0dd7dd08c623e84c07c1e8b93826f4c554a107bab604",
		},
		{
			name: "all fields",
			a: Artifact{
				Kind: "summary",
				Content: map[string]any{
					"b": "é\n\"<>&\x1f",
					"a": map[string]any{"y": []any{true, false, nil}, "x": json.Number("1")},
				},
				Parent:   "sha256:" + strings.Repeat("0", 64),
				Metadata: map[string]any{"n": json.Number("12345678901234567890.50")},
			},
			wantCanonical: "{\"content\":{\"a\":{\"x\":1,\"y\":[true,false,null]},\"b\":\"é\\n\\\"<>&\\u001f\"},\"kind\":\"summary\",\"metadata\":{\"n\":12345678901234567890.50},\"parent\":\"sha256:" + strings.Repeat("0", 64) + "\"}",
			wantID:        "sha256:470d75aaa8d5e41221bd870f62215375718cac93cce5f889fc94efeeea65c3b5",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, canon, err := Identify(tt.a)
			if err != nil {
				t.Fatal(err)
			}
			if string(canon) != tt.wantCanonical {
				t.Errorf("canonical = %s\nwant        %s", canon, tt.wantCanonical)
			}
			if id != tt.wantID {
				t.Errorf("id = %s, want %s", id, tt.wantID)
			}
		})
	}
}

func TestIdentifyInvalid(t *testing.T) {
	tests := []struct {
		name string
		a    Artifact
	}{
		{"no kind", Artifact{Content: map[string]any{}}},
		{"no content", Artifact{Kind: "plan"}},
		{"bad parent", Artifact{Kind: "plan", Content: map[string]any{}, Parent: "sha256:xyz"}},
		{"bad content value", Artifact{Kind: "plan", Content: map[string]any{"f": math.NaN()}}},
		{"bad tag", Artifact{Kind: "plan", Content: map[string]any{}, Tags: []string{"\xff"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := Identify(tt.a); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Identify error = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestParseJSON(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{`{"a":1}`, true},
		{` [1, 2] `, true},
		{`1.50`, true},
		{``, false},
		{`{"a":1} x`, false},
		{`{"a":1}{}`, false},
		{`{"a":}`, false},
		// What encoding/json would silently turn into U+FFFD is refused.
		{"{\"a\":\"\xff\"}", false},
		{"{\"\xc3\":1}", false},
		{"{\"a\":\"ok\"}\xff", false},
		{`{"a":"\ud800"}`, false},
		{`{"a":"\udc00"}`, false},
		{`{"a":"\ud800x"}`, false},
		{`{"a":"\ud800\u0041"}`, false},
		{`{"\uDBFF":1}`, false},
		{`{"a":"\ud83d\ude00"}`, true}, // a pair
		{`{"a":"\\ud800"}`, true},      // an escaped backslash, then text
		{`{"a":"\ufffd é 😀"}`, true},   // U+FFFD itself, sent as such
		{`{"a":"x\"\ud800"}`, false},   // after an escaped quote, still in the string
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseJSON([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("ParseJSON(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
		})
	}
	v, _ := ParseJSON([]byte(`{"n":1.50}`))
	if n := v.(map[string]any)["n"]; n != json.Number("1.50") {
		t.Fatalf("number decoded as %#v, want json.Number(\"1.50\")", n)
	}
}

// countReplacement counts U+FFFD in the strings and keys of v.
func countReplacement(v any) int {
	n := 0
	switch x := v.(type) {
	case string:
		n += strings.Count(x, "\uFFFD")
	case []any:
		for _, e := range x {
			n += countReplacement(e)
		}
	case map[string]any:
		for k, e := range x {
			n += strings.Count(k, "\uFFFD") + countReplacement(e)
		}
	}
	return n
}

func FuzzCanonical(f *testing.F) {
	for _, seed := range []string{
		`{"kind":"plan","content":{"steps":["read","write"]},"tags":["demo"]}`,
		`{"b":1,"a":{"d":[1,2.50,-0,1e400,"x"],"c":null},"é":"\u2028\u0001\"\\"}`,
		`[1E+2, 0.000001, 123456789012345678901234567890]`,
		`"\ud800"`,
		`"\xff"`,
		`true`,
		`{"\uffff":1,"\ud800\udc00":2}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseJSON(data)
		if err != nil {
			return
		}
		// Nothing accepted was altered by decoding: every U+FFFD in the value was sent.
		sent := bytes.Count(data, []byte("\uFFFD")) + bytes.Count(bytes.ToLower(data), []byte(`\ufffd`))
		if got := countReplacement(v); got > sent {
			t.Fatalf("decoding %q produced %d U+FFFD, the input holds %d", data, got, sent)
		}
		c1, err := Canonical(v)
		if err != nil {
			t.Fatalf("Canonical of a parsed value failed: %v (input %q)", err, data)
		}
		if !json.Valid(c1) {
			t.Fatalf("canonical form is not valid JSON: %q", c1)
		}
		v2, err := ParseJSON(c1)
		if err != nil {
			t.Fatalf("canonical form does not parse: %v (%q)", err, c1)
		}
		c2, err := Canonical(v2)
		if err != nil {
			t.Fatalf("Canonical(parse(canonical)) failed: %v", err)
		}
		if !bytes.Equal(c1, c2) {
			t.Fatalf("not stable:\n c1 %q\n c2 %q", c1, c2)
		}
	})
}
