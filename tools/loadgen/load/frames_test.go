package load

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestFastStringField(t *testing.T) {
	tests := []struct {
		name, data, key, want string
		ok                    bool
	}{
		{"orchd token", `{"t":" t1732800000123456789","i":0}`, "t", " t1732800000123456789", true},
		{"later member", `{"i":0,"t":"x"}`, "t", "x", true},
		{"spaces", `{ "text" : "a b" }`, "text", "a b", true},
		{"nested choice", `{"id":"c","choices":[{"text":"z","index":0}]}`, "text", "z", true},
		{"empty value", `{"content":""}`, "content", "", true},
		{"escape falls back", `{"t":"a\"b"}`, "t", "", false},
		{"non-string falls back", `{"t":1}`, "t", "", false},
		{"missing", `{"x":"t"}`, "t", "", false},
		{"key inside a value is skipped", `{"x":"\"t\":\"no\"","t":"yes"}`, "t", "yes", true},
		{"value equal to key", `{"a":"t","t":"v"}`, "t", "v", true},
		{"unterminated", `{"t":"abc`, "t", "", false},
		{"control char", "{\"t\":\"a\nb\"}", "t", "", false},
		{"longer key not matched", `{"tt":"x","t":"y"}`, "t", "y", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := fastStringField([]byte(tt.data), tt.key)
			if ok != tt.ok || got != tt.want {
				t.Fatalf("got %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseEngineFrames(t *testing.T) {
	tests := []struct {
		name  string
		parse func([]byte) frame
		data  string
		text  string
		done  bool
		class string
	}{
		{"llama token", parseLlamaFrame, `{"content":" t1","tokens":[5],"stop":false}`, " t1", false, ""},
		{"llama escaped token", parseLlamaFrame, `{"content":"a\"b","stop":false}`, `a"b`, false, ""},
		{"llama final", parseLlamaFrame, `{"content":"","stop":true,"stop_type":"limit"}`, "", true, ""},
		{"llama final with text", parseLlamaFrame, `{"content":"x","stop":true}`, "x", true, ""},
		{"llama error", parseLlamaFrame, `{"error":{"code":500,"message":"boom"}}`, "", false, "sse_error"},
		{"llama garbage", parseLlamaFrame, `nope`, "", false, "protocol"},
		{"openai token", parseOpenAIFrame, `{"choices":[{"text":" t1","index":0,"logprobs":null,"finish_reason":null}]}`, " t1", false, ""},
		{"openai spaced token", parseOpenAIFrame, `{"choices": [{"text": " t1", "finish_reason": null}]}`, " t1", false, ""},
		{"openai final", parseOpenAIFrame, `{"choices":[{"text":"","index":0,"finish_reason":"length"}]}`, "", false, ""},
		{"openai usage", parseOpenAIFrame, `{"choices":[],"usage":{"completion_tokens":3}}`, "", false, ""},
		{"openai done", parseOpenAIFrame, `[DONE]`, "", true, ""},
		{"openai error", parseOpenAIFrame, `{"error":{"message":"rate limited"}}`, "", false, "sse_error"},
		{"openai garbage", parseOpenAIFrame, `{"choices":`, "", false, "protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.parse([]byte(tt.data))
			if f.text != tt.text || f.done != tt.done || f.class != tt.class || (f.class != "") != (f.err != nil) {
				t.Fatalf("got %+v", f)
			}
		})
	}
}

func TestSSEErrorClass(t *testing.T) {
	tests := map[string]string{
		"DECODE_TIMEOUT": "sse_DECODE_TIMEOUT",
		"":               "sse_error",
		"lower":          "sse_error",
		"A B":            "sse_error",
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA": "sse_error",
	}
	for code, want := range tests {
		if got := sseErrorClass(code); got != want {
			t.Errorf("sseErrorClass(%q) = %q, want %q", code, got, want)
		}
	}
}

// FuzzFastStringField checks the fast path against encoding/json on objects json.Marshal
// writes: when the fast path answers, it must give the decoded value.
func FuzzFastStringField(f *testing.F) {
	f.Add("t", " t1732800000123456789", "i", "0")
	f.Add("content", `say "hi"`, "stop", "x")
	f.Fuzz(func(t *testing.T, key, value, otherKey, otherValue string) {
		if key == "" || key == otherKey {
			return
		}
		for _, data := range [][]byte{
			marshalPair(t, key, value, otherKey, otherValue),
			marshalPair(t, otherKey, otherValue, key, value),
		} {
			got, ok := fastStringField(data, key)
			if !ok {
				continue
			}
			var m map[string]string
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			if want := m[key]; got != want {
				t.Fatalf("fastStringField(%s, %q) = %q, want %q", data, key, got, want)
			}
		}
		// Arbitrary bytes must not panic.
		fastStringField([]byte(value), key)
	})
}

// marshalPair returns {"k1":v1,"k2":v2} with members in that order.
func marshalPair(t *testing.T, k1, v1, k2, v2 string) []byte {
	t.Helper()
	b := []byte{'{'}
	for i, kv := range [][2]string{{k1, v1}, {k2, v2}} {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(kv[0])
		v, _ := json.Marshal(kv[1])
		b = append(append(append(b, k...), ':'), v...)
	}
	return append(b, '}')
}

// FuzzEngineFrame checks the frame parsers never panic and agree with a full decode on the
// token text of valid flat llama.cpp frames.
func FuzzEngineFrame(f *testing.F) {
	f.Add([]byte(`{"content":" t1","tokens":[1],"stop":false}`))
	f.Add([]byte(`{"choices":[{"text":" t1","finish_reason":null}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		lf := parseLlamaFrame(data)
		of := parseOpenAIFrame(data)
		if (lf.class != "") != (lf.err != nil) || (of.class != "") != (of.err != nil) {
			t.Fatalf("class and err disagree: %+v %+v", lf, of)
		}
		var l struct {
			Content string `json:"content"`
		}
		// The fast path is for flat objects (what engines send); nested objects may legitimately
		// hold a member of the same name.
		flat := bytes.Count(data, []byte("{")) == 1
		if lf.err == nil && flat && json.Unmarshal(data, &l) == nil && !hasDuplicateKeys(data) && lf.text != l.Content {
			t.Fatalf("llama text %q, json says %q", lf.text, l.Content)
		}
	})
}

// hasDuplicateKeys reports whether a JSON object repeats a top-level member name (where the
// first-match fast path and encoding/json's last-match legitimately differ).
func hasDuplicateKeys(data []byte) bool {
	var raw map[string]json.RawMessage
	if json.Unmarshal(data, &raw) != nil {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return true
	}
	n := 0
	for dec.More() {
		if _, err := dec.Token(); err != nil {
			return true
		}
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return true
		}
		n++
	}
	return n != len(raw)
}
