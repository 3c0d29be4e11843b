package httpengine

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestEventReader(t *testing.T) {
	type ev struct{ name, data string }
	for _, tt := range []struct {
		name, body string
		want       []ev
		err        error
	}{
		{"two events, CRLF", "data: a\n\ndata: b\r\n\r\n", []ev{{"", "a"}, {"", "b"}}, io.EOF},
		{"name, comment, joined lines", ": c\nevent: error\ndata: x\ndata: y\n\n", []ev{{"error", "x\ny"}}, io.EOF},
		{"no space after colon, other fields", "id: 1\nretry: 5\ndata:1\ndata: 2\n\n\n", []ev{{"", "1\n2"}}, io.EOF},
		{"name reset at a blank line without data", "event: e\n\ndata: x\n\n", []ev{{"", "x"}}, io.EOF},
		{"last event without its blank line", "data: a\n", []ev{{"", "a"}}, io.EOF},
		{"cut inside a line", "data: a\n\ndata: cut", []ev{{"", "a"}}, io.ErrUnexpectedEOF},
		{"line over the bound", "data: " + strings.Repeat("x", MaxEventBytes) + "\n\n", nil, ErrEventTooLong},
		{"event over the bound", strings.Repeat("data: "+strings.Repeat("x", 1<<20)+"\n", 9) + "\n", nil, ErrEventTooLong},
	} {
		check := func(t *testing.T, got []ev, err error) {
			t.Helper()
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("events %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("events %q, want %q", got, tt.want)
				}
			}
		}
		t.Run(tt.name+"/Next", func(t *testing.T) {
			r := NewEventReader(strings.NewReader(tt.body))
			var got []ev
			for {
				name, data, err := r.Next()
				if err != nil {
					check(t, got, err)
					return
				}
				got = append(got, ev{string(name), string(data)})
			}
		})
		each := func(t *testing.T, r *EventReader) {
			var got []ev
			err := r.Each(func(name, data []byte) (bool, error) {
				got = append(got, ev{string(name), string(data)})
				return false, nil
			})
			check(t, got, err)
		}
		t.Run(tt.name+"/Each", func(t *testing.T) { each(t, NewEventReader(strings.NewReader(tt.body))) })
		t.Run(tt.name+"/Each of a Conns answer", func(t *testing.T) {
			p := NewConns(rawEngine(t, []string{tt.body}, nil), 1)
			defer p.CloseIdle()
			resp, err := p.Post(t.Context(), "/", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			each(t, NewEventReader(resp.Body))
		})
	}
}

// TestEventReaderErrorField: llama-server's "error: {json}" line is a field other readers
// ignore, as the SSE format says of unknown fields; a reader that asks for it reads it as an
// event named error.
func TestEventReaderErrorField(t *testing.T) {
	const body = "data: a\n\nerror: {\"code\":400}\n\ndata: [DONE]\n\n"
	read := func(r *EventReader) (out []string) {
		for {
			name, data, err := r.Next()
			if err != nil {
				return out
			}
			out = append(out, string(name)+"="+string(data))
		}
	}
	if got, want := strings.Join(read(NewEventReader(strings.NewReader(body))), " "), "=a =[DONE]"; got != want {
		t.Errorf("by default: %q, want %q", got, want)
	}
	got := strings.Join(read(NewEventReader(strings.NewReader(body)).WithErrorField()), " ")
	if want := `=a error={"code":400} =[DONE]`; got != want {
		t.Errorf("with the error field: %q, want %q", got, want)
	}
}

// FuzzEventReader: any body splits into events without panicking, each within the bound; a
// payload written as data lines comes back as one event; and a body of "data: X\n\n" events
// whose Xs have no line breaks gives back exactly the Xs.
func FuzzEventReader(f *testing.F) {
	f.Add([]byte("data: a\n\ndata: b\r\n\r\n"), "x")
	f.Add([]byte(": c\nevent: error\ndata: x\ndata: y\n\n"), "y\nz")
	f.Add([]byte("data: cut"), "")
	f.Add([]byte("data: {\"text_output\":\" The\"}\n\ndata: x\r\n\r\n"), "a\x00b")
	f.Add([]byte(": c\nevent: e\ndata:1\ndata: 2\n\n\n"), "")
	f.Fuzz(func(t *testing.T, body []byte, payload string) {
		r := NewEventReader(bytes.NewReader(body))
		var next []string
		var nextErr error
		for range len(body) + 1 {
			name, data, err := r.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrEventTooLong) {
					t.Fatalf("unexpected error %v", err)
				}
				nextErr = err
				break
			}
			if len(data) > MaxEventBytes {
				t.Fatalf("event of %d bytes", len(data))
			}
			next = append(next, string(name)+"\x00"+string(data))
		}
		// Each hands out the events Next returns, and ends the same way.
		var each []string
		err := NewEventReader(bytes.NewReader(body)).Each(func(name, data []byte) (bool, error) {
			each = append(each, string(name)+"\x00"+string(data))
			return false, nil
		})
		if !errors.Is(err, nextErr) || strings.Join(each, "\x01") != strings.Join(next, "\x01") || len(each) != len(next) {
			t.Fatalf("Each: %q, %v\nNext: %q, %v", each, err, next, nextErr)
		}
		// Round trip: payload written as data lines comes back as one event.
		lines := strings.Split(strings.ReplaceAll(payload, "\r", ""), "\n")
		var b strings.Builder
		for _, l := range lines {
			b.WriteString("data: " + l + "\n")
		}
		b.WriteString("\n")
		r = NewEventReader(strings.NewReader(b.String()))
		_, data, err := r.Next()
		if err != nil || string(data) != strings.Join(lines, "\n") {
			t.Fatalf("round trip of %q: %q, %v", payload, data, err)
		}
		// Events: the \x00-separated parts of payload, one event each.
		var xs []string
		for p := range strings.SplitSeq(payload, "\x00") {
			if strings.ContainsAny(p, "\r\n") {
				return
			}
			xs = append(xs, p)
		}
		b.Reset()
		for _, x := range xs {
			b.WriteString("data: " + x + "\n\n")
		}
		r = NewEventReader(strings.NewReader(b.String()))
		for i := 0; ; i++ {
			_, d, err := r.Next()
			if errors.Is(err, io.EOF) {
				if i != len(xs) {
					t.Fatalf("%d events, want %d", i, len(xs))
				}
				return
			}
			if err != nil || i >= len(xs) || string(d) != xs[i] {
				t.Fatalf("event %d = %q, %v; want %q", i, d, err, xs)
			}
		}
	})
}
