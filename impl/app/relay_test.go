package app_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/internal/cpuclock"
)

// rawEngine is a llama-server-like engine on loopback. In hold mode it answers a completion
// with its head and one token frame and parks the connection until the end of the test, with
// no goroutine left for it (so that the daemon's goroutines can be counted); otherwise it
// streams tokens frames per completion and keeps the connection for the next one. GETs
// (health, props) are answered and closed.
type rawEngine struct {
	ln     net.Listener
	hold   bool
	tokens int

	mu     sync.Mutex
	parked []net.Conn
	wg     sync.WaitGroup
}

func startRawEngine(t testing.TB, hold bool, tokens int) *rawEngine {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &rawEngine{ln: ln, hold: hold, tokens: tokens}
	e.wg.Add(1)
	go e.accept()
	t.Cleanup(e.close)
	return e
}

func (e *rawEngine) url() string { return "http://" + e.ln.Addr().String() }

func (e *rawEngine) close() {
	_ = e.ln.Close()
	e.mu.Lock()
	for _, c := range e.parked {
		_ = c.Close()
	}
	e.parked = nil
	e.mu.Unlock()
	e.wg.Wait()
}

func (e *rawEngine) accept() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		e.parked = append(e.parked, c) // closed by close()
		e.mu.Unlock()
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			br := bufio.NewReader(c)
			for e.serve(c, br, e.hold) {
			}
			if !e.hold {
				_ = c.Close()
			}
		}()
	}
}

const (
	engineHead  = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	engineFrame = `data: {"content":" tok","tokens":[1],"stop":false}` + "\n\n"
)

// serve answers one request on c; it reports whether the connection may serve another.
func (e *rawEngine) serve(c net.Conn, br *bufio.Reader, hold bool) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, req.Body)
	switch req.URL.Path {
	case "/completion":
	case "/props":
		body := `{"total_slots":64,"default_generation_settings":{"n_ctx":32768},"build_info":"raw","model_path":"raw.gguf"}`
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		_ = c.Close()
		return false
	default:
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}")
		_ = c.Close()
		return false
	}
	chunk := func(b []byte, s string) []byte {
		b = strconv.AppendInt(b, int64(len(s)), 16)
		b = append(b, "\r\n"...)
		b = append(b, s...)
		return append(b, "\r\n"...)
	}
	if _, err := io.WriteString(c, engineHead); err != nil {
		return false
	}
	if hold {
		_, _ = c.Write(chunk(nil, engineFrame))
		return false // parked: the daemon closes it when the test ends
	}
	frame := chunk(nil, engineFrame)
	for range e.tokens {
		if _, err := c.Write(frame); err != nil {
			return false
		}
	}
	final := fmt.Sprintf(`data: {"content":"","stop":true,"stop_type":"limit","tokens_predicted":%d,"tokens_evaluated":4,"id_slot":0}`+"\n\n", e.tokens)
	b := chunk(nil, final)
	b = append(b, "0\r\n\r\n"...)
	_, err = c.Write(b)
	return err == nil
}

// relayDaemon runs the app with the real llamacpp adapter against eng.
type relayDaemon struct {
	addr string
	// stop shuts the daemon down (Serve's context ends) and returns Serve's error; the test's
	// cleanup calls it too.
	stop func() error
}

// counterWith returns the value of the counter or gauge name with the label pair in reg (0 when
// absent).
func counterWith(t testing.TB, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if g := m.GetGauge(); g != nil {
						return g.GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func startRelayDaemon(t testing.TB, eng *rawEngine, slots int) *relayDaemon {
	t.Helper()
	return startRelayDaemonJournal(t, eng, slots, false)
}

// startRelayDaemonJournal is startRelayDaemon with the task journal on or off.
func startRelayDaemonJournal(t testing.TB, eng *rawEngine, slots int, journal bool) *relayDaemon {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 50ms
journal: {enabled: %t}
admission: {capacity: 100000}
pools:
  - id: p1
    engine: llamacpp
    model_ref: models/fake.gguf
    ctx_max: 32768
    slots: %d
    replicas:
      - url: %s
`, filepath.Join(dir, "state"), journal, slots, eng.url())
	cfg := loadConfig(t, dir, yaml)
	gpus := dgxh200.New()
	gpus.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	// Health probes run once at start and then rarely, so that they do not come and go while
	// goroutines are counted.
	a, err := app.New(cfg, app.Options{Logger: slog.New(slog.DiscardHandler), NVML: gpus, Registry: prometheus.NewRegistry(),
		HealthInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := serveLoopback(t, a, nil)
	d := &relayDaemon{addr: addr, stop: stop}
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if d.ready() {
			return d
		}
		if time.Now().After(end) {
			t.Fatal("pool never ready")
		}
	}
}

func (d *relayDaemon) ready() bool {
	c, br, err := d.send("GET", "/v1/pools/p1/health", "")
	if err != nil {
		return false
	}
	defer c.Close()
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var h struct{ Ready bool }
	return json.Unmarshal(b, &h) == nil && h.Ready
}

// send writes one request on a connection of its own (Connection: close), without any
// goroutine of the client's.
func (d *relayDaemon) send(method, path, body string) (net.Conn, *bufio.Reader, error) {
	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		return nil, nil, err
	}
	head := method + " " + path + " HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testKey + "\r\nConnection: close\r\n"
	if body != "" {
		head += "Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n"
	}
	if _, err := io.WriteString(c, head+"\r\n"+body); err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	return c, bufio.NewReaderSize(c, 1024), nil
}

// openStream submits a task and opens its event stream; it returns once the stream's head
// has come (the caller reads the events from br).
func (d *relayDaemon) openStream(maxTokens int) (net.Conn, *bufio.Reader, error) {
	id := uuid.New()
	c, br, err := d.send("POST", "/v1/tasks", taskBody(id, maxTokens))
	if err != nil {
		return nil, nil, err
	}
	res, err := http.ReadResponse(br, nil)
	if err == nil {
		b, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusAccepted {
			err = fmt.Errorf("POST /v1/tasks: %d %s", res.StatusCode, b)
		}
	}
	_ = c.Close()
	if err != nil {
		return nil, nil, err
	}
	c, br, err = d.send("GET", "/v1/tasks/"+id.String()+"/stream", "")
	if err != nil {
		return nil, nil, err
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			_ = c.Close()
			return nil, nil, err
		}
		if len(line) <= 2 { // the end of the head
			return c, br, nil
		}
	}
}

// readUntil reads the stream until a line containing marker.
func readUntil(br *bufio.Reader, marker string) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		if bytes.Contains(line, []byte(marker)) {
			return nil
		}
	}
}

// readEnd reads the stream until its end event; an error event is an error.
func readEnd(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		switch {
		case bytes.HasPrefix(line, []byte("event: end")):
			return nil
		case bytes.HasPrefix(line, []byte("event: error")):
			data, _ := br.ReadString('\n')
			return fmt.Errorf("stream failed: %s", data)
		}
	}
}

// TestGoroutinesPerStream opens streams whose tasks run on the llamacpp adapter against an
// engine that has sent one token and holds the generation, and counts the daemon's goroutines
// per open stream: the task's runner, which reads the engine, and nothing else. A stream took
// its connection over from net/http, one epoll set (not a goroutine per connection) notices a
// client that goes away, and the stream's writer runs only while it has something to write.
// Before, there were net/http's Transport read and write loops (5 per stream), then net/http's
// connection goroutine and its background read (3), then the stream's waiting writer (2).
func TestGoroutinesPerStream(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const streams = 24
	const maxPerStream = 1
	eng := startRawEngine(t, true, 0)
	d := startRelayDaemon(t, eng, streams+1)
	// The engine connections' pollers (engine/httpengine, at most 8 goroutines, started with
	// their first connection) serve every stream: they are not counted.
	settle := func() int {
		runtime.GC()
		time.Sleep(50 * time.Millisecond) // lets closed connections' goroutines end; the count is not timed
		buf := make([]byte, 1<<20)
		pollers := strings.Count(string(buf[:runtime.Stack(buf, true)]), "httpengine.(*poller).loop(")
		return runtime.NumGoroutine() - pollers
	}
	// One stream first, so that goroutines started once (connection pools, timers) are counted
	// in the base.
	c0, br0, err := d.openStream(32768)
	if err != nil {
		t.Fatal(err)
	}
	defer c0.Close()
	if err := readUntil(br0, "event: token"); err != nil {
		t.Fatal(err)
	}
	base := settle()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap0, stack0 := ms.HeapInuse, ms.StackInuse
	for i := range streams {
		c, br, err := d.openStream(32768)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		defer c.Close()
		if err := readUntil(br, "event: token"); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	var n int
	for range 100 { // goroutines of the finished POSTs may still be ending
		if n = settle() - base; n <= maxPerStream*streams {
			break
		}
	}
	runtime.ReadMemStats(&ms)
	t.Logf("%d goroutines for %d open streams: %.2f per stream (base %d, now %d); per stream %.1f KiB of heap in use, %.1f KiB of stacks",
		n, streams, float64(n)/streams, base, runtime.NumGoroutine(),
		float64(int64(ms.HeapInuse)-int64(heap0))/streams/1024, float64(int64(ms.StackInuse)-int64(stack0))/streams/1024)
	if testing.Verbose() {
		buf := make([]byte, 1<<20)
		t.Log(summarize(string(buf[:runtime.Stack(buf, true)])))
	}
	if n > maxPerStream*streams {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines for %d open streams (%.2f each), want at most %d each; stacks:\n%s",
			n, streams, float64(n)/streams, maxPerStream, summarize(string(buf)))
	}
}

// summarize counts goroutines by the top frame of their stacks.
func summarize(stacks string) string {
	count := map[string]int{}
	for _, g := range strings.Split(stacks, "\n\n") {
		lines := strings.Split(g, "\n")
		key := ""
		for _, l := range lines[1:] {
			if !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, "runtime.") && !strings.HasPrefix(l, "internal/") &&
				!strings.HasPrefix(l, "sync.") && !strings.HasPrefix(l, "net.") && !strings.HasPrefix(l, "syscall.") {
				key = l
				break
			}
		}
		if i := strings.LastIndexByte(key, '('); i > 0 {
			key = key[:i]
		}
		count[key]++
	}
	var b strings.Builder
	for k, v := range count {
		fmt.Fprintf(&b, "%5d %s\n", v, k)
	}
	return b.String()
}

// BenchmarkRelay relays tokens end to end over loopback: an engine writing token frames as fast
// as it can, the real llamacpp adapter and engine connections, the task's event log and the SSE
// writer, and a client reading the stream. With -benchtime Nx, N/tokens tasks run: ns/op and
// allocs/op are per relayed token (the daemon's, the engine's and the client's together); with
// one token per task they are per task, admission included.
func BenchmarkRelay(b *testing.B) {
	for _, bc := range []struct{ streams, tokens int }{{1, 256}, {16, 256}, {16, 1}} {
		streams, tokens := bc.streams, bc.tokens
		b.Run(fmt.Sprintf("streams=%d/tokens=%d", streams, tokens), func(b *testing.B) {
			eng := startRawEngine(b, false, tokens)
			d := startRelayDaemon(b, eng, streams)
			tasks := max(b.N/tokens, streams)
			b.ReportAllocs()
			cpu0 := cpuclock.Total()
			b.ResetTimer()
			var wg sync.WaitGroup
			errs := make(chan error, streams)
			next := make(chan struct{}, tasks)
			for range tasks {
				next <- struct{}{}
			}
			close(next)
			for range streams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						c, br, err := d.openStream(tokens)
						if err == nil {
							err = readEnd(br)
							_ = c.Close()
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			cpu := cpuclock.Total() - cpu0
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(tasks*tokens), "ns/token")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(tasks*tokens), "cpu-ns/token")
		})
	}
}

// When a replica's engine cannot be reached, the task's error (the stream's error frame, GET
// /v1/tasks/{id}, the OpenAI facade's error) does not carry the engine's address, as the Go
// transport error did ("dial tcp <host:port>: connect: connection refused"): replica URLs are
// the operator's (pool health, the control scope).
func TestTaskErrorDoesNotShowTheEngineAddress(t *testing.T) {
	eng := startRawEngine(t, false, 3)
	d := startRelayDaemon(t, eng, 1)
	engineAddr := eng.ln.Addr().String()
	_, enginePort, _ := strings.Cut(engineAddr, ":")
	eng.close() // the pool stays ready (health every hour): the task is placed and fails to connect

	id := uuid.New()
	c, br, err := d.send("POST", "/v1/tasks", taskBody(id, 3))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	_ = c.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d", res.StatusCode)
	}
	// The stream's last frame is the task's error (read after the end).
	c, br, err = d.send("GET", "/v1/tasks/"+id.String()+"/stream", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sres, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs := streamEvents(t, sres.Body)
	_ = sres.Body.Close()
	if len(evs) == 0 || evs[len(evs)-1].Event != "error" {
		t.Fatalf("events %+v, want an error frame last", evs)
	}
	last := evs[len(evs)-1].Data
	var frame struct{ Message string }
	_ = json.Unmarshal([]byte(last), &frame)
	if strings.Contains(frame.Message, engineAddr) || strings.Contains(frame.Message, ":"+enginePort) {
		t.Fatalf("the task's error shows the engine's address %s to the client: %s", engineAddr, last)
	}
}
