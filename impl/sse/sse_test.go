package sse

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", " The", "quo\"te", "back\\slash", "nl\n", "tab\t", "\x00\x1f", "é日本", "\xff\xfe", "a\u2028b\u2029", "<>&"} {
		got := AppendString(nil, s)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(buf.String(), "\n")
		if string(got) != want {
			t.Errorf("AppendString(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var b []byte
	b = AppendFrame(b, 0, "started", []byte(`{"queue_position":0,"predicted_start_ms":0}`))
	b = append(b, Heartbeat...)
	b = AppendFrame(b, 1, "token", AppendTokenData(nil, " The\n\"x\"", 0))
	r := NewReader(bytes.NewReader(b), 0)
	ev, err := r.Next()
	if err != nil || ev.ID != "0" || ev.Event != "started" {
		t.Fatalf("first = %+v, %v", ev, err)
	}
	ev, err = r.Next()
	if err != nil || ev.Event != "token" {
		t.Fatalf("second = %+v, %v", ev, err)
	}
	var tok struct {
		T string `json:"t"`
		I int    `json:"i"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &tok); err != nil || tok.T != " The\n\"x\"" || tok.I != 0 {
		t.Fatalf("token = %+v, %v", tok, err)
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("end = %v, want EOF", err)
	}
}

func TestReaderErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{"truncated frame", "id: 1\nevent: token\n", io.ErrUnexpectedEOF},
		{"truncated line", "id: 1\nevent: tok", io.ErrUnexpectedEOF},
		{"too long", "data: " + strings.Repeat("x", 100) + "\n\n", ErrLineTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewReader(strings.NewReader(tt.in), 64).Next()
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func BenchmarkAppendTokenFrame(b *testing.B) {
	buf := make([]byte, 0, 256)
	data := make([]byte, 0, 128)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		data = AppendTokenData(data[:0], " quick", i)
		buf = AppendFrame(buf[:0], i, "token", data)
	}
}

// FuzzTokenRoundTrip: any text encodes into a frame that decodes back to the same text (after
// the UTF-8 repair encoding/json also does).
func FuzzTokenRoundTrip(f *testing.F) {
	for _, s := range []string{"", " The", "\n\n", "data: x", "\xff", "\u2028"} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, text string, idx int) {
		if idx < 0 {
			idx = -idx
		}
		frame := AppendFrame(nil, idx, "token", AppendTokenData(nil, text, idx))
		ev, err := NewReader(bytes.NewReader(frame), 0).Next()
		if err != nil {
			t.Fatalf("decode %q: %v", frame, err)
		}
		var tok struct {
			T string `json:"t"`
			I int    `json:"i"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &tok); err != nil {
			t.Fatalf("json %q: %v", ev.Data, err)
		}
		var want string
		enc, _ := json.Marshal(text)
		_ = json.Unmarshal(enc, &want)
		if tok.T != want || tok.I != idx {
			t.Fatalf("round trip %q/%d -> %q/%d", text, idx, tok.T, tok.I)
		}
	})
}

// FuzzReader: the decoder never panics and never returns a frame with a raw newline in a field
// other than data.
func FuzzReader(f *testing.F) {
	f.Add("id: 1\nevent: token\ndata: {}\n\n")
	f.Add(": c\n\nid: 2\r\ndata: a\ndata: b\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		r := NewReader(strings.NewReader(in), 4096)
		for range 100 {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if strings.ContainsAny(ev.ID+ev.Event, "\n") {
				t.Fatalf("newline in field: %+v", ev)
			}
		}
	})
}

// AppendTokenFrame must write byte for byte what AppendFrame writes for a token's data, and
// locate that data, whatever is already in the buffer.
func TestAppendTokenFrameMatchesAppendFrame(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		id     int
		text   string
		index  int
	}{
		{"", 0, "", 0},
		{"", 1, "Hello", 0},
		{"id: 0\n\n", 17, " world\n\"quoted\"\t\\", 16},
		{"x", 123456, "\u2028 caf\xc3\xa9 \xff\x01", 999999},
	} {
		want := AppendFrame([]byte(tc.prefix), tc.id, "token", AppendTokenData(nil, tc.text, tc.index))
		got, data := AppendTokenFrame([]byte(tc.prefix), tc.id, tc.text, tc.index)
		if string(got) != string(want) {
			t.Errorf("AppendTokenFrame(%q, %d, %q, %d) = %q, want %q", tc.prefix, tc.id, tc.text, tc.index, got, want)
		}
		if d := string(got[data : len(got)-2]); d != string(AppendTokenData(nil, tc.text, tc.index)) {
			t.Errorf("data located as %q", d)
		}
	}
}

func FuzzAppendTokenFrame(f *testing.F) {
	f.Add("Hello", 3, 7)
	f.Add("\n\"\\\x00\xff", 0, 0)
	f.Fuzz(func(t *testing.T, text string, id, index int) {
		if id < 0 || index < 0 {
			return
		}
		want := AppendFrame(nil, id, "token", AppendTokenData(nil, text, index))
		got, data := AppendTokenFrame(nil, id, text, index)
		if string(got) != string(want) || string(got[data:len(got)-2]) != string(AppendTokenData(nil, text, index)) {
			t.Fatalf("mismatch: %q vs %q", got, want)
		}
	})
}

func TestAppendStringsMatchesEncodingJSON(t *testing.T) {
	for _, ss := range [][]string{nil, {}, {""}, {"a", "<b>", "quo\"te", "\xff"}} {
		want, err := json.Marshal(ss)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendStringsAsEncodingJSON(nil, ss); !bytes.Equal(got, want) {
			t.Errorf("AppendStringsAsEncodingJSON(%q) = %s, want %s", ss, got, want)
		}
	}
}

// FuzzNextFrame: NextFrame gives back the event and data of frames AppendFrame and
// AppendTokenFrame wrote, with comment frames between them, as the Reader does; TokenText
// gives a token frame's text as a JSON string literal that decodes to the text.
func FuzzNextFrame(f *testing.F) {
	f.Add("started", `{"a":1}`, " The", 3)
	f.Add("metrics", `{}`, "quo\"te\\", 0)
	f.Add("end", `{"x":"\\"}`, "\xff\u2028<&>", 41)
	f.Fuzz(func(t *testing.T, event, data, text string, idx int) {
		if strings.ContainsAny(event+data, "\n\r") || strings.Contains(event, ":") || event == "" {
			return // not what AppendFrame is given
		}
		idx = max(idx, -idx, 0)
		var b []byte
		b = AppendFrame(b, 0, event, []byte(data))
		b = append(b, Heartbeat...)
		b, _ = AppendTokenFrame(b, 1, text, idx)
		var got []Event
		for rest := b; ; {
			name, d, next, ok, err := NextFrame(rest)
			if err != nil {
				t.Fatalf("NextFrame(%q): %v", rest, err)
			}
			if !ok {
				break
			}
			got = append(got, Event{Event: string(name), Data: string(d)})
			rest = next
		}
		r := NewReader(bytes.NewReader(b), 0)
		for i := range 2 {
			want, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if i >= len(got) || got[i].Event != want.Event || got[i].Data != want.Data {
				t.Fatalf("frame %d: NextFrame %+v, Reader %+v", i, got, want)
			}
		}
		if len(got) != 2 {
			t.Fatalf("%d frames, want 2", len(got))
		}
		lit, ok := TokenText([]byte(got[1].Data))
		if !ok {
			t.Fatalf("TokenText(%q) refused", got[1].Data)
		}
		var dec, want string
		if err := json.Unmarshal(lit, &dec); err != nil {
			t.Fatalf("literal %s: %v", lit, err)
		}
		enc, _ := json.Marshal(text)
		_ = json.Unmarshal(enc, &want)
		if dec != want {
			t.Fatalf("TokenText: %q, want %q", dec, want)
		}
	})
}

func TestNextFrameErrors(t *testing.T) {
	for _, in := range []string{
		"id: 1\nevent: token\ndata: {}\n",         // cut short
		"id: 1\nevent: x\ndata: a\ndata: b\n\n",   // two data lines
		"id: 1\nevent: x\nbogus: 1\ndata: {}\n\n", // unknown field
	} {
		if _, _, _, _, err := NextFrame([]byte(in)); err == nil {
			t.Errorf("NextFrame(%q): no error", in)
		}
	}
	if _, _, _, ok, err := NextFrame([]byte(": keep-alive\n\n")); ok || err != nil {
		t.Errorf("a comment alone: ok %v, err %v", ok, err)
	}
	for _, data := range []string{`{"t":1,"i":0}`, `{"x":"a"}`, `{"t":"unterminated`, ``} {
		if _, ok := TokenText([]byte(data)); ok {
			t.Errorf("TokenText(%q) accepted", data)
		}
	}
}
