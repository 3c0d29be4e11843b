package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// Journal records what a restart must not lose: admissions, stream events and terminal states.
// impl/journal is the file-backed implementation; a distributed log (NATS JetStream, say) can
// implement it too. Records are appended per task in the order of the task's log.
type Journal interface {
	// Append adds a record of task to the journal and returns its sequence number (increasing).
	// It must not block on I/O nor retain its arguments.
	Append(task string, kind uint8, name string, data, extra []byte) uint64
	// Wait returns once the record numbered seq is safe enough to acknowledge (for the file
	// journal, on disk unless configured otherwise), or the journal failed.
	Wait(ctx context.Context, seq uint64) error
	// Visible returns the highest sequence number a reader may be shown (for the file journal,
	// written to the kernel, so that a crash of the process never takes back a frame a client
	// saw) and a channel closed when it advances. A failed journal shows everything.
	Visible() (uint64, <-chan struct{})
	// Retire says that task is forgotten: its records need not survive.
	Retire(task string)
	// Replay calls fn with every record of the tasks not retired, in append order.
	Replay(fn func(task string, kind uint8, name string, data, extra []byte) error) error
}

// visibleNotifier is a Journal that can call a function once a record may be shown, for readers
// without a goroutine of their own (impl/journal's AfterVisible).
type visibleNotifier interface {
	AfterVisible(seq uint64, fn func()) bool
}

// ErrNotDurable is an admission refused because the journal cannot record it.
var ErrNotDurable = errors.New("the journal cannot record the admission")

// Record kinds of the task journal.
const (
	recAdmit   uint8 = 1 // data: admitRecord (JSON)
	recEvent   uint8 = 2 // name, data, extra: one frame of the log (extra: the verbose variant)
	recRunning uint8 = 3 // data: the start time (JSON admitRecord subset)
	recFinal   uint8 = 4 // name, data: the final frame; extra: finalRecord (JSON)
	// recReader: a reader attached to a task with on_disconnect: grace (its first one only),
	// so that a restart, which ends every reader's connection, starts the task's grace. A
	// task whose client only polls never had a reader to lose. (A build without it ignores it.)
	recReader uint8 = 5
	// recCancel (data: its reason): a cancel of a running task, journaled before Cancel
	// answers, so that a crash before the task's end (its engine slow to give the request up)
	// ends it canceled after the restart, as its client was told, not failed worker_reset.
	// (A build without it ignores it.)
	recCancel uint8 = 6
)

// admitRecord is what a restart needs to run a task again.
type admitRecord struct {
	Spec    Spec      `json:"spec"`
	Pool    string    `json:"pool"`
	Engine  string    `json:"engine"`
	Version string    `json:"version,omitempty"`
	KVBytes int64     `json:"kv_bytes,omitempty"`
	Created time.Time `json:"created"`
}

type runningRecord struct {
	Started time.Time `json:"started"`
}

type finalRecord struct {
	Status       Status     `json:"status"`
	Finished     time.Time  `json:"finished"`
	TokensOut    int        `json:"tokens_out"`
	Error        *ErrorInfo `json:"error,omitempty"`
	CancelReason string     `json:"cancel_reason,omitempty"`
	// Migrations and Placement are what GET shows of the task's run: a restart that replays
	// the task keeps them, as its end frame (which carries migrations) is kept.
	Migrations int                `json:"migrations,omitempty"`
	Placement  *PlacementDecision `json:"placement,omitempty"`
}

// recordAdmission journals a new task's admission and its first frame; the caller holds t.mu.
// It returns the sequence number to wait for.
func (t *Task) recordAdmissionLocked() uint64 {
	buf := getRecordBuf()
	defer putRecordBuf(buf)
	*buf = appendAdmitRecord(*buf, &admitRecord{Spec: t.spec, Pool: t.poolID, Engine: t.engine, Version: t.version,
		KVBytes: t.kvBytes, Created: t.created})
	return t.j.Append(t.spec.ID, recAdmit, "", *buf, nil)
}

// recordRunningLocked journals the start of a task; the caller holds t.mu.
func (t *Task) recordRunningLocked() {
	if t.j == nil {
		return
	}
	buf := getRecordBuf()
	*buf = appendRunningRecord(*buf, &runningRecord{Started: t.started})
	t.j.Append(t.spec.ID, recRunning, "", *buf, nil)
	putRecordBuf(buf)
}

// recordReaderLocked journals that a reader attached to the task (recReader); the caller holds
// t.mu.
func (t *Task) recordReaderLocked() {
	if t.j != nil {
		t.j.Append(t.spec.ID, recReader, "", nil, nil)
	}
}

// Recover rebuilds the tasks of the journal: finished ones are readable again, ones that were
// running end with a retriable worker_reset error (canceled, when their cancel was journaled:
// recCancel), and queued ones are queued again by Run (in their admission order). Call it once,
// after New and before Run and any Submit.
func (s *Service) Recover() error {
	if s.j == nil {
		return nil
	}
	var order []*Task
	byID := map[string]*Task{}
	err := s.j.Replay(func(id string, kind uint8, name string, data, extra []byte) error {
		if kind == recAdmit {
			var r admitRecord
			if err := json.Unmarshal(data, &r); err != nil {
				return fmt.Errorf("task %s: admission record: %w", id, err)
			}
			t := &Task{spec: r.Spec, poolID: r.Pool, engine: r.Engine, version: r.Version, kvBytes: r.KVBytes,
				created: r.Created, deadline: r.Created.Add(r.Spec.Deadline),
				status: Queued, done: make(chan struct{}), j: s.j}
			if _, dup := byID[id]; !dup {
				order = append(order, t)
			}
			byID[id] = t
			return nil
		}
		t := byID[id]
		if t == nil { // its admission was not recorded: nothing was acknowledged
			return nil
		}
		switch kind {
		case recEvent:
			if len(extra) == 0 { // decoded as empty, not nil: a frame with no verbose variant
				extra = nil
			}
			t.logLocked(name, data, extra, 0)
			switch name {
			case "token":
				t.tokensOut++
			case "metrics":
				t.nMetrics++
			}
		case recRunning:
			var r runningRecord
			if err := json.Unmarshal(data, &r); err != nil {
				return fmt.Errorf("task %s: running record: %w", id, err)
			}
			t.status, t.started = Running, r.Started
		case recReader:
			t.hadReader = true
		case recCancel:
			t.canceled, t.cancelReason = true, string(data)
		case recFinal:
			var r finalRecord
			if err := json.Unmarshal(extra, &r); err != nil {
				return fmt.Errorf("task %s: final record: %w", id, err)
			}
			t.logLocked(name, data, nil, 0)
			t.status, t.finished, t.tokensOut, t.errInfo, t.cancelReason = r.Status, r.Finished, r.TokensOut, r.Error, r.CancelReason
			t.migrations, t.placement = r.Migrations, r.Placement
			if r.Placement != nil {
				t.replicaID = r.Placement.ReplicaID
			}
			if t.status.Final() {
				close(t.done)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	var fin []finishedRef
	var interrupted, orphaned, canceled []*Task
	var queued int
	s.mu.Lock()
	for _, t := range order {
		if len(t.spans) == 0 { // cut between its two first records: its 202 was never sent
			s.j.Retire(t.spec.ID)
			continue
		}
		s.tasks[t.spec.ID] = t
		switch {
		case t.status.Final():
			t.releaseInputsLocked() // not yet shared: no other goroutine has it
			fin = append(fin, finishedRef{id: t.spec.ID, at: t.finished})
		case t.canceled: // running, its cancel answered before its runner ended it (recCancel)
			canceled = append(canceled, t)
		case t.status == Running:
			interrupted = append(interrupted, t)
		case t.spec.Transient: // queued for a client that went with the crash: none can resume it
			orphaned = append(orphaned, t)
		default:
			s.requeue = append(s.requeue, t)
			queued++
		}
	}
	slices.SortStableFunc(fin, func(a, b finishedRef) int { return a.at.Compare(b.at) })
	s.finished = append(s.finished, fin...)
	unended := slices.Concat(interrupted, orphaned, canceled, s.requeue)
	s.mu.Unlock()
	if s.opts.Meter != nil {
		// The key's budget holds the grants of the tasks not yet ended again before any new
		// admission can be granted the same tokens; each is settled as it ends (the
		// interrupted ones below), as it would have been before the restart.
		for _, t := range unended {
			if t.spec.Grant > 0 {
				s.opts.Meter.Restore(t.spec.Owner, t.spec.Grant)
			}
		}
	}
	for _, t := range interrupted {
		s.finish(t, Failed, &ErrorInfo{Class: ClassWorkerReset,
			Message:   "the daemon restarted while the task was running; submit it again under a new task_id",
			Retriable: true, RetryAfterMs: 1000, PoolID: t.poolID, Engine: t.engine}, engine.Result{}, 0)
	}
	for _, t := range orphaned {
		s.finish(t, Failed, &ErrorInfo{Class: ClassWorkerReset,
			Message:   "the daemon restarted before the task ran, and its client (an OpenAI-compatible request) cannot resume it",
			Retriable: true, RetryAfterMs: 1000, PoolID: t.poolID, Engine: t.engine}, engine.Result{}, 0)
	}
	for _, t := range canceled {
		s.finish(t, Canceled, nil, engine.Result{}, 0)
	}
	if s.opts.Meter != nil {
		s.opts.Meter.Recovered()
	}
	s.log.Info("tasks recovered from the journal", "finished", len(fin), "queued", queued, "interrupted", len(interrupted)+len(orphaned),
		"canceled", len(canceled))
	return nil
}

// resume queues again the recovered tasks that were queued, in their admission order, and
// starts the disconnect grace of those with on_disconnect: grace (graceAfterRestart). Run calls
// it once the queue runs.
func (s *Service) resume(ctx context.Context) {
	s.mu.Lock()
	requeue := s.requeue
	s.requeue = nil
	s.mu.Unlock()
	if len(requeue) == 0 {
		return
	}
	// Pools take nothing until every recovered task is queued again, so that the queue orders
	// them as it did before (interactive first, FIFO within a class), not first come first
	// served. poolMu holds PoolChanged back meanwhile.
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	views := s.opts.Pools.Views()
	for _, v := range views {
		v.Healthy = false
		s.setPoolLocked(v)
	}
	defer func() {
		for _, v := range s.opts.Pools.Views() {
			s.setPoolLocked(v)
		}
	}()
	for _, t := range requeue {
		// Taken up: from here it ends below (refused) or its runner ends it, and a cancel
		// leaves it to them and waits (cancel). One cancelled before was ended by its cancel,
		// with its final record, and holds nothing here: no session turn, no reservation.
		t.mu.Lock()
		canceled := t.canceled
		t.runner = !canceled
		t.mu.Unlock()
		if canceled {
			continue
		}
		if info, err := s.opts.Sessions.Admit(t.spec.SessionID, t.spec.Owner); err != nil {
			s.log.Warn("recovered task: its session did not take it", "task_id", t.spec.ID, "session_id", t.spec.SessionID, "err", err)
		} else {
			t.mu.Lock()
			t.sessionGen = info.Gen
			t.mu.Unlock()
			if t.spec.SessionGrant > 0 {
				s.reserveAgain(t)
			}
		}
		// Cancelled since it was taken up: its runner sees t.canceled as it starts, and ends it.
		if _, err := s.queue.EnqueueTicket(&t.ticket, t.spec.item(t.poolID)); err != nil {
			s.finish(t, Failed, &ErrorInfo{Class: ClassPoolUnavailable,
				Message:   fmt.Sprintf("the task could not be queued again after a restart: %v", err),
				Retriable: true, RetryAfterMs: 1000, PoolID: t.poolID, Engine: t.engine}, engine.Result{}, 0)
			continue
		}
		s.m.TasksEnqueued.WithLabelValues(t.engine, t.version, t.poolID, "", t.spec.Priority.String()).Inc()
		s.log.Info("task queued again after a restart", "task_id", t.spec.ID, "pool_id", t.poolID,
			"priority", t.spec.Priority.String())
		s.wg.Add(1)
		go s.run(ctx, t)
		s.graceAfterRestart(ctx, t)
	}
}

// reserveAgain takes a recovered task's reservation of its session's token budget again:
// sessions live in memory, so the session the restart re-created holds none, and the grant the
// task settles when it ends must be one the session gave. A session with less left than the
// grant (a smaller budget configured since) grants what it has and the task stops there.
func (s *Service) reserveAgain(t *Task) {
	r, err := s.opts.Sessions.Reserve(t.spec.SessionID, t.spec.Owner, t.spec.SessionGrant)
	if err != nil {
		s.log.Warn("recovered task: its session's budget did not take its reservation again", "task_id", t.spec.ID,
			"session_id", t.spec.SessionID, "err", err)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if r.Grant < t.spec.SessionGrant && (t.spec.StopAt == 0 || r.Grant < t.spec.StopAt) {
		t.spec.StopAt = r.Grant
	}
	t.spec.SessionGrant, t.spec.SessionGen = r.Grant, r.Gen
}
