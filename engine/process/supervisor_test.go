package process

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// waitLimit is a safety net so that a broken test fails instead of hanging; no test asserts
// on how long anything takes.
const waitLimit = 30 * time.Second

// recorder collects OnState calls.
type recorder struct {
	mu     sync.Mutex
	states []State
	ch     chan State
}

func newRecorder() *recorder { return &recorder{ch: make(chan State, 256)} }

func (r *recorder) OnState(s State) {
	r.mu.Lock()
	r.states = append(r.states, s)
	r.mu.Unlock()
	select {
	case r.ch <- s:
	default:
	}
}

func (r *recorder) history() []State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.states)
}

// waitFor consumes reported states until want is seen.
func (r *recorder) waitFor(t *testing.T, want State) {
	t.Helper()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		select {
		case s := <-r.ch:
			if s == want {
				return
			}
		case <-timeout.C:
			t.Fatalf("state %s never reported; history %v", want, r.history())
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// harness builds Options that run the helper with short timings.
type harness struct {
	t   *testing.T
	dir string
	rec *recorder
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, dir: t.TempDir(), rec: newRecorder()}
}

func (h *harness) options(env ...string) Options {
	return Options{
		Argv: []string{os.Args[0], "--port", "{port}"},
		// atexit_sleep_ms: a race-enabled helper otherwise sleeps 1 s when it exits with 0.
		Env:                    append([]string{"GO_WANT_HELPER_PROCESS=1", "HELPER_DIR=" + h.dir, "GORACE=atexit_sleep_ms=0"}, env...),
		Health:                 HTTPHealth("/health"),
		StartTimeout:           20 * time.Second,
		StartingHealthInterval: 10 * time.Millisecond,
		HealthInterval:         10 * time.Millisecond,
		HealthTimeout:          2 * time.Second,
		RestartBackoff:         5 * time.Millisecond,
		RestartBackoffMax:      20 * time.Millisecond,
		StopGrace:              10 * time.Second,
		OnState:                h.rec.OnState,
		Logger:                 slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (h *harness) newSupervisor(o Options) *Supervisor {
	h.t.Helper()
	s, err := New(o)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	// Cleanups run last-in first-out: stop, then check for leftover processes.
	h.t.Cleanup(func() { assertNoProcesses(h.t, h.dir) })
	h.t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			h.t.Errorf("Stop: %v", err)
		}
	})
	return s
}

func (h *harness) lines(name string) []string { return helperLines(h.t, h.dir, name) }

func TestOptionsValidation(t *testing.T) {
	health := HTTPHealth("/health")
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"minimal", Options{Argv: []string{"x"}, Health: health}, true},
		{"no argv", Options{Health: health}, false},
		{"empty command", Options{Argv: []string{""}, Health: health}, false},
		{"no health", Options{Argv: []string{"x"}}, false},
		{"negative duration", Options{Argv: []string{"x"}, Health: health, StopGrace: -1}, false},
		{"negative restarts", Options{Argv: []string{"x"}, Health: health, MaxRestarts: -1}, false},
		{"negative unhealthy", Options{Argv: []string{"x"}, Health: health, UnhealthyAfter: -1}, false},
		{"never restart an unhealthy replica", Options{Argv: []string{"x"}, Health: health, RestartUnhealthyAfter: -1}, true},
		{"no log cap", Options{Argv: []string{"x"}, Health: health, LogMaxBytes: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.o)
			if (err == nil) != tt.ok {
				t.Fatalf("New error = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("error %v does not match ErrInvalidOptions", err)
			}
			if err == nil && (s.State() != StateIdle || s.BaseURL() != "" || s.PID() != 0 || s.LastError() != nil) {
				t.Fatalf("new supervisor not idle: %v %q %d %v", s.State(), s.BaseURL(), s.PID(), s.LastError())
			}
		})
	}
	o, _ := Options{Argv: []string{"x"}, Health: health}.withDefaults()
	if o.StartTimeout != DefaultStartTimeout || o.HealthInterval != DefaultHealthInterval ||
		o.StartingHealthInterval != DefaultStartingHealthInterval || o.MaxRestarts != DefaultMaxRestarts ||
		o.RestartWindow != DefaultRestartWindow || o.StopGrace != DefaultStopGrace ||
		o.RestartBackoff != DefaultRestartBackoff || o.RestartBackoffMax != DefaultRestartBackoffMax ||
		o.UnhealthyAfter != DefaultUnhealthyAfter || o.RestartUnhealthyAfter != DefaultRestartUnhealthyAfter ||
		o.LogMaxBytes != DefaultLogMaxBytes {
		t.Fatalf("defaults not applied: %+v", o)
	}
	o, _ = Options{Argv: []string{"x"}, Health: health, RestartUnhealthyAfter: -1, LogMaxBytes: -1}.withDefaults()
	if o.RestartUnhealthyAfter >= 0 || o.LogMaxBytes >= 0 {
		t.Fatalf("negative (off) values were replaced: %+v", o)
	}
}

func TestStateString(t *testing.T) {
	want := map[State]string{
		StateIdle: "idle", StateStarting: "starting", StateRunning: "running", StateUnhealthy: "unhealthy",
		StateRestarting: "restarting", StateFailed: "failed", StateStopped: "stopped", State(99): "State(99)",
	}
	for s, w := range want {
		if s.String() != w {
			t.Errorf("%d.String() = %q, want %q", int(s), s.String(), w)
		}
	}
}

func TestStartAndGracefulStop(t *testing.T) {
	h := newHarness(t)
	o := h.options("HELPER_READY_AFTER_MS=150")
	o.Env = append(o.Env, "HELPER_PORT_ENV={port}")
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if s.State() != StateRunning {
		t.Fatalf("State = %s", s.State())
	}
	ports := h.lines("ports")
	if len(ports) != 1 || s.BaseURL() != "http://127.0.0.1:"+ports[0] {
		t.Fatalf("BaseURL %q, helper ports %v", s.BaseURL(), ports)
	}
	resp, err := http.Get(s.BaseURL() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health status %d", resp.StatusCode)
	}
	pid := s.PID()
	if strconv.Itoa(pid) != h.lines("pids")[0] {
		t.Fatalf("PID = %d, helper says %v", pid, h.lines("pids"))
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrAlreadyStarted) {
		t.Fatalf("second Start = %v", err)
	}

	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := h.lines("terms"); !slices.Equal(got, []string{strconv.Itoa(pid)}) {
		t.Fatalf("helper did not exit on SIGTERM: terms %v", got)
	}
	if s.State() != StateStopped || s.PID() != 0 {
		t.Fatalf("after Stop: state %s pid %d", s.State(), s.PID())
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Stop = %v", err)
	}
	want := []State{StateStarting, StateRunning, StateStopped}
	if got := h.rec.history(); !slices.Equal(got, want) {
		t.Fatalf("states %v, want %v", got, want)
	}
	assertNoProcesses(t, h.dir)
}

func TestStartFailure(t *testing.T) {
	tests := []struct {
		name       string
		env        []string
		argv       []string
		tweak      func(*Options)
		wantInErr  []string
		wantIs     error // besides ErrStartFailed; nil: neither ErrExitedEarly nor ErrStartTimeout
		wantLaunch int
	}{
		{
			name:       "exits during start",
			env:        []string{"HELPER_EXIT_EARLY=1", "HELPER_EXIT_CODE=3", "HELPER_STDERR=boom: model file not found\n"},
			wantInErr:  []string{"process exited before becoming healthy: exit status 3", "output tail:", "boom: model file not found"},
			wantIs:     ErrExitedEarly,
			wantLaunch: 1,
		},
		{
			name:       "never healthy",
			env:        []string{"HELPER_NEVER_READY=1", "HELPER_STDOUT=loading model...\n"},
			tweak:      func(o *Options) { o.StartTimeout = 300 * time.Millisecond },
			wantInErr:  []string{"not healthy within 300ms", "loading model..."},
			wantIs:     ErrStartTimeout,
			wantLaunch: 1,
		},
		{
			name:      "command not found",
			argv:      []string{filepath.Join(os.TempDir(), "no-such-engine-binary"), "{port}"},
			wantInErr: []string{"no-such-engine-binary"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			o := h.options(tt.env...)
			if tt.argv != nil {
				o.Argv = tt.argv
			}
			if tt.tweak != nil {
				tt.tweak(&o)
			}
			s := h.newSupervisor(o)
			err := s.Start(context.Background())
			if !errors.Is(err, ErrStartFailed) {
				t.Fatalf("Start = %v, want ErrStartFailed", err)
			}
			for _, e := range []error{ErrExitedEarly, ErrStartTimeout} {
				if errors.Is(err, e) != errors.Is(e, tt.wantIs) {
					t.Errorf("errors.Is(%v, %v) = %t", err, e, !errors.Is(e, tt.wantIs))
				}
			}
			for _, w := range tt.wantInErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if s.State() != StateFailed || !errors.Is(s.LastError(), ErrStartFailed) {
				t.Fatalf("state %s last error %v", s.State(), s.LastError())
			}
			if n := len(h.lines("launches")); n != tt.wantLaunch {
				t.Fatalf("%d launches, want %d", n, tt.wantLaunch)
			}
			assertNoProcesses(t, h.dir) // already gone before Stop
			if err := s.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			if s.State() != StateStopped {
				t.Fatalf("state after Stop %s", s.State())
			}
		})
	}
}

func TestStartFailureTailIsBounded(t *testing.T) {
	h := newHarness(t)
	big := strings.Repeat("x", 10000) + "THE END"
	s := h.newSupervisor(h.options("HELPER_EXIT_EARLY=1", "HELPER_STDERR="+big))
	err := s.Start(context.Background())
	if err == nil {
		t.Fatal("Start succeeded")
	}
	msg := err.Error()
	if !strings.HasSuffix(msg, "THE ENDhelper exiting with 1") {
		t.Fatalf("error does not end with the output's end: ...%q", msg[max(0, len(msg)-50):])
	}
	if len(msg) > OutputTailBytes+500 {
		t.Fatalf("error is %d bytes; the tail should be bounded to %d", len(msg), OutputTailBytes)
	}
}

func TestStartContextCancelled(t *testing.T) {
	h := newHarness(t)
	o := h.options("HELPER_NEVER_READY=1", "HELPER_IGNORE_TERM=1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inner := o.Health
	o.Health = func(hctx context.Context, url string) (bool, error) {
		ready, err := inner(hctx, url)
		if err == nil {
			cancel() // the helper is up and answers "loading": give up on it
		}
		return ready, err
	}
	s := h.newSupervisor(o)
	err := s.Start(ctx)
	if !errors.Is(err, ErrStartFailed) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want ErrStartFailed and context.Canceled", err)
	}
	if s.State() != StateStopped {
		t.Fatalf("state %s", s.State())
	}
	if n := len(h.lines("pids")); n != 1 {
		t.Fatalf("%d helper processes, want 1", n)
	}
	assertNoProcesses(t, h.dir)
}

func TestRestartAfterUnexpectedExit(t *testing.T) {
	h := newHarness(t)
	s := h.newSupervisor(h.options("HELPER_EXIT_AFTER_MS=200", "HELPER_EXIT_LAUNCHES=1", "HELPER_EXIT_CODE=7"))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	url := s.BaseURL()
	if n := s.Restarts(); n != 0 {
		t.Fatalf("Restarts() = %d before any restart", n)
	}
	h.rec.waitFor(t, StateRestarting)
	h.rec.waitFor(t, StateRunning)
	if n := len(h.lines("launches")); n != 2 {
		t.Fatalf("%d launches, want 2", n)
	}
	if n := s.Restarts(); n != 1 {
		t.Fatalf("Restarts() = %d after one relaunch, want 1", n)
	}
	if err := s.LastError(); err == nil || !strings.Contains(err.Error(), "exit status 7") ||
		!strings.Contains(err.Error(), "helper exiting with 7") {
		t.Fatalf("LastError = %v", err)
	}
	// The relaunch keeps the port while it is free (pickPort; TestPickPort covers a taken one),
	// so that the replica's URL survives a restart.
	ports := h.lines("ports")
	if "http://127.0.0.1:"+ports[0] != url || ports[1] != ports[0] || s.BaseURL() != url {
		t.Fatalf("first launch on %s (BaseURL %s), relaunch on %s (BaseURL %s): want the same port",
			ports[0], url, ports[1], s.BaseURL())
	}
	// The health checks may see the dying helper first (three failures: unhealthy) when the
	// exit is reaped late, as on a loaded machine.
	want := []State{StateStarting, StateRunning, StateRestarting, StateRunning}
	late := []State{StateStarting, StateRunning, StateUnhealthy, StateRestarting, StateRunning}
	if got := h.rec.history(); !slices.Equal(got, want) && !slices.Equal(got, late) {
		t.Fatalf("states %v, want %v (or %v)", got, want, late)
	}
}

func TestBreakerTrips(t *testing.T) {
	h := newHarness(t)
	o := h.options("HELPER_EXIT_AFTER_MS=50")
	o.MaxRestarts = 2
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.rec.waitFor(t, StateFailed)
	err := s.LastError()
	if !errors.Is(err, ErrBreakerOpen) || !strings.Contains(err.Error(), "2 restarts within 5m0s") {
		t.Fatalf("LastError = %v", err)
	}
	// The first launch plus MaxRestarts relaunches.
	if n := len(h.lines("launches")); n != 3 {
		t.Fatalf("%d launches, want 3", n)
	}
	if s.State() != StateFailed || s.PID() != 0 {
		t.Fatalf("state %s pid %d", s.State(), s.PID())
	}
	assertNoProcesses(t, h.dir)
}

func TestBreakerWindow(t *testing.T) {
	// MaxRestarts is 1 and the first four launches exit: whether the breaker trips depends only
	// on whether the previous restart has left the window when the next one is due.
	tests := []struct {
		name     string
		step     time.Duration // how far the clock moves between two restarts
		launches int
		tripped  bool
	}{
		{"restarts an hour apart never accumulate", time.Hour, 5, false},
		{"restarts a minute apart trip the breaker at the second", time.Minute, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			o := h.options("HELPER_EXIT_AFTER_MS=30", "HELPER_EXIT_LAUNCHES=4")
			o.MaxRestarts = 1
			// A check that fails on a dying helper must not read this clock (which moves at
			// every read) for RestartUnhealthyAfter.
			o.RestartUnhealthyAfter = -1
			var mu sync.Mutex
			now, calls := time.Unix(0, 0), 0
			o.Now = func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				calls++
				now = now.Add(tt.step)
				return now
			}
			s := h.newSupervisor(o)
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			if tt.tripped {
				h.rec.waitFor(t, StateFailed)
			} else {
				for len(h.lines("launches")) < tt.launches || s.State() != StateRunning {
					h.rec.waitFor(t, StateRunning)
				}
			}
			if n := len(h.lines("launches")); n != tt.launches {
				t.Fatalf("%d launches, want %d", n, tt.launches)
			}
			err := s.LastError()
			if errors.Is(err, ErrBreakerOpen) != tt.tripped {
				t.Fatalf("LastError = %v, breaker tripped: want %t", err, tt.tripped)
			}
			if tt.tripped && !strings.Contains(err.Error(), "1 restarts within 5m0s") {
				t.Fatalf("LastError = %v", err)
			}
			if failed := slices.Contains(h.rec.history(), StateFailed); failed != tt.tripped {
				t.Fatalf("states %v: failed %t, want %t", h.rec.history(), failed, tt.tripped)
			}
			// The breaker consults the clock once per restart it considers: each failure of the
			// first launches, and the one that trips it.
			mu.Lock()
			defer mu.Unlock()
			if want := tt.launches - 1 + b2i(tt.tripped); calls != want {
				t.Fatalf("the breaker read the clock %d times, want %d", calls, want)
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestPickPort(t *testing.T) {
	// A port this test holds, and one it released.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldPort := held.Addr().(*net.TCPAddr).Port
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		prev     int
		wantPrev bool
	}{
		{"no previous port", 0, false},
		{"previous port free", freePort, true},
		{"previous port taken", heldPort, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickPort(tt.prev)
			if err != nil {
				t.Fatal(err)
			}
			if got <= 0 || got == heldPort || (got == tt.prev) != tt.wantPrev {
				t.Fatalf("pickPort(%d) = %d (held %d), want the previous port: %t", tt.prev, got, heldPort, tt.wantPrev)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	s, err := New(Options{Argv: []string{"x"}, Health: HTTPHealth("/"), RestartBackoff: 500 * time.Millisecond, RestartBackoffMax: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := s.backoff(i); got != w {
			t.Errorf("backoff(%d) = %s, want %s", i, got, w)
		}
	}
	if got := s.backoff(1000); got != 30*time.Second {
		t.Errorf("backoff(1000) = %s", got)
	}
}

func TestStopKillsWhenTermIgnored(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration
		ctx   func() (context.Context, context.CancelFunc)
	}{
		{"grace expires", 200 * time.Millisecond, func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }},
		{"ctx ends first", time.Hour, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			o := h.options("HELPER_IGNORE_TERM=1")
			o.StopGrace = tt.grace
			s := h.newSupervisor(o)
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := tt.ctx()
			defer cancel()
			if err := s.Stop(ctx); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if terms := h.lines("terms"); len(terms) != 0 {
				t.Fatalf("helper exited on SIGTERM though it ignores it: %v", terms)
			}
			if s.State() != StateStopped {
				t.Fatalf("state %s", s.State())
			}
			assertNoProcesses(t, h.dir)
		})
	}
}

func TestUnhealthyAndRecovery(t *testing.T) {
	h := newHarness(t)
	sick := filepath.Join(h.dir, "sick")
	o := h.options("HELPER_SICK_FILE=" + sick)
	o.UnhealthyAfter = 2
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sick, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h.rec.waitFor(t, StateUnhealthy)
	if err := s.LastError(); err == nil || !strings.Contains(err.Error(), "health check failed 2 times") {
		t.Fatalf("LastError = %v", err)
	}
	if err := os.Remove(sick); err != nil {
		t.Fatal(err)
	}
	h.rec.waitFor(t, StateRunning)
	if n := len(h.lines("launches")); n != 1 {
		t.Fatalf("unhealthy replica was restarted: %d launches", n)
	}
}

func TestStopDuringRestartBackoff(t *testing.T) {
	h := newHarness(t)
	o := h.options("HELPER_EXIT_AFTER_MS=50")
	o.RestartBackoff = time.Hour
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.rec.waitFor(t, StateRestarting)
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.State() != StateStopped {
		t.Fatalf("state %s", s.State())
	}
}

func TestStopBeforeStart(t *testing.T) {
	h := newHarness(t)
	s := h.newSupervisor(h.options())
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Stop = %v", err)
	}
	if s.State() != StateStopped {
		t.Fatalf("state %s", s.State())
	}
}

func TestConcurrentStops(t *testing.T) {
	h := newHarness(t)
	s := h.newSupervisor(h.options())
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Stop(context.Background()); err != nil {
				t.Error(err)
			}
			if s.State() != StateStopped {
				t.Errorf("Stop returned in state %s", s.State())
			}
		}()
	}
	wg.Wait()
}

func TestLogFile(t *testing.T) {
	h := newHarness(t)
	logPath := filepath.Join(h.dir, "engine.log")
	if err := os.WriteFile(logPath, []byte("previous run\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := h.options("HELPER_STDOUT=hello-out\n", "HELPER_STDERR=hello-err\n", "HELPER_EXIT_AFTER_MS=100", "HELPER_EXIT_LAUNCHES=1")
	o.LogFile = logPath
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.rec.waitFor(t, StateRestarting)
	h.rec.waitFor(t, StateRunning)
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	got := string(data)
	if !strings.HasPrefix(got, "previous run\n") || strings.Count(got, "hello-out\n") != 2 ||
		strings.Count(got, "hello-err\n") != 2 || !strings.Contains(got, "helper exiting with 1") {
		t.Fatalf("log file:\n%s", got)
	}
}

func TestLogFileUnwritable(t *testing.T) {
	h := newHarness(t)
	o := h.options()
	o.LogFile = filepath.Join(h.dir, "missing-dir", "engine.log")
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); !errors.Is(err, ErrStartFailed) {
		t.Fatalf("Start = %v", err)
	}
	if len(h.lines("launches")) != 0 {
		t.Fatal("launched despite the log file error")
	}
}

func TestHTTPHealth(t *testing.T) {
	tests := []struct {
		status int
		ready  bool
		err    bool
	}{
		{http.StatusOK, true, false},
		{http.StatusNoContent, true, false},
		{http.StatusServiceUnavailable, false, false},
		{http.StatusInternalServerError, false, true},
		{http.StatusNotFound, false, true},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/health" {
					t.Errorf("path %q", r.URL.Path)
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			ready, err := HTTPHealth("/health")(context.Background(), srv.URL)
			if ready != tt.ready || (err != nil) != tt.err {
				t.Fatalf("HTTPHealth = %v, %v; want %v, err=%v", ready, err, tt.ready, tt.err)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		if ready, err := HTTPHealth("/health")(context.Background(), url); ready || err == nil {
			t.Fatalf("HTTPHealth = %v, %v", ready, err)
		}
	})
}

func TestStopDuringStart(t *testing.T) {
	h := newHarness(t)
	o := h.options("HELPER_NEVER_READY=1")
	var s *Supervisor
	stopped := make(chan error, 1)
	var once sync.Once
	inner := o.Health
	o.Health = func(ctx context.Context, url string) (bool, error) {
		ready, err := inner(ctx, url)
		if err == nil {
			// The helper is up: stop the supervisor from another goroutine.
			once.Do(func() { go func() { stopped <- s.Stop(context.Background()) }() })
		}
		return ready, err
	}
	s = h.newSupervisor(o)
	err := s.Start(context.Background())
	if !errors.Is(err, ErrStartFailed) || !errors.Is(err, ErrStopped) {
		t.Fatalf("Start = %v, want ErrStartFailed and ErrStopped", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if s.State() != StateStopped {
		t.Fatalf("state %s", s.State())
	}
	if got := h.lines("terms"); len(got) != 1 {
		t.Fatalf("helper was not stopped gracefully: terms %v", got)
	}
	assertNoProcesses(t, h.dir)
}

// fakeClock is an Options.Now that moves only when the test moves it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// A replica whose engine hangs with its process alive (its health checks time out) is
// terminated and relaunched once its checks have failed for RestartUnhealthyAfter.
func TestRestartWhenUnhealthyTooLong(t *testing.T) {
	h := newHarness(t)
	o := h.options("HELPER_HANG_AFTER_MS=100", "HELPER_HANG_LAUNCHES=1")
	o.HealthTimeout = 250 * time.Millisecond
	o.UnhealthyAfter = 2
	o.RestartUnhealthyAfter = time.Minute
	clock := &fakeClock{now: time.Unix(0, 0)}
	o.Now = clock.Now
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := s.PID()
	h.rec.waitFor(t, StateUnhealthy)
	if n := len(h.lines("launches")); n != 1 {
		t.Fatalf("restarted before RestartUnhealthyAfter passed: %d launches", n)
	}
	clock.Add(time.Minute)
	h.rec.waitFor(t, StateRestarting)
	h.rec.waitFor(t, StateRunning)
	if n := len(h.lines("launches")); n != 2 {
		t.Fatalf("%d launches, want 2", n)
	}
	if pid := s.PID(); pid == first || pid == 0 {
		t.Fatalf("PID %d after the restart, first process %d", pid, first)
	}
	// Terminated as Stop does: SIGTERM first (the helper records it), nothing of it left.
	if terms := h.lines("terms"); !slices.Equal(terms, []string{strconv.Itoa(first)}) {
		t.Fatalf("terms %v, want the first process %d", terms, first)
	}
	if err := syscall.Kill(first, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the hung process %d is still there: %v", first, err)
	}
	if n := s.Restarts(); n != 1 {
		t.Fatalf("Restarts() = %d, want 1", n)
	}
	if err := s.LastError(); err == nil || !strings.Contains(err.Error(), "health checks failed for 1m0s") ||
		!strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("LastError = %v, want the time and the last health error", err)
	}
	want := []State{StateStarting, StateRunning, StateUnhealthy, StateRestarting, StateRunning}
	if got := h.rec.history(); !slices.Equal(got, want) {
		t.Fatalf("states %v, want %v", got, want)
	}
}

// Restarts for unhealthiness count against the breaker like crashes.
func TestUnhealthyRestartsTripTheBreaker(t *testing.T) {
	h := newHarness(t)
	o := h.options("HELPER_HANG_AFTER_MS=100") // every launch hangs once it was healthy
	o.HealthTimeout = 250 * time.Millisecond
	o.UnhealthyAfter = 2
	o.RestartUnhealthyAfter = time.Millisecond // as soon as Unhealthy
	o.MaxRestarts = 1
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.rec.waitFor(t, StateFailed)
	err := s.LastError()
	if !errors.Is(err, ErrBreakerOpen) || !strings.Contains(err.Error(), "1 restarts within 5m0s") ||
		!strings.Contains(err.Error(), "health checks failed for") {
		t.Fatalf("LastError = %v", err)
	}
	if n := len(h.lines("launches")); n != 2 {
		t.Fatalf("%d launches, want 2", n)
	}
	want := []State{StateStarting, StateRunning, StateUnhealthy, StateRestarting, StateRunning, StateUnhealthy, StateFailed}
	if got := h.rec.history(); !slices.Equal(got, want) {
		t.Fatalf("states %v, want %v", got, want)
	}
	if s.State() != StateFailed || s.PID() != 0 {
		t.Fatalf("state %s pid %d", s.State(), s.PID())
	}
	assertNoProcesses(t, h.dir) // the second hung process was terminated too
}

// A replica that recovers before RestartUnhealthyAfter keeps its process, and a success
// starts the count again: two failure runs are not added up.
func TestUnhealthyRecoversBeforeRestart(t *testing.T) {
	h := newHarness(t)
	sick := filepath.Join(h.dir, "sick")
	o := h.options("HELPER_SICK_FILE=" + sick)
	o.UnhealthyAfter = 2
	o.RestartUnhealthyAfter = time.Minute
	clock := &fakeClock{now: time.Unix(0, 0)}
	o.Now = clock.Now
	failed := make(chan struct{}, 1000)
	inner := o.Health
	o.Health = func(ctx context.Context, url string) (bool, error) {
		ready, err := inner(ctx, url)
		if !ready {
			select {
			case failed <- struct{}{}:
			default:
			}
		}
		return ready, err
	}
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// waitFailures waits for n failed checks that began after it was called.
	waitFailures := func(n int) {
		t.Helper()
		for len(failed) > 0 {
			<-failed
		}
		timeout := time.NewTimer(waitLimit)
		defer timeout.Stop()
		for range n + 1 {
			select {
			case <-failed:
			case <-timeout.C:
				t.Fatal("no failed health checks")
			}
		}
	}
	for run := range 2 {
		if err := os.WriteFile(sick, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		h.rec.waitFor(t, StateUnhealthy)
		clock.Add(59 * time.Second) // the two runs together: 118 s
		waitFailures(3)
		if err := os.Remove(sick); err != nil {
			t.Fatal(err)
		}
		h.rec.waitFor(t, StateRunning)
		if n := len(h.lines("launches")); n != 1 {
			t.Fatalf("run %d: restarted before RestartUnhealthyAfter: %d launches", run, n)
		}
	}
	want := []State{StateStarting, StateRunning, StateUnhealthy, StateRunning, StateUnhealthy, StateRunning}
	if got := h.rec.history(); !slices.Equal(got, want) {
		t.Fatalf("states %v, want %v", got, want)
	}
}

// Output past LogMaxBytes moves to LogFile.1: the two files hold the latest output, each at
// most the cap plus the one write that began it.
func TestLogFileCapped(t *testing.T) {
	h := newHarness(t)
	logPath := filepath.Join(h.dir, "engine.log")
	line := strings.Repeat("x", 99) + "\n"
	const lines, capBytes = 2000, 16 << 10
	o := h.options("HELPER_STDOUT="+line, "HELPER_STDOUT_REPEAT="+strconv.Itoa(lines))
	o.LogFile = logPath
	o.LogMaxBytes = capBytes
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(context.Background()); err != nil { // the output is drained
		t.Fatal(err)
	}
	cur, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	prev, err := os.ReadFile(logPath + ".1")
	if err != nil {
		t.Fatalf("no rotated file: %v (log file %d bytes)", err, len(cur))
	}
	// One write is at most what exec copies from the pipe at once (32 KiB).
	const oneWrite = 32 << 10
	if len(cur) == 0 || len(cur) > capBytes+oneWrite || len(prev) == 0 || len(prev) > capBytes+oneWrite {
		t.Fatalf("log file %d bytes, rotated %d bytes; cap %d", len(cur), len(prev), capBytes)
	}
	if all := strings.Repeat(line, lines); !strings.HasSuffix(all, string(prev)+string(cur)) {
		t.Fatalf("the two files are not the output's end: %d + %d bytes", len(prev), len(cur))
	}
	for _, p := range []string{logPath, logPath + ".1"} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v", p, st.Mode(), err)
		}
	}
}
