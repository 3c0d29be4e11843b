package yamldoc

import (
	"errors"
	"io"
	"testing"
)

func TestDecode(t *testing.T) {
	type doc struct {
		A int `yaml:"a"`
	}
	tests := []struct {
		name, yaml string
		want       int
		err        error // nil: decoded
		other      bool  // another error: the decoder's
	}{
		{"one document", "a: 1\n", 1, nil, false},
		{"a leading separator", "---\na: 1\n", 1, nil, false},
		{"a trailing separator", "a: 1\n---\n", 1, nil, false},
		{"an empty second document", "a: 1\n---\n# nothing\n...\n", 1, nil, false},
		{"a null second document", "a: 1\n---\n~\n", 1, nil, false},
		{"an empty file", "", 0, io.EOF, false},
		{"two documents", "a: 1\n---\na: 2\n", 0, ErrSeveralDocuments, false},
		{"a third document after an empty one", "a: 1\n---\n...\n---\na: 2\n", 0, ErrSeveralDocuments, false},
		{"a scalar second document", "a: 1\n---\nb\n", 0, ErrSeveralDocuments, false},
		{"an unknown field", "b: 1\n", 0, nil, true},
		{"a broken second document", "a: 1\n---\n[\n", 0, nil, true},
		// yaml.Unmarshal takes its first document and stops; the stream goes on to an error.
		{"an error after the first document", "! !", 0, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			err := Decode([]byte(tc.yaml), &d)
			switch {
			case tc.other:
				if err == nil || errors.Is(err, ErrSeveralDocuments) || errors.Is(err, io.EOF) {
					t.Fatalf("err = %v, want a decoding error", err)
				}
			case !errors.Is(err, tc.err) || (tc.err == nil && err != nil):
				t.Fatalf("err = %v, want %v", err, tc.err)
			case tc.err == nil && d.A != tc.want:
				t.Fatalf("a = %d, want %d", d.A, tc.want)
			}
		})
	}
}
