package task

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/sse"
)

// Status is a task's lifecycle state.
type Status int

// Statuses.
const (
	Queued Status = iota
	Running
	Succeeded
	Failed
	Canceled
)

func (s Status) String() string {
	switch s {
	case Queued:
		return "queued"
	case Running:
		return "running"
	case Succeeded:
		return "succeeded"
	case Failed:
		return "failed"
	default:
		return "canceled"
	}
}

// Final reports whether s is a final state.
func (s Status) Final() bool { return s >= Succeeded }

// Placement overrides of a task.
type Placement struct {
	Mode          string // "", auto, pin, prefer
	PinPool       string
	PreferPools   []string
	AvoidPools    []string
	AllowFallback bool
	// Replica hints, within the pool the task lands in: PinReplica (only with a pinned pool
	// that has it), PreferReplicas, AvoidReplicas (ids as pool health shows them).
	PinReplica     string   `json:",omitempty"`
	PreferReplicas []string `json:",omitempty"`
	AvoidReplicas  []string `json:",omitempty"`
}

// Spec is a validated task request in domain terms.
type Spec struct {
	ID            string
	SessionID     string
	Workload      string
	ModelRef      string
	Engine        string
	Ctx           int
	Priority      admission.Priority
	Seed          *int64
	Deterministic bool
	Prompt        string
	// Messages is a chat's conversation (Workload "chat"); Prompt then holds its text joined.
	Messages  []engine.Message
	MaxTokens int
	// OpenEnded: MaxTokens is the context's bound, not the client's (an OpenAI chat without
	// max_tokens): engines that refuse a prompt plus max_tokens over their context are sent
	// none (engine.Request.OpenEnded).
	OpenEnded      bool `json:",omitempty"`
	Deadline       time.Duration
	ExpectedTokens int
	Placement      Placement
	// Fingerprint identifies the request body, for idempotent re-posts.
	Fingerprint [32]byte
	// CorrelationID of the creating request, for logs.
	CorrelationID string
	// Owner names the key that created the task: only it may read, stream or cancel the task.
	Owner string
	// Grant is the tokens the owner's budget granted the task at admission (0: no budget),
	// settled when the task ends.
	Grant int
	// SessionGrant is the tokens the session's budget granted the task at admission (0: no
	// session budget), settled with the session when the task ends.
	SessionGrant int `json:",omitempty"`
	// SessionGen is the generation of the session that gave SessionGrant (session.Reservation):
	// a session deleted and named again while the task runs is another, and the grant is not
	// its to settle. In memory only: a restart reserves again.
	SessionGen uint64 `json:"-"`
	// TPMReserved is the tokens admission took from the owner's tokens-per-minute bucket (0: the
	// key had no tpm limit then), given back or made up when the task ends. In memory only: a
	// restart takes no reservation again, so a recovered task has none to give back.
	TPMReserved int `json:"-"`
	// StopAt ends the task after that many tokens with stop "budget" (0: max_tokens): the
	// smaller of the key's grant and the session's, when below max_tokens.
	StopAt int
	// Weight is the owner's share in fair queueing (0: 1).
	Weight float64
	// OnDisconnect is what the loss of the last stream reader does: "" (the service's
	// default), OnDisconnectCancel, OnDisconnectDetach or OnDisconnectGrace (after
	// DisconnectGrace without a reader).
	OnDisconnect    string
	DisconnectGrace time.Duration
	// Transient marks a task no client can come back to: the OpenAI facade's, whose client
	// waits on its one request (no task id to resume with, a session named by nobody else).
	// A shutdown ends it (the facade answers 503) instead of keeping it queued for the next
	// start, a restart fails it if a crash left it queued, and its session goes when it ends.
	Transient bool `json:",omitempty"`
}

// Disconnect policies of a task (Spec.OnDisconnect).
const (
	OnDisconnectCancel = "cancel"
	OnDisconnectDetach = "detach"
	OnDisconnectGrace  = "grace"
)

// engineLimit is the max_tokens an engine is sent: MaxTokens, or the budget's StopAt below it.
// An engine told the grant stops there itself, with its usage (the prompt's count) and nothing
// generated past it. An open-ended request keeps MaxTokens (its engine is sent no limit at all:
// vLLM refuses a prompt plus max_tokens beyond its context), and the daemon cuts it (onToken),
// as it cuts any engine that overruns the limit it was sent.
func (s *Spec) engineLimit() (limit int, budget bool) {
	if s.StopAt > 0 && s.StopAt < s.MaxTokens && !s.OpenEnded {
		return s.StopAt, true
	}
	return s.MaxTokens, false
}

// item is the task as the queue sees it: the owner is its tenant and the session its lane
// within the tenant, charged its expected tokens (else max_tokens) when dispatched, and
// settled to the tokens it produced when it releases its slot.
func (s Spec) item(poolID string) admission.Item {
	cost := s.MaxTokens
	if s.ExpectedTokens > 0 {
		cost = min(s.ExpectedTokens, s.MaxTokens)
	}
	return admission.Item{ID: s.ID, Pool: poolID, Priority: s.Priority, Tenant: s.Owner, Session: s.SessionID,
		Weight: s.Weight, Cost: float64(cost)}
}

// continuable reports whether a generation of the task can be continued on another replica
// from its prompt plus the text streamed so far (a completion; a chat cannot): only then does
// the task keep that text.
// releaseInputsLocked lets go of what only a generation reads (the prompt, a chat's messages,
// the text streamed so far) once the task is final: it stays for tasks.retention to answer
// GET, its streams and re-posts (which compare the Fingerprint), and would otherwise hold up to
// twice body_limit_bytes each, max_retained of them. t.mu is held.
func (t *Task) releaseInputsLocked() {
	t.spec.Prompt, t.spec.Messages = "", nil
	t.text = strings.Builder{}
}

func (s *Spec) continuable() bool {
	return s.Workload != engine.WorkloadChat && len(s.Messages) == 0
}

// MaxMessage bounds ErrorInfo.Message in bytes: the contract's maxLength of an error's message
// (ErrorEnvelope), which every answer that carries it (the error frame, GET, the OpenAI facade)
// keeps to.
const MaxMessage = 2048

// ErrorInfo is a task's failure.
type ErrorInfo struct {
	Class   Class
	Message string
	// Detail is the whole error, for the daemon's log only, where Message leaves out what a
	// client must not see (an engine's address); "": Message.
	Detail       string `json:"-"`
	Retriable    bool
	RetryAfterMs int64
	Engine       string
	PoolID       string
}

// Snapshot is a task's state at one moment.
type Snapshot struct {
	ID               string
	SessionID        string
	Status           Status
	Priority         admission.Priority
	PoolID           string
	Engine           string
	QueuePosition    *int
	PredictedStartMs *int64
	TokensOut        int
	// TokensIn is the prompt's token count as the engine reported it (0 until the task finished,
	// or when the engine does not say).
	TokensIn int
	Created  time.Time
	Started  time.Time
	Finished time.Time
	Error    *ErrorInfo
	// Placement explains the replica the task runs (or ran) on; nil while queued.
	Placement  *PlacementDecision
	Migrations int
	// Owner names the key that created the task.
	Owner string
	// Admission explains the task's place while it is queued, or why the queue let it go.
	Admission *AdmissionInfo
}

// AdmissionInfo explains a queued task's wait (fair queueing), or why the queue let it go.
type AdmissionInfo struct {
	KeyName      string
	Class        admission.Priority
	Placement    *admission.Placement // while queued
	RefusedClass *Class               // evicted, or its deadline passed in the queue
}

// Admission is the answer to an accepted Submit.
type Admission struct {
	TaskID           string
	PoolID           string
	Engine           string
	QueuePosition    int
	PredictedStartMs int64
	// TokensBudgetRemaining of the task's session, when a budget is configured.
	TokensBudgetRemaining *int64
	// TimeBudgetRemaining until the task's deadline.
	TimeBudgetRemaining time.Duration
	// Replayed is true when this answers an idempotent re-post.
	Replayed bool
	// SessionGen is the generation of the session the task was admitted into (see
	// Task.SessionGen).
	SessionGen uint64
}

// span locates one encoded frame in a task's event buffer.
type span struct {
	start, end int
	// vstart, vend locate the verbose variant of a metrics frame (equal to start/end otherwise).
	vstart, vend int
	// seq is the frame's journal sequence number (0: durable already, or no journal).
	seq uint64
}

// Task is one admitted task. Its mutable state, including the event log, is guarded by mu; the
// runner goroutine is the only writer of tokens, other writers are Cancel and the finishers.
type Task struct {
	spec     Spec
	poolID   string
	engine   string
	version  string
	kvBytes  int64
	created  time.Time
	placing  time.Duration     // Submit's time before created (placement, session): daemon overhead
	span     trace.SpanContext // the admitting request's span: parent of the task's later spans
	waitSpan trace.Span        // task.queue_wait: ended at dispatch or when the task ends queued
	deadline time.Time
	j        Journal // nil: not journaled
	// sessionGen is the generation of the session that admitted the task (session.Info.Gen): what
	// the task records of its turn goes to that session, not to a later one of the same id.
	sessionGen uint64
	// ticket is the task's place in the admission queue: its runner goroutine waits on it,
	// then holds its slot until release. Embedded, so that admission allocates no ticket.
	ticket admission.Ticket

	mu         sync.Mutex
	rejected   bool
	admitSeq   uint64 // the journal record a 202 waits for (0: none, or recovered)
	cancelSeq  uint64 // the journal record of a running task's cancel (recCancel; 0: none)
	status     Status
	started    time.Time
	firstToken time.Time
	ttftSeen   bool // latency_first_token_ms observed (at the first token with text)
	finished   time.Time
	tokensOut  int
	tokensIn   int // prompt tokens, as the engine reported them when it finished
	errInfo    *ErrorInfo
	canceled   bool
	// kept: the daemon stopped with the task queued, kept for the next start (journal): its
	// streams end after the frames it has, with no final frame (Cursor.Next), and their
	// clients resume after the restart.
	kept bool
	// cut is why onToken refused a token ("" none): StopBudget past the budget grant, or
	// engine.StopLimit past MaxTokens (an open-ended request, whose engine was not told it, or
	// an engine that overran the limit it was sent).
	cut engine.StopReason
	// disconnects counts Disconnected calls: a grace timer acts only if none came after it.
	disconnects  uint64
	cancelReason string
	// graceStop ends the running disconnect grace's wait (nil: none): a later disconnect
	// replaces it, a reader attaching ends it.
	graceStop context.CancelFunc
	// hadReader: a reader attached to the task with on_disconnect: grace, in this process or
	// (journaled, recReader) before a restart, which is then its disconnect.
	hadReader bool
	// cancel ends the task's context (queue wait and run), set by its runner before it waits.
	cancel context.CancelCauseFunc
	// runner: a runner goroutine ends the task, started or about to be (Submit's tasks, and a
	// recovered one once resume takes it up to queue it again), so Cancel may wait for its end.
	// Without one, a cancel ends the task itself (Service.cancel).
	runner bool
	// left, made by a Get that found the task queued and its ticket out of the queue, is
	// closed when the status leaves Queued (leftQueueLocked).
	left        chan struct{}
	lastMetrics time.Time
	nMetrics    int
	seq         uint64 // admission number, rotates ties among equally loaded replicas
	replicaID   string // the replica running it (the latest)
	// onReplica is the replica it is acquiring or running on now ("" between attempts): set
	// before Acquire, so that a replica's drain deadline either finds it there or, having
	// passed first, makes Acquire refuse. replicaID keeps naming the latest for metrics.
	onReplica  string
	placement  *PlacementDecision
	migrations int // mid-stream moves to another replica
	// resent is the tokens already streamed that the last migration sent to the replica as
	// part of its prompt: they are tokens_out, and not the client's prompt (tokens_in).
	resent int
	text   strings.Builder // the text streamed so far, to continue it elsewhere (Spec.continuable only)

	buf   []byte // encoded frames, append-only
	spans []span
	subs  []*Cursor     // the open cursors (a few at most: a slice is cheaper to walk than a map)
	done  chan struct{} // closed when the task reaches a final state
}

// maxMetricsFrames bounds the metrics frames of one task (the rest of its log is bounded by
// max_tokens).
const maxMetricsFrames = 64

// leftQueueLocked tells the Gets waiting in awaitLeft that the status left Queued. t.mu is held.
func (t *Task) leftQueueLocked() {
	if t.left != nil {
		close(t.left)
		t.left = nil
	}
}

// awaitLeft waits until t's status leaves Queued: its ticket left the queue, and its runner
// is moving it on (to running, or to its end). It reports false, without waiting, for a task
// that no runner moves (recovered, its pool not back yet); false too when ctx ends or
// leaveWait passes first (the daemon is stopping).
func (t *Task) awaitLeft(ctx context.Context) bool {
	t.mu.Lock()
	if t.status != Queued {
		t.mu.Unlock()
		return true
	}
	if !t.runner {
		t.mu.Unlock()
		return false
	}
	if t.left == nil {
		t.left = make(chan struct{})
	}
	left := t.left
	t.mu.Unlock()
	return waitClosed(ctx, left, leaveWait)
}

// leaveWait bounds awaitLeft.
const leaveWait = time.Second

// waitClosed waits until ch is closed, ctx ends or d passes; it reports whether ch closed.
func waitClosed(ctx context.Context, ch <-chan struct{}, d time.Duration) bool {
	limit := time.NewTimer(d)
	defer limit.Stop()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
	case <-limit.C:
	}
	return false
}

// snapshot returns the task's state; the caller fills queue position.
func (t *Task) snapshot() Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Snapshot{
		ID: t.spec.ID, SessionID: t.spec.SessionID, Status: t.status, Priority: t.spec.Priority,
		PoolID: t.poolID, Engine: t.engine, TokensOut: t.tokensOut, TokensIn: t.tokensIn,
		Created: t.created, Started: t.started, Finished: t.finished, Migrations: t.migrations, Owner: t.spec.Owner,
	}
	if t.placement != nil {
		p := *t.placement
		p.Candidates = slices.Clone(p.Candidates)
		s.Placement = &p
	}
	if t.errInfo != nil {
		e := *t.errInfo
		s.Error = &e
	}
	return s
}

// minLogBytes is the first capacity of a task's event log.
const minLogBytes = 512

// appendLocked journals one frame and encodes it into the log. t.mu must be held, so that the
// journal sees a task's frames in the order of its log.
func (t *Task) appendLocked(name string, data []byte, verbose []byte) {
	var seq uint64
	if t.j != nil {
		seq = t.j.Append(t.spec.ID, recEvent, name, data, verbose)
	}
	t.logLocked(name, data, verbose, seq)
}

// appendFinalLocked journals and logs the final frame together with the final state (one
// record: a restart sees both or neither). t.mu must be held and the state already set.
func (t *Task) appendFinalLocked(name string, data []byte) {
	t.logLocked(name, data, nil, t.journalFinalLocked(name, data))
}

// journalFinalLocked appends t's final record to the journal and returns its sequence number
// (0: no journal). t.mu is held.
func (t *Task) journalFinalLocked(name string, data []byte) uint64 {
	if t.j == nil {
		return 0
	}
	buf := getRecordBuf()
	*buf = appendFinalRecord(*buf, &finalRecord{Status: t.status, Finished: t.finished, TokensOut: t.tokensOut,
		Error: t.errInfo, CancelReason: t.cancelReason, Migrations: t.migrations, Placement: t.placement})
	seq := t.j.Append(t.spec.ID, recFinal, name, data, *buf)
	putRecordBuf(buf)
	return seq
}

// logLocked encodes one frame into the log and wakes the subscribers. t.mu must be held.
func (t *Task) logLocked(name string, data []byte, verbose []byte, seq uint64) {
	id := len(t.spans)
	start := len(t.buf)
	t.growLocked(start + 2*(len("id: \nevent: \ndata: \n\n")+20+len(name)) + len(data) + len(verbose))
	t.buf = sse.AppendFrame(t.buf, id, name, data)
	sp := span{start: start, end: len(t.buf), vstart: start, seq: seq}
	if verbose != nil {
		sp.vstart = len(t.buf)
		t.buf = sse.AppendFrame(t.buf, id, name, verbose)
	}
	sp.vend = len(t.buf)
	if verbose == nil {
		sp.vend = sp.end
	}
	t.spans = append(t.spans, sp)
	t.wakeLocked(seq)
}

// appendTokenLocked journals and logs one token frame, encoded straight into the log: the
// journal is given the frame's data where it lies in the log (it does not retain it), so that a
// token costs no buffer of its own. t.mu must be held.
func (t *Task) appendTokenLocked(text []byte, index int) {
	id := len(t.spans)
	start := len(t.buf)
	t.growLocked(start + len("id: \nevent: token\ndata: {\"t\":,\"i\":}\n\n") + 40 + len(text))
	var data int
	// string(text) does not escape: the compiler converts it in a buffer on the stack, with no
	// allocation for a text of up to 32 bytes (a token's is a few).
	t.buf, data = sse.AppendTokenFrame(t.buf, id, string(text), index)
	var seq uint64
	if t.j != nil {
		seq = t.j.Append(t.spec.ID, recEvent, "token", t.buf[data:len(t.buf)-2], nil)
	}
	t.spans = append(t.spans, span{start: start, end: len(t.buf), vstart: start, vend: len(t.buf), seq: seq})
	t.wakeLocked(seq)
}

// growLocked makes room for need bytes in the log, doubling it: append's own growth slows to
// about 1.25× past 256 bytes, which copies a token stream's log several times over as it grows
// frame by frame. Readers keep reading the old backing array up to the spans they saw, which
// stays valid. t.mu must be held.
func (t *Task) growLocked(need int) {
	if need > cap(t.buf) {
		nb := make([]byte, len(t.buf), max(2*cap(t.buf), need, minLogBytes))
		copy(nb, t.buf)
		t.buf = nb
	}
}

// wakeLocked signals every open cursor that the log grew by the frame journaled as seq (0: not
// journaled). A cursor with a notify function whose frame the journal does not show yet is
// told once it does, instead of now: its reader would only find the frame held back and wait.
// t.mu must be held.
func (t *Task) wakeLocked(seq uint64) {
	for _, c := range t.subs {
		if c.notify != nil && seq != 0 && t.afterVisible(seq, c.shown) {
			continue
		}
		c.Signal()
	}
}

// afterVisible calls fn once the journal shows the record seq (see visibleNotifier); false:
// shown already, or the journal cannot tell.
func (t *Task) afterVisible(seq uint64, fn func()) bool {
	n, ok := t.j.(visibleNotifier)
	return ok && n.AfterVisible(seq, fn)
}

// Cursor reads a task's event log from a given event id on.
type Cursor struct {
	t       *Task
	next    int
	verbose bool
	wake    chan struct{}
	notify  func()          // called with every signal of wake (SubscribeFunc)
	shown   func()          // called once the journal shows held-back frames (SubscribeFunc)
	flushed <-chan struct{} // set by Next while frames wait for the journal
	held    uint64          // set by Next: the journal record of the first frame it held back
	endSent bool            // the final frame was sent to a cursor beyond the log's end
}

// Subscribe returns a cursor positioned at event id from (0 for the whole stream). Close it when
// done.
func (t *Task) Subscribe(from int, verbose bool) *Cursor {
	return t.SubscribeFunc(from, verbose, nil, nil)
}

// SubscribeFunc is Subscribe for a reader without a goroutine waiting on Wake: notify is
// called whenever Wake is signalled (new frames, the task's end, Signal). It is called with
// the task's lock held, by whichever goroutine logs the frame: it must return at once and not
// call into the task (start or signal the reader's goroutine, set a flag).
//
// shown, when not nil, replaces notify where the journal tells the reader that frames it held
// back are shown (NotifyWhenShown, and a frame logged before the journal shows it). It is
// called by the journal's goroutine with no lock of the task's held, so it may read the
// cursor (Next) and write to its client, without blocking.
func (t *Task) SubscribeFunc(from int, verbose bool, notify, shown func()) *Cursor {
	if shown == nil {
		shown = notify
	}
	c := &Cursor{t: t, next: max(from, 0), verbose: verbose, wake: make(chan struct{}, 1), notify: notify, shown: shown}
	t.mu.Lock()
	t.subs = append(t.subs, c)
	grace := t.graceStop // a reader is back: a disconnect's grace has nothing left to decide
	t.graceStop = nil
	if !t.hadReader && t.spec.OnDisconnect == OnDisconnectGrace {
		t.hadReader = true
		t.recordReaderLocked()
	}
	t.mu.Unlock()
	if grace != nil {
		grace()
	}
	return c
}

// Close unsubscribes the cursor. Closing it again does nothing.
func (c *Cursor) Close() {
	t := c.t
	t.mu.Lock()
	for i, sub := range t.subs {
		if sub == c {
			last := len(t.subs) - 1
			t.subs[i] = t.subs[last]
			t.subs[last] = nil
			t.subs = t.subs[:last]
			break
		}
	}
	t.mu.Unlock()
}

// Next appends to dst the frames not yet read and reports whether the log is complete (the task
// is final and every frame has been read). It does not block.
func (c *Cursor) Next(dst []byte) ([]byte, bool) {
	t := c.t
	t.mu.Lock()
	spans := t.spans
	buf := t.buf
	final := t.status.Final()
	kept := t.kept && !final
	t.mu.Unlock()
	// A frame is shown once the journal lets it be (written: a crash of the process never takes
	// back what a client saw, and event ids continue after a restart where the journal ends).
	limit := len(spans)
	c.flushed, c.held = nil, 0
	if t.j != nil && limit > c.next && spans[limit-1].seq != 0 {
		visible, ch := t.j.Visible()
		for limit > c.next && spans[limit-1].seq > visible {
			limit--
		}
		if limit < len(spans) {
			c.flushed, c.held = ch, spans[limit].seq
		}
	}
	if final && c.next > len(spans) && len(spans) > 0 {
		// Resuming after an id beyond the end of a finished log: the client saw frames that a
		// restart took back (shown once written, lost with the machine before their fsync).
		// It gets the final frame, numbered after its Last-Event-ID so that no id repeats, once
		// the journal shows it, as any frame.
		if !c.endSent {
			sp := spans[len(spans)-1]
			if t.j != nil && sp.seq != 0 {
				if visible, ch := t.j.Visible(); sp.seq > visible {
					c.flushed, c.held = ch, sp.seq
					return dst, false
				}
			}
			c.endSent = true
			frame := buf[sp.start:sp.end]
			if c.verbose {
				frame = buf[sp.vstart:sp.vend]
			}
			dst = append(dst, "id: "...)
			dst = strconv.AppendInt(dst, int64(c.next), 10)
			dst = append(dst, frame[bytes.IndexByte(frame, '\n'):]...)
		}
		return dst, true
	}
	// Frames are immutable once appended: reading them after unlocking is safe. Frames that
	// lie end to end in the log (all but around a metrics frame's other variant) are copied
	// in one piece.
	from, to := 0, 0
	for ; c.next < limit; c.next++ {
		start, end := spans[c.next].start, spans[c.next].end
		if c.verbose {
			start, end = spans[c.next].vstart, spans[c.next].vend
		}
		if start != to {
			dst = append(dst, buf[from:to]...)
			from = start
		}
		to = end
	}
	dst = append(dst, buf[from:to]...)
	return dst, (final || kept) && c.next >= len(spans)
}

// keepForNextStart marks t kept (the daemon stops with it queued, journaled) and wakes its
// readers, whose streams then end: nothing more comes in this process.
func (t *Task) keepForNextStart() {
	t.mu.Lock()
	t.kept = true
	subs := slices.Clone(t.subs)
	t.mu.Unlock()
	for _, c := range subs {
		c.Signal()
	}
}

// Signal wakes the cursor's reader as a new frame would (Wake receives), for a reader that
// waits on Wake alone and has other reasons to look (its client left, a heartbeat is due).
func (c *Cursor) Signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
	if c.notify != nil {
		c.notify()
	}
}

// NotifyWhenShown arranges for the cursor's shown function (SubscribeFunc) to be called once
// the journal shows the first frame the last Next held back. registered: it will be; false
// with supported: nothing is held back any more (call Next again); false without supported:
// the cursor has no notify function or the journal cannot tell, and the reader waits on
// Flushed.
func (c *Cursor) NotifyWhenShown() (registered, supported bool) {
	if c.notify == nil {
		return false, false
	}
	if _, ok := c.t.j.(visibleNotifier); !ok {
		return false, false
	}
	if c.held == 0 {
		return false, true
	}
	return c.t.afterVisible(c.held, c.shown), true
}

// Wake is signalled when new frames may be available.
func (c *Cursor) Wake() <-chan struct{} { return c.wake }

// Flushed is closed when the journal has made more frames visible, when the last Next held some
// back for it; otherwise it is nil (a receive from it blocks forever).
func (c *Cursor) Flushed() <-chan struct{} { return c.flushed }

// Done is closed when the task reaches a final state.
func (t *Task) Done() <-chan struct{} { return t.done }

// ID returns the task id.
func (t *Task) ID() string { return t.spec.ID }

// SessionID returns the task's session.
func (t *Task) SessionID() string { return t.spec.SessionID }

// Owner names the key that created the task.
func (t *Task) Owner() string { return t.spec.Owner }

// SessionGen is the generation of the session the task was admitted into: a session read by
// the task's session id is the task's own only with this generation (and the task's owner).
func (t *Task) SessionGen() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sessionGen
}

// Deadline returns the task's absolute deadline.
func (t *Task) Deadline() time.Time { return t.deadline }
