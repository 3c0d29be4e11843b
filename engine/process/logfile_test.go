package process

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readOr returns the file's content, or "<none>" when it does not exist.
func readOr(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestLogFileRotation(t *testing.T) {
	tests := []struct {
		name     string
		existing string // the file before it is opened ("" : none)
		max      int64
		writes   []string
		cur, old string // the file and <file>.1 afterwards
	}{
		{"under the limit", "", 10, []string{"abc", "def"}, "abcdef", "<none>"},
		{"up to the exact limit", "", 6, []string{"abc", "def"}, "abcdef", "<none>"},
		{"one byte past the limit", "", 6, []string{"abc", "def", "g"}, "g", "abcdef"},
		{"a write crossing the limit", "", 6, []string{"abcd", "efg"}, "efg", "abcd"},
		{"a second rotation replaces .1", "", 4, []string{"abc", "def", "ghi"}, "ghi", "def"},
		{"one write larger than the limit", "", 4, []string{"abcdefgh", "ij"}, "ij", "abcdefgh"},
		{"an existing file counts", "0123456789", 12, []string{"ab", "c"}, "c", "0123456789ab"},
		{"an existing file past the limit", "0123456789", 8, []string{"x"}, "x", "0123456789"},
		{"an existing file with room", "0123", 8, []string{"4567"}, "01234567", "<none>"},
		{"no cap", "", -1, []string{"abc", "def", "ghi"}, "abcdefghi", "<none>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "e.log")
			if tt.existing != "" {
				if err := os.WriteFile(path, []byte(tt.existing), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			l, err := openLogFile(path, tt.max, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.writes {
				if n, err := l.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if cur, old := readOr(t, path), readOr(t, path+".1"); cur != tt.cur || old != tt.old {
				t.Fatalf("file %q, .1 %q; want %q, %q", cur, old, tt.cur, tt.old)
			}
			if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("mode %v, %v", st.Mode(), err)
			}
			if _, err := l.Write([]byte("late")); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("Write after Close = %v", err)
			}
		})
	}
}

// A file truncated from outside (logrotate's copytruncate) is not rotated early: the size is
// read again before rotating.
func TestLogFileTruncatedFromOutside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.log")
	l, err := openLogFile(path, 8, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, w := range []string{"abcdef", "gh"} {
		_, _ = l.Write([]byte(w))
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"ijk", "lmnop"} {
		_, _ = l.Write([]byte(w))
	}
	if cur, old := readOr(t, path), readOr(t, path+".1"); cur != "ijklmnop" || old != "<none>" {
		t.Fatalf("rotated early: file %q, .1 %q", cur, old)
	}
	_, _ = l.Write([]byte("q"))
	if cur, old := readOr(t, path), readOr(t, path+".1"); cur != "q" || old != "ijklmnop" {
		t.Fatalf("file %q, .1 %q", cur, old)
	}
}

// A rotation that fails keeps the output in the current file, warns once, and is tried again
// after another max bytes.
func TestLogFileRotationFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "e.log")
	// A non-empty directory where .1 goes: the rename fails.
	if err := os.MkdirAll(filepath.Join(path+".1", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	l, err := openLogFile(path, 4, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	writes := []string{"abc", "def", "ghi", "jkl", "mno"}
	for _, w := range writes {
		if n, err := l.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
	}
	if got := readOr(t, path); got != strings.Join(writes, "") {
		t.Fatalf("file %q: output lost", got)
	}
	if n := strings.Count(logs.String(), "cannot rotate"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs.String())
	}
	// Once .1 can be replaced, the next attempt rotates.
	if err := os.RemoveAll(path + ".1"); err != nil {
		t.Fatal(err)
	}
	_, _ = l.Write([]byte("pq"))
	if cur, old := readOr(t, path), readOr(t, path+".1"); cur != "pq" || old != "abcdefghijklmno" {
		t.Fatalf("after the fix: file %q, .1 %q", cur, old)
	}
}
