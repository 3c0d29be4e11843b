package process

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// syncBuf is a concurrency-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSecretsRedacted: a secret on the command line and in the engine's own output appears
// nowhere the supervisor shows it: its log (the launched argv, output lines), the engine's log
// file and the start error's output tail.
func TestSecretsRedacted(t *testing.T) {
	const secret = "sk-supervisor-secret-0123456789"
	for _, toFile := range []bool{false, true} {
		t.Run(fmt.Sprintf("log file %v", toFile), func(t *testing.T) {
			h := newHarness(t)
			o := h.options("HELPER_EXIT_EARLY=1", "HELPER_STDOUT=non-default args: {'api_key': '"+secret+"'}\n",
				"HELPER_STDERR=using key "+secret+"\n")
			o.Argv = append(o.Argv, "--api-key", secret)
			o.Secrets = []string{secret}
			logs := &syncBuf{}
			o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			logPath := filepath.Join(h.dir, "engine.log")
			if toFile {
				o.LogFile = logPath
			}
			s := h.newSupervisor(o)
			err := s.Start(context.Background())
			if err == nil {
				t.Fatal("Start succeeded, want the helper's early exit")
			}
			file, _ := os.ReadFile(logPath)
			for where, text := range map[string]string{"error": err.Error(), "log": logs.String(), "log file": string(file)} {
				if strings.Contains(text, secret) {
					t.Errorf("the secret appears in the %s:\n%s", where, text)
				}
			}
			if !strings.Contains(logs.String(), "--api-key "+Redacted) || !strings.Contains(err.Error(), "using key "+Redacted) {
				t.Errorf("log %q / error %q: want the redacted argv and output", logs.String(), err)
			}
		})
	}
}
