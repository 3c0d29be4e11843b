package llamacpp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Frames as llama-server 0.7.0 writes them (captured from the real server, final frame
// shortened in generation_settings).
const (
	tokenFrame = `{"index":0,"content":" The","tokens":[449],"stop":false,"id_slot":-1,"tokens_predicted":1,"tokens_evaluated":6}`
	heldFrame  = `{"index":0,"content":"","tokens":[471],"stop":false,"id_slot":-1,"tokens_predicted":8,"tokens_evaluated":6}`
	finalFrame = `{"index":0,"content":"","tokens":[],"id_slot":0,"stop":true,"model":"tiny.gguf","tokens_predicted":12,"tokens_evaluated":6,` +
		`"generation_settings":{"seed":4294967295,"temperature":0.0,"top_k":1,"top_p":1.0,"dry_sequence_breakers":["\n",":","\"","*"],"stop":[],"n_predict":12,"logit_bias":[],"lora":[]},` +
		`"prompt":"<s> Hello","has_new_line":false,"truncated":false,"stop_type":"limit","stopping_word":"","tokens_cached":17,` +
		`"timings":{"cache_n":0,"prompt_n":6,"prompt_ms":0.65,"prompt_per_token_ms":0.10833333333333334,"prompt_per_second":9230.76923076923,"predicted_n":12,"predicted_ms":1.663,"predicted_per_token_ms":0.1511818181818182,"predicted_per_second":6614.55201443175}}`
	errorFrame = `{"error":{"code":500,"message":"slot crashed","type":"server_error"}}`
)

func TestDecodeFrame(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want refFrame
		bad  bool
	}{
		{name: "token", in: tokenFrame, want: refFrame{content: " The", nTokens: 1, tokensPredicted: 1, tokensEvaluated: 6, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}},
		{name: "held back for a stop word", in: heldFrame, want: refFrame{nTokens: 1, tokensPredicted: 8, tokensEvaluated: 6, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}},
		{name: "final", in: finalFrame, want: refFrame{stop: true, stopType: "limit", tokensPredicted: 12, tokensEvaluated: 6, idSlot: 0, hasTimings: true, promptN: 6, predictedN: 12, cacheN: 0, errCode: -1}},
		{name: "error", in: errorFrame, want: refFrame{tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, hasError: true, errCode: 500, errMessage: "slot crashed", errType: "server_error"}},
		{name: "escapes", in: `{"content":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00"}`, want: refFrame{content: "a\"b\\c/d\b\f\n\r\té😀", tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}},
		{name: "lone surrogate", in: `{"content":"\ud800x"}`, want: refFrame{content: "\uFFFDx", tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}},
		{name: "invalid utf-8 replaced", in: "{\"content\":\"a\xffb\"}", want: refFrame{content: "a\uFFFDb", tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}},
		{name: "escaped key", in: `{"c\u006fntent":"x"}`, want: refFrame{content: "x", tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}},
		{name: "nulls", in: `{"content":null,"tokens":null,"stop":null,"timings":null,"error":null,"tokens_predicted":null,"id_slot":null}`, want: refFrame{tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}},
		{name: "duplicate key, last wins", in: `{"content":"a","content":"b"}`, want: refFrame{content: "b", tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}},
		{name: "whitespace", in: " \t\r\n{ \"stop\" : true , \"tokens\" : [ 1 , 2 ] } \n", want: refFrame{stop: true, nTokens: 2, tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}},
		{name: "empty object", in: `{}`, want: refFrame{tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}},
		{name: "empty", in: ``, bad: true},
		{name: "not an object", in: `[1]`, bad: true},
		{name: "null document", in: `null`, bad: true},
		{name: "truncated", in: `{"content":" The","tok`, bad: true},
		{name: "trailing data", in: `{} {}`, bad: true},
		{name: "trailing comma", in: `{"stop":true,}`, bad: true},
		{name: "content not a string", in: `{"content":1}`, bad: true},
		{name: "stop not a bool", in: `{"stop":"yes"}`, bad: true},
		{name: "count not an integer", in: `{"tokens_predicted":1.5}`, bad: true},
		{name: "count with exponent", in: `{"tokens_predicted":1e3}`, bad: true},
		{name: "count overflows", in: `{"tokens_predicted":99999999999999999999}`, bad: true},
		{name: "tokens not an array", in: `{"tokens":{}}`, bad: true},
		{name: "control character in string", in: "{\"content\":\"a\nb\"}", bad: true},
		{name: "bad escape", in: `{"content":"\x"}`, bad: true},
		{name: "short unicode escape", in: `{"content":"\u12"}`, bad: true},
		{name: "single quote escape", in: `{"content":"\'"}`, bad: true},
		{name: "bad number in skipped value", in: `{"x":01}`, bad: true},
		{name: "bad literal in skipped value", in: `{"x":nul}`, bad: true},
		{name: "leading plus", in: `{"x":+1}`, bad: true},
		{name: "unterminated nested", in: `{"x":[{"y":1]}`, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d frameDecoder
			var f frame
			err := d.decode([]byte(tt.in), &f)
			if tt.bad {
				if err == nil {
					t.Fatalf("decode(%q) succeeded: %+v", tt.in, toRef(&f))
				}
				if !errors.Is(err, errSyntax) {
					t.Errorf("error %v does not wrap errSyntax", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode(%q): %v", tt.in, err)
			}
			if got := toRef(&f); got != tt.want {
				t.Errorf("decode(%q) =\n %+v, want\n %+v", tt.in, got, tt.want)
			}
			// The decoder and frame are reused: a second, different document must not see the
			// first one's fields.
			if err := d.decode([]byte(`{}`), &f); err != nil {
				t.Fatal(err)
			}
			if got, want := toRef(&f), (refFrame{tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}); got != want {
				t.Errorf("after reuse: %+v", got)
			}
		})
	}
}

func TestDecodeFrameNesting(t *testing.T) {
	tests := []struct {
		name  string
		depth int // containers inside the top-level object
	}{
		{"at the limit", maxDepth - 1},
		{"over the limit", maxDepth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := `{"x":` + strings.Repeat("[", tt.depth) + strings.Repeat("]", tt.depth) + `}`
			var d frameDecoder
			var f frame
			err := d.decode([]byte(in), &f)
			if want := json.Valid([]byte(in)); (err == nil) != want {
				t.Errorf("decode error = %v, encoding/json valid = %v", err, want)
			}
		})
	}
}

func TestDecodeError(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		code       int
		msg, typ   string
		wantFailed bool
	}{
		{name: "nested", in: errorFrame, code: 500, msg: "slot crashed", typ: "server_error"},
		{name: "bare object", in: `{"code":503,"message":"Loading model","type":"unavailable_error"}`, code: 503, msg: "Loading model", typ: "unavailable_error"},
		{name: "no code", in: `{"message":"boom"}`, code: -1, msg: "boom"},
		{name: "malformed", in: `{"code":}`, wantFailed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d frameDecoder
			var f frame
			err := d.decodeError([]byte(tt.in), &f)
			if tt.wantFailed {
				if err == nil {
					t.Fatal("decodeError succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !f.hasError || f.errCode != tt.code || string(f.errMessage) != tt.msg || string(f.errType) != tt.typ {
				t.Errorf("got code=%d msg=%q type=%q hasError=%v", f.errCode, f.errMessage, f.errType, f.hasError)
			}
		})
	}
}

// FuzzDecodeFrame checks the hand-written decoder against encoding/json: both accept exactly
// the same documents and extract the same fields.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{tokenFrame, heldFrame, finalFrame, errorFrame, `{"content":"\ud83d\ude00\u00e9\\"}`, `{}`} {
		f.Add([]byte(s))
	}
	var d frameDecoder
	var fr frame
	f.Fuzz(func(t *testing.T, data []byte) {
		err := d.decode(data, &fr)
		want, werr := refDecode(data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("decode(%q): err = %v, encoding/json err = %v", data, err, werr)
		}
		if err == nil {
			if got := toRef(&fr); got != want {
				t.Fatalf("decode(%q) =\n %+v, encoding/json gives\n %+v", data, got, want)
			}
		}
		var ef frame
		_ = d.decodeError(data, &ef) // must not panic
	})
}

// refFrame is frame with strings, comparable with ==.
type refFrame struct {
	content         string
	nTokens         int
	stop            bool
	stopType        string
	tokensPredicted int
	tokensEvaluated int
	idSlot          int
	hasTimings      bool
	promptN         int
	predictedN      int
	cacheN          int
	hasError        bool
	errCode         int
	errMessage      string
	errType         string
}

func toRef(f *frame) refFrame {
	return refFrame{
		content: string(f.content), nTokens: f.nTokens, stop: f.stop, stopType: string(f.stopType),
		tokensPredicted: f.tokensPredicted, tokensEvaluated: f.tokensEvaluated, idSlot: f.idSlot,
		hasTimings: f.hasTimings, promptN: f.promptN, predictedN: f.predictedN, cacheN: f.cacheN,
		hasError: f.hasError, errCode: f.errCode, errMessage: string(f.errMessage), errType: string(f.errType),
	}
}

// refDecode is the specification of frameDecoder.decode, written with encoding/json.
func refDecode(data []byte) (refFrame, error) {
	out := refFrame{tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}
	if !json.Valid(data) {
		return out, errors.New("invalid JSON")
	}
	var top map[string]json.RawMessage
	if err := unmarshalObject(data, &top); err != nil {
		return out, err
	}
	for key, raw := range top {
		var err error
		switch key {
		case "content":
			err = refString(raw, &out.content)
		case "tokens":
			if isNull(raw) {
				break
			}
			var elems []json.RawMessage
			if first(raw) != '[' {
				return out, errors.New("tokens not an array")
			}
			err = json.Unmarshal(raw, &elems)
			out.nTokens = len(elems)
		case "stop":
			switch string(bytes.TrimSpace(raw)) {
			case "true":
				out.stop = true
			case "false", "null":
			default:
				err = errors.New("stop not a bool")
			}
		case "stop_type":
			err = refString(raw, &out.stopType)
		case "tokens_predicted":
			err = refInt(raw, &out.tokensPredicted)
		case "tokens_evaluated":
			err = refInt(raw, &out.tokensEvaluated)
		case "id_slot":
			err = refInt(raw, &out.idSlot)
		case "timings":
			if isNull(raw) {
				break
			}
			var tm map[string]json.RawMessage
			if err := unmarshalObject(raw, &tm); err != nil {
				return out, err
			}
			out.hasTimings = true
			for k, v := range tm {
				switch k {
				case "prompt_n":
					err = refInt(v, &out.promptN)
				case "predicted_n":
					err = refInt(v, &out.predictedN)
				case "cache_n":
					err = refInt(v, &out.cacheN)
				}
				if err != nil {
					return out, err
				}
			}
		case "error":
			if isNull(raw) {
				break
			}
			var em map[string]json.RawMessage
			if err := unmarshalObject(raw, &em); err != nil {
				return out, err
			}
			out.hasError = true
			for k, v := range em {
				switch k {
				case "code":
					err = refInt(v, &out.errCode)
				case "message":
					err = refString(v, &out.errMessage)
				case "type":
					err = refString(v, &out.errType)
				}
				if err != nil {
					return out, err
				}
			}
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func first(raw []byte) byte {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

func isNull(raw []byte) bool { return string(bytes.TrimSpace(raw)) == "null" }

func unmarshalObject(raw []byte, v *map[string]json.RawMessage) error {
	if first(raw) != '{' {
		return errors.New("not an object")
	}
	return json.Unmarshal(raw, v)
}

func refString(raw []byte, dst *string) error {
	if isNull(raw) {
		*dst = ""
		return nil
	}
	if first(raw) != '"' {
		return errors.New("not a string")
	}
	return json.Unmarshal(raw, dst)
}

func refInt(raw []byte, dst *int) error {
	if isNull(raw) {
		*dst = -1
		return nil
	}
	if c := first(raw); c != '-' && (c < '0' || c > '9') {
		return errors.New("not a number")
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return err
	}
	v, err := n.Int64()
	if err != nil {
		return fmt.Errorf("not an integer: %w", err)
	}
	*dst = int(v)
	return nil
}

func BenchmarkDecodeFrame(b *testing.B) {
	for _, bm := range []struct{ name, in string }{{"token", tokenFrame}, {"final", finalFrame}} {
		b.Run(bm.name+"/hand", func(b *testing.B) {
			data := []byte(bm.in)
			var d frameDecoder
			var f frame
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := d.decode(data, &f); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bm.name+"/encoding_json", func(b *testing.B) {
			data := []byte(bm.in)
			type timings struct {
				PromptN    int `json:"prompt_n"`
				PredictedN int `json:"predicted_n"`
				CacheN     int `json:"cache_n"`
			}
			var v struct {
				Content         string   `json:"content"`
				Tokens          []int    `json:"tokens"`
				Stop            bool     `json:"stop"`
				StopType        string   `json:"stop_type"`
				TokensPredicted int      `json:"tokens_predicted"`
				TokensEvaluated int      `json:"tokens_evaluated"`
				Timings         *timings `json:"timings"`
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := json.Unmarshal(data, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Decoding a frame allocates nothing once the decoder's scratch has grown: token frames, with
// escaped text (unescaped into the scratch) or not, and the final frame.
func TestDecodeFrameAllocatesNothing(t *testing.T) {
	escaped := `{"index":0,"content":" \"q\"\n\u00e9\ud83d\ude00","tokens":[449],"stop":false,"id_slot":-1,"tokens_predicted":1,"tokens_evaluated":6}`
	for _, in := range []string{tokenFrame, escaped, finalFrame} {
		data := []byte(in)
		var d frameDecoder
		var f frame
		if allocs := testing.AllocsPerRun(100, func() {
			if err := d.decode(data, &f); err != nil {
				t.Fatal(err)
			}
		}); allocs != 0 {
			t.Errorf("%.40s...: %.1f allocations per frame, want 0", in, allocs)
		}
	}
}
