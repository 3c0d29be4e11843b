package app_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/sse"
)

// streamEvents reads a stream's events until its body ends.
func streamEvents(t *testing.T, body io.Reader) []sse.Event {
	t.Helper()
	var evs []sse.Event
	r := sse.NewReader(body, 0)
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return evs
		}
		if err != nil {
			t.Fatalf("after %d events: %v", len(evs), err)
		}
		evs = append(evs, ev)
	}
}

// request sends one request on a connection of its own (d.send) and reads its answer's head;
// the connection is closed when the test ends (the caller closes the body). br reads what
// follows the answer.
func (d *relayDaemon) request(t *testing.T, method, path, body string) (res *http.Response, br *bufio.Reader) {
	t.Helper()
	c, br, err := d.send(method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res, br
}

// submit posts a task and returns its id.
func (d *relayDaemon) submit(t *testing.T, maxTokens int) string {
	t.Helper()
	id := uuid.New()
	res, _ := d.request(t, "POST", "/v1/tasks", taskBody(id, maxTokens))
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/tasks: %d %s", res.StatusCode, b)
	}
	return id.String()
}

// TestHijackedStreamOnTheWire reads a task's stream, served on the connection it took over
// from net/http, with net/http's own response parser: a chunked HTTP/1.1 200 with the stream's
// headers and every event, the last chunk, and then the connection's close.
func TestHijackedStreamOnTheWire(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const tokens = 7
	eng := startRawEngine(t, false, tokens)
	d := startRelayDaemon(t, eng, 4)
	id := d.submit(t, tokens)
	res, br := d.request(t, "GET", "/v1/tasks/"+id+"/stream", "")
	defer res.Body.Close()
	for _, tc := range []struct{ got, want string }{
		{res.Status, "200 OK"},
		{strings.Join(res.TransferEncoding, ","), "chunked"},
		{res.Header.Get("Content-Type"), "text/event-stream"},
		{res.Header.Get("Cache-Control"), "no-cache"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	if !res.Close {
		t.Error("the response does not say Connection: close")
	}
	if res.Header.Get("X-Correlation-Id") == "" || res.Header.Get("Date") == "" || res.Header.Get("X-Budget-Time-Remaining-Ms") == "" {
		t.Errorf("headers missing: %v", res.Header)
	}
	evs := streamEvents(t, res.Body) // ends at the last chunk: a chunked body that was cut would fail
	var n int
	for i, ev := range evs {
		if ev.ID == "" || ev.Event == "" {
			t.Errorf("event %d without id or name: %+v", i, ev)
		}
		if ev.Event == "token" {
			n++
		}
	}
	if n != tokens || evs[len(evs)-1].Event != "end" {
		t.Fatalf("%d tokens, last event %+v; want %d tokens and end", n, evs[len(evs)-1], tokens)
	}
	// The daemon closes the connection after the last chunk.
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last chunk: %v, want EOF", err)
	}
}

// TestHTTP10StreamStaysOnNetHTTP: a stream requested over HTTP/1.0 (no chunked encoding) is
// served by net/http, delimited by the connection's close.
func TestHTTP10StreamStaysOnNetHTTP(t *testing.T) {
	const tokens = 3
	eng := startRawEngine(t, false, tokens)
	d := startRelayDaemon(t, eng, 4)
	id := d.submit(t, tokens)
	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /v1/tasks/"+id+"/stream HTTP/1.0\r\nHost: x\r\nX-API-Key: "+testKey+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || len(res.TransferEncoding) != 0 {
		t.Fatalf("status %d, transfer encoding %v; want 200 without chunks", res.StatusCode, res.TransferEncoding)
	}
	evs := streamEvents(t, res.Body)
	if len(evs) == 0 || evs[len(evs)-1].Event != "end" {
		t.Fatalf("events %+v, want the stream up to end", evs)
	}
}

// TestShutdownEndsHijackedStreams shuts the daemon down under an open stream whose engine
// holds its generation: http.Server.Shutdown does not see a hijacked connection, so the daemon
// ends such streams itself. The stream gets its task's final frame and the last chunk, the
// connection closes, and Serve returns with no goroutine left behind.
func TestShutdownEndsHijackedStreams(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	eng := startRawEngine(t, true, 0)
	d := startRelayDaemon(t, eng, 4)
	c, br, err := d.openStream(32768)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := readUntil(br, "event: token"); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- d.stop() }()
	var last string
	for {
		line, err := br.ReadString('\n')
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "event: ") {
			last = strings.TrimSpace(strings.TrimPrefix(line, "event: "))
		}
		if line == "0\r\n" { // the last chunk (the stream's frames are never a bare 0 line)
			if rest, _ := br.ReadString('\n'); rest != "\r\n" {
				t.Fatalf("after the last chunk: %q", rest)
			}
		}
	}
	if last != "end" && last != "error" {
		t.Fatalf("last event %q, want the task's final frame", last)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestHijackedStreamsUnderLoad reads tasks whose engine writes tokens as fast as it can, each
// task by several readers at once (from the start, and resuming after an event id), while
// their streams' writers start and stop with every batch: each reader gets every event once,
// in order, up to the end.
func TestHijackedStreamsUnderLoad(t *testing.T) {
	for _, journal := range []bool{false, true} {
		t.Run(fmt.Sprintf("journal=%t", journal), func(t *testing.T) { hijackedStreamsUnderLoad(t, journal) })
	}
}

// hijackedStreamsUnderLoad is TestHijackedStreamsUnderLoad with the journal on or off. With it
// on, frames are shown once journaled, and the journal's goroutine may write batches itself.
func hijackedStreamsUnderLoad(t *testing.T, journal bool) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const tokens, tasks = 300, 6
	eng := startRawEngine(t, false, tokens)
	d := startRelayDaemonJournal(t, eng, tasks, journal)
	type reader struct {
		id   string
		from int // the first event id expected
	}
	var readers []reader
	for range tasks {
		id := d.submit(t, tokens)
		readers = append(readers, reader{id, 0}, reader{id, 0}, reader{id, 6})
	}
	errs := make(chan error, len(readers))
	for _, r := range readers {
		go func() {
			errs <- func() error {
				c, err := net.Dial("tcp", d.addr)
				if err != nil {
					return err
				}
				defer c.Close()
				head := "GET /v1/tasks/" + r.id + "/stream HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testKey + "\r\n"
				if r.from > 0 {
					head += "Last-Event-ID: " + strconv.Itoa(r.from-1) + "\r\n"
				}
				if _, err := io.WriteString(c, head+"\r\n"); err != nil {
					return err
				}
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					return err
				}
				defer res.Body.Close()
				sr := sse.NewReader(res.Body, 0)
				next, n := r.from, 0
				for {
					ev, err := sr.Next()
					if errors.Is(err, io.EOF) {
						return fmt.Errorf("task %s from %d: body ended before the end event", r.id, r.from)
					}
					if err != nil {
						return err
					}
					if ev.ID != strconv.Itoa(next) {
						return fmt.Errorf("task %s from %d: event id %s, want %d", r.id, r.from, ev.ID, next)
					}
					next++
					switch ev.Event {
					case "token":
						n++
					case "end":
						// From event id k on, at most k of the task's tokens came before.
						if r.from == 0 && n != tokens || n < tokens-r.from || n > tokens {
							return fmt.Errorf("task %s from %d: %d tokens", r.id, r.from, n)
						}
						return nil
					case "error":
						return fmt.Errorf("task %s: error event %s", r.id, ev.Data)
					}
				}
			}()
		}()
	}
	for range readers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestHijackedStreamKeepsTheConnection: a stream that ends cleanly hands its connection back
// to net/http, which serves the client's next requests on it, including one the client sent
// right behind the stream's request (pipelined).
func TestHijackedStreamKeepsTheConnection(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const tokens = 5
	eng := startRawEngine(t, false, tokens)
	d := startRelayDaemon(t, eng, 4)
	id1, id2 := d.submit(t, tokens), d.submit(t, tokens)
	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get := func(path string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testKey + "\r\n\r\n"
	}
	// The first stream, with a health check pipelined behind it, then a second stream and a
	// health check, each sent after the answer before it.
	if _, err := io.WriteString(c, get("/v1/tasks/"+id1+"/stream")+get("/v1/pools/p1/health")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	readStream := func(id string) {
		t.Helper()
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("stream %s: %v", id, err)
		}
		defer res.Body.Close()
		if res.Close {
			t.Fatalf("stream %s: the answer closes the connection", id)
		}
		evs := streamEvents(t, res.Body)
		if len(evs) == 0 || evs[len(evs)-1].Event != "end" {
			t.Fatalf("stream %s: events %+v", id, evs)
		}
	}
	readHealth := func() {
		t.Helper()
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("health after a stream: %v", err)
		}
		defer res.Body.Close()
		if _, err := io.ReadAll(res.Body); err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("health after a stream: %d %v", res.StatusCode, err)
		}
	}
	readStream(id1)
	readHealth()
	if _, err := io.WriteString(c, get("/v1/tasks/"+id2+"/stream")); err != nil {
		t.Fatal(err)
	}
	readStream(id2)
	if _, err := io.WriteString(c, get("/v1/pools/p1/health")); err != nil {
		t.Fatal(err)
	}
	readHealth()
}

// streamOnConn submits a task of tokens tokens, reads its whole stream on a connection of its
// own and returns the connection, kept alive, with its reader.
func (d *fakeDaemon) streamOnConn(t *testing.T, tokens int) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	id := uuid.New()
	res, err := d.do("POST", "/v1/tasks", taskBody(id, tokens))
	if err != nil || res.status != http.StatusAccepted {
		t.Fatalf("submit: %v %d %s", err, res.status, res.body)
	}
	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /v1/tasks/"+id.String()+"/stream HTTP/1.1\r\nHost: x\r\nX-API-Key: "+testKey+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	sres, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs := streamEvents(t, sres.Body)
	_ = sres.Body.Close()
	if sres.Close || len(evs) == 0 || evs[len(evs)-1].Event != "end" {
		t.Fatalf("stream: close %v, events %+v", sres.Close, evs)
	}
	return c, br, id.String()
}

// A connection given back after its stream waits for the client's next request as long as
// server.idle_timeout, not only server.read_header_timeout (the wait of a new connection).
func TestStreamConnectionWaitsIdleTimeout(t *testing.T) {
	d := startFakeDaemon(t, "server: {read_header_timeout: 100ms, idle_timeout: 30s}", fake.Options{}, nil)
	c, br, id := d.streamOnConn(t, 3)
	defer c.Close()
	time.Sleep(500 * time.Millisecond) // well past the header timeout
	if _, err := io.WriteString(c, "GET /v1/tasks/"+id+" HTTP/1.1\r\nHost: x\r\nX-API-Key: "+testKey+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the next request on the stream's connection: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET after the stream: %d", res.StatusCode)
	}
}

// A connection given back after its stream is closed once it has waited server.idle_timeout
// for a next request.
func TestStreamConnectionIdleTimeout(t *testing.T) {
	d := startFakeDaemon(t, "server: {idle_timeout: 200ms}", fake.Options{}, nil)
	c, br, _ := d.streamOnConn(t, 3)
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("read on an idle connection after its stream: %v, want EOF (closed by the daemon)", err)
	}
}

// A shutdown closes the connections that wait for a next request after their streams, and
// leaves nothing running (the daemon's leak check).
func TestShutdownClosesIdleStreamConnections(t *testing.T) {
	var c net.Conn
	var br *bufio.Reader
	t.Cleanup(func() { // after the daemon's stop: cleanups run last in, first out
		if c == nil {
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Errorf("read on an idle stream connection after the shutdown: %v, want EOF", err)
		}
	})
	d := startFakeDaemon(t, "server: {idle_timeout: 1h}", fake.Options{}, nil)
	c, br, _ = d.streamOnConn(t, 3)
}
