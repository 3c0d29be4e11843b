package task

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/sse"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// stepper is an engine whose generations the test drives one by one: each Generate announces
// itself on calls; the test sends its tokens and closes them to end it.
type stepper struct{ calls chan *generation }

type generation struct {
	id     string
	tokens chan string
}

func (e *stepper) Generate(ctx context.Context, req engine.Request, emit engine.EmitFunc) (engine.Result, error) {
	g := &generation{id: req.TaskID, tokens: make(chan string)}
	select {
	case e.calls <- g:
	case <-ctx.Done():
		return engine.Result{}, ctx.Err()
	}
	n := 0
	for {
		select {
		case tok, ok := <-g.tokens:
			if !ok {
				return engine.Result{TokensOut: n, TokensIn: 2, Stop: engine.StopLimit}, nil
			}
			if err := emit(engine.Token{Text: []byte(tok), Index: n}); err != nil {
				return engine.Result{TokensOut: n}, err
			}
			n++
		case <-ctx.Done():
			return engine.Result{TokensOut: n}, ctx.Err()
		}
	}
}

func (e *stepper) Health(context.Context) (engine.Health, error) {
	return engine.Health{Live: true, Ready: true}, nil
}

func (e *stepper) next(t *testing.T) *generation {
	t.Helper()
	select {
	case g := <-e.calls:
		return g
	case <-time.After(10 * time.Second):
		t.Fatal("no generation started")
		return nil
	}
}

// crashable forwards to a journal until crash: from then on, what is appended is lost, as in a
// kill -9 after the last fsync.
type crashable struct {
	*journal.Journal
	mu      sync.Mutex
	crashed bool
	last    uint64
	failed  error // returned by Wait when set
	// loseFinal: the machine goes down as the next final record is appended, before it
	// reaches the disk: it and all that follows are lost, and its mark is never durable
	// (readers are shown everything, as by a failed journal, so that they do not wait on it).
	loseFinal, lost bool
}

func (c *crashable) Visible() (uint64, <-chan struct{}) {
	c.mu.Lock()
	lost := c.lost
	c.mu.Unlock()
	if lost {
		ch := make(chan struct{})
		close(ch)
		return math.MaxUint64, ch
	}
	return c.Journal.Visible()
}

func (c *crashable) Wait(ctx context.Context, seq uint64) error {
	c.mu.Lock()
	failed := c.failed
	c.mu.Unlock()
	if failed != nil {
		return failed
	}
	return c.Journal.Wait(ctx, seq)
}

func (c *crashable) Append(task string, kind uint8, name string, data, extra []byte) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed {
		return c.last
	}
	if c.loseFinal && kind == recFinal {
		c.crashed, c.lost = true, true
		c.last++ // the number the journal would have given it
		return c.last
	}
	c.last = c.Journal.Append(task, kind, name, data, extra)
	return c.last
}

func (c *crashable) Retire(task string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.crashed {
		c.Journal.Retire(task)
	}
}

// crash makes everything appended so far durable, then drops what follows.
func (c *crashable) crash(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	c.crashed = true
	last := c.last
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Journal.Wait(ctx, last); err != nil {
		t.Fatal(err)
	}
}

type daemon struct {
	svc  *Service
	eng  *stepper
	j    *crashable
	ctx  context.Context
	stop func()
}

// startDaemon runs a Service (1 slot) with a journal in dir, recovering what dir holds.
func startDaemon(t *testing.T, dir string, clock *tasktest.Clock) *daemon {
	t.Helper()
	return startDaemonWith(t, dir, clock, nil)
}

// startDaemonWith is startDaemon with setup, when not nil, changing the service's options (its
// session store, its meter) before it starts; it gets the journal too.
func startDaemonWith(t *testing.T, dir string, clock *tasktest.Clock, setup func(*Options, *journal.Journal)) *daemon {
	t.Helper()
	return startDaemonJournal(t, journal.Options{Dir: dir}, clock, setup)
}

// startDaemonJournal is startDaemonWith with the journal's options.
func startDaemonJournal(t *testing.T, jo journal.Options, clock *tasktest.Clock, setup func(*Options, *journal.Journal)) *daemon {
	t.Helper()
	d, run := startDaemonHeld(t, jo, clock, setup)
	run()
	return d
}

// startDaemonHeld is startDaemonJournal up to the service's Run, which waits until run is
// called: the service has recovered the tasks of the journal, and the queued ones are not
// queued again (Run's resume) yet. The journal runs.
func startDaemonHeld(t *testing.T, jo journal.Options, clock *tasktest.Clock, setup func(*Options, *journal.Journal)) (*daemon, func()) {
	t.Helper()
	jr, err := journal.Open(jo)
	if err != nil {
		t.Fatal(err)
	}
	cj := &crashable{Journal: jr}
	eng := &stepper{calls: make(chan *generation)}
	ss, err := session.New(session.Options{MaxTurns: 8})
	if err != nil {
		t.Fatal(err)
	}
	v := pool.View{Spec: pool.Spec{ID: "p", Engine: "llamacpp", ModelRef: "/m/tiny.gguf", ModelID: "tiny", CtxMax: 4096,
		Slots: 1, PriorServiceMs: 100, PriorTokensPerS: 100, Workloads: []string{"completion"}},
		Live: true, Healthy: true}
	opts := Options{Capacity: 16, Policy: admission.Reject, Pools: &fakePools{views: []pool.View{v}, rep: eng},
		Sessions: ss, Metrics: metrics.New(prometheus.NewRegistry()), Clock: clock, Journal: cj}
	if setup != nil {
		setup(&opts, jr)
	}
	svc := mustNew(t, opts)
	if err := svc.Recover(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	jctx, jcancel := context.WithCancel(context.Background())
	jdone, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(jdone); _ = jr.Run(jctx) }()
	held := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-held:
			_ = svc.Run(ctx)
		case <-ctx.Done():
		}
	}()
	svc.PoolChanged(ctx, oneReplica(v))
	var once sync.Once
	d := &daemon{svc: svc, eng: eng, j: cj, ctx: ctx}
	d.stop = func() {
		once.Do(func() {
			sctx, c := context.WithCancel(context.Background())
			c()
			// Whatever a generation still waits to announce gives up with the run context.
			svc.Shutdown(sctx)
			cancel()
			<-done
			jcancel()
			<-jdone
		})
	}
	t.Cleanup(d.stop)
	return d, sync.OnceFunc(func() { close(held) })
}

// log reads a task's log from event id from on, waiting until it is complete.
func (d *daemon) log(t *testing.T, id string, from int) []byte {
	t.Helper()
	return d.readLog(t, id, from, false)
}

// readLog reads a task's log from event id from on as a plain or a ?verbose=true stream
// reads it, waiting until it is complete.
func (d *daemon) readLog(t *testing.T, id string, from int, verbose bool) []byte {
	t.Helper()
	tk, err := d.svc.Task(id)
	if err != nil {
		t.Fatal(err)
	}
	cur := tk.Subscribe(from, verbose)
	defer cur.Close()
	var b []byte
	deadline := time.After(10 * time.Second)
	for {
		var complete bool
		b, complete = cur.Next(b)
		if complete {
			return b
		}
		select {
		case <-cur.Wake():
		case <-cur.Flushed():
		case <-deadline:
			t.Fatalf("log of %s not complete; so far:\n%s", id, b)
		}
	}
}

// waitShown waits until a reader of task id is shown the events want (ids, as ids prints
// them), and fails past 10 s.
func (d *daemon) waitShown(t *testing.T, id, want string) {
	t.Helper()
	tk, err := d.svc.Task(id)
	if err != nil {
		t.Fatal(err)
	}
	cur := tk.Subscribe(0, false)
	defer cur.Close()
	var b []byte
	deadline := time.After(10 * time.Second)
	for {
		b, _ = cur.Next(b)
		if ids(parse(t, b)) == want {
			return
		}
		select {
		case <-cur.Wake():
		case <-cur.Flushed():
		case <-deadline:
			t.Fatalf("task %s: shown %s, want %s", id, ids(parse(t, b)), want)
		}
	}
}

func parse(t *testing.T, b []byte) []sse.Event {
	t.Helper()
	var out []sse.Event
	r := sse.NewReader(bytes.NewReader(b), 0)
	for {
		ev, err := r.Next()
		if err != nil {
			return out
		}
		out = append(out, ev)
	}
}

func ids(evs []sse.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.ID+":"+e.Event)
	}
	return strings.Join(s, ",")
}

// A crash with one task finished, one streaming and three queued: after the restart the
// finished one reads the same, the streaming one ends with a retriable WORKER_RESET after the
// events it had, the queued ones run in their order (interactive before batch), and re-posts
// still match.
func TestRestartRecoversEveryTask(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	d := startDaemon(t, dir, clock)

	done := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, done); err != nil {
		t.Fatal(err)
	}
	g := d.eng.next(t)
	g.tokens <- "Hel"
	g.tokens <- "lo"
	close(g.tokens)
	doneLog := d.log(t, done.ID, 0)

	streaming := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, streaming); err != nil {
		t.Fatal(err)
	}
	g = d.eng.next(t)
	g.tokens <- "x"
	q1, q2, q3 := spec(admission.Batch), spec(admission.Interactive), spec(admission.Interactive)
	for _, s := range []Spec{q1, q2, q3} {
		if _, err := d.svc.Submit(d.ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// The token's metrics frame is appended just after it: the crash comes once a reader is
	// shown both (shown means written to the journal).
	d.waitShown(t, streaming.ID, "0:started,1:token,2:metrics")
	d.j.crash(t)
	d.stop()

	d = startDaemon(t, dir, clock)
	// The finished task reads exactly as before.
	if got := d.log(t, done.ID, 0); !bytes.Equal(got, doneLog) {
		t.Fatalf("finished task's log after restart:\n%s\nbefore:\n%s", got, doneLog)
	}
	if s, err := d.svc.Get(d.ctx, done.ID); err != nil || s.Status != Succeeded || s.TokensOut != 2 {
		t.Fatalf("finished task: %+v %v", s, err)
	}
	// The streaming one ends with a retriable error after what it had streamed.
	evs := parse(t, d.log(t, streaming.ID, 0))
	if got := ids(evs); got != "0:started,1:token,2:metrics,3:error" {
		t.Fatalf("interrupted task's log: %s", got)
	}
	if !strings.Contains(evs[3].Data, `"code":"worker_reset"`) || !strings.Contains(evs[3].Data, `"retriable":true`) {
		t.Fatalf("error frame: %s", evs[3].Data)
	}
	// Last-Event-ID: exactly the events after it.
	if got := ids(parse(t, d.log(t, streaming.ID, 3))); got != "3:error" {
		t.Fatalf("resume after event 2: %s", got)
	}
	if s, _ := d.svc.Get(d.ctx, streaming.ID); s.Status != Failed || s.Error == nil || s.Error.Class != ClassWorkerReset || !s.Error.Retriable {
		t.Fatalf("interrupted task: %+v", s)
	}
	// Queued ones run: interactive in admission order, then batch.
	for _, want := range []Spec{q2, q3, q1} {
		g := d.eng.next(t)
		if g.id != want.ID {
			t.Fatalf("generation of %s, want %s", g.id, want.ID)
		}
		g.tokens <- "ok " + want.ID[len(want.ID)-4:]
		close(g.tokens)
		evs := parse(t, d.log(t, want.ID, 0))
		if got := ids(evs); got != "0:started,1:token,2:metrics,3:end" {
			t.Fatalf("requeued task's log: %s", got)
		}
		if !strings.Contains(evs[1].Data, "ok "+want.ID[len(want.ID)-4:]) {
			t.Fatalf("token: %s", evs[1].Data)
		}
	}
	// Re-posts: the same body matches, another body conflicts.
	if a, err := d.svc.Submit(d.ctx, done); err != nil || !a.Replayed {
		t.Fatalf("re-post: %+v %v", a, err)
	}
	other := q1
	other.Prompt = "something else"
	other.Fingerprint[0] ^= 1
	if _, err := d.svc.Submit(d.ctx, other); !errors.Is(err, ErrConflict) {
		t.Fatalf("re-post with another body: %v", err)
	}
}

// A frame is shown once written, before it is durable, so a crash of the machine can take back
// frames a client saw. Simulated here: after crash, frames are still logged and shown but the
// journal loses them. A client resuming after an id beyond the journaled end gets the final
// frame once, numbered after its Last-Event-ID (no id repeats), and the log is not disturbed.
func TestResumeBeyondTheJournaledEnd(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	d := startDaemon(t, dir, clock)
	s := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, s); err != nil {
		t.Fatal(err)
	}
	g := d.eng.next(t)
	g.tokens <- "a"
	waitFor(t, func() bool { s, _ := d.svc.Get(d.ctx, s.ID); return s.TokensOut == 1 })
	d.j.crash(t) // what follows is shown but never reaches the disk
	g.tokens <- "b"
	g.tokens <- "c"
	tk, err := d.svc.Task(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur := tk.Subscribe(0, false)
	var seen []byte
	deadline := time.After(10 * time.Second)
	for {
		if seen, _ = cur.Next(seen); bytes.Contains(seen, []byte(`"t":"c"`)) {
			break
		}
		select {
		case <-cur.Wake():
		case <-cur.Flushed():
		case <-deadline:
			t.Fatalf("token c never shown; so far:\n%s", seen)
		}
	}
	cur.Close()
	evs := parse(t, seen)
	last := evs[len(evs)-1].ID
	d.stop()

	d = startDaemon(t, dir, clock)
	journaled := parse(t, d.log(t, s.ID, 0))
	end := journaled[len(journaled)-1]
	if end.Event != "error" || !strings.Contains(end.Data, `"code":"worker_reset"`) {
		t.Fatalf("the interrupted task's log: %s", ids(journaled))
	}
	n, _ := strconv.Atoi(last)
	endID, _ := strconv.Atoi(end.ID)
	if n <= endID {
		t.Fatalf("the client saw up to event %s, not beyond the journaled end %s: the test shows nothing", last, end.ID)
	}
	for _, from := range []int{n + 1, n + 5} {
		got := parse(t, d.log(t, s.ID, from))
		if len(got) != 1 || got[0].ID != strconv.Itoa(from) || got[0].Event != "error" || got[0].Data != end.Data {
			t.Fatalf("resume after event %d (journaled end %s): %s %v", from-1, end.ID, ids(got), got)
		}
	}
	// Within the journal, resuming is exact as ever.
	if got := ids(parse(t, d.log(t, s.ID, endID))); got != end.ID+":error" {
		t.Fatalf("resume after event %d: %s", endID-1, got)
	}
	if again := parse(t, d.log(t, s.ID, 0)); ids(again) != ids(journaled) {
		t.Fatalf("the log changed: %s, was %s", ids(again), ids(journaled))
	}
}

// A graceful shutdown keeps queued tasks for the next start instead of failing them.
func TestShutdownKeepsQueuedTasks(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	d := startDaemon(t, dir, clock)
	running, queued := spec(admission.Interactive), spec(admission.Batch)
	for _, s := range []Spec{running, queued} {
		if _, err := d.svc.Submit(d.ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	d.eng.next(t)
	d.stop() // the grace is over at once: the running task is cut, the queued one stays
	d = startDaemon(t, dir, clock)
	if s, _ := d.svc.Get(d.ctx, running.ID); s.Status != Failed || !s.Error.Retriable {
		t.Fatalf("the running task: %+v", s)
	}
	g := d.eng.next(t)
	if g.id != queued.ID {
		t.Fatalf("generation of %s, want the queued task", g.id)
	}
	close(g.tokens)
	if got := ids(parse(t, d.log(t, queued.ID, 0))); got != "0:started,1:end" {
		t.Fatalf("queued task's log: %s", got)
	}
}

// Retired tasks are not recovered.
func TestRetiredTasksStayForgotten(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	d := startDaemon(t, dir, clock)
	s := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, s); err != nil {
		t.Fatal(err)
	}
	close(d.eng.next(t).tokens)
	d.log(t, s.ID, 0)
	clock.Advance(11 * time.Minute) // past the default retention: the janitor forgets it
	// A tick per try: the janitor's ticker may start after the first Advance, and the task
	// joins the finished list just after its end frame, which d.log has seen.
	waitFor(t, func() bool {
		clock.Advance(time.Second)
		_, err := d.svc.Get(d.ctx, s.ID)
		return errors.Is(err, ErrNotFound)
	})
	d.stop()
	d = startDaemon(t, dir, clock)
	if _, err := d.svc.Get(d.ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a retired task came back: %v", err)
	}
}

// Without a journal a frame is visible at once; with one, only once the journal has written it.
func TestFramesWaitForTheJournal(t *testing.T) {
	dir := t.TempDir()
	jr, err := journal.Open(journal.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tk := &Task{spec: Spec{ID: "t"}, j: jr, done: make(chan struct{})}
	cur := tk.Subscribe(0, false)
	defer cur.Close()
	tk.mu.Lock()
	tk.appendLocked("token", []byte(`{"t":"a","i":0}`), nil)
	tk.mu.Unlock()
	if b, _ := cur.Next(nil); len(b) != 0 || cur.Flushed() == nil {
		t.Fatalf("a frame not yet durable was shown: %q", b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	jdone := make(chan struct{})
	go func() { defer close(jdone); _ = jr.Run(ctx) }()
	defer func() { cancel(); <-jdone }()
	select {
	case <-cur.Flushed():
	case <-time.After(10 * time.Second):
		t.Fatal("the journal never flushed")
	}
	if b, _ := cur.Next(nil); !bytes.Contains(b, []byte(`"t":"a"`)) || cur.Flushed() != nil {
		t.Fatalf("the durable frame: %q", b)
	}
}

// An admission the journal cannot make durable is refused, and leaves nothing behind: not the
// task, not its slot.
func TestAdmissionRefusedWhenTheJournalFails(t *testing.T) {
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	d := startDaemon(t, t.TempDir(), clock)
	d.j.mu.Lock()
	d.j.failed = errors.New("disk full")
	d.j.mu.Unlock()
	s := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, s); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("Submit on a failed journal: %v", err)
	}
	if _, err := d.svc.Get(d.ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused task is visible: %v", err)
	}
	d.j.mu.Lock()
	d.j.failed = nil
	d.j.mu.Unlock()
	next := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, next); err != nil {
		t.Fatal(err)
	}
	g := d.eng.next(t) // the one slot is free again
	if g.id != next.ID {
		t.Fatalf("generation of %s, want %s", g.id, next.ID)
	}
	close(g.tokens)
	d.log(t, next.ID, 0)
}

// Concurrent admissions: every acknowledged one is there after a crash, queued in the order the
// queue had them.
func TestConcurrentAdmissionsSurviveACrash(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	d := startDaemon(t, dir, clock)
	first := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, first); err != nil {
		t.Fatal(err)
	}
	d.eng.next(t) // holds the only slot: the others queue
	const n = 12
	specs := make([]Spec, n)
	var wg sync.WaitGroup
	for i := range n {
		specs[i] = spec(admission.Interactive)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.svc.Submit(d.ctx, specs[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	positions := map[int]string{}
	for _, s := range specs {
		snap, err := d.svc.Get(d.ctx, s.ID)
		if err != nil || snap.QueuePosition == nil {
			t.Fatalf("%s before the crash: %+v %v", s.ID, snap, err)
		}
		positions[*snap.QueuePosition] = s.ID
	}
	d.j.crash(t)
	d.stop()

	d = startDaemon(t, dir, clock)
	if s, _ := d.svc.Get(d.ctx, first.ID); s.Status != Failed {
		t.Fatalf("the running task: %+v", s)
	}
	for pos := range n {
		g := d.eng.next(t)
		if g.id != positions[pos] {
			t.Fatalf("run %d: %s, want %s (the queue's order before the crash)", pos, g.id, positions[pos])
		}
		close(g.tokens)
	}
}

// TestTransientTaskIsNotRunAfterACrash: a transient task (the OpenAI facade's, whose client
// waits on its one request and cannot resume) that a crash left queued fails at the restart,
// retriable, instead of running for a client that is gone; a queued task of the task API
// behind it runs as before.
func TestTransientTaskIsNotRunAfterACrash(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	d := startDaemon(t, dir, clock)
	busy := spec(admission.Interactive)
	if _, err := d.svc.Submit(d.ctx, busy); err != nil {
		t.Fatal(err)
	}
	d.eng.next(t) // holds the slot
	transient, plain := spec(admission.Interactive), spec(admission.Interactive)
	transient.Transient = true
	for _, s := range []Spec{transient, plain} {
		if _, err := d.svc.Submit(d.ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	d.j.crash(t)
	d.stop()

	d = startDaemon(t, dir, clock)
	s, err := d.svc.Get(d.ctx, transient.ID)
	if err != nil || s.Status != Failed || s.Error == nil || s.Error.Class != ClassWorkerReset || !s.Error.Retriable {
		t.Fatalf("the transient task after the restart: %+v, %v; want failed, worker_reset, retriable", s, err)
	}
	if g := d.eng.next(t); g.id != plain.ID {
		t.Fatalf("generation of %s after the restart, want the task API's %s only", g.id, plain.ID)
	}
}
