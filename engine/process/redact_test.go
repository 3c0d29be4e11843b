package process

import (
	"bytes"
	"strings"
	"testing"
)

func TestRedactWriter(t *testing.T) {
	const key = "sk-0123456789abcdef"
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"whole line", []string{"args: --api-key " + key + " --port 1\n"}, "args: --api-key [REDACTED] --port 1\n"},
		{"split across writes", []string{"api_key='sk-0123", "456789abcdef' next\n"}, "api_key='[REDACTED]' next\n"},
		{"split byte by byte", strings.Split("x"+key+"y\n", ""), "x[REDACTED]y\n"},
		{"twice, no newline at the end", []string{key + " " + key}, "[REDACTED] [REDACTED]"},
		{"no secret", []string{"hello\n", "world"}, "hello\nworld"},
		{"prefix only", []string{"sk-0123\n"}, "sk-0123\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			w := newRedactWriter(&out, []string{key, ""})
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			w.(*redactWriter).Flush()
			if out.String() != tt.want {
				t.Errorf("out = %q, want %q", out.String(), tt.want)
			}
		})
	}
}

func TestRedactArgv(t *testing.T) {
	got := redactArgv([]string{"vllm", "--api-key", "k3y-secret-value", "--x=k3y-secret-value"}, []string{"k3y-secret-value"})
	if strings.Join(got, " ") != "vllm --api-key [REDACTED] --x=[REDACTED]" {
		t.Errorf("argv = %q", got)
	}
}
