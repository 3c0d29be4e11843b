package config

import (
	"strings"
	"testing"
)

// TestSecondDocumentRefused: a configuration file with a second YAML document ("---")
// must be refused, not loaded from its first document with the rest silently ignored (an
// operator's addr, keys or pools after the separator would never apply).
func TestSecondDocumentRefused(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		wantErr    string // "" : loads
	}{
		{"one document", minimal, ""},
		{"one document with a leading separator", "---\n" + minimal, ""},
		{"one document with a trailing separator", minimal + "---\n", ""},
		{"two documents", minimal + "---\naddr: 127.0.0.1:9999\n", "document"},
		{"two documents, the second empty of keys", minimal + "---\n# nothing\n...\n---\nlog_level: debug\n", "document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.yaml, Overrides{})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("loaded (addr %s, log_level %s): the second document was ignored", c.Addr, c.LogLevel)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q does not name the %s", err, tc.wantErr)
			}
		})
	}
}
