package textclip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClip(t *testing.T) {
	tests := []struct {
		name string
		s    string
		n    int
		want string
	}{
		{"fits", "abc", 3, "abc"},
		{"ascii", "abcdef", 4, "abcd"},
		{"zero", "abc", 0, ""},
		{"negative", "abc", -1, ""},
		{"empty", "", 5, ""},
		{"before a two-byte character", "abé", 3, "ab"},
		{"after a two-byte character", "abéc", 4, "abé"},
		{"inside a four-byte character", "a😀b", 3, "a"},
		{"at a four-byte character's end", "a😀b", 5, "a😀"},
		{"only a multi-byte character", "😀", 2, ""},
		{"invalid bytes are cut as bytes", "a\xffb", 2, "a\xff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Clip(tt.s, tt.n); got != tt.want {
				t.Errorf("Clip(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
			}
		})
	}
}

func FuzzClip(f *testing.F) {
	f.Add("héllo wörld 😀", 7)
	f.Add(strings.Repeat("日本", 10), 13)
	f.Add("a\xff\xfeb", 2)
	f.Fuzz(func(t *testing.T, s string, n int) {
		got := Clip(s, n)
		if len(got) > max(n, 0) {
			t.Fatalf("Clip(%q, %d) = %q: %d bytes", s, n, got, len(got))
		}
		if !strings.HasPrefix(s, got) {
			t.Fatalf("Clip(%q, %d) = %q: not a prefix", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Clip(%q, %d) = %q: split a character", s, n, got)
		}
		if len(s) <= n && got != s {
			t.Fatalf("Clip(%q, %d) = %q: cut a text that fits", s, n, got)
		}
		// Nothing more is cut than the one character that does not fit.
		if n > 0 && len(s) > n && len(got) < n-utf8.UTFMax+1 {
			t.Fatalf("Clip(%q, %d) = %q: cut more than a character", s, n, got)
		}
	})
}
