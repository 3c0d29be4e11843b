package process

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// captureHandler records the "line" attribute of each record.
type captureHandler struct {
	mu        sync.Mutex
	lines     []string
	truncated []bool
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *captureHandler) WithGroup(string) slog.Handler            { return h }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	trunc := false
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "line":
			h.lines = append(h.lines, a.Value.String())
		case "truncated":
			trunc = a.Value.Bool()
		}
		return true
	})
	h.truncated = append(h.truncated, trunc)
	return nil
}

func TestLineLogger(t *testing.T) {
	tests := []struct {
		name      string
		max       int
		writes    []string
		want      []string
		truncated []bool
	}{
		{"lines", 10, []string{"a\nbb\n"}, []string{"a", "bb"}, []bool{false, false}},
		{"split writes", 10, []string{"he", "llo\nwor", "ld\n"}, []string{"hello", "world"}, []bool{false, false}},
		{"crlf and empty", 10, []string{"a\r\n\nb\n"}, []string{"a", "", "b"}, []bool{false, false, false}},
		{"partial flushed", 10, []string{"tail"}, []string{"tail"}, []bool{false}},
		{"exactly max", 4, []string{"abcd\n"}, []string{"abcd"}, []bool{false}},
		{"long line cut", 4, []string{"abcdefgh\nxy\n"}, []string{"abcd", "xy"}, []bool{true, false}},
		{"long line over writes", 4, []string{"ab", "cdef", "gh", "ij\nk"}, []string{"abcd", "k"}, []bool{true, false}},
		{"invalid utf8", 10, []string{"a\xffb\n"}, []string{"a\uFFFDb"}, []bool{false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &captureHandler{}
			l := &lineLogger{log: slog.New(h), max: tt.max}
			for _, w := range tt.writes {
				if n, err := l.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			l.Flush()
			if strings.Join(h.lines, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("lines %q, want %q", h.lines, tt.want)
			}
			for i := range tt.truncated {
				if h.truncated[i] != tt.truncated[i] {
					t.Fatalf("truncated %v, want %v", h.truncated, tt.truncated)
				}
			}
		})
	}
}

func FuzzLineLogger(f *testing.F) {
	f.Add([]byte("hello\nworld\n"), 3)
	f.Add([]byte("\n\n\r\n"), 1)
	f.Add(bytes.Repeat([]byte("x"), 100), 7)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		h := &captureHandler{}
		l := &lineLogger{log: slog.New(h), max: 16}
		if split <= 0 {
			split = 1
		}
		for len(data) > 0 {
			n := min(split, len(data))
			if w, err := l.Write(data[:n]); w != n || err != nil {
				t.Fatalf("Write = %d, %v", w, err)
			}
			data = data[n:]
		}
		l.Flush()
		for _, line := range h.lines {
			// Invalid bytes become U+FFFD (3 bytes), so allow for that expansion.
			if len(line) > 3*16 || strings.Contains(line, "\n") {
				t.Fatalf("line %q breaks the bound or contains a newline", line)
			}
		}
	})
}

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"short", []string{"abc", "de"}, "abcde"},
		{"keeps last", []string{"abcdef", "ghij"}, "cdefghij"},
		{"big write", []string{"ab", strings.Repeat("x", 20) + "12345678"}, "12345678"},
		{"many writes", []string{"1234", "5678", "9abc", "defg", "hijk"}, "defghijk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &tailBuffer{max: 8}
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := b.String(); got != tt.want {
				t.Fatalf("tail %q, want %q", got, tt.want)
			}
			if len(b.buf) > 2*b.max {
				t.Fatalf("buffer grew to %d", len(b.buf))
			}
		})
	}
}
