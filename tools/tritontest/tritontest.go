// Package tritontest runs a real tritonserver (from nvidia-pytriton, in the git-ignored
// virtualenv .venv-triton that `make triton-venv` builds) with serve.py's models, for
// end-to-end tests of engine/triton and of a daemon with an `engine: triton` pool.
//
//	func TestMain(m *testing.M) { os.Exit(tritontest.Main(m)) } // stops the shared server
//	func TestX(t *testing.T) {
//		s := tritontest.Shared(t) // skips when the venv is absent and ORCHD_TRITON is not "require"
//		... s.HTTP + "/v2/models/words/generate_stream" ...
//	}
//
// The virtualenv is $ORCHD_TRITON_VENV, else <repo>/.venv-triton. It installs nothing.
package tritontest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Environment variables.
const (
	EnvVenv    = "ORCHD_TRITON_VENV" // the virtualenv holding nvidia-pytriton
	EnvRequire = "ORCHD_TRITON"      // "require": a missing virtualenv fails the test instead of skipping it
)

// SkipMessage is the reason Shared gives when it skips a test.
const SkipMessage = "tritonserver venv not found: run make triton-venv (or set ORCHD_TRITON_VENV)"

// StartTimeout bounds the wait for every model to be ready (about 25 s on 2 cores).
const StartTimeout = 180 * time.Second

// Models served by serve.py.
const (
	ModelWords   = "words"   // " The quick brown fox jumps over the lazy dog." word by word, up to max_tokens
	ModelSlow    = "slow"    // the same, one word every SlowDelay, logged to Server.Events
	ModelFailing = "failing" // two words, then a mid-stream error frame
	ModelWhole   = "whole"   // not decoupled: the whole text in one response
)

// SlowDelay is the pause before each word of ModelSlow.
const SlowDelay = 200 * time.Millisecond

// Words is what the models generate, one response per word.
var Words = []string{" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog."}

// Server is a running tritonserver.
type Server struct {
	HTTP    string // "http://127.0.0.1:PORT"
	GRPC    string // "127.0.0.1:PORT"
	Metrics string // "http://127.0.0.1:PORT"
	Events  string // the file ModelSlow logs "start", "word N" and "end" lines to

	cmd  *exec.Cmd
	done chan error
	dir  string
	out  *tailBuffer
}

// Python returns the virtualenv's python, or false when there is none.
func Python() (string, bool) {
	venv := os.Getenv(EnvVenv)
	if venv == "" {
		root, ok := repoRoot()
		if !ok {
			return "", false
		}
		venv = filepath.Join(root, ".venv-triton")
	}
	p := filepath.Join(venv, "bin", "python")
	if _, err := os.Stat(p); err != nil {
		return "", false
	}
	return p, true
}

// ServeScript returns serve.py's path.
func ServeScript() (string, bool) {
	root, ok := repoRoot()
	if !ok {
		return "", false
	}
	return filepath.Join(root, "tools", "tritontest", "serve.py"), true
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
)

// Shared returns the package's server, starting it on first use; Main stops it. It skips t
// (or fails it, with ORCHD_TRITON=require) when there is no virtualenv, and fails t when the
// server does not start.
func Shared(t testing.TB) *Server {
	t.Helper()
	py, ok := Python()
	if !ok {
		if os.Getenv(EnvRequire) == "require" {
			t.Fatal(SkipMessage)
		}
		t.Skip(SkipMessage)
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = Start(py)
	}
	if sharedErr != nil {
		t.Fatalf("tritontest: %v", sharedErr)
	}
	return shared
}

// Main runs the tests and then stops the shared server; use it as os.Exit(Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "tritontest:", err)
			if code == 0 {
				code = 1
			}
		}
		shared = nil
	}
	return code
}

// Start runs serve.py with python on free loopback ports and waits until every model is ready.
// When serve.py exits before that, it is started once more on new ports (another process may
// take a port between freePort and tritonserver's bind), and the error gives both outputs.
func Start(python string) (*Server, error) {
	s, err := startOnce(python)
	if !errors.Is(err, errExited) {
		return s, err
	}
	s, again := startOnce(python)
	if again != nil {
		return nil, fmt.Errorf("%w\nstarted again: %w", err, again)
	}
	return s, nil
}

// errExited marks a start that failed because serve.py exited.
var errExited = errors.New("serve.py exited at start")

func startOnce(python string) (*Server, error) {
	script, ok := ServeScript()
	if !ok {
		return nil, errors.New("serve.py not found")
	}
	dir, err := os.MkdirTemp("", "tritontest-")
	if err != nil {
		return nil, err
	}
	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	s := &Server{HTTP: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), GRPC: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		Metrics: fmt.Sprintf("http://127.0.0.1:%d", ports[2]), Events: filepath.Join(dir, "events"),
		dir: dir, out: &tailBuffer{max: 64 << 10}, done: make(chan error, 1)}
	s.cmd = exec.Command(python, script, "--http-port", strconv.Itoa(ports[0]), "--grpc-port", strconv.Itoa(ports[1]),
		"--metrics-port", strconv.Itoa(ports[2]), "--events", s.Events,
		"--slow-delay", strconv.FormatFloat(SlowDelay.Seconds(), 'f', -1, 64))
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.Dir = dir // pytriton's workspace and logs stay out of the repository
	s.cmd.Env = append(os.Environ(), "HOME="+dir)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	go func() { s.done <- s.cmd.Wait() }()

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	ready := func() bool {
		for _, m := range []string{ModelWords, ModelSlow, ModelFailing, ModelWhole} {
			resp, err := client.Get(s.HTTP + "/v2/models/" + m + "/ready")
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(StartTimeout)
	for !ready() {
		select {
		case err := <-s.done:
			s.done <- err
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("%w (%w); output:\n%s", errExited, err, elideUsage(s.out.String()))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = s.Stop()
			return nil, fmt.Errorf("models not ready within %v; output:\n%s", StartTimeout, s.out.String())
		}
	}
	return s, nil
}

// Stop sends SIGTERM to serve.py (which shuts tritonserver down cleanly), waits for it (SIGKILL
// to its whole process group after 30 s) and removes its directory.
func (s *Server) Stop() error {
	defer os.RemoveAll(s.dir)
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case _ = <-s.done: // stopped on request: its exit status says nothing new
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		_ = <-s.done
		return fmt.Errorf("serve.py did not stop within 30 s; killed; output:\n%s", s.out.String())
	}
	// tritonserver and the backend stubs end just after serve.py; anything of the group still
	// there 15 s later is an orphan.
	for range 150 {
		if err := syscall.Kill(-s.cmd.Process.Pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	return errors.New("serve.py left processes behind (killed)")
}

// Output is the tail of the server's output.
func (s *Server) Output() string { return s.out.String() }

// EventLines returns ModelSlow's event log.
func (s *Server) EventLines() []string {
	b, _ := os.ReadFile(s.Events)
	return strings.Fields(strings.ReplaceAll(string(b), "word ", "word_"))
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

const module = "github.com/orchestratord/orchestratord"

// repoRoot is the enclosing directory of the working directory whose go.mod declares module.
func repoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if fl := strings.Fields(sc.Text()); len(fl) == 2 && fl[0] == "module" && strings.Trim(fl[1], `"`) == module {
					f.Close()
					return dir, true
				}
			}
			f.Close()
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// tailBuffer keeps the last max bytes written to it; safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if over := len(w.b) - w.max; over > 0 {
		w.b = append(w.b[:0], w.b[over:]...)
	}
	return len(p), nil
}

func (w *tailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

// tritonserver answers a bad option with its usage text (about 20 KB) and then the reason, which
// a test log's truncation would hide. elideUsage replaces the usage text with one line.
func elideUsage(out string) string {
	before, rest, ok := strings.Cut(out, "Usage: tritonserver [options]")
	if !ok {
		return out
	}
	// rest is "" or "\n" and a line: the usage text's lines are indented options and group titles
	// ending in ":"; the first other line is the reason.
	for rest != "" {
		line, _, _ := strings.Cut(rest[1:], "\n")
		if line != "" && line[0] != ' ' && line[0] != '\t' && !strings.HasSuffix(line, ":") {
			break
		}
		rest = rest[1+len(line):]
	}
	return before + "[tritonserver's usage text elided]" + rest
}
