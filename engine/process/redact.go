package process

import (
	"bytes"
	"io"
	"strings"
)

// Redacted replaces a secret wherever the supervisor shows what a process was given or said.
const Redacted = "[REDACTED]"

// redactArgv returns argv with every secret replaced by Redacted.
func redactArgv(argv, secrets []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		for _, s := range secrets {
			if s != "" {
				a = strings.ReplaceAll(a, s, Redacted)
			}
		}
		out[i] = a
	}
	return out
}

// redactWriter forwards what is written to w with every secret replaced by Redacted. It holds
// back the last len(longest secret)-1 bytes until more arrive (or Flush), so that a secret
// split across writes is still caught; a newline releases everything before it.
type redactWriter struct {
	w       io.Writer
	secrets [][]byte
	keep    int // longest secret - 1
	buf     []byte
}

func newRedactWriter(w io.Writer, secrets []string) io.Writer {
	rw := &redactWriter{w: w}
	for _, s := range secrets {
		if s != "" {
			rw.secrets = append(rw.secrets, []byte(s))
			rw.keep = max(rw.keep, len(s)-1)
		}
	}
	if len(rw.secrets) == 0 {
		return w
	}
	return rw
}

func (r *redactWriter) Write(p []byte) (int, error) {
	r.buf = append(r.buf, p...)
	for _, s := range r.secrets {
		r.buf = bytes.ReplaceAll(r.buf, s, []byte(Redacted))
	}
	cut := len(r.buf) - r.keep
	if i := bytes.LastIndexByte(r.buf, '\n'); i+1 > cut {
		cut = i + 1
	}
	if cut > 0 {
		if _, err := r.w.Write(r.buf[:cut]); err != nil {
			return len(p), err
		}
		r.buf = append(r.buf[:0], r.buf[cut:]...)
	}
	return len(p), nil
}

// Flush writes what is held back.
func (r *redactWriter) Flush() {
	if len(r.buf) > 0 {
		_, _ = r.w.Write(r.buf)
		r.buf = r.buf[:0]
	}
}
