package impl

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/sse"
)

// A token's chunk, written around the token frame's JSON string, is the chunk encoding/json
// writes for the completion object: byte for byte, but for encoding/json's HTML escaping of
// <, > and &, and the same JSON value always.
func TestTokenChunkMatchesObject(t *testing.T) {
	texts := []string{"", " The", "quo\"te", "back\\slash", "nl\n", "\x00\x1f", "é日本", "\xff\xfe", "a\u2028b", "<&>"}
	for _, chat := range []bool{true, false} {
		for _, role := range []string{"", "assistant"} {
			if !chat && role != "" {
				continue
			}
			r := &openAIResponse{c: completion{chat: chat, model: "m<1>\"x"}, id: objectID(chat, "0b6f"), created: 1700000000}
			head := r.appendChunkHead(nil)
			for _, text := range texts {
				lit, ok := sse.TokenText(sse.AppendTokenData(nil, text, 7))
				if !ok {
					t.Fatalf("TokenText refused %q", text)
				}
				got := r.appendTokenChunk(nil, head, role, lit)
				want := appendData(nil, r.object(true, text, role, nil, nil))
				if !strings.ContainsAny(text+r.c.model, "<>&") && string(got) != string(want) {
					t.Errorf("chat %v role %q text %q:\n got %s\nwant %s", chat, role, text, got, want)
				}
				var g, w any
				if err := json.Unmarshal(got[len("data: "):len(got)-2], &g); err != nil {
					t.Fatalf("%s: %v", got, err)
				}
				if err := json.Unmarshal(want[len("data: "):len(want)-2], &w); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(g, w) {
					t.Errorf("chat %v role %q text %q: %v, want %v", chat, role, text, g, w)
				}
			}
		}
	}
}

// BenchmarkOpenAIChunks turns a batch of 16 token frames into chat chunks, as a stream does
// per batch.
func BenchmarkOpenAIChunks(b *testing.B) {
	var frames []byte
	for i := range 16 {
		frames, _ = sse.AppendTokenFrame(frames, i, " token", i)
	}
	r := &openAIResponse{c: completion{chat: true, model: "llama"}, id: objectID(true, "0b6f"), created: 1700000000}
	head := r.appendChunkHead(nil)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for rest := frames; ; {
			_, data, next, ok, err := sse.NextFrame(rest)
			if err != nil || !ok {
				break
			}
			rest = next
			lit, _ := sse.TokenText(data)
			buf = r.appendTokenChunk(buf, head, "", lit)
		}
	}
}
