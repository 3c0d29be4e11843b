package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults applied to zero-valued Options fields.
const (
	DefaultStartTimeout           = 60 * time.Second
	DefaultStartingHealthInterval = time.Second
	DefaultHealthInterval         = 5 * time.Second
	DefaultHealthTimeout          = 5 * time.Second
	DefaultUnhealthyAfter         = 3
	DefaultRestartBackoff         = 500 * time.Millisecond
	DefaultRestartBackoffMax      = 30 * time.Second
	DefaultMaxRestarts            = 5
	DefaultRestartWindow          = 5 * time.Minute
	DefaultStopGrace              = 10 * time.Second
	DefaultRestartUnhealthyAfter  = time.Minute
	DefaultLogMaxBytes            = 64 << 20
)

// PortPlaceholder is replaced by the replica's port in Argv and Env.
const PortPlaceholder = "{port}"

// waitDelay bounds how long reaping a process waits for its output pipe to close once the
// process has exited (a grandchild may still hold it).
const waitDelay = time.Second

// Errors reported by the supervisor. Match them with errors.Is.
var (
	// ErrStartFailed: the replica did not become healthy (Start's error).
	ErrStartFailed = errors.New("engine process failed to start")
	// ErrBreakerOpen: the replica kept dying and the supervisor gave up (LastError).
	ErrBreakerOpen = errors.New("engine process restart breaker open")
	// ErrStopped: the supervisor was stopped.
	ErrStopped = errors.New("engine process supervisor stopped")
	// ErrAlreadyStarted: Start was called twice.
	ErrAlreadyStarted = errors.New("engine process supervisor already started")
	// ErrInvalidOptions: an Options field is missing or out of range.
	ErrInvalidOptions = errors.New("invalid engine process options")
	// ErrExitedEarly: the process exited before it became healthy (wrapped by ErrStartFailed).
	ErrExitedEarly = errors.New("process exited before becoming healthy")
	// ErrStartTimeout: the process was not healthy within StartTimeout (wrapped by
	// ErrStartFailed).
	ErrStartTimeout = errors.New("start timeout")
)

// State is the supervisor's view of its replica.
type State int

// States; see the package doc for the transitions.
const (
	StateIdle       State = iota // not started yet
	StateStarting                // first launch, waiting for health
	StateRunning                 // healthy
	StateUnhealthy               // running, but health checks keep failing
	StateRestarting              // the process died; backing off or waiting for the relaunch's health
	StateFailed                  // start failed or the breaker tripped; nothing runs
	StateStopped                 // Stop was called
)

func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateStarting:
		return "starting"
	case StateRunning:
		return "running"
	case StateUnhealthy:
		return "unhealthy"
	case StateRestarting:
		return "restarting"
	case StateFailed:
		return "failed"
	case StateStopped:
		return "stopped"
	default:
		return "State(" + strconv.Itoa(int(s)) + ")"
	}
}

// HealthFunc reports whether the replica at baseURL is ready. It must return promptly when
// ctx is done. (false, nil) means alive but not ready (a model still loading).
type HealthFunc func(ctx context.Context, baseURL string) (ready bool, err error)

// Options configures a Supervisor. Argv and Health are required; zero durations and counts
// take the defaults above.
type Options struct {
	// Argv is the command and its arguments; PortPlaceholder is replaced by the port.
	Argv []string
	// Env is added to os.Environ() (PortPlaceholder is replaced here too).
	Env []string
	// Withheld names variables of os.Environ() the process does not inherit (the daemon's own
	// secrets: its clients' API keys).
	Withheld []string
	// Dir is the working directory (default: the daemon's).
	Dir string
	// Health checks readiness; see HTTPHealth.
	Health HealthFunc
	// StartTimeout bounds each wait for a launched process to become healthy (default 60 s).
	StartTimeout time.Duration
	// StartingHealthInterval is the health poll interval while waiting for a launch to
	// become healthy (default 1 s).
	StartingHealthInterval time.Duration
	// HealthInterval is the health poll interval while running (default 5 s).
	HealthInterval time.Duration
	// HealthTimeout bounds one health check (default 5 s).
	HealthTimeout time.Duration
	// UnhealthyAfter is the number of consecutive failed checks that make a running replica
	// Unhealthy (default 3).
	UnhealthyAfter int
	// RestartBackoff is the first restart delay, doubled per consecutive failed attempt
	// (default 500 ms), up to RestartBackoffMax (default 30 s).
	RestartBackoff    time.Duration
	RestartBackoffMax time.Duration
	// MaxRestarts restarts within RestartWindow trip the breaker (defaults 5 and 5 min).
	MaxRestarts   int
	RestartWindow time.Duration
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL (default 10 s).
	StopGrace time.Duration
	// RestartUnhealthyAfter is how long the health checks of a running replica may keep
	// failing, counted from the first failed check of the run, before the supervisor
	// terminates the process as Stop does and restarts it as after a crash (backoff and
	// breaker included): an engine that hangs with its process alive would otherwise hold
	// its replica Unhealthy for good (default 1 min; negative: never restart it).
	RestartUnhealthyAfter time.Duration
	// LogFile, when set, receives the process output (appended; created with mode 0600).
	LogFile string
	// LogMaxBytes caps LogFile: before a write would take it past this size the file becomes
	// LogFile.1, replacing the previous one, and output goes on in a new LogFile (default
	// 64 MiB; negative: no cap).
	LogMaxBytes int64
	// OnState, when set, is called on every state change; see the package doc.
	OnState func(State)
	// Secrets are values (API keys) that appear in Argv or Env or that the process may print:
	// they are replaced by Redacted in the supervisor's logs, the log file and the output tail.
	Secrets []string
	// Logger receives the supervisor's logs (default: discard).
	Logger *slog.Logger
	// Now is the clock of the breaker window and of RestartUnhealthyAfter (default time.Now).
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if len(o.Argv) == 0 || o.Argv[0] == "" {
		return o, fmt.Errorf("%w: Argv is empty", ErrInvalidOptions)
	}
	if o.Health == nil {
		return o, fmt.Errorf("%w: Health is required", ErrInvalidOptions)
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"StartTimeout", &o.StartTimeout, DefaultStartTimeout},
		{"StartingHealthInterval", &o.StartingHealthInterval, DefaultStartingHealthInterval},
		{"HealthInterval", &o.HealthInterval, DefaultHealthInterval},
		{"HealthTimeout", &o.HealthTimeout, DefaultHealthTimeout},
		{"RestartBackoff", &o.RestartBackoff, DefaultRestartBackoff},
		{"RestartBackoffMax", &o.RestartBackoffMax, DefaultRestartBackoffMax},
		{"RestartWindow", &o.RestartWindow, DefaultRestartWindow},
		{"StopGrace", &o.StopGrace, DefaultStopGrace},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return o, fmt.Errorf("%w: %s %s is negative", ErrInvalidOptions, d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	switch {
	case o.UnhealthyAfter < 0:
		return o, fmt.Errorf("%w: UnhealthyAfter %d is negative", ErrInvalidOptions, o.UnhealthyAfter)
	case o.MaxRestarts < 0:
		return o, fmt.Errorf("%w: MaxRestarts %d is negative", ErrInvalidOptions, o.MaxRestarts)
	}
	if o.UnhealthyAfter == 0 {
		o.UnhealthyAfter = DefaultUnhealthyAfter
	}
	if o.MaxRestarts == 0 {
		o.MaxRestarts = DefaultMaxRestarts
	}
	if o.RestartUnhealthyAfter == 0 { // negative: never
		o.RestartUnhealthyAfter = DefaultRestartUnhealthyAfter
	}
	if o.LogMaxBytes == 0 { // negative: no cap
		o.LogMaxBytes = DefaultLogMaxBytes
	}
	if o.RestartBackoffMax < o.RestartBackoff {
		o.RestartBackoffMax = o.RestartBackoff
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Argv = append([]string(nil), o.Argv...)
	o.Secrets = append([]string(nil), o.Secrets...)
	o.Env = append([]string(nil), o.Env...)
	return o, nil
}

// proc is one launched process.
type proc struct {
	cmd     *exec.Cmd
	pgid    int
	baseURL string
	out     *output
	exited  chan struct{} // closed once the process is reaped
	waitErr error         // cmd.Wait's result; read after exited is closed
	// groupKilled: the group got SIGKILL as the process exited, so nothing of it is left, and
	// its id, free again, may now name another process's group. Written by the owner goroutine,
	// read by Stop once that goroutine has returned.
	groupKilled bool
}

func (p *proc) exitStatus() string {
	if p.waitErr == nil {
		return "exit status 0"
	}
	return p.waitErr.Error()
}

// withTail appends the process's output tail to err.
func (p *proc) withTail(err error) error {
	tail := strings.TrimRight(p.out.tail.String(), "\n")
	if tail == "" {
		return fmt.Errorf("%w (no output)", err)
	}
	return fmt.Errorf("%w; output tail:\n%s", err, tail)
}

// Supervisor runs and watches one replica process. Create it with New.
type Supervisor struct {
	opts Options
	log  *slog.Logger

	notifyMu sync.Mutex // orders state changes with their OnState calls

	mu       sync.Mutex
	state    State
	lastErr  error
	relaunch int // restarts that brought the engine back, for Restarts
	port     int
	proc     *proc    // the current (or last) process
	logFile  *logFile // nil when output goes to the logger or after it was closed
	started  bool
	cancel   context.CancelFunc // cancels run; set by Start
	done     chan struct{}      // closed when run returns; set by Start
	stopDone chan struct{}      // set by the first Stop, closed when it finishes

	// restarts holds the breaker's restart times; owned by the run goroutine.
	restarts []time.Time
}

// New returns an idle Supervisor.
func New(opts Options) (*Supervisor, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Supervisor{opts: o, log: o.Logger}, nil
}

// State returns the current state.
func (s *Supervisor) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// LastError returns the most recent failure (nil when none); it is kept after a recovery.
func (s *Supervisor) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Restarts returns how many times a dead or unhealthy engine was relaunched and became
// healthy again.
func (s *Supervisor) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relaunch
}

// BaseURL returns "http://127.0.0.1:<port>" of the current process ("" before Start).
func (s *Supervisor) BaseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.port == 0 {
		return ""
	}
	return baseURL(s.port)
}

// PID returns the current process's id (0 when no process is running).
func (s *Supervisor) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || isClosed(s.proc.exited) {
		return 0
	}
	return s.proc.pgid
}

func baseURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

// Start launches the replica and returns once it is healthy. See the package doc.
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.stopDone != nil:
		s.mu.Unlock()
		return ErrStopped
	case s.started:
		s.mu.Unlock()
		return ErrAlreadyStarted
	}
	s.started = true
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx)) // the engine outlives Start's ctx
	s.cancel, s.done = cancel, make(chan struct{})
	s.mu.Unlock()

	s.setState(StateStarting, nil)
	if s.opts.LogFile != "" {
		f, err := openLogFile(s.opts.LogFile, s.opts.LogMaxBytes, s.log)
		if err != nil {
			err = fmt.Errorf("%w: open log file: %w", ErrStartFailed, err)
			s.fail(err)
			close(s.done)
			return err
		}
		s.mu.Lock()
		s.logFile = f
		s.mu.Unlock()
	}

	ready := make(chan error, 1)
	go s.run(runCtx, ready)
	select {
	case err := <-ready:
		return err
	case <-ctx.Done():
		_ = s.Stop(ctx) // ctx is done: no grace
		err := fmt.Errorf("%w: %w", ErrStartFailed, ctx.Err())
		s.mu.Lock()
		p := s.proc
		s.mu.Unlock()
		if p != nil {
			err = p.withTail(err)
		}
		return err
	}
}

// run is the owner goroutine: first launch, then supervision until ctx is done or the
// replica fails for good.
func (s *Supervisor) run(ctx context.Context, ready chan<- error) {
	defer close(s.done)
	if ctx.Err() != nil {
		ready <- fmt.Errorf("%w: %w", ErrStartFailed, ErrStopped)
		return
	}
	p, err := s.launch()
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrStartFailed, err)
		s.fail(err)
		s.closeLog()
		ready <- err
		return
	}
	if err := s.waitReady(ctx, p); err != nil {
		if ctx.Err() != nil {
			ready <- fmt.Errorf("%w: %w", ErrStartFailed, ErrStopped) // Stop terminates p
			return
		}
		s.kill(p)
		err = p.withTail(fmt.Errorf("%w: %w", ErrStartFailed, err))
		s.fail(err)
		s.closeLog()
		ready <- err
		return
	}
	s.setState(StateRunning, nil)
	ready <- nil
	if !s.supervise(ctx, p) {
		s.closeLog()
	}
}

// supervise health-checks p and restarts the replica when it dies or stays unhealthy for
// RestartUnhealthyAfter. It returns true when ctx is done (Stop takes over) and false when
// the replica failed for good.
func (s *Supervisor) supervise(ctx context.Context, p *proc) bool {
	t := time.NewTicker(s.opts.HealthInterval)
	defer t.Stop()
	fails := 0
	var failingSince time.Time // opts.Now at the first failed check of the current run
	for {
		select {
		case <-ctx.Done():
			return true
		case <-p.exited:
			if ctx.Err() != nil {
				return true
			}
			if err := s.killGroup(p, syscall.SIGKILL); err != nil { // whatever it left behind
				s.log.Warn("killing the exited engine's process group", "pid", p.pgid, "err", err)
			} else {
				p.groupKilled = true
			}
			cause := p.withTail(fmt.Errorf("process exited unexpectedly: %s", p.exitStatus()))
			s.log.Warn("engine process exited; restarting", "pid", p.pgid, "err", cause)
			np := s.restart(ctx, cause)
			if np == nil {
				return ctx.Err() != nil
			}
			p, fails = np, 0
			t.Reset(s.opts.HealthInterval)
		case <-t.C:
			ok, err := s.check(ctx, p)
			if ctx.Err() != nil {
				return true
			}
			if ok {
				fails = 0
				if s.State() == StateUnhealthy {
					s.setState(StateRunning, nil)
				}
				continue
			}
			fails++
			if err == nil {
				err = errors.New("not ready")
			}
			s.log.Debug("engine health check failed", "consecutive", fails, "err", err)
			if fails >= s.opts.UnhealthyAfter && s.State() != StateUnhealthy {
				s.setState(StateUnhealthy, fmt.Errorf("health check failed %d times: %w", fails, err))
			}
			if s.opts.RestartUnhealthyAfter < 0 {
				continue // the clock is not read when nothing depends on it
			}
			now := s.opts.Now()
			if fails == 1 {
				failingSince = now
			}
			failing := now.Sub(failingSince)
			if fails < s.opts.UnhealthyAfter || failing < s.opts.RestartUnhealthyAfter {
				continue
			}
			cause := fmt.Errorf("health checks failed for %s (%d in a row, limit %s); last: %w",
				failing.Round(time.Millisecond), fails, s.opts.RestartUnhealthyAfter, err)
			s.log.Warn("engine process unhealthy for too long; terminating it to restart it", "pid", p.pgid, "err", cause)
			if err := s.terminate(ctx, p); err != nil {
				s.log.Warn("terminating the unhealthy engine process", "pid", p.pgid, "err", err)
			}
			if ctx.Err() != nil {
				return true // Stop takes over; p is gone
			}
			np := s.restart(ctx, p.withTail(cause))
			if np == nil {
				return ctx.Err() != nil
			}
			p, fails = np, 0
			t.Reset(s.opts.HealthInterval)
		}
	}
}

// restart relaunches the replica until one launch becomes healthy (returned), the breaker
// trips or ctx is done (nil).
func (s *Supervisor) restart(ctx context.Context, cause error) *proc {
	for attempt := 0; ; attempt++ {
		now := s.opts.Now()
		kept := s.restarts[:0]
		for _, at := range s.restarts {
			if now.Sub(at) < s.opts.RestartWindow {
				kept = append(kept, at)
			}
		}
		s.restarts = kept
		if len(s.restarts) >= s.opts.MaxRestarts {
			s.fail(fmt.Errorf("%w: %d restarts within %s; last failure: %w",
				ErrBreakerOpen, len(s.restarts), s.opts.RestartWindow, cause))
			return nil
		}
		s.restarts = append(s.restarts, now)
		s.setState(StateRestarting, cause)

		delay := s.backoff(attempt)
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		p, err := s.launch()
		if err != nil {
			cause = err
			s.log.Warn("engine relaunch failed", "err", err)
			continue
		}
		if err := s.waitReady(ctx, p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.kill(p)
			cause = p.withTail(err)
			s.log.Warn("engine relaunch did not become healthy", "pid", p.pgid, "err", cause)
			continue
		}
		s.mu.Lock()
		s.relaunch++
		s.mu.Unlock()
		s.setState(StateRunning, nil)
		s.log.Info("engine process restarted", "pid", p.pgid, "url", p.baseURL)
		return p
	}
}

func (s *Supervisor) backoff(attempt int) time.Duration {
	d := s.opts.RestartBackoff
	for range attempt {
		if d >= s.opts.RestartBackoffMax/2 {
			return s.opts.RestartBackoffMax
		}
		d *= 2
	}
	return min(d, s.opts.RestartBackoffMax)
}

// waitReady polls Health until p is ready, p exits, StartTimeout passes or ctx is done.
func (s *Supervisor) waitReady(ctx context.Context, p *proc) error {
	dctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	t := time.NewTicker(s.opts.StartingHealthInterval)
	defer t.Stop()
	var lastErr error
	for {
		ok, err := s.check(dctx, p)
		if ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-dctx.Done():
		case <-p.exited:
		case <-t.C:
			continue
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case isClosed(p.exited):
			return fmt.Errorf("%w: %s", ErrExitedEarly, p.exitStatus())
		case lastErr != nil:
			return fmt.Errorf("%w: not healthy within %s: %w", ErrStartTimeout, s.opts.StartTimeout, lastErr)
		default:
			return fmt.Errorf("%w: not healthy within %s", ErrStartTimeout, s.opts.StartTimeout)
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (s *Supervisor) check(ctx context.Context, p *proc) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, s.opts.HealthTimeout)
	defer cancel()
	return s.opts.Health(cctx, p.baseURL)
}

// launch starts one process and records it as current.
func (s *Supervisor) launch() (*proc, error) {
	s.mu.Lock()
	prev, logFile := s.port, s.logFile
	s.mu.Unlock()
	port, err := pickPort(prev)
	if err != nil {
		return nil, fmt.Errorf("pick a port: %w", err)
	}
	ps := strconv.Itoa(port)
	argv := make([]string, len(s.opts.Argv))
	for i, a := range s.opts.Argv {
		argv[i] = strings.ReplaceAll(a, PortPlaceholder, ps)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(s.opts.Withheld, name)
	})
	for _, e := range s.opts.Env {
		env = append(env, strings.ReplaceAll(e, PortPlaceholder, ps))
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = s.opts.Dir
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = waitDelay
	out := newOutput(logFile, s.log.With("port", port))
	rw := newRedactWriter(out, s.opts.Secrets)
	cmd.Stdout, cmd.Stderr = rw, rw
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, pgid: cmd.Process.Pid, baseURL: baseURL(port), out: out, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		if f, ok := rw.(*redactWriter); ok {
			f.Flush()
		}
		out.flush()
		close(p.exited)
	}()
	s.mu.Lock()
	s.port, s.proc = port, p
	s.mu.Unlock()
	s.log.Info("engine process launched", "pid", p.pgid, "url", p.baseURL, "argv", redactArgv(argv, s.opts.Secrets))
	return p, nil
}

// pickPort returns prev when it can be bound on loopback, otherwise a fresh free port.
func pickPort(prev int) (int, error) {
	if prev != 0 {
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(prev)); err == nil {
			_ = l.Close()
			return prev, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// killGroup signals p's process group, ignoring a group that is already gone.
func (s *Supervisor) killGroup(p *proc, sig syscall.Signal) error {
	err := syscall.Kill(-p.pgid, sig)
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s to process group %d: %w", sig, p.pgid, err)
	}
	return nil
}

// kill SIGKILLs p's group and reaps p.
func (s *Supervisor) kill(p *proc) {
	err := s.killGroup(p, syscall.SIGKILL)
	if err != nil {
		s.log.Error("cannot kill engine process", "err", err)
	}
	<-p.exited
	p.groupKilled = err == nil
}

// terminate stops p: SIGTERM to its group, up to StopGrace (or ctx) to exit, then SIGKILL.
func (s *Supervisor) terminate(ctx context.Context, p *proc) error {
	if isClosed(p.exited) {
		if p.groupKilled {
			// Killed with its group long ago maybe: the group id may be another's by now.
			return nil
		}
		// Reaped earlier, but its group may outlive it: the supervisor can have returned
		// (its ctx ended, or a start gave up waiting for ready) before it killed the group on
		// the exit. What the engine spawned must not outlive Stop.
		return s.killGroup(p, syscall.SIGKILL)
	}
	if err := s.killGroup(p, syscall.SIGTERM); err != nil {
		s.kill(p)
		return err
	}
	grace := time.NewTimer(s.opts.StopGrace)
	defer grace.Stop()
	select {
	case <-p.exited:
		s.log.Info("engine process stopped", "pid", p.pgid, "status", p.exitStatus())
	case <-grace.C:
		s.log.Warn("engine process ignored SIGTERM; killing it", "pid", p.pgid, "grace", s.opts.StopGrace)
	case <-ctx.Done():
		s.log.Warn("stop deadline reached; killing engine process", "pid", p.pgid, "err", ctx.Err())
	}
	// Kill the rest of the group (or the process itself when it did not exit).
	err := s.killGroup(p, syscall.SIGKILL)
	<-p.exited
	p.groupKilled = err == nil
	return err
}

// Stop stops supervision and the process; see the package doc. It returns an error only
// when signalling the process failed; a ctx that ends early shortens the grace period.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopDone != nil {
		d := s.stopDone
		s.mu.Unlock()
		select {
		case <-d:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.stopDone = make(chan struct{})
	stopDone, started, cancel, done := s.stopDone, s.started, s.cancel, s.done
	s.mu.Unlock()
	defer close(stopDone)

	var err error
	if started {
		cancel()
		<-done
		s.mu.Lock()
		p := s.proc
		s.mu.Unlock()
		if p != nil {
			err = s.terminate(ctx, p)
		}
		s.closeLog()
	}
	s.setState(StateStopped, nil)
	return err
}

func (s *Supervisor) closeLog() {
	s.mu.Lock()
	f := s.logFile
	s.logFile = nil
	s.mu.Unlock()
	if f != nil {
		if err := f.Close(); err != nil {
			s.log.Warn("closing engine log file", "err", err)
		}
	}
}

func (s *Supervisor) fail(err error) {
	s.log.Error("engine process failed", "err", err)
	s.setState(StateFailed, err)
}

// setState records a state change (and err as the last error when non-nil) and reports it
// to OnState. Nothing leaves StateStopped.
func (s *Supervisor) setState(st State, err error) {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	s.mu.Lock()
	prev := s.state
	if prev == StateStopped {
		s.mu.Unlock()
		return
	}
	s.state = st
	if err != nil {
		s.lastErr = err
	}
	s.mu.Unlock()
	if prev == st {
		return
	}
	s.log.Debug("engine process state", "from", prev.String(), "to", st.String())
	if s.opts.OnState != nil {
		s.opts.OnState(st)
	}
}
