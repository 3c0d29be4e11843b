package process

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The test binary doubles as the managed process: with GO_WANT_HELPER_PROCESS=1 it runs
// helperMain instead of the tests. It is configured through its environment:
//
//	HELPER_DIR            directory for bookkeeping files: "launches" (one line per launch),
//	                      "pids" (one pid per line), "terms" (pids that exited on SIGTERM),
//	                      "ports" (the port each launch listened on)
//	HELPER_READY_AFTER_MS /health answers 503 until then
//	HELPER_NEVER_READY    /health always answers 503
//	HELPER_EXIT_AFTER_MS  exit with HELPER_EXIT_CODE (default 1) this long after /health first
//	                      answered 200 (so the supervisor always saw it healthy first) ...
//	HELPER_EXIT_LAUNCHES  ... but only for launches 1..N (0 or unset: every launch)
//	HELPER_EXIT_EARLY     exit with HELPER_EXIT_CODE right after printing, before listening
//	HELPER_IGNORE_TERM    ignore SIGTERM
//	HELPER_STDOUT, HELPER_STDERR   printed at startup ...
//	HELPER_STDOUT_REPEAT  ... HELPER_STDOUT that many times, one write each (default 1)
//	HELPER_HANG_AFTER_MS  /health hangs (until the check gives up) from this long after it
//	                      first answered 200: an engine deadlocked with its process alive ...
//	HELPER_HANG_LAUNCHES  ... but only for launches 1..N (0 or unset: every launch)
//	HELPER_SICK_FILE      /health answers 500 while this file exists
//	HELPER_ENV            its environment is written to the file "env" in HELPER_DIR
//
// Its arguments are "--port N".
func TestMain(m *testing.M) {
	if os.Getenv("GO_WANT_HELPER_PROCESS") == "1" {
		os.Exit(helperMain())
	}
	goleak.VerifyTestMain(m)
}

func envMs(name string) (time.Duration, bool) {
	v := os.Getenv(name)
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		panic(fmt.Sprintf("%s=%q: %v", name, v, err))
	}
	return time.Duration(n) * time.Millisecond, true
}

func appendLine(dir, name, line string) {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		panic(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := f.WriteString(line + "\n"); err != nil {
		panic(err)
	}
}

func countLines(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(data, []byte("\n"))
}

func helperMain() int {
	dir := os.Getenv("HELPER_DIR")
	port := ""
	for i, a := range os.Args {
		if a == "--port" && i+1 < len(os.Args) {
			port = os.Args[i+1]
		}
	}
	pid := strconv.Itoa(os.Getpid())
	appendLine(dir, "launches", pid)
	appendLine(dir, "pids", pid)
	appendLine(dir, "ports", port)
	launch := countLines(filepath.Join(dir, "launches"))

	if os.Getenv("HELPER_ENV") == "1" {
		for _, kv := range os.Environ() {
			appendLine(dir, "env", kv)
		}
	}
	if s := os.Getenv("HELPER_STDOUT"); s != "" {
		n := 1
		if v := os.Getenv("HELPER_STDOUT_REPEAT"); v != "" {
			n, _ = strconv.Atoi(v)
		}
		for range n {
			fmt.Fprint(os.Stdout, s)
		}
	}
	if s := os.Getenv("HELPER_STDERR"); s != "" {
		fmt.Fprint(os.Stderr, s)
	}

	sigs := make(chan os.Signal, 1)
	if os.Getenv("HELPER_IGNORE_TERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM)
	}

	exitCode := 1
	if v := os.Getenv("HELPER_EXIT_CODE"); v != "" {
		exitCode, _ = strconv.Atoi(v)
	}
	if os.Getenv("HELPER_EXIT_EARLY") == "1" {
		fmt.Fprintf(os.Stderr, "helper exiting with %d\n", exitCode)
		return exitCode
	}
	exitLaunches, _ := strconv.Atoi(os.Getenv("HELPER_EXIT_LAUNCHES"))
	exitAfter := make(chan struct{})
	var armExit sync.Once
	arm := func() {}
	if d, ok := envMs("HELPER_EXIT_AFTER_MS"); ok && (exitLaunches == 0 || launch <= exitLaunches) {
		arm = func() { armExit.Do(func() { time.AfterFunc(d, func() { close(exitAfter) }) }) }
	}

	hangLaunches, _ := strconv.Atoi(os.Getenv("HELPER_HANG_LAUNCHES"))
	hung := make(chan struct{})
	var armHang sync.Once
	hang := func() {}
	if d, ok := envMs("HELPER_HANG_AFTER_MS"); ok && (hangLaunches == 0 || launch <= hangLaunches) {
		hang = func() { armHang.Do(func() { time.AfterFunc(d, func() { close(hung) }) }) }
	}

	start := time.Now()
	readyAfter, _ := envMs("HELPER_READY_AFTER_MS")
	neverReady := os.Getenv("HELPER_NEVER_READY") == "1"
	sick := os.Getenv("HELPER_SICK_FILE")
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hung:
			<-r.Context().Done() // the checker gave up
			return
		default:
		}
		if sick != "" {
			if _, err := os.Stat(sick); err == nil {
				http.Error(w, "sick", http.StatusInternalServerError)
				return
			}
		}
		if neverReady || time.Since(start) < readyAfter {
			http.Error(w, "loading", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
		arm()
		hang()
	})
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 2
	}
	go func() {
		if err := http.Serve(l, mux); err != nil && !errors.Is(err, net.ErrClosed) {
			fmt.Fprintln(os.Stderr, "serve:", err)
		}
	}()

	select {
	case <-sigs:
		appendLine(dir, "terms", pid)
		return 0
	case <-exitAfter:
		fmt.Fprintf(os.Stderr, "helper exiting with %d\n", exitCode)
		return exitCode
	}
}

// helperLines returns the lines of a bookkeeping file.
func helperLines(t *testing.T, dir, name string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}

// assertNoProcesses checks that every process the helper recorded is gone.
func assertNoProcesses(t *testing.T, dir string) {
	t.Helper()
	for _, p := range helperLines(t, dir, "pids") {
		pid, _ := strconv.Atoi(p)
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("helper process %d still exists (kill 0: %v)", pid, err)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
