package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/internal/testdaemon"
	"github.com/orchestratord/orchestratord/sdk"
)

// startDaemon runs the real daemon in-process over the fake engine.
func startDaemon(t *testing.T, sections string, eng fake.Options) *testdaemon.Daemon {
	t.Helper()
	d, err := testdaemon.Start(testdaemon.Options{Sections: sections, Fake: eng})
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

// newClient returns an SDK client for url; opts.APIKey defaults to the daemon's key.
func newClient(t *testing.T, url string, opts sdk.Options) *sdk.Client {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = testdaemon.Key
	}
	c, err := sdk.New(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// noSleep is an injected Sleep that records the waits it was asked for.
type noSleep struct {
	mu    sync.Mutex
	waits []time.Duration
	then  func() // run on each call, before returning
}

func (s *noSleep) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	then := s.then
	s.mu.Unlock()
	if then != nil {
		then()
	}
	return ctx.Err()
}

func (s *noSleep) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

// cuttingProxy forwards TCP connections to a daemon and cuts the first `cuts` event-stream
// responses after `after` bytes of their body (mid-frame, mid-chunk), as a flaky network
// would. It records the Last-Event-ID of each stream request.
type cuttingProxy struct {
	ln     net.Listener
	target string
	after  int

	mu       sync.Mutex
	cutsLeft int
	cut      int
	resumes  []string // Last-Event-ID of each stream request ("" when absent)
	wg       sync.WaitGroup
}

var lastEventIDRe = regexp.MustCompile(`(?i)\r\nLast-Event-Id: ([0-9]+)\r\n`)

func newCuttingProxy(t *testing.T, target string, cuts, after int) *cuttingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{ln: ln, target: strings.TrimPrefix(target, "http://"), after: after, cutsLeft: cuts}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); p.wg.Wait() })
	return p
}

func (p *cuttingProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *cuttingProxy) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if req := buf[:n]; bytes.Contains(req, []byte("/stream")) {
					id := ""
					if m := lastEventIDRe.FindSubmatch(req); m != nil {
						id = string(m[1])
					}
					p.mu.Lock()
					p.resumes = append(p.resumes, id)
					p.mu.Unlock()
				}
				if _, err := up.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				_ = up.(*net.TCPConn).CloseWrite()
				return
			}
		}
	}()
	// Daemon → client: find an event-stream answer, then cut it `after` bytes into its body.
	var seen []byte
	body := -1 // bytes of the current event-stream body forwarded so far; -1: not in one
	buf := make([]byte, 1)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				break
			}
			if body >= 0 {
				body++
				if body >= p.after && p.takeCut() {
					break
				}
			} else {
				seen = append(seen, buf[0])
				if bytes.HasSuffix(seen, []byte("\r\n\r\n")) {
					if bytes.Contains(seen, []byte("text/event-stream")) {
						body = 0
					}
					seen = seen[:0]
				}
			}
		}
		if err != nil {
			break
		}
	}
	_ = c.Close()
	_ = up.Close()
	<-done
}

// cuts returns how many streams the proxy has cut.
func (p *cuttingProxy) cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

func (p *cuttingProxy) takeCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cutsLeft == 0 {
		return false
	}
	p.cutsLeft--
	p.cut++
	return true
}

func TestStreamResumesAfterDroppedConnections(t *testing.T) {
	const maxTokens = 30
	d := startDaemon(t, "stream: {cancel_on_disconnect: false}", fake.Options{})
	proxy := newCuttingProxy(t, d.URL, 3, 200)
	var sl noSleep
	c := newClient(t, proxy.url(), sdk.Options{Sleep: sl.sleep})

	req := sdk.Completion(testdaemon.ModelID, "Once upon a time")
	req.MaxTokens = maxTokens
	adm, err := c.Submit(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	var (
		text   strings.Builder
		idx    []int32
		lastID int64 = -1
		end    *sdk.End
		names  []string
	)
	for ev, err := range c.Stream(t.Context(), adm.TaskId) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.EventID() <= lastID {
			t.Fatalf("event id %d after %d", ev.EventID(), lastID)
		}
		lastID = ev.EventID()
		names = append(names, ev.EventName())
		switch ev := ev.(type) {
		case *sdk.Token:
			text.WriteString(ev.Text)
			idx = append(idx, ev.Index)
		case *sdk.End:
			end = ev
		}
	}
	if n := proxy.cuts(); n != 3 {
		t.Fatalf("the proxy cut %d streams, want 3 (the test did not exercise resuming)", n)
	}
	if names[0] != "started" {
		t.Errorf("first event %q, want started", names[0])
	}
	for i, got := range idx {
		if got != int32(i) {
			t.Fatalf("token indexes %v: want each of 0..%d exactly once", idx, maxTokens-1)
		}
	}
	if len(idx) != maxTokens {
		t.Fatalf("%d tokens, want %d", len(idx), maxTokens)
	}
	var want strings.Builder
	toks := fake.Split(fake.DefaultText)
	for i := range maxTokens {
		want.WriteString(toks[i%len(toks)])
	}
	if text.String() != want.String() {
		t.Errorf("text %q, want %q", text.String(), want.String())
	}
	if end == nil || end.Canceled || end.TokensOut != maxTokens {
		t.Errorf("end = %+v, want %d tokens, not canceled", end, maxTokens)
	}
	// The first request has no Last-Event-ID; each reconnect names the last event delivered.
	proxy.mu.Lock()
	resumes := append([]string(nil), proxy.resumes...)
	proxy.mu.Unlock()
	if len(resumes) != 4 || resumes[0] != "" {
		t.Fatalf("stream requests' Last-Event-ID = %q, want none then 3 resumes", resumes)
	}
	prev := -1
	for _, r := range resumes[1:] {
		n, err := strconv.Atoi(r)
		if err != nil || n <= prev {
			t.Fatalf("Last-Event-ID sequence %q is not increasing", resumes)
		}
		prev = n
	}
	if got := sl.got(); len(got) != 3 || got[0] != sdk.DefaultReconnectDelay {
		t.Errorf("reconnect waits %v, want 3 × %v", got, sdk.DefaultReconnectDelay)
	}
}

func TestStreamGivesUpAfterMaxReconnects(t *testing.T) {
	d := startDaemon(t, "stream: {cancel_on_disconnect: false}", fake.Options{})
	proxy := newCuttingProxy(t, d.URL, 100, 0) // every stream is cut before its first frame
	var sl noSleep
	c := newClient(t, proxy.url(), sdk.Options{Sleep: sl.sleep, MaxReconnects: 2, KeepTaskOnBreak: true})
	adm, err := c.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	for ev, err := range c.Stream(t.Context(), adm.TaskId) {
		if err != nil {
			errs = append(errs, err)
		} else {
			t.Errorf("unexpected event %T", ev)
		}
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "dropped 3 times") {
		t.Fatalf("errors %v, want one saying the stream dropped 3 times", errs)
	}
	if got := len(sl.got()); got != 2 {
		t.Errorf("%d reconnect waits, want 2", got)
	}
}

// TestStreamReconnectBacksOff: the waits between reopens of a stream that keeps dropping
// double from ReconnectDelay up to MaxReconnectDelay, so that the default reconnects span a
// daemon's restart (about a minute) rather than one second.
func TestStreamReconnectBacksOff(t *testing.T) {
	d := startDaemon(t, "stream: {cancel_on_disconnect: false}", fake.Options{})
	proxy := newCuttingProxy(t, d.URL, 100, 0) // every stream is cut before its first frame
	for _, tt := range []struct {
		name string
		opts sdk.Options
		want []time.Duration
	}{
		{"defaults", sdk.Options{}, []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond,
			3200 * time.Millisecond, 5 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second,
			5 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second}},
		{"capped at 1 s", sdk.Options{MaxReconnects: 5, MaxReconnectDelay: time.Second},
			[]time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var sl noSleep
			tt.opts.Sleep, tt.opts.KeepTaskOnBreak = sl.sleep, true
			c := newClient(t, proxy.url(), tt.opts)
			adm, err := c.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "hi"))
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range c.Stream(t.Context(), adm.TaskId) {
				if err == nil {
					t.Fatal("an event came through a proxy that cuts every stream")
				}
			}
			if got := sl.got(); !slices.Equal(got, tt.want) {
				t.Errorf("reconnect waits %v, want %v", got, tt.want)
			}
		})
	}
}

// TestStreamReopenAfter503: a reopen answered 503 (the daemon stopping; a proxy's 502 or 504
// alike) is a drop to retry, not the stream's end: the stream goes on once the daemon answers.
func TestStreamReopenAfter503(t *testing.T) {
	d := startDaemon(t, "", fake.Options{})
	target, err := url.Parse(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // a stream's frames as they come
	var refused atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/stream") && refused.Add(1) <= 2 {
			http.Error(w, "upstream restarting", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	var sl noSleep
	c := newClient(t, front.URL, sdk.Options{Sleep: sl.sleep})
	adm, err := c.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	var end *sdk.End
	for ev, err := range c.Stream(t.Context(), adm.TaskId) {
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		if e, ok := ev.(*sdk.End); ok {
			end = e
		}
	}
	if end == nil || len(sl.got()) != 2 {
		t.Fatalf("end %+v after %d waits; want the End after the two 503s", end, len(sl.got()))
	}
}

func TestEarlyBreak(t *testing.T) {
	tests := []struct {
		name      string
		opts      sdk.Options
		stream    []sdk.StreamOption
		wantState client.TaskStatus
	}{
		{name: "cancels the task by default", wantState: client.Canceled},
		{name: "keeps it with KeepTaskOnBreak", opts: sdk.Options{KeepTaskOnBreak: true}, wantState: client.Succeeded},
		{name: "keeps it with KeepTask", stream: []sdk.StreamOption{sdk.KeepTask()}, wantState: client.Succeeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The daemon itself keeps tasks whose client disconnects: only the SDK cancels.
			d := startDaemon(t, "stream: {cancel_on_disconnect: false}", fake.Options{})
			d.Fake.Pause()
			c := newClient(t, d.URL, tt.opts)
			adm, err := c.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "hi"))
			if err != nil {
				t.Fatal(err)
			}
			for ev, err := range c.Stream(t.Context(), adm.TaskId, tt.stream...) {
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := ev.(*sdk.Started); !ok {
					t.Fatalf("first event %T, want *sdk.Started", ev)
				}
				break
			}
			d.Fake.Resume()
			// Read the stream to its end (without canceling), then look at the final state.
			var end *sdk.End
			for ev, err := range c.Stream(t.Context(), adm.TaskId, sdk.KeepTask()) {
				if err != nil {
					t.Fatal(err)
				}
				if e, ok := ev.(*sdk.End); ok {
					end = e
				}
			}
			st, err := c.Task(t.Context(), adm.TaskId)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != tt.wantState {
				t.Errorf("state %s, want %s", st.State, tt.wantState)
			}
			if end == nil || end.Canceled != (tt.wantState == client.Canceled) {
				t.Errorf("end = %+v", end)
			}
		})
	}
}

// TestPanicInTheLoopBodyClosesTheStream guards that each connection's body is closed by a
// defer: a panic (or runtime.Goexit) in the caller's loop body unwinds through yield, and when
// it is recovered (an HTTP handler's recover middleware, a worker pool) the connection, the
// transport's goroutines and the daemon's stream must not stay open for as long as the task
// runs.
func TestPanicInTheLoopBodyClosesTheStream(t *testing.T) {
	gone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost { // the SDK's cancel
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "id: 0\nevent: started\ndata: {\"queue_position\":0,\"predicted_start_ms\":0}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the task runs on: the stream stays open until the client leaves
		close(gone)
	}))
	defer srv.Close()
	c := newClient(t, srv.URL, sdk.Options{})
	func() {
		defer func() { _ = recover() }()
		for ev, err := range c.Stream(t.Context(), uuid.New()) {
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := ev.(*sdk.Started); ok {
				panic("the caller's bug")
			}
		}
	}()
	select {
	case <-gone:
	case <-time.After(10 * time.Second): // a bound for the failure only
		srv.CloseClientConnections()
		<-gone
		t.Error("after a panic in the loop body the stream's connection stayed open (its body was never closed)")
	}
}

// recordingTransport records the Retry-After of every 429 answer.
type recordingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	ra   []string
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		r.mu.Lock()
		r.ra = append(r.ra, resp.Header.Get("Retry-After"))
		r.mu.Unlock()
	}
	return resp, err
}

func TestSubmitRetries429AfterRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		maxWait    time.Duration
		maxRetries int
		free       bool // the injected sleep frees the queue (else it stays full)
		wantErr    bool
		wantWaits  int
	}{
		{name: "waits Retry-After then succeeds", free: true, wantWaits: 1},
		{name: "caps the wait", maxWait: 10 * time.Millisecond, free: true, wantWaits: 1},
		{name: "gives up after MaxRetries", maxRetries: 2, wantErr: true, wantWaits: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, "admission: {capacity: 1, policy: reject}", fake.Options{})
			d.Fake.Pause()
			rec := &recordingTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
			hc := &http.Client{Transport: rec}
			t.Cleanup(hc.CloseIdleConnections)
			plain := newClient(t, d.URL, sdk.Options{HTTPClient: hc, MaxRetries: -1})
			// One task runs (paused), one waits: the queue (capacity 1) is full.
			running, err := plain.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "a"))
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Fake.WaitActive(t.Context(), 1); err != nil {
				t.Fatal(err)
			}
			queued, err := plain.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "b"))
			if err != nil {
				t.Fatal(err)
			}
			sl := &noSleep{}
			if tt.free {
				// While the SDK waits, the running task is canceled and the queued one starts.
				sl.then = func() {
					if err := plain.Cancel(context.Background(), running.TaskId); err != nil {
						t.Error(err)
					}
					for {
						st, err := plain.Task(context.Background(), queued.TaskId)
						if err != nil || st.State != client.Queued {
							return
						}
						time.Sleep(5 * time.Millisecond)
					}
				}
			}
			c := newClient(t, d.URL, sdk.Options{HTTPClient: hc, Sleep: sl.sleep, MaxRetryWait: tt.maxWait, MaxRetries: tt.maxRetries})
			adm, err := c.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "c"))
			var apiErr *sdk.APIError
			if tt.wantErr {
				if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Envelope.Code != client.ADMISSIONREJECT || apiErr.RetryAfter < time.Second {
					t.Fatalf("err = %v, want a 429 ADMISSION_REJECT APIError with Retry-After", err)
				}
			} else if err != nil || adm == nil {
				t.Fatalf("Submit: %v", err)
			}
			waits := sl.got()
			rec.mu.Lock()
			ra := append([]string(nil), rec.ra...)
			rec.mu.Unlock()
			if len(waits) != tt.wantWaits || len(ra) < tt.wantWaits {
				t.Fatalf("waits %v after 429s with Retry-After %v, want %d waits", waits, ra, tt.wantWaits)
			}
			for i, w := range waits {
				secs, err := strconv.Atoi(ra[i])
				if err != nil || secs < 1 {
					t.Fatalf("Retry-After %q", ra[i])
				}
				want := time.Duration(secs) * time.Second
				if tt.maxWait > 0 {
					want = min(want, tt.maxWait)
				}
				if w != want {
					t.Errorf("wait %d = %v, want %v (Retry-After %s)", i, w, want, ra[i])
				}
			}
			d.Fake.Resume()
		})
	}
}

// TestNonRetriable429IsNotRetried guards that do retries a 429 only when its envelope says
// retriable: a spent session budget (BUDGET_EXCEEDED, retriable: false) can never succeed by
// waiting, so Submit returns it at once instead of sleeping MaxRetries × Retry-After first.
func TestNonRetriable429IsNotRetried(t *testing.T) {
	d := startDaemon(t, "sessions: {token_budget: 3}", fake.Options{})
	var sl noSleep
	c := newClient(t, d.URL, sdk.Options{Sleep: sl.sleep})
	req := sdk.Completion(testdaemon.ModelID, "hi")
	req.MaxTokens = 3
	req.SessionId = uuid.New()
	adm, err := c.Submit(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range c.Stream(t.Context(), adm.TaskId) { // spends the session's whole budget
		if err != nil {
			t.Fatal(err)
		}
	}
	req.TaskId = uuid.Nil
	_, err = c.Submit(t.Context(), req)
	var apiErr *sdk.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Envelope.Code != client.BUDGETEXCEEDED {
		t.Fatalf("err = %v, want a 429 BUDGET_EXCEEDED", err)
	}
	if apiErr.Retriable() {
		t.Fatalf("the daemon said retriable: true; the test needs a non-retriable 429")
	}
	if waits := sl.got(); len(waits) != 0 {
		t.Errorf("the SDK waited %v before returning a 429 the daemon marked retriable: false; want no retry", waits)
	}
}

func TestStreamDeliversTheErrorEvent(t *testing.T) {
	d := startDaemon(t, "", fake.Options{})
	d.Fake.FailNext(engine.KindWorkerReset, 2)
	c := newClient(t, d.URL, sdk.Options{})
	adm, err := c.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var failed *sdk.ErrorEvent
	for ev, err := range c.Stream(t.Context(), adm.TaskId) {
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := ev.(*sdk.Metrics); !ok { // metrics frames are optional
			names = append(names, ev.EventName())
		}
		if e, ok := ev.(*sdk.ErrorEvent); ok {
			failed = e
		}
	}
	if got := strings.Join(names, ","); got != "started,token,token,error" {
		t.Errorf("events %s, want started,token,token,error", got)
	}
	if failed == nil || failed.Code != client.WORKERRESET || failed.Message == "" {
		t.Errorf("error event %+v, want WORKER_RESET with a message", failed)
	}
}

func TestErrorsAreAPIErrors(t *testing.T) {
	d := startDaemon(t, "", fake.Options{})
	tests := []struct {
		name     string
		key      string
		call     func(c *sdk.Client) error
		status   int
		wantCode client.ErrorKind
	}{
		{"unknown task", "", func(c *sdk.Client) error { _, err := c.Task(t.Context(), uuid.New()); return err }, 404, client.NOTFOUND},
		{"wrong key", "wrong-key-0123456789", func(c *sdk.Client) error { _, err := c.Capabilities(t.Context()); return err }, 403, client.FORBIDDEN},
		{"unknown model", "", func(c *sdk.Client) error {
			_, err := c.Submit(t.Context(), sdk.Completion("no-such-model", "hi"))
			return err
		}, 503, client.POOLUNAVAILABLE},
		{"stream of an unknown task", "", func(c *sdk.Client) error {
			for _, err := range c.Stream(t.Context(), uuid.New()) {
				return err
			}
			return nil
		}, 404, client.NOTFOUND},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, d.URL, sdk.Options{APIKey: tt.key})
			err := tt.call(c)
			var apiErr *sdk.APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tt.status || apiErr.Envelope.Code != tt.wantCode {
				t.Fatalf("err = %v, want HTTP %d %s", err, tt.status, tt.wantCode)
			}
			if apiErr.CorrelationID == "" {
				t.Error("no correlation id")
			}
		})
	}
}

func TestHelpersAgainstTheDaemon(t *testing.T) {
	d := startDaemon(t, "", fake.Options{})
	c := newClient(t, d.URL, sdk.Options{})
	ctx := t.Context()
	caps, err := c.Capabilities(ctx)
	if err != nil || len(caps.Pools) != 1 || caps.Pools[0].ModelId != testdaemon.ModelID {
		t.Fatalf("capabilities %+v, %v", caps, err)
	}
	h, err := c.PoolHealth(ctx, testdaemon.PoolID)
	if err != nil || !h.Ready {
		t.Fatalf("health %+v, %v", h, err)
	}
	adm, err := c.Submit(ctx, sdk.Completion(testdaemon.ModelID, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range c.Stream(ctx, adm.TaskId) {
		if err != nil {
			t.Fatal(err)
		}
	}
	st, err := c.Task(ctx, adm.TaskId)
	if err != nil || st.State != client.Succeeded {
		t.Fatalf("task %+v, %v", st, err)
	}
	s, err := c.Session(ctx, st.SessionId)
	if err != nil || s.Turns != 1 {
		t.Fatalf("session %+v, %v", s, err)
	}
	if err := c.DeleteSession(ctx, st.SessionId); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Session(ctx, st.SessionId); err == nil {
		t.Fatal("session still there after DeleteSession")
	}
	ref, err := c.PutArtifact(ctx, client.Artifact{Kind: "plan", Content: map[string]any{"steps": []any{"a"}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Artifact(ctx, ref.Id)
	if err != nil || got.Id != ref.Id || got.Content["steps"] == nil {
		t.Fatalf("artifact %+v, %v", got, err)
	}
	replica := testdaemon.PoolID + "/0" // a "/" in the path segment: escaped as %2F
	if dr, err := c.DrainReplica(ctx, testdaemon.PoolID, replica, time.Minute); err != nil || dr.DeadlineMs != 60000 {
		t.Fatalf("drain replica %+v, %v", dr, err)
	}
	if h, err := c.PoolHealth(ctx, testdaemon.PoolID); err != nil || h.Ready || h.Draining || (*h.Replicas)[0].State != client.ReplicaHealthStateDraining {
		t.Fatalf("health after draining the only replica %+v, %v", h, err)
	}
	if r, err := c.ResumeReplica(ctx, testdaemon.PoolID, replica); err != nil || r.Id != replica || r.State != client.ReplicaHealthStateReady {
		t.Fatalf("resume %+v, %v", r, err)
	}
	var apiErr *sdk.APIError
	if _, err := c.DrainReplica(ctx, testdaemon.PoolID, "nope", time.Minute); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Fatalf("drain of an unknown replica: %v, want a 404", err)
	}
	dr, err := c.DrainPool(ctx, testdaemon.PoolID, time.Second)
	if err != nil || dr.DeadlineMs != 1000 {
		t.Fatalf("drain %+v, %v", dr, err)
	}
	if h, err := c.PoolHealth(ctx, testdaemon.PoolID); err != nil || !h.Draining {
		t.Fatalf("health after drain %+v, %v", h, err)
	}
	if _, err := c.ReloadPool(ctx, testdaemon.PoolID, "models/other.gguf"); err == nil {
		t.Fatal("reloading an external (URL) pool succeeded")
	}
}

// sseServer answers every stream request with body and counts cancel requests.
func sseServer(t *testing.T, body string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var cancels atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/cancel") {
			cancels.Add(1)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &cancels
}

func TestStreamAgainstRawFrames(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		wantNames   string
		wantErr     string
		wantCancels int32
	}{
		{
			name:      "an unknown event is skipped",
			body:      "id: 0\nevent: started\ndata: {\"queue_position\":0,\"predicted_start_ms\":0}\n\nid: 1\nevent: future\ndata: {}\n\nid: 2\nevent: token\ndata: {\"t\":\"a\",\"i\":0}\n\nid: 3\nevent: end\ndata: {\"tokens_out\":1,\"decode_ms\":0,\"decode_time_ms\":0}\n\n",
			wantNames: "started,token,end",
		},
		{
			name:      "a protocol error ends the stream and leaves the task",
			body:      "id: 0\nevent: started\ndata: {\"queue_position\":0,\"predicted_start_ms\":0}\n\nevent: token\ndata: {}\n\n",
			wantNames: "started", wantErr: "frame without id",
		},
		{
			name:    "a malformed payload ends the stream and leaves the task",
			body:    "id: 0\nevent: token\ndata: {\"t\":1}\n\n",
			wantErr: "frame 0 (token)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cancels := sseServer(t, tt.body)
			c := newClient(t, srv.URL, sdk.Options{MaxReconnects: -1})
			var names []string
			var gotErr error
			for ev, err := range c.Stream(t.Context(), uuid.New()) {
				if err != nil {
					gotErr = err
					continue
				}
				names = append(names, ev.EventName())
			}
			if strings.Join(names, ",") != tt.wantNames {
				t.Errorf("events %v, want %s", names, tt.wantNames)
			}
			if (tt.wantErr == "") != (gotErr == nil) || (gotErr != nil && !strings.Contains(gotErr.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", gotErr, tt.wantErr)
			}
			if got := cancels.Load(); got != tt.wantCancels {
				t.Errorf("%d cancel requests, want %d", got, tt.wantCancels)
			}
		})
	}
}

// TestHeartbeatsDoNotCountTowardsTheFrameLimit guards that readFrame's 8 MiB bound is per
// frame: the keep-alive comment blocks read while waiting for the next frame (a queued batch
// task waits long: ~600k heartbeats are 100 min at stream.heartbeat 10ms) are not part of it,
// or the next small frame would end the stream with a protocol error.
func TestHeartbeatsDoNotCountTowardsTheFrameLimit(t *testing.T) {
	const beat = ": keep-alive\n\n"
	body := "id: 0\nevent: started\ndata: {\"queue_position\":5,\"predicted_start_ms\":0}\n\n" +
		strings.Repeat(beat, (8<<20)/len(beat)+1) +
		"id: 1\nevent: token\ndata: {\"t\":\"a\",\"i\":0}\n\n" +
		"id: 2\nevent: end\ndata: {\"tokens_out\":1,\"decode_ms\":0,\"decode_time_ms\":0}\n\n"
	srv, _ := sseServer(t, body)
	c := newClient(t, srv.URL, sdk.Options{MaxReconnects: -1})
	var names []string
	for ev, err := range c.Stream(t.Context(), uuid.New()) {
		if err != nil {
			t.Fatalf("after %v: %v", names, err)
		}
		names = append(names, ev.EventName())
	}
	if got := strings.Join(names, ","); got != "started,token,end" {
		t.Errorf("events %s, want started,token,end", got)
	}
}

func TestContextEndCancelsTheTask(t *testing.T) {
	d := startDaemon(t, "stream: {cancel_on_disconnect: false}", fake.Options{})
	d.Fake.Pause()
	c := newClient(t, d.URL, sdk.Options{})
	adm, err := c.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var errs []error
	for ev, err := range c.Stream(ctx, adm.TaskId) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, ok := ev.(*sdk.Started); ok {
			cancel() // the caller gives up while the task runs
		}
	}
	if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Fatalf("errors %v, want one context.Canceled", errs)
	}
	st, err := c.Task(t.Context(), adm.TaskId)
	if err != nil || st.State != client.Canceled {
		t.Fatalf("task %+v, %v; want canceled", st, err)
	}
}

// TestResumeAfterTheDaemonCanceledOnDisconnect: with the daemon's default
// stream.cancel_on_disconnect the drop cancels the task once the daemon sees it (its last
// reader gone: the client comes back after that); the resumed stream still delivers every
// event once and ends with end{canceled: true}, as the package documentation says.
func TestResumeAfterTheDaemonCanceledOnDisconnect(t *testing.T) {
	d := startDaemon(t, "", fake.Options{})
	d.Fake.Pause() // no token before the drop
	proxy := newCuttingProxy(t, d.URL, 1, 40)
	var sl noSleep
	c := newClient(t, proxy.url(), sdk.Options{Sleep: sl.sleep})
	adm, err := c.Submit(t.Context(), sdk.Completion(testdaemon.ModelID, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	// The client reconnects once the daemon has seen the drop: a reader back before that
	// would still be reading the task, and a drop that leaves a reader cancels nothing.
	sl.then = func() {
		for {
			st, err := c.Task(t.Context(), adm.TaskId)
			if err != nil || st.State == client.Canceled {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	var names []string
	var end *sdk.End
	for ev, err := range c.Stream(t.Context(), adm.TaskId) {
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := ev.(*sdk.Metrics); !ok {
			names = append(names, ev.EventName())
		}
		if e, ok := ev.(*sdk.End); ok {
			end = e
		}
	}
	if n := proxy.cuts(); n != 1 {
		t.Fatalf("the proxy cut %d streams, want 1", n)
	}
	if strings.Join(names, ",") != "started,end" || end == nil || !end.Canceled {
		t.Fatalf("events %v, end %+v; want started then end{canceled}", names, end)
	}
}

// TestStreamAfterTheFinalEventEndsQuietly guards that a resume with sdk.After(id) after the
// final event (a caller that saved the end's id) ends the iteration without an event or an
// error: the daemon answers it with nothing more (as README documents), which the SDK must
// not take for a dropped connection to reopen MaxReconnects times and then fail.
func TestStreamAfterTheFinalEventEndsQuietly(t *testing.T) {
	d := startDaemon(t, "", fake.Options{})
	var sl noSleep
	c := newClient(t, d.URL, sdk.Options{Sleep: sl.sleep})
	req := sdk.Completion(testdaemon.ModelID, "hi")
	req.MaxTokens = 3
	adm, err := c.Submit(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	last := int64(-1)
	for ev, err := range c.Stream(t.Context(), adm.TaskId) {
		if err != nil {
			t.Fatal(err)
		}
		last = ev.EventID() // the End's id once the loop is over
	}
	// Another reader resumes after the final event: the stream is over, nothing is missing.
	for ev, err := range c.Stream(t.Context(), adm.TaskId, sdk.After(last)) {
		if err != nil {
			t.Errorf("resuming after the final event (id %d): %v; want the iteration to end without an error", last, err)
			continue
		}
		t.Errorf("event %T after the final event", ev)
	}
	if waits := sl.got(); len(waits) != 0 {
		t.Errorf("%d reconnects to a stream that had ended", len(waits))
	}
}
