package llamatest

import (
	"bufio"
	"bytes"
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
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/internal/gguf"
)

// EnvServer names the environment variable that points at a llama-server executable.
const EnvServer = "ORCHD_LLAMA_SERVER"

// SkipMessage is the reason Start gives when it skips a test for want of a server.
const SkipMessage = "llama-server not found: set ORCHD_LLAMA_SERVER or run make engine"

// StartTimeout bounds Start's wait for the server's /health to answer 200.
const StartTimeout = 60 * time.Second

// module is the module path whose root holds .tools/.
const module = "github.com/orchestratord/orchestratord"

// ServerPath returns the llama-server to run, looking in order at $ORCHD_LLAMA_SERVER,
// llama-server on PATH and <repo>/.tools/llama/llama-server (repo: the enclosing directory
// of the working directory whose go.mod declares this module). It reports false when none
// is an executable file.
func ServerPath() (string, bool) {
	if p := os.Getenv(EnvServer); p != "" && isExecutable(p) {
		return p, true
	}
	if p, err := exec.LookPath("llama-server"); err == nil {
		return p, true
	}
	if root, ok := repoRoot(); ok {
		p := filepath.Join(root, ".tools", "llama", "llama-server")
		if isExecutable(p) {
			return p, true
		}
	}
	return "", false
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// repoRoot walks up from the working directory to the go.mod of this module.
func repoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(b) == module {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// TinyModel writes the tiny constructed model (see package gguf) into a new t.TempDir() and
// returns its path.
func TinyModel(t testing.TB, opts gguf.Options) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := gguf.WriteFile(path, opts); err != nil {
		t.Fatalf("llamatest: write model: %v", err)
	}
	return path
}

// Start runs llama-server with the model at modelPath and the extra args (e.g. "-np", "2",
// "--metrics") on a free loopback port, with -t 1 -tb 1, and returns its base URL
// ("http://127.0.0.1:PORT") once /health answers 200. It skips the test (SkipMessage) when
// ServerPath finds no server and fails it when the server does not become healthy within
// StartTimeout. The server is stopped when the test ends.
func Start(t testing.TB, modelPath string, args ...string) string {
	t.Helper()
	bin, ok := ServerPath()
	if !ok {
		t.Skip(SkipMessage)
	}
	if _, err := os.Stat(modelPath); err != nil {
		t.Fatalf("llamatest: model: %v", err)
	}
	// The port is free when we look but could be taken before the server binds it; a
	// server that exits at once is retried on a new port.
	var lastLog string
	for range 3 {
		base, log, err := start(t, bin, modelPath, args)
		if err == nil {
			return base
		}
		if !errors.Is(err, errExited) {
			t.Fatalf("llamatest: %v\n%s", err, log)
		}
		lastLog = log
	}
	t.Fatalf("llamatest: %s exited at start three times; last output:\n%s", bin, lastLog)
	return ""
}

var errExited = errors.New("llama-server exited")

func start(t testing.TB, bin, model string, args []string) (string, string, error) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		return "", "", err
	}
	argv := append([]string{"-m", model, "--host", "127.0.0.1", "--port", strconv.Itoa(port), "-t", "1", "-tb", "1"}, args...)
	cmd := exec.Command(bin, argv...)
	out := &tailBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return "", "", fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func() {
		signalGroup(cmd, false)
		select {
		case _ = <-done: // stopped on request: its exit status says nothing new
		case <-time.After(10 * time.Second):
			signalGroup(cmd, true)
			_ = <-done
		}
	}

	base := "http://127.0.0.1:" + strconv.Itoa(port)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	deadline := time.Now().Add(StartTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := client.Get(base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			done <- err // for stop
			return "", out.String(), fmt.Errorf("%w: %w", errExited, err)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			stop()
			return "", out.String(), fmt.Errorf("%s not healthy within %v", bin, StartTimeout)
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("llamatest: llama-server %s output (tail):\n%s", base, out.String())
		}
	})
	return base, "", nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
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
