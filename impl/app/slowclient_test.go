package app_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/pool"
)

// fakeDaemon is the whole daemon on loopback over a fake engine, for tests about clients.
type fakeDaemon struct {
	addr string
	reg  *prometheus.Registry
	hc   *http.Client
}

// startFakeDaemon runs the app with sections (YAML) added to a one-pool configuration whose
// replica is the fake engine eng. wrap, when not nil, wraps the listener (socket options).
// Goroutines are checked for leaks once the daemon has stopped.
func startFakeDaemon(t *testing.T, sections string, eng fake.Options, wrap func(net.Listener) net.Listener) *fakeDaemon {
	t.Helper()
	return startFakeDaemonWith(t, sections, eng, wrap, app.Options{})
}

// startFakeDaemonWith is startFakeDaemon with more app options (TracerProvider).
func startFakeDaemonWith(t *testing.T, sections string, eng fake.Options, wrap func(net.Listener) net.Listener, extra app.Options) *fakeDaemon {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	dir := t.TempDir()
	yaml := fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 50ms
%s
pools:
  - id: p1
    engine: llamacpp
    model_ref: models/fake.gguf
    ctx_max: 32768
    slots: 1
    replicas:
      - url: http://127.0.0.1:1
`, filepath.Join(dir, "state"), sections)
	cfg := loadConfig(t, dir, yaml)
	gpus := extra.NVML
	if gpus == nil {
		dgx := dgxh200.New()
		dgx.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
		gpus = dgx
	}
	replica := fake.New(eng)
	d := &fakeDaemon{reg: prometheus.NewRegistry(), hc: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	a, err := app.New(cfg, app.Options{
		Logger: log, NVML: gpus, Registry: d.reg, HealthInterval: 20 * time.Millisecond,
		NewReplica:     func(pool.Spec, pool.Endpoint) engine.Replica { return replica },
		TracerProvider: extra.TracerProvider,
	})
	if err != nil {
		t.Fatal(err)
	}
	d.addr, _ = serveLoopback(t, a, wrap)
	eventually(t, "pool ready", func() bool {
		res, err := d.do("GET", "/v1/pools/p1/health", "")
		if err != nil {
			return false
		}
		var h struct{ Ready bool }
		_ = json.Unmarshal(res.body, &h)
		return h.Ready
	})
	return d
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request with the API key on a connection of its own.
func (d *fakeDaemon) do(method, path, body string) (response, error) {
	req, err := http.NewRequest(method, "http://"+d.addr+path, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	req.Header.Set("X-API-Key", testKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := d.hc.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, b}, err
}

// metric returns the value of an unlabelled series from the registry.
func (d *fakeDaemon) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := d.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.Metric) != 1 {
			continue
		}
		if g := mf.Metric[0].GetGauge(); g != nil {
			return g.GetValue()
		}
		return mf.Metric[0].GetCounter().GetValue()
	}
	t.Fatalf("no series %s", name)
	return 0
}

// eventually polls cond until it holds; the bound only keeps a broken build from hanging.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("never: %s", what)
		}
	}
}

// rawConn dials the daemon and writes head (a request up to its body, or part of it).
func (d *fakeDaemon) rawConn(t *testing.T, head string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// readAnswer reads one response; the 10 s bound is far beyond any configured deadline here and
// only turns "the daemon never answers" into a failure.
func readAnswer(t *testing.T, c net.Conn, br *bufio.Reader) (*http.Response, envelopeBody) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer res.Body.Close()
	var env envelopeBody
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return res, env
}

type envelopeBody struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retriable bool   `json:"retriable"`
}

// assertClosed checks that the daemon closed the connection (after what it had sent) and
// released it: no connection of the daemon stays open.
func (d *fakeDaemon) assertClosed(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, br)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the daemon kept the connection open")
	}
	eventually(t, "the daemon holds no connection", func() bool { return d.metric(t, "http_connections_open") == 0 })
}

func taskBody(id uuid.UUID, maxTokens int) string {
	return fmt.Sprintf(`{"task_id": %q, "session_id": %q, "workload": "completion", "model_ref": "fake",
		"engine": "llamacpp", "ctx": 32768, "priority": "interactive", "prompt": "Once upon a time",
		"max_tokens": %d, "deadline_ms": 600000}`, id, uuid.New(), maxTokens)
}

// A body that trickles (or stops) is cut off at base + size/rate: the request fails with the
// envelope and the connection is closed, releasing its goroutine and descriptor.
func TestTricklingBodyIsCutOff(t *testing.T) {
	d := startFakeDaemon(t, "server: {body_read_timeout: 200ms, body_min_bytes_per_second: 1048576}", fake.Options{}, nil)
	tests := []struct{ name, head string }{
		{"declared length", "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testKey +
			"\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"task_id\""},
		{"chunked", "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testKey +
			"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n"},
		{"headers only", "POST /v1/artifacts HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testKey +
			"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := d.rawConn(t, tt.head)
			res, env := readAnswer(t, c, br)
			if res.StatusCode != http.StatusBadRequest || env.Code != "INVALID_PARAMS" || !env.Retriable ||
				!strings.Contains(env.Message, "not received within") {
				t.Fatalf("answer %d %+v", res.StatusCode, env)
			}
			if !res.Close {
				t.Fatalf("no Connection: close (header %v)", res.Header)
			}
			d.assertClosed(t, c, br)
		})
	}
}

// A body that arrives in time is served, and the connection stays usable after the deadline
// it had would have passed.
func TestBodyInTimeKeepsTheConnection(t *testing.T) {
	d := startFakeDaemon(t, "server: {body_read_timeout: 200ms, body_min_bytes_per_second: 1048576}", fake.Options{}, nil)
	body := taskBody(uuid.New(), 1)
	head := "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testKey + "\r\nContent-Type: application/json\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
	c, br := d.rawConn(t, head+body[:10])
	if _, err := io.WriteString(c, body[10:]); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusAccepted || res.Close {
		t.Fatalf("status %d, close %v", res.StatusCode, res.Close)
	}
	time.Sleep(300 * time.Millisecond) // past the body deadline of the first request
	if _, err := io.WriteString(c, "GET /v1/capabilities HTTP/1.1\r\nHost: x\r\nX-API-Key: "+testKey+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("second request on the connection: %v", err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("second request: %d", res.StatusCode)
	}
}

// A request without a valid key is answered at once, without waiting for its body, and its
// connection is closed (the unread body cannot hold it).
func TestUnauthenticatedBodyIsNotWaitedFor(t *testing.T) {
	d := startFakeDaemon(t, "server: {body_read_timeout: 10m}", fake.Options{}, nil)
	tests := []struct {
		name, key, code string
		status          int
	}{
		{"no key", "", "UNAUTHORIZED", http.StatusUnauthorized},
		{"wrong key", "X-API-Key: wrong-key-0123456789\r\n", "FORBIDDEN", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := d.rawConn(t, "POST /v1/tasks HTTP/1.1\r\nHost: x\r\n"+tt.key+
				"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
			res, env := readAnswer(t, c, br)
			if res.StatusCode != tt.status || env.Code != tt.code {
				t.Fatalf("answer %d %+v", res.StatusCode, env)
			}
			if !res.Close {
				t.Fatalf("no Connection: close (header %v)", res.Header)
			}
			d.assertClosed(t, c, br)
		})
	}
}

// smallSendBuffers gives every accepted connection a small socket send buffer, so that a
// client that stops reading blocks the daemon's writes after a few kilobytes.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// streamSlowly submits a task of maxTokens tokens and asks for its stream on a connection with
// a small socket receive buffer, whose answer it leaves unread.
func (d *fakeDaemon) streamSlowly(t *testing.T, maxTokens int) (uuid.UUID, net.Conn) {
	t.Helper()
	id := uuid.New()
	res, err := d.do("POST", "/v1/tasks", taskBody(id, maxTokens))
	if err != nil || res.status != http.StatusAccepted {
		t.Fatalf("submit: %v %d %s", err, res.status, res.body)
	}
	dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	c, err := dialer.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /v1/tasks/"+id.String()+"/stream HTTP/1.1\r\nHost: x\r\nX-API-Key: "+testKey+"\r\n\r\n"); err != nil {
		_ = c.Close()
		t.Fatal(err)
	}
	return id, c
}

// A client that opens a stream and never reads is dropped once a write has waited
// stream.write_timeout, and its task is canceled (cancel on disconnect).
func TestStalledStreamReaderIsDropped(t *testing.T) {
	d := startFakeDaemon(t, "stream: {write_timeout: 200ms}", fake.Options{TokenDelay: 2 * time.Millisecond},
		func(ln net.Listener) net.Listener { return smallSendBuffers{ln} })
	id, c := d.streamSlowly(t, 32768)
	defer c.Close()
	var state struct{ State string }
	eventually(t, "the task is canceled", func() bool {
		res, err := d.do("GET", "/v1/tasks/"+id.String(), "")
		_ = json.Unmarshal(res.body, &state)
		return err == nil && state.State == "canceled"
	})
	if got := d.metric(t, "sse_client_disconnects_total"); got != 1 {
		t.Errorf("sse_client_disconnects_total = %v, want 1", got)
	}
	eventually(t, "no stream open", func() bool { return d.metric(t, "sse_streams_open") == 0 })
	d.assertClosed(t, c, bufio.NewReader(c))
}

// server.max_connections caps the daemon's open connections: the next one is served only when
// one closes, and the metrics count both.
func TestMaxConnections(t *testing.T) {
	d := startFakeDaemon(t, "server: {max_connections: 2}", fake.Options{}, nil)
	// The readiness probe's connection may still be closing.
	eventually(t, "no connection open", func() bool { return d.metric(t, "http_connections_open") == 0 })
	c1, _ := d.rawConn(t, "")
	_, _ = d.rawConn(t, "")
	eventually(t, "two open", func() bool { return d.metric(t, "http_connections_open") == 2 })
	got := make(chan response, 1)
	go func() {
		res, err := d.do("GET", "/metrics", "")
		if err != nil {
			res.status = -1
		}
		got <- res
	}()
	eventually(t, "the third waits", func() bool { return d.metric(t, "http_connections_waited_total") == 1 })
	select {
	case res := <-got:
		t.Fatalf("a third connection was served while two were open: %d", res.status)
	default:
	}
	_ = c1.Close()
	res := <-got
	if res.status != http.StatusOK {
		t.Fatalf("status %d", res.status)
	}
	for _, want := range []string{"http_connections_open 2\n", "http_connections_waited_total 1\n"} {
		if !strings.Contains(string(res.body), want) {
			t.Errorf("metrics lack %q", strings.TrimSpace(want))
		}
	}
}

// A client that stops reading while its task streams, and reads again once the task is over,
// gets every frame in order. With the journal on, frames are written by the journal's
// goroutine as it shows them, without waiting: a write the socket takes only part of is
// finished by the stream's drain, and the frames that come meanwhile follow it.
func TestPausedReaderGetsEveryFrame(t *testing.T) {
	// Tokens come apart, so that the journal's goroutine writes most batches, the one that
	// fills the socket's buffers among them.
	const tokens = 3000
	d := startFakeDaemon(t, "", fake.Options{TokenDelay: 100 * time.Microsecond},
		func(ln net.Listener) net.Listener { return smallSendBuffers{ln} })
	id, c := d.streamSlowly(t, tokens)
	defer c.Close()
	var state struct{ State string }
	eventually(t, "the task succeeds while its reader pauses", func() bool {
		res, err := d.do("GET", "/v1/tasks/"+id.String(), "")
		_ = json.Unmarshal(res.body, &state)
		return err == nil && state.State == "succeeded"
	})
	sres, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sres.Body.Close()
	evs := streamEvents(t, sres.Body)
	n := 0
	for i, ev := range evs {
		if ev.ID != strconv.Itoa(i) {
			t.Fatalf("event %d has id %s", i, ev.ID)
		}
		if ev.Event == "token" {
			n++
		}
	}
	if n != tokens || len(evs) == 0 || evs[len(evs)-1].Event != "end" {
		t.Fatalf("%d tokens, want %d; %d events", n, tokens, len(evs))
	}
	if got := d.metric(t, "sse_client_disconnects_total"); got != 0 {
		t.Errorf("sse_client_disconnects_total = %v, want 0", got)
	}
	if n := counterWith(t, d.reg, "sse_batches_written_total", "writer", "journal"); n == 0 {
		t.Errorf("no batch written by the journal's goroutine, of %d tokens coming apart", tokens)
	}
}

// A connection whose client sends nothing is not accepted (TCP_DEFER_ACCEPT): it holds no
// goroutine and no buffers of the daemon's, nor a slot of server.max_connections. One opened
// before another that is served would have been accepted first without the option.
func TestSilentConnectionIsNotAccepted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_DEFER_ACCEPT is Linux's")
	}
	// The header timeout (and so the deferral) outlasts eventually's bound: without the option,
	// the silent connection would count until the test fails.
	d := startFakeDaemon(t, "server: {read_header_timeout: 1m}", fake.Options{}, nil)
	silent, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c, br := d.rawConn(t, "GET /v1/pools/p1/health HTTP/1.1\r\nHost: x\r\nX-API-Key: "+testKey+"\r\n\r\n")
	res, _ := readAnswer(t, c, br)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("health: %d", res.StatusCode)
	}
	// The pool-ready checks' connections close a moment after their answers.
	eventually(t, "one connection open (the served one)", func() bool { return d.metric(t, "http_connections_open") == 1 })
	// Once it speaks, it is served.
	if _, err := io.WriteString(silent, "GET /v1/pools/p1/health HTTP/1.1\r\nHost: x\r\nX-API-Key: "+testKey+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, _ = readAnswer(t, silent, bufio.NewReader(silent))
	if res.StatusCode != http.StatusOK {
		t.Fatalf("health on the connection that was silent: %d", res.StatusCode)
	}
}

// A client that asks for a plain (non-stream) answer and reads none of it is dropped once the
// write has waited stream.write_timeout: before, only event streams had a write deadline, and
// such clients of the public /openapi.json pinned their connections and max_connections slots
// forever. The bound below only ends a broken build's wait.
func TestSlowReaderOfPlainAnswerIsDropped(t *testing.T) {
	d := startFakeDaemon(t, "stream: {write_timeout: 200ms}\nserver: {idle_timeout: 300ms, read_header_timeout: 300ms}",
		fake.Options{}, func(ln net.Listener) net.Listener { return smallSendBuffers{ln} })
	eventually(t, "no connection open", func() bool { return d.metric(t, "http_connections_open") == 0 })
	dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	c, err := dialer.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// No API key: /openapi.json is public. Its answer (~100 KB) does not fit the socket buffers.
	if _, err := io.WriteString(c, "GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the daemon serves the request", func() bool { return d.metric(t, "http_connections_open") == 1 })
	for end := time.Now().Add(30 * time.Second); d.metric(t, "http_connections_open") != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("a client that reads nothing of a plain answer still holds its connection after 30s (stream.write_timeout 200ms)")
		}
	}
}

// The write deadline of one answer does not cut what a later request on the same kept-alive
// connection gets before its own answer: here the 100 Continue of a POST sent after the last
// answer's deadline passed (net/http clears the deadline after each answer; the daemon must
// not set one before the answer's header).
func TestKeptAliveConnectionOutlivesTheLastAnswersDeadline(t *testing.T) {
	d := startFakeDaemon(t, "stream: {write_timeout: 100ms}\nserver: {idle_timeout: 10s}", fake.Options{}, nil)
	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	time.Sleep(300 * time.Millisecond) // the first answer's write deadline (100ms) is past
	body := `{"kind": "plan", "content": {"steps": ["a"]}}`
	if _, err := fmt.Fprintf(c, "POST /v1/artifacts HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", testKey, len(body)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("want 100 Continue, got %q, %v", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil { // the empty line after 100 Continue
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, body); err != nil {
		t.Fatal(err)
	}
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusOK {
		t.Fatalf("artifact: status %d", res.StatusCode)
	}
}

// GET /v1/tasks/{id}/stream takes no request body; one sent all the same is read and dropped,
// not kept for as long as the stream is open (JSONBody kept any application/json body in the
// request's state: body_limit_bytes of heap per open stream, up to server.max_connections
// streams, from a handful of tasks).
func TestStreamKeepsNoRequestBody(t *testing.T) {
	// The task runs (waiting for its first token) for as long as the test: its streams stay open.
	d := startFakeDaemon(t, "", fake.Options{FirstTokenDelay: time.Hour}, nil)
	id := uuid.New()
	res, err := d.do("POST", "/v1/tasks", taskBody(id, 8))
	if err != nil || res.status != http.StatusAccepted {
		t.Fatalf("submit: %v %d %s", err, res.status, res.body)
	}
	const streams, size = 24, 1000000
	body := `{"x":"` + strings.Repeat("a", size-8) + `"}`
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range streams {
		c, err := net.Dial("tcp", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		head := fmt.Sprintf("GET /v1/tasks/%s/stream HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			id, testKey, len(body))
		if _, err := io.WriteString(c, head+body); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second)) // only turns a hang into a failure
		sres, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if sres.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(sres.Body)
			t.Fatalf("stream with a body: %d %s", sres.StatusCode, b)
		}
	}
	eventually(t, "every stream open", func() bool { return d.metric(t, "sse_streams_open") == streams })
	grew := int64(heap()) - int64(before)
	if grew > streams*size/4 {
		t.Fatalf("%d open streams whose GET carried a %d-byte JSON body hold %d MiB more heap: the bodies are kept for the streams' life",
			streams, size, grew>>20)
	}
}

// flakyNVML is NVML whose device count fails while down is set (a GPU fallen off the bus, the
// driver reloaded).
type flakyNVML struct {
	nvml.Interface
	down atomic.Bool
}

func (f *flakyNVML) DeviceGetCount() (int, nvml.Return) {
	if f.down.Load() {
		return 0, nvml.ERROR_GPU_IS_LOST
	}
	return f.Interface.DeviceGetCount()
}

// A GPU gauge says what NVML says now: once NVML fails, a scrape drops gpu_utilization and
// vram_used_bytes instead of repeating their last values as if current.
func TestGPUGaugesFollowNVMLFailures(t *testing.T) {
	dgx := dgxh200.New()
	dgx.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	lib := &flakyNVML{Interface: dgx}
	d := startFakeDaemonWith(t, "", fake.Options{}, nil, app.Options{NVML: lib})
	series := func() int {
		res, err := d.do("GET", "/metrics", "")
		if err != nil || res.status != http.StatusOK {
			t.Fatalf("scrape: %v %d", err, res.status)
		}
		n := 0
		for _, line := range strings.Split(string(res.body), "\n") {
			if strings.HasPrefix(line, "gpu_utilization{") || strings.HasPrefix(line, "vram_used_bytes{") {
				n++
			}
		}
		return n
	}
	if n := series(); n == 0 {
		t.Fatal("no GPU series while NVML answers (test premise)")
	}
	lib.down.Store(true)
	if n := series(); n != 0 {
		t.Errorf("%d GPU series left with their last values after NVML failed", n)
	}
}
