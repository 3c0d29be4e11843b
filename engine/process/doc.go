// Package process supervises a managed engine replica: a command the daemon starts, waits on
// until it is healthy, health-checks while it runs, restarts with backoff when it dies, gives
// up on when it keeps dying, and stops.
//
// # Lifecycle
//
//	idle ──Start──▶ starting ──healthy──▶ running ◀──healthy again── unhealthy
//	                   │                   │  └──UnhealthyAfter failed checks──▶ ┘
//	                   │                   └──process exits──▶ restarting ──healthy──▶ running
//	                   └──exit/timeout──▶ failed ◀──breaker trips── restarting
//	unhealthy ──checks failing for RestartUnhealthyAfter──▶ restarting
//	any state ──Stop──▶ stopped
//
// Start launches the command and waits until Options.Health reports ready, the process
// exits, Options.StartTimeout passes, or Start's ctx is done. A failed Start returns an error
// matching ErrStartFailed whose message ends with the last ~2 KiB of the process's output and
// leaves the supervisor Failed (or Stopped when ctx was done); a Supervisor is started once.
// Start's ctx bounds the initial start only: supervision continues until Stop.
//
// While running, Health is polled every Options.HealthInterval (each check bounded by
// Options.HealthTimeout); after Options.UnhealthyAfter consecutive failures the state is
// Unhealthy (the process is kept), and the first success returns it to Running. When the
// checks have kept failing for Options.RestartUnhealthyAfter (measured with Options.Now from
// the first failed check of the run; any success starts it again), the engine is taken for
// hung: the supervisor terminates its process group as Stop does (SIGTERM, Options.StopGrace,
// SIGKILL) and restarts it as below, with a cause that says how long the checks failed and
// the last check's error. When the process exits unexpectedly the
// supervisor kills what is left of its process group, enters Restarting, waits a backoff
// (Options.RestartBackoff doubling per consecutive failed attempt, capped at
// Options.RestartBackoffMax; reset once a restart becomes healthy), relaunches and waits for
// health as Start does. A relaunch that does not become healthy counts as another restart.
// The breaker: when Options.MaxRestarts restarts already happened within
// Options.RestartWindow, the next one is refused, the state becomes Failed and LastError
// matches ErrBreakerOpen and names the last failure. Nothing restarts a Failed supervisor.
//
// Stop cancels supervision, sends SIGTERM to the process group, waits up to
// Options.StopGrace (less when Stop's ctx ends first), then sends SIGKILL to the group and
// reaps the process. It is idempotent and safe to call in any state, concurrently too; after
// it returns no goroutine and no process of the supervisor remains.
//
// # Processes
//
// The command runs in its own process group (Setpgid) so that signals reach whatever it
// spawns; on Linux it also gets SIGKILL as its parent-death signal, so a crashed daemon does
// not leave an engine holding GPU memory. The literal "{port}" in Argv and Env is replaced by
// a loopback port picked by listening on 127.0.0.1:0 and closing the listener (another
// process can take the port in between; the replica then fails and is restarted). A restart
// reuses the previous port when it is free, so BaseURL usually stays the same; callers should
// still read BaseURL per request. Env is appended to os.Environ(), less Options.Withheld.
//
// Output (stdout and stderr, merged) is appended to Options.LogFile when set, otherwise
// logged line by line at debug level, each line cut at MaxLogLine bytes. Before a write would
// take LogFile past Options.LogMaxBytes, the file is renamed to LogFile.1 (replacing the
// previous one) and a new LogFile is started, so a replica keeps about twice that on disk.
// The supervisor counts the bytes it writes (starting from the size of the file it appends
// to) and reads the file's size again only before rotating, so a truncate from outside
// (logrotate's copytruncate) still works. The last OutputTailBytes of each process's output
// are kept for error messages. Write errors on the log file are logged once per process, and
// rotation failures once until a rotation works again; both are otherwise ignored (output
// goes on in the current file): a full disk never blocks or kills the engine.
//
// # Concurrency
//
// One owner goroutine (run) launches, health-checks, restarts and reaps the processes from
// Start until Stop; it alone touches the breaker's restart history. Each process also has a
// waiter goroutine that returns when the process has exited (exec.Cmd.WaitDelay bounds how
// long it waits for the output pipe after that). Stop cancels run, waits for it to return,
// then terminates the last process itself. A small mutex (Supervisor.mu) guards the fields
// read from other goroutines: state, last error, port, current process, log file and the
// start/stop flags. A second mutex (notifyMu) orders state changes with their OnState
// callbacks, so callbacks see transitions in order; OnState is called without mu held, must
// not block and must not call Stop or Start. Options.Health must honour its ctx: Stop waits
// for an in-flight health check to return.
//
// # Bounds
//
// At most one process runs at a time. Memory per process is bounded by OutputTailBytes plus
// one MaxLogLine line buffer. The breaker history holds at most MaxRestarts timestamps. On
// disk a replica's output takes LogFile and LogFile.1, each at most LogMaxBytes plus one write
// (about one 32 KiB read of the output pipe), while rotations work.
package process
