package process

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

// OutputTailBytes is how much of a process's latest output is kept for error messages.
const OutputTailBytes = 2048

// MaxLogLine bounds one logged output line (when output goes to the logger).
const MaxLogLine = 4096

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return len(p), nil
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		n := copy(t.buf, t.buf[len(t.buf)-t.max:])
		t.buf = t.buf[:n]
	}
	return len(p), nil
}

// String returns the kept tail (at most max bytes, made valid UTF-8).
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) > t.max {
		b = b[len(b)-t.max:]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// lineLogger logs each complete line written to it at debug level, cutting lines at max
// bytes. It is used by one goroutine at a time.
type lineLogger struct {
	log     *slog.Logger
	max     int
	partial []byte
	cut     bool // the current line was already cut and logged; drop until newline
}

func (l *lineLogger) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !l.cut {
			room := l.max - len(l.partial)
			if len(chunk) > room {
				l.partial = append(l.partial, chunk[:room]...)
				l.emit(true)
				l.cut = true
			} else {
				l.partial = append(l.partial, chunk...)
			}
		}
		if i < 0 {
			break
		}
		if !l.cut {
			l.emit(false)
		}
		l.cut = false
		p = p[i+1:]
	}
	return n, nil
}

// Flush logs a final line that had no newline.
func (l *lineLogger) Flush() {
	if len(l.partial) > 0 && !l.cut {
		l.emit(false)
	}
	l.partial, l.cut = l.partial[:0], false
}

func (l *lineLogger) emit(truncated bool) {
	line := strings.ToValidUTF8(strings.TrimSuffix(string(l.partial), "\r"), "\uFFFD")
	if truncated {
		l.log.Debug("engine output", "line", line, "truncated", true)
	} else {
		l.log.Debug("engine output", "line", line)
	}
	l.partial = l.partial[:0]
}

// output receives one process's merged stdout and stderr. Writes never fail, so the engine
// is never blocked or killed (EPIPE) by a failing sink.
type output struct {
	tail  *tailBuffer
	file  *logFile    // when set, output is appended here ...
	lines *lineLogger // ... otherwise logged line by line
	log   *slog.Logger

	fileErr bool // a write error on file was already logged
}

func newOutput(file *logFile, log *slog.Logger) *output {
	return &output{
		tail:  &tailBuffer{max: OutputTailBytes},
		file:  file,
		lines: &lineLogger{log: log, max: MaxLogLine},
		log:   log,
	}
}

func (o *output) Write(p []byte) (int, error) {
	_, _ = o.tail.Write(p)
	if o.file == nil {
		return o.lines.Write(p)
	}
	if _, err := o.file.Write(p); err != nil && !o.fileErr {
		o.fileErr = true
		o.log.Warn("cannot write engine output to its log file; dropping output", "err", err)
	}
	return len(p), nil
}

// flush is called once the process has exited and its output was drained.
func (o *output) flush() {
	if o.file == nil {
		o.lines.Flush()
	}
}
