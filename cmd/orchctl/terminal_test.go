package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/engine/llamacpp/llamatest"
	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/internal/testdaemon"
	"github.com/orchestratord/orchestratord/sdk"
)

// realDaemon runs the daemon with a managed llama-server on the tiny model, which generates
// the sentence whatever the prompt; the test is skipped when no llama-server is found.
func realDaemon(t *testing.T) *testdaemon.Daemon {
	t.Helper()
	bin, ok := llamatest.ServerPath()
	if !ok {
		t.Skip(llamatest.SkipMessage)
	}
	d, err := testdaemon.Start(testdaemon.Options{LlamaServer: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	return d
}

// orchctlCommand is this test binary re-executed as orchctl (see TestMain).
func orchctlCommand(d *testdaemon.Daemon, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "ORCHCTL_TEST_MAIN=1", "ORCHD_URL="+d.URL, "ORCHD_API_KEY="+testdaemon.Key)
	return cmd
}

// screen replays terminal output (carriage returns, erase-line, newlines) into the lines a
// user sees at the end.
func screen(raw []byte) []string {
	lines := []string{""}
	col := 0
	s := string(raw)
	for len(s) > 0 {
		cur := &lines[len(lines)-1]
		switch {
		case strings.HasPrefix(s, "\x1b[K"):
			*cur = string([]rune(*cur)[:col])
			s = s[3:]
		case s[0] == '\r':
			col = 0
			s = s[1:]
		case s[0] == '\n':
			lines = append(lines, "")
			col = 0
			s = s[1:]
		default:
			r := []rune(s)[0]
			rs := []rune(*cur)
			if col < len(rs) {
				rs[col] = r
			} else {
				rs = append(rs, r)
			}
			*cur = string(rs)
			col++
			s = s[len(string(r)):]
		}
	}
	return lines
}

func TestScreen(t *testing.T) {
	got := screen([]byte("\r\x1b[K⠋ submitting\r\x1b[K⠙ queued\r\x1b[K The quick\r\nabc\rX\r\n"))
	want := []string{" The quick", "Xbc", ""}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("screen %q, want %q", got, want)
	}
}

func TestRunInATerminalWithTheRealEngine(t *testing.T) {
	d := realDaemon(t)
	cmd := orchctlCommand(d, "run", "-n", "10", "Once upon a time")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var raw bytes.Buffer
	_, err = io.Copy(&raw, tty) // ends with EIO once orchctl exits
	var pathErr *os.PathError
	if err != nil && !errors.As(err, &pathErr) {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("orchctl run: %v\n%s", err, raw.String())
	}
	out := raw.String()
	t.Logf("terminal output: %q", out)
	// Progress: the live status line was drawn (spinner, queue position, ETA, tokens/s) ...
	for _, want := range []string{"⠋", "queue position 0", "ETA ", "tok/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("the terminal never showed %q:\n%q", want, out)
		}
	}
	// ... and the screen ends with the exact text and the summary.
	lines := screen(raw.Bytes())
	var text, summary bool
	for _, l := range lines {
		text = text || l == sentence
		summary = summary || (strings.HasPrefix(l, "✓ 10 tokens in ") && strings.Contains(l, "tok/s · task "))
	}
	if !text || !summary {
		t.Fatalf("screen %q: want the line %q and a summary", lines, sentence)
	}
}

func TestRunPipedWithTheRealEngine(t *testing.T) {
	d := realDaemon(t)
	cmd := orchctlCommand(d, "run", "-n", "10", "Once upon a time")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if string(out) != sentence+"\n" || stderr.Len() != 0 {
		t.Fatalf("stdout %q, stderr %q; want %q and nothing", out, stderr.String(), sentence+"\n")
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		line  string
		width int
		want  string
	}{
		{"⠋ waiting", 0, "⠋ waiting"},
		{"⠋ waiting", 10, "⠋ waiting"},
		{"⠋ waiting", 9, "⠋ waitin"},
		{"⠋ waiting", 4, "⠋ w"},
	}
	for _, tt := range tests {
		if got := truncate(tt.line, tt.width); got != tt.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tt.line, tt.width, got, tt.want)
		}
	}
}

// TestStatusLineFitsANarrowTerminal: on a 40-column terminal the status line is cut to 39
// columns, so that it never wraps.
func TestStatusLineFitsANarrowTerminal(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	d.Fake.Pause()
	cmd := orchctlCommand(d, "run", "hi")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 40})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out syncBuffer
	copied := make(chan struct{})
	go func() { defer close(copied); _, _ = io.Copy(&out, tty) }()
	waitFor(t, &out, "waiting · queue position 0 ·")
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	<-copied
	for _, seg := range strings.Split(out.String(), "\r\x1b[K") {
		if strings.HasPrefix(seg, "⠋ waiting") && len([]rune(seg)) > 39 {
			t.Errorf("status line of %d columns on a 40-column terminal: %q", len([]rune(seg)), seg)
		}
	}
}

func TestRender(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name string
		s    statusState
		now  time.Time
		want string
	}{
		{"submitting", statusState{}, t0, "⠋ submitting"},
		{"queued", statusState{frame: 1, started: true, position: 3, startAt: t0.Add(1500 * time.Millisecond)}, t0,
			"⠙ waiting · queue position 3 · ETA 1.5s · 0 tokens · 0.0 tok/s"},
		{"start overdue", statusState{started: true, position: 1, startAt: t0}, t0.Add(time.Second),
			"⠋ waiting · queue position 1 · ETA 0ms · 0 tokens · 0.0 tok/s"},
		{"generating", statusState{frame: 11, started: true, maxTokens: 30, tokens: 11, firstTok: t0, lastTok: t0.Add(time.Second)}, t0,
			"⠙ generating · queue position 0 · ETA 1.9s · 11 tokens · 10.0 tok/s"},
		{"one token", statusState{started: true, maxTokens: 30, tokens: 1, firstTok: t0, lastTok: t0}, t0,
			"⠋ generating · queue position 0 · 1 tokens · 0.0 tok/s"},
	}
	for _, tt := range tests {
		if got := render(tt.s, tt.now); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// syncBuffer collects a terminal's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the output contains s; the bound only keeps a broken build from hanging.
func waitFor(t *testing.T, b *syncBuffer, s string) {
	t.Helper()
	for range 3000 {
		if strings.Contains(b.String(), s) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the terminal never showed %q:\n%q", s, b.String())
}

// TestRunInATerminalFollowsTheQueue: while the task waits, the status line follows its queue
// position (polled from the task's state), then the text and the summary follow.
func TestRunInATerminalFollowsTheQueue(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	d.Fake.Pause()
	c, err := sdk.New(d.URL, sdk.Options{APIKey: testdaemon.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	running, err := c.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Fake.WaitActive(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	ahead, err := c.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "b"))
	if err != nil {
		t.Fatal(err)
	}

	cmd := orchctlCommand(d, "run", "-n", "3", "c")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out syncBuffer
	copied := make(chan struct{})
	go func() { defer close(copied); _, _ = io.Copy(&out, tty) }()

	waitFor(t, &out, "waiting · queue position 1 ·")
	if err := c.Cancel(t.Context(), ahead.TaskId); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &out, "waiting · queue position 0 ·")
	if err := c.Cancel(t.Context(), running.TaskId); err != nil {
		t.Fatal(err)
	}
	d.Fake.Resume()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("orchctl run: %v\n%q", err, out.String())
	}
	<-copied
	lines := screen([]byte(out.String()))
	if !slices.Contains(lines, " The quick brown") || !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "✓ 3 tokens in ") }) {
		t.Fatalf("screen %q", lines)
	}
}

// TestRunPipedStdoutKeepsTheStatusOnTheTerminal: with stdout piped and stderr on a terminal,
// stdout gets only the text and the terminal the live status through the generation.
func TestRunPipedStdoutKeepsTheStatusOnTheTerminal(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	cmd := orchctlCommand(d, "run", "-n", "10", "hi")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	tty, err := pty.Start(cmd) // stdin and stderr on the terminal
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var raw bytes.Buffer
	_, _ = io.Copy(&raw, tty)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("orchctl run: %v\n%q", err, raw.String())
	}
	if stdout.String() != sentence+"\n" {
		t.Errorf("stdout %q, want %q", stdout.String(), sentence+"\n")
	}
	out := raw.String()
	for _, want := range []string{"generating · queue position 0 · ETA ", " 10 tokens · ", "✓ 10 tokens in "} {
		if !strings.Contains(out, want) {
			t.Errorf("the terminal never showed %q:\n%q", want, out)
		}
	}
	if strings.Contains(out, "lazy dog") {
		t.Errorf("the text went to the terminal: %q", out)
	}
}

// TestCtrlCCancelsTheTask: Ctrl-C on the terminal interrupts orchctl run (exit 130) and orchctl
// cancels the task (the daemon here keeps tasks whose client disconnects).
func TestCtrlCCancelsTheTask(t *testing.T) {
	d := startDaemonWith(t, "stream: {cancel_on_disconnect: false}", fake.Options{})
	d.Fake.Pause()
	cmd := orchctlCommand(d, "run", "hi")
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out syncBuffer
	copied := make(chan struct{})
	go func() { defer close(copied); _, _ = io.Copy(&out, tty) }()
	waitFor(t, &out, "waiting · queue position 0 ·")
	if err := d.Fake.WaitActive(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := tty.Write([]byte{3}); err != nil { // ^C
		t.Fatal(err)
	}
	err = cmd.Wait()
	<-copied
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitInterrupted || !strings.Contains(out.String(), "orchctl: interrupted") {
		t.Fatalf("exit %v, want %d and a message:\n%q", err, exitInterrupted, out.String())
	}
	c, err := sdk.New(d.URL, sdk.Options{APIKey: testdaemon.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, err := uuid.Parse(d.Fake.Requests()[0].TaskID)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Task(t.Context(), id)
	if err != nil || st.State != client.Canceled {
		t.Fatalf("task %+v, %v; want canceled", st, err)
	}
}
