package llamacpp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/orchestratord/orchestratord/engine/httpengine"
)

type field struct{ name, value string }

func TestSSEReader(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		name    string
		in      string
		want    []field
		wantErr error
	}{
		{name: "llama-server frames", in: "data: {\"a\":1}\n\ndata: {\"b\":2}\n\n", want: []field{{"data", `{"a":1}`}, {"data", `{"b":2}`}}, wantErr: io.EOF},
		{name: "crlf", in: "data: x\r\n\r\n", want: []field{{"data", "x"}}, wantErr: io.EOF},
		{name: "no space after colon", in: "data:x\n", want: []field{{"data", "x"}}, wantErr: io.EOF},
		{name: "only one space removed", in: "data:  x\n", want: []field{{"data", " x"}}, wantErr: io.EOF},
		{name: "comments and blank lines skipped", in: ": keep-alive\n\n\ndata: x\n", want: []field{{"data", "x"}}, wantErr: io.EOF},
		{name: "field without colon", in: "data\n", want: []field{{"data", ""}}, wantErr: io.EOF},
		{name: "error field", in: "error: {\"code\":500}\n\n", want: []field{{"error", `{"code":500}`}}, wantErr: io.EOF},
		{name: "line longer than the buffer", in: "data: " + long + "\n\ndata: y\n", want: []field{{"data", long}, {"data", "y"}}, wantErr: io.EOF},
		{name: "truncated line", in: "data: {\"a\":1}\n\ndata: {\"b", want: []field{{"data", `{"a":1}`}}, wantErr: io.ErrUnexpectedEOF},
		{name: "truncated long line", in: "data: " + long, wantErr: io.ErrUnexpectedEOF},
		{name: "empty", in: "", wantErr: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A one-byte reader and the smallest buffer exercise the long-line path.
			r := sseReader{br: bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(tt.in)), 16)}
			var got []field
			var err error
			for {
				var name, value []byte
				name, value, err = r.next()
				if err != nil {
					break
				}
				got = append(got, field{string(name), string(value)})
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if !equalFields(got, tt.want) {
				t.Errorf("fields = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSSEReaderReadError(t *testing.T) {
	errBoom := errors.New("connection reset")
	tests := []struct {
		name string
		in   string
	}{
		{"at a line start", "data: x\n"},
		{"inside a long line", "data: " + strings.Repeat("y", 40)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := io.MultiReader(strings.NewReader(tt.in), iotest.ErrReader(errBoom))
			r := sseReader{br: bufio.NewReaderSize(body, 16)}
			var err error
			for err == nil {
				_, _, err = r.next()
			}
			if !errors.Is(err, errBoom) {
				t.Errorf("err = %v, want %v", err, errBoom)
			}
		})
	}
}

// FuzzSSEReader checks sseReader against a plain split of the whole input.
func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("data: {\"content\":\" The\"}\n\ndata: {\"stop\":true}\n\n"), uint8(16))
	f.Add([]byte(": c\r\nerror: x\r\n\r\ndata"), uint8(1))
	f.Add([]byte("data: "+strings.Repeat("z", 70)+"\n"), uint8(3))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		want, wantErr := refFields(in)
		body := io.Reader(bytes.NewReader(in))
		if chunk%4 == 1 {
			body = iotest.OneByteReader(body)
		}
		r := sseReader{br: bufio.NewReaderSize(body, 16+int(chunk)%64)}
		var got []field
		var err error
		for {
			var name, value []byte
			name, value, err = r.next()
			if err != nil {
				break
			}
			got = append(got, field{string(name), string(value)})
		}
		if !errors.Is(err, wantErr) {
			t.Fatalf("err = %v, want %v", err, wantErr)
		}
		if !equalFields(got, want) {
			t.Fatalf("fields = %q, want %q", got, want)
		}
	})
}

func refFields(in []byte) ([]field, error) {
	lines := strings.Split(string(in), "\n")
	end := io.EOF
	if last := lines[len(lines)-1]; last != "" {
		end = io.ErrUnexpectedEOF
	}
	lines = lines[:len(lines)-1]
	var out []field
	for _, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		if l == "" || l[0] == ':' {
			continue
		}
		name, value, ok := strings.Cut(l, ":")
		if ok {
			value = strings.TrimPrefix(value, " ")
		}
		out = append(out, field{name, value})
	}
	return out, end
}

func equalFields(a, b []field) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sliceBody is a body with its own buffer, as a Conns answer is.
type sliceBody struct{ *bufio.Reader }

// TestStateReadsInTheBodysBuffer: a generation whose body has a buffer (a Conns answer) reads
// its lines there and holds no second buffer; another body gets one.
func TestStateReadsInTheBodysBuffer(t *testing.T) {
	body := sliceBody{bufio.NewReader(strings.NewReader("data: x\n"))}
	st := getState(body)
	if st.sse.br != httpengine.SliceReader(body) || st.sse.buf != nil {
		t.Errorf("state reads through %T, buffer %v", st.sse.br, st.sse.buf != nil)
	}
	if f, v, err := st.sse.next(); err != nil || string(f) != "data" || string(v) != "x" {
		t.Errorf("next = %q %q %v", f, v, err)
	}
	putState(st)
	st = getState(strings.NewReader("data: y\n"))
	defer putState(st)
	if st.sse.buf == nil || st.sse.br != st.sse.buf {
		t.Errorf("a plain body is read through %T", st.sse.br)
	}
	if f, v, err := st.sse.next(); err != nil || string(f) != "data" || string(v) != "y" {
		t.Errorf("next = %q %q %v", f, v, err)
	}
}
