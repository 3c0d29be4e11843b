package task

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/gpu"
	"github.com/orchestratord/orchestratord/impl/placement"
	"github.com/orchestratord/orchestratord/impl/pool"
)

// prefixChars is how long a prompt's shared prefix must be for prefix affinity: shorter
// prompts have no prefix worth an engine's cache.
const prefixChars = 256

// PlacementDecision is the explanation of where a task runs (its latest placement).
type PlacementDecision struct {
	PoolID     string
	ReplicaID  string
	Reason     string
	Candidates []placement.ReplicaScore
}

// generate runs the task on replicas of its pool: it places it (ChooseReplica), runs it, and
// when the replica fails by its own fault places it again on another replica, at most once
// per replica and within the task's deadline (ctx). Before the first token this is invisible
// to the client; after it, the generation continues from the prompt plus the text already
// streamed (migration) when the pool allows it and the workload can be continued.
//
// generate stays on the task goroutine's stack for the whole generation, under
// the engine's read loop: everything else (placement, spans, metrics, logs, the failure
// handling) is in functions that return before the engine is called, so that an idle stream's
// goroutine uses little enough of its stack for the runtime to shrink it back to 8 KiB.
func (s *Service) generate(ctx context.Context, t *Task, engineTime *time.Duration) (engine.Result, error) {
	var g placements
	defer s.countStartedUnplaced(t, &g)
	for {
		a := &attempt{s: s, t: t}
		if !s.prepare(ctx, t, &g, a) {
			return g.res, g.err
		}
		actx := a.begin(ctx)
		g.res, g.err = a.lease.Engine.Generate(actx, a.req, a.emit)
		*engineTime += a.end(g.res, g.err)
		if s.settle(ctx, t, &g, a) {
			return g.res, g.err
		}
	}
}

// placements is what generate carries from one replica to the next.
type placements struct {
	tried   []string
	lastErr error         // the last replica's failure, when it is placed again
	res     engine.Result // the last attempt's, then generate's result
	err     error
	counted bool // tasks_started, under the first replica that took the task
}

// attempt is the task's run on one replica. It is on the heap (its emit method value is
// handed to the engine), not in generate's frame.
type attempt struct {
	s         *Service
	t         *Task
	lease     pool.Lease // the replica's engine, for the breaker's reports too
	release   func()
	req       engine.Request
	replicaID string
	sent      int  // tokens streamed before this attempt
	migrate   bool // the pool migrates tasks whose replica failed mid-stream

	ctx   context.Context // the engine call's, with its span
	span  trace.Span      // nil when tracing is off
	start time.Time
	// inDaemon is the time emit spent in the daemon. The engine calls emit from Generate's
	// goroutine or from its connection's poller while Generate waits (engine/httpengine),
	// in sequence either way, and inDaemon is read after Generate returns.
	inDaemon time.Duration
}

// countStartedUnplaced counts a task never placed: started all the same, on no replica.
func (s *Service) countStartedUnplaced(t *Task, g *placements) {
	if !g.counted {
		s.m.TasksStarted.WithLabelValues(t.engine, t.version, t.poolID, "", t.spec.Priority.String()).Inc()
	}
}

// prepare places the task on a replica and fills a; false: no replica, with generate's
// result in g.
func (s *Service) prepare(ctx context.Context, t *Task, g *placements, a *attempt) bool {
	sc := s.placeScratch()
	defer s.scratch.Put(sc) // the view and the snapshots are not used past prepare
	for {
		v, ok := s.opts.Pools.GetInto(t.poolID, sc.reps)
		if !ok {
			g.err = engine.Errorf(engine.KindPoolUnavailable, "pool %s is gone", t.poolID)
			return false
		}
		sc.reps = v.Replicas
		if !placement.ServesModel(v.ModelRef, v.ModelID, t.spec.ModelRef) {
			// Placement's own rule, checked again at dispatch: a reload gave the pool another
			// model after the task was placed on it (queued, kept over a restart, or between two
			// attempts of a migration). Its text must not come from a model it did not ask for,
			// nor half from one and half from another.
			g.err = engine.Errorf(engine.KindPoolUnavailable, "pool %s now serves model %s, not %s (reloaded after the task was admitted)",
				t.poolID, v.ModelID, t.spec.ModelRef)
			return false
		}
		dec := s.placeReplica(ctx, t, v, g.tried, g.lastErr != nil, sc)
		if dec.ReplicaID == "" {
			g.err = g.lastErr
			if g.err == nil {
				g.err = neverFits(t, dec, sc.snaps)
			}
			if g.err == nil {
				g.err = engine.Errorf(engine.KindPoolUnavailable, "no replica of pool %s can take the task", t.poolID)
			}
			return false
		}
		t.mu.Lock()
		t.onReplica = dec.ReplicaID
		t.mu.Unlock()
		lease, release, err := s.opts.Pools.Acquire(t.poolID, dec.ReplicaID)
		if err != nil { // replaced, stopped or drained between the snapshot and now
			t.mu.Lock()
			t.onReplica = ""
			t.mu.Unlock()
			g.tried = append(g.tried, dec.ReplicaID)
			g.lastErr = err
			continue
		}
		// The task's slot, granted by the queue for the pool, is now on this replica (moved
		// there from the one that failed, on a retry): the one count of busy slots, which
		// placement and pool health read per replica.
		s.assign(t, dec.ReplicaID)
		t.mu.Lock()
		sent := t.tokensOut
		limit, _ := t.spec.engineLimit()
		req := engine.Request{
			TaskID: t.spec.ID, Prompt: t.spec.Prompt, MaxTokens: limit, OpenEnded: t.spec.OpenEnded, Seed: t.spec.Seed,
			Deterministic: t.spec.Deterministic, Ctx: t.spec.Ctx, Workload: t.spec.Workload, Messages: t.spec.Messages,
			SessionID: t.spec.SessionID,
		}
		if sent > 0 { // a migration: continue the text already streamed
			req.Prompt += t.text.String()
			req.MaxTokens -= sent
			t.migrations++ // counted once moved: a failure with no replica left to take it moves nothing
			t.resent = sent
		}
		t.replicaID = dec.ReplicaID
		t.mu.Unlock()
		if sent > 0 {
			s.m.Migrations.WithLabelValues(t.poolID).Inc()
		}
		if !g.counted {
			g.counted = true
			s.m.TasksStarted.WithLabelValues(t.engine, t.version, t.poolID, dec.ReplicaID, t.spec.Priority.String()).Inc()
		}
		a.lease, a.release, a.req, a.replicaID, a.sent, a.migrate = lease, release, req, dec.ReplicaID, sent, v.MigrateOnFailure
		return true
	}
}

// begin starts the attempt's task.engine span and returns the engine call's context (kept
// in a.ctx for emit).
func (a *attempt) begin(ctx context.Context) context.Context {
	s, t := a.s, a.t
	a.start = s.now()
	a.ctx, a.span = ctx, nil // no span when tracing is off
	if s.tracing {
		a.ctx, a.span = s.opts.Tracer.Start(ctx, "task.engine", trace.WithTimestamp(a.start), trace.WithAttributes(
			attribute.String("task.id", t.spec.ID), attribute.String("pool.id", t.poolID),
			attribute.String("replica.id", a.replicaID), attribute.String("engine", t.engine)))
	}
	return a.ctx
}

// emit relays one token of the engine's to the task.
func (a *attempt) emit(tok engine.Token) error {
	t0 := a.s.now()
	err := a.s.onToken(a.ctx, a.t, tok, t0)
	a.inDaemon += a.s.now().Sub(t0)
	return err
}

// end ends the attempt's span, counts the replica's share of the tokens, gives its slot back
// and returns the time spent in the engine (less the time emit spent in the daemon).
func (a *attempt) end(res engine.Result, err error) time.Duration {
	s, t := a.s, a.t
	now := s.now()
	t.mu.Lock()
	if a.span != nil {
		a.span.SetAttributes(attribute.Int("tokens.out", t.tokensOut), attribute.Int("tokens.in", res.TokensIn))
	}
	produced := t.tokensOut - a.sent
	overran := 0 // the engine's count, when above the task's max_tokens
	if err == nil && t.cut == "" && res.TokensOut > produced {
		// The engine generated tokens that sent no frame of their own (a UTF-8 sequence split
		// over several, a chunk carrying several): its count is the task's, for tokens_out and
		// what budgets charge. (On failure or a cut, adapters count the frames emitted.)
		n := res.TokensOut
		if left := t.spec.MaxTokens - a.sent; n > left {
			// An engine that overran max_tokens inside such frames: the daemon counts frames
			// and could not cut there (onToken), so their text was relayed, but the task is
			// charged no more than the max_tokens it reserved. (produced <= left: onToken
			// refuses any frame past MaxTokens.)
			overran, n = n, left
		}
		t.tokensOut += n - produced
		produced = n
	}
	t.onReplica = "" // off it: a deadline of its drain from now on is not this task's
	t.mu.Unlock()
	if overran > 0 {
		s.log.Warn("the engine reported more tokens than the task's max_tokens; tokens_out is max_tokens",
			"task_id", t.spec.ID, "pool_id", t.poolID, "replica_id", a.replicaID, "max_tokens", t.spec.MaxTokens,
			"engine_tokens", a.sent+overran)
	}
	if produced > 0 { // each replica's share of a migrated task's tokens
		s.m.TokensOut.WithLabelValues(t.engine, t.version, t.poolID, a.replicaID).Add(float64(produced))
	}
	if a.span != nil {
		endSpan(a.span, err, s.now())
	}
	s.assign(t, "") // off the replica first: release reports a drained replica's smaller total
	a.release()
	return now.Sub(a.start) - a.inDaemon
}

// settle handles the end of an attempt (its result in g): true when g holds generate's
// result, false when the task is to be placed again.
func (s *Service) settle(ctx context.Context, t *Task, g *placements, a *attempt) bool {
	err := g.err
	t.mu.Lock()
	cut := t.cut
	t.mu.Unlock()
	if err == nil || cut != "" { // a cut: the daemon refused a token and the engine ended as asked
		s.opts.Pools.ReportSuccess(t.poolID, a.replicaID, a.lease)
		return true
	}
	if context.Cause(ctx) != nil {
		return true
	}
	kind := engine.KindOf(err)
	fault := kind.Fault()
	s.m.EngineErrors.WithLabelValues(t.engine, t.poolID, kind.String(), fault.String()).Inc()
	if fault != engine.FaultReplica { // the task's own failure, or overload: no other replica would do better
		return true
	}
	s.opts.Pools.ReportFailure(t.poolID, a.replicaID, a.lease) // only the replica's own faults count against it
	g.tried = append(g.tried, a.replicaID)
	g.lastErr = err
	t.mu.Lock()
	sent := t.tokensOut
	canceled := t.canceled
	t.mu.Unlock()
	if canceled {
		return true
	}
	s.log.Warn("replica failed the task; placing it again", "task_id", t.spec.ID, "pool_id", t.poolID,
		"replica_id", a.replicaID, "tokens_sent", sent, "err", err)
	if sent == 0 {
		return false
	}
	switch {
	case !a.migrate:
		g.err = engine.Errorf(engine.KindWorkerReset, "replica %s failed after %d tokens and the pool does not migrate tasks: %v", a.replicaID, sent, err)
		return true
	case !t.spec.continuable():
		g.err = engine.Errorf(engine.KindWorkerReset, "replica %s failed after %d tokens; a chat generation cannot be continued elsewhere: %v", a.replicaID, sent, err)
		return true
	case sent >= t.spec.MaxTokens:
		g.res, g.err = engine.Result{TokensOut: sent, Stop: engine.StopLimit}, nil
		return true
	case t.spec.StopAt > 0 && sent >= t.spec.StopAt: // the grant is streamed: nothing is left to ask elsewhere
		g.res, g.err = engine.Result{TokensOut: sent, Stop: StopBudget}, nil
		return true
	}
	return false // to another replica (prepare counts the migration when one takes it)
}

// assign records in the queue which replica the task's slot is on ("" none).
func (s *Service) assign(t *Task, replicaID string) {
	if err := t.ticket.Assign(replicaID); err != nil { // the runner holds the slot until it releases it
		s.log.Warn("assigning a slot to a replica", "task_id", t.spec.ID, "pool_id", t.poolID, "replica_id", replicaID, "err", err)
	}
}

// placeScratch holds placement's slices between tasks: admission's pool views and candidates,
// dispatch's replica views and snapshots. A task takes one for the length of a call and puts
// it back; what it keeps (the decision's candidates) is allocated on its own.
type placeScratch struct {
	views []pool.View
	cands []placement.Candidate
	reps  []pool.ReplicaView
	snaps []placement.ReplicaSnapshot
}

func (s *Service) placeScratch() *placeScratch {
	if sc, ok := s.scratch.Get().(*placeScratch); ok {
		return sc
	}
	return new(placeScratch)
}

// placeReplica chooses the task's replica among the pool's and records the decision.
func (s *Service) placeReplica(ctx context.Context, t *Task, v pool.View, tried []string, retry bool, sc *placeScratch) placement.ReplicaDecision {
	inv := s.gpuInventory(ctx, v)
	snaps := sc.snaps[:0]
	for _, r := range v.Replicas {
		sn := replicaSnapshot(r)
		sn.VRAM = deviceMemory(r.Devices, inv)
		snaps = append(snaps, sn)
	}
	sc.snaps = snaps
	req := placement.ReplicaRequest{Tried: tried, Retry: retry, Tiebreak: t.seq, Pin: t.spec.Placement.PinReplica,
		Prefer: t.spec.Placement.PreferReplicas, Avoid: t.spec.Placement.AvoidReplicas}
	if t.spec.Ctx > 0 && t.kvBytes > 0 { // the KV memory of the task's whole context
		req.NeedVRAM = int64(t.spec.Ctx) * t.kvBytes
	}
	// A session's later turns follow its KV cache; a first turn with a long prompt follows
	// its prefix to the replica whose cache likely holds it.
	req.SessionReplica = s.sessionReplica(t)
	if len(t.spec.Messages) == 0 {
		req.PrefixKey, req.HasPrefix = placement.PrefixKey(t.spec.Prompt, prefixChars)
	}
	dec := placement.ChooseReplica(snaps, req, nil)
	if dec.ReplicaID != "" {
		s.m.Placements.WithLabelValues(t.poolID, dec.Reason).Inc()
		if t.spec.SessionID != "" {
			s.setSessionReplica(t.spec.SessionID, t.sessionGen, dec.ReplicaID)
			if dec.SessionMoved && req.SessionReplica != "" {
				s.log.Info("session moved to another replica", "session_id", t.spec.SessionID, "pool_id", t.poolID,
					"from", req.SessionReplica, "to", dec.ReplicaID)
			}
		}
	}
	t.mu.Lock()
	t.placement = &PlacementDecision{PoolID: t.poolID, ReplicaID: dec.ReplicaID, Reason: dec.Reason, Candidates: dec.Candidates}
	t.mu.Unlock()
	return dec
}

// neverFits is the failure of a task that no replica of its pool can ever take as the pool
// is: each is excluded for what the task asks (its context's KV memory, its pin, its device
// mask, its avoid list), and at least one for memory. The task is invalid for this pool, not
// waiting for a replica to recover: nil when any exclusion may pass (not ready, draining, an
// open breaker, tried), or when memory is not among the reasons (the admission reports those).
func neverFits(t *Task, dec placement.ReplicaDecision, snaps []placement.ReplicaSnapshot) error {
	var short bool
	for _, c := range dec.Candidates {
		switch c.ExcludedBecause {
		case placement.ExcludedVRAM:
			short = true
		case placement.ExcludedNotPinned, placement.ExcludedDevices, placement.ExcludedAvoided:
		default:
			return nil
		}
	}
	if !short || len(dec.Candidates) == 0 {
		return nil
	}
	var most int64
	for _, sn := range snaps {
		most = max(most, sn.VRAM)
	}
	const gib = 1 << 30
	return engine.Errorf(engine.KindInvalidRequest,
		"the task's context (%d tokens × %d bytes of KV memory per token of pool %s = %.1f GiB) is larger than the memory of any of its replicas' devices (at most %.1f GiB)",
		t.spec.Ctx, t.kvBytes, t.poolID, float64(int64(t.spec.Ctx)*t.kvBytes)/gib, float64(most)/gib)
}

// replicaSnapshot is what the scorer sees of a replica. A draining pool still runs the tasks
// it had queued, so only the replica's own health and drain count.
func replicaSnapshot(r pool.ReplicaView) placement.ReplicaSnapshot {
	sn := placement.ReplicaSnapshot{ID: r.ID, Ready: r.Healthy && r.State != pool.StateStopped, Draining: r.Draining, Breaker: r.Breaker,
		ProbeInFlight: r.ProbeInFlight, Slots: r.Slots, Busy: r.Busy, KVUsage: -1, Devices: r.Devices, VRAM: -1}
	if r.HasEngineLoad {
		sn.Waiting, sn.KVUsage = r.EngineLoad.Waiting, r.EngineLoad.KVUsage
	}
	return sn
}

// gpuInventory reads the GPUs when a replica of v names its devices (the others' fit is
// unknown whatever NVML says).
func (s *Service) gpuInventory(ctx context.Context, v pool.View) gpu.Inventory {
	if s.opts.GPUs == nil {
		return gpu.Inventory{}
	}
	for _, r := range v.Replicas {
		if len(r.Devices) > 0 {
			return s.opts.GPUs.Snapshot(ctx)
		}
	}
	return gpu.Inventory{}
}

// deviceMemory is the total memory of devices in inv (bytes), or -1 (unknown: no NVML, no
// devices named, or one of them missing from the inventory or reporting no total).
func deviceMemory(devices []int, inv gpu.Inventory) int64 {
	if !inv.Available || len(devices) == 0 {
		return -1
	}
	var total int64
	for _, idx := range devices {
		i := slices.IndexFunc(inv.Devices, func(d gpu.Device) bool { return d.Index == idx })
		if i < 0 || inv.Devices[i].MemoryTotal == 0 {
			return -1
		}
		total += int64(inv.Devices[i].MemoryTotal)
	}
	return total
}

// sessionReplica is where the last turn of t's session ran ("" none, or the session of its id
// is no longer t's).
func (s *Service) sessionReplica(t *Task) string {
	info, _ := s.sessionOf(t)
	return info.Replica
}

func (s *Service) setSessionReplica(id string, gen uint64, replica string) {
	_ = s.opts.Sessions.SetReplica(id, gen, replica) // best effort: the session may have expired
}

// String describes a placement for logs.
func (p PlacementDecision) String() string {
	return fmt.Sprintf("%s on %s (%s)", p.PoolID, p.ReplicaID, p.Reason)
}
