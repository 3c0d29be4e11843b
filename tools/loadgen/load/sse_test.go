package load

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// refEvent is an event as the reference parser sees it.
type refEvent struct {
	Type, Data, ID string
	HasID          bool
}

func (e refEvent) String() string {
	return fmt.Sprintf("{%q %q id=%q/%v}", e.Type, e.Data, e.ID, e.HasID)
}

// refParse is a straightforward (slow) implementation of the WHATWG event-stream rules, used
// as the oracle for SSEReader.
func refParse(in string) []refEvent {
	in = strings.TrimPrefix(in, "\uFEFF")
	in = strings.ReplaceAll(in, "\r\n", "\n")
	in = strings.ReplaceAll(in, "\r", "\n")
	lines := strings.Split(in, "\n")
	lines = lines[:len(lines)-1] // the last piece has no terminator
	var out []refEvent
	var data []string
	typ, id, hasID := "", "", false
	for _, line := range lines {
		switch {
		case line == "":
			if data != nil {
				t := typ
				if t == "" {
					t = "message"
				}
				out = append(out, refEvent{t, strings.Join(data, "\n"), id, hasID})
			}
			data, typ = nil, ""
			continue
		case line[0] == ':':
			continue
		}
		field, value, found := strings.Cut(line, ":")
		if found {
			value = strings.TrimPrefix(value, " ")
		}
		switch field {
		case "data":
			data = append(data, value)
		case "event":
			typ = value
		case "id":
			if !strings.Contains(value, "\x00") {
				id, hasID = value, true
			}
		}
	}
	return out
}

func readAllEvents(r *SSEReader) ([]refEvent, error) {
	var out []refEvent
	for {
		ev, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return out, err
		}
		out = append(out, refEvent{ev.Type, string(ev.Data), string(ev.ID), ev.HasID})
	}
}

func TestSSEReader(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     []refEvent
		comments int
	}{
		{"orchd frames",
			"id: 0\nevent: started\ndata: {\"queue_position\":0}\n\n: keep-alive\n\nid: 1\nevent: token\ndata: {\"t\":\" The\",\"i\":0}\n\n",
			[]refEvent{{"started", `{"queue_position":0}`, "0", true}, {"token", `{"t":" The","i":0}`, "1", true}}, 1},
		{"llama.cpp frames", "data: {\"content\":\"a\"}\n\ndata: {\"stop\":true}\n\n",
			[]refEvent{{"message", `{"content":"a"}`, "", false}, {"message", `{"stop":true}`, "", false}}, 0},
		{"crlf", "event: x\r\ndata: 1\r\n\r\n", []refEvent{{"x", "1", "", false}}, 0},
		{"cr only", "data: 1\rdata: 2\r\r", []refEvent{{"message", "1\n2", "", false}}, 0},
		{"multi-line data", "data: a\ndata:b\ndata\n\n", []refEvent{{"message", "a\nb\n", "", false}}, 0},
		{"two spaces keep one", "data:  x\n\n", []refEvent{{"message", " x", "", false}}, 0},
		{"no data no dispatch", "event: x\n\ndata: y\n\n", []refEvent{{"message", "y", "", false}}, 0},
		{"id persists", "id: 7\ndata: a\n\ndata: b\n\n", []refEvent{{"message", "a", "7", true}, {"message", "b", "7", true}}, 0},
		{"id with NUL ignored", "id: a\x00b\ndata: a\n\n", []refEvent{{"message", "a", "", false}}, 0},
		{"retry and unknown ignored", "retry: 10\nfoo: bar\ndata: a\n\n", []refEvent{{"message", "a", "", false}}, 0},
		{"incomplete last event dropped", "data: a\n\ndata: b\n", []refEvent{{"message", "a", "", false}}, 0},
		{"unterminated last line dropped", "data: a\n\ndata: b", []refEvent{{"message", "a", "", false}}, 0},
		{"bom", "\uFEFFdata: a\n\n", []refEvent{{"message", "a", "", false}}, 0},
		{"comments counted", ":a\n:b\n\n", nil, 2},
		{"empty", "", nil, 0},
	}
	for _, tt := range tests {
		for _, chunk := range []int{0, 1, 2, 5} {
			t.Run(fmt.Sprintf("%s/chunk%d", tt.name, chunk), func(t *testing.T) {
				var src io.Reader = strings.NewReader(tt.in)
				if chunk > 0 {
					src = &chunkReader{r: src, n: chunk}
				}
				r := NewSSEReader(src)
				got, err := readAllEvents(r)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.want) {
					t.Fatalf("got %v\nwant %v", got, tt.want)
				}
				if r.Comments() != tt.comments {
					t.Fatalf("comments %d, want %d", r.Comments(), tt.comments)
				}
				if ref := refParse(tt.in); fmt.Sprint(ref) != fmt.Sprint(tt.want) {
					t.Fatalf("reference parser disagrees with the table: %v", ref)
				}
			})
		}
	}
}

func TestSSEReaderLineTooLong(t *testing.T) {
	r := NewSSEReaderSize(strings.NewReader("data: "+strings.Repeat("x", 100)+"\n\n"), 32)
	if _, err := r.Next(); !errors.Is(err, ErrSSELineTooLong) {
		t.Fatalf("err = %v, want ErrSSELineTooLong", err)
	}
}

func TestSSEReaderLongLineWithinLimit(t *testing.T) {
	long := strings.Repeat("y", 10000)
	r := NewSSEReader(iotest.HalfReader(strings.NewReader("data: " + long + "\n\n")))
	ev, err := r.Next()
	if err != nil || string(ev.Data) != long {
		t.Fatalf("len %d, err %v", len(ev.Data), err)
	}
}

func TestSSEReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	r := NewSSEReader(io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(boom)))
	if ev, err := r.Next(); err != nil || string(ev.Data) != "a" {
		t.Fatalf("first event %q, %v", ev.Data, err)
	}
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("id: 0\nevent: started\ndata: {}\n\n: keep-alive\n\nid: 1\nevent: token\ndata: {\"t\":\" x\",\"i\":0}\n\n"), uint8(3))
	f.Add([]byte("data: a\r\ndata: b\r\rdata:c\n\n"), uint8(1))
	f.Add([]byte("\xEF\xBB\xBFdata: x\n\n"), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		var src io.Reader = bytes.NewReader(in)
		if chunk > 0 {
			src = &chunkReader{r: src, n: int(chunk)}
		}
		got, err := readAllEvents(NewSSEReaderSize(src, len(in)+16))
		if err != nil {
			t.Fatalf("unexpected error %v", err)
		}
		if want := refParse(string(in)); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("input %q\ngot  %v\nwant %v", in, got, want)
		}
	})
}
