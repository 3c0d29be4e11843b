package impl

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/sse"
	"github.com/orchestratord/orchestratord/impl/task"
	"github.com/orchestratord/orchestratord/impl/tenant"
	"github.com/orchestratord/orchestratord/internal/textclip"
)

// CreateTask admits a task; a refusal is counted against the key.
func (s *Server) CreateTask(ctx context.Context, req api.CreateTaskRequestObject) (api.CreateTaskResponseObject, error) {
	resp, err := s.createTask(ctx, req)
	if err != nil {
		s.countRejection(ctx, err)
	}
	return resp, err
}

// countRejection counts a refused submission against the calling key.
func (s *Server) countRejection(ctx context.Context, err error) {
	if s.opts.Metrics != nil {
		s.opts.Metrics.TenantRejections.WithLabelValues(callerKey(ctx).Name, toAPIError(err).Code).Inc()
	}
}

func (s *Server) createTask(ctx context.Context, req api.CreateTaskRequestObject) (api.CreateTaskResponseObject, error) {
	s.sessionOfRepost(ctx, req.Body)
	s.generateIDs(ctx, req.Body)
	spec, err := specFromRequest(req.Body)
	if err != nil {
		return nil, err
	}
	spec.CorrelationID = CorrelationID(ctx)
	adm, err := s.admit(ctx, spec)
	if err != nil {
		return nil, err
	}
	a := &admitted{pool: adm.PoolID, timeLeft: adm.TimeBudgetRemaining.Milliseconds()}
	// One string for both stream URLs: /v1/tasks/{id}/stream?verbose=true.
	const prefix, suffix, verbose = "/v1/tasks/", "/stream", "?verbose=true"
	var sb strings.Builder
	sb.Grow(len(prefix) + 36 + len(suffix) + len(verbose))
	sb.WriteString(prefix)
	var id [36]byte
	sb.Write(appendUUIDText(id[:0], req.Body.TaskId))
	sb.WriteString(suffix)
	sb.WriteString(verbose)
	urls := sb.String()
	a.streams.Sse, a.streams.SseVerbose = urls[:len(urls)-len(verbose)], urls
	a.Body = api.AdmissionResponse{
		TaskId: req.Body.TaskId, SessionId: req.Body.SessionId, QueuePosition: int32(adm.QueuePosition),
		PredictedStartMs: adm.PredictedStartMs, BackoffMs: 0, PoolId: &a.pool, Streams: &a.streams,
	}
	a.Headers = api.CreateTask202ResponseHeaders{
		XCorrelationId:         spec.CorrelationID,
		XBudgetTokensRemaining: adm.TokensBudgetRemaining,
		XBudgetTimeRemainingMs: &a.timeLeft,
	}
	return a, nil
}

// sessionOfRepost fills in, for a body that names a task of the caller's key and leaves
// session_id out, the session that task runs in: the daemon generated it at the first post, and
// the task's fingerprint holds it, so a re-post of the same body is the same request (without
// it, each post got a new session and an identical re-post was a 409). A task id of another
// key, or unknown, gets nothing here: it is a new task, or refused as any other.
func (s *Server) sessionOfRepost(ctx context.Context, b *api.TaskRequest) {
	if b == nil || b.TaskId == uuid.Nil || b.SessionId != uuid.Nil {
		return
	}
	var id [36]byte
	t, err := s.ownedTask(ctx, string(appendUUIDText(id[:0], b.TaskId)))
	if err != nil {
		return
	}
	if sid, err := uuid.Parse(t.SessionID()); err == nil {
		b.SessionId = sid
	}
}

// generateIDs fills in the task and session ids the client left out (a new task, a new
// session). The contract refuses the nil UUID, so a zero id here was left out. A session left
// out is the one of the caller's key and the task id (in sessionSpace, which nobody outside
// knows): two posts of one task at once, both before its task exists for sessionOfRepost to
// find, get the same session, so that they are the same body and one task. A random session
// each made the second post 409 CONFLICT for a body identical to the first's.
func (s *Server) generateIDs(ctx context.Context, b *api.TaskRequest) {
	if b == nil {
		return // specFromRequest refuses it
	}
	if b.TaskId == uuid.Nil {
		b.TaskId = uuid.New()
	}
	if b.SessionId == uuid.Nil {
		b.SessionId = uuid.NewSHA1(s.sessionSpace, []byte(callerKey(ctx).Name+"/"+b.TaskId.String()))
	}
}

// admit runs a task's admission for the calling key: its max_priority, rate limits, its
// session's token budget and the key's, then the task service. What a refused or replayed
// submission reserved goes back. POST /v1/tasks and the OpenAI-compatible endpoints both admit
// through it.
func (s *Server) admit(ctx context.Context, spec task.Spec) (_ task.Admission, err error) {
	// tasks_rejected_total counts every refusal: the task service counts its own, and one made
	// here before it (a key's limits, budget or max_priority, a session's budget) is counted
	// here.
	submitted := false
	defer func() {
		if err != nil && !submitted && s.opts.Metrics != nil {
			s.opts.Metrics.TasksRejected.WithLabelValues(spec.Engine, toAPIError(err).Code).Inc()
		}
	}()
	key := callerKey(ctx)
	spec.Owner, spec.Weight = key.Name, key.Weight
	if key.MaxPriority != "" {
		if most, err := admission.ParsePriority(key.MaxPriority); err == nil && spec.Priority < most {
			return task.Admission{}, Errorf("FORBIDDEN", "key %q may submit %s tasks at most, not %s", key.Name, most, spec.Priority)
		}
	}
	// A re-post of a task already admitted gets its admission again before any limit or budget
	// is consulted: its first post took them, and a retry must not be refused for that.
	if adm, ok, err := s.opts.Tasks.Replay(ctx, spec); ok {
		if err != nil {
			return task.Admission{}, err
		}
		return s.replayed(key, spec, adm), nil
	}
	// lateReplay answers a refusal below for a post whose task a concurrent post of the same
	// body admitted after Replay above looked: it is a re-post, no new request, and gets the
	// task's admission rather than the refusal. took: it took a request from the key's limits,
	// given back then (its tokens went back with the refusal's refund).
	lateReplay := func(took bool) (task.Admission, bool) {
		adm, ok, err := s.opts.Tasks.Replay(ctx, spec)
		if !ok || err != nil {
			return task.Admission{}, false
		}
		if took && s.opts.Limits != nil {
			s.opts.Limits.Unadmit(key.Name)
			SetRateLimitHeaders(responseHeader(ctx), s.opts.Limits.Windows(key))
		}
		return s.replayed(key, spec, adm), true
	}
	if spec.OpenEnded && key.TPM > 0 && spec.MaxTokens > key.TPM {
		// An OpenAI chat without max_tokens: its MaxTokens is the daemon's (the context), not
		// the client's, and the key can never have more than its tokens per minute. It runs to
		// that many, cut with finish_reason "length", rather than being refused for a
		// max_tokens it never sent.
		spec.MaxTokens = key.TPM
	}
	if s.opts.Limits != nil {
		ws, err := s.opts.Limits.Admit(key, spec.MaxTokens)
		SetRateLimitHeaders(responseHeader(ctx), ws)
		if err != nil {
			if adm, ok := lateReplay(false); ok {
				return adm, nil
			}
			return task.Admission{}, err
		}
		if key.TPM > 0 {
			spec.TPMReserved = spec.MaxTokens
		}
	}
	// The session's budget: the task reserves its max_tokens of it, or what is left (and stops
	// there). The first key to name a session owns it; another key's is as unknown as a task id.
	sess, err := s.opts.Sessions.Reserve(spec.SessionID, key.Name, spec.MaxTokens)
	if err != nil {
		s.refund(ctx, key, spec, false)
		if adm, ok := lateReplay(true); ok {
			return adm, nil
		}
		var spent *session.BudgetError
		switch {
		case errors.Is(err, session.ErrNotFound):
			return task.Admission{}, errSessionNotFound()
		case errors.As(err, &spent):
			setBudgetRemaining(ctx, 0)
			return task.Admission{}, &tenant.BudgetError{Key: key.Name, Session: spec.SessionID, Pending: spent.Pending}
		default:
			return task.Admission{}, fmt.Errorf("%w: %w", task.ErrInvalid, err)
		}
	}
	spec.SessionGen = sess.Gen
	sessLeft := sess.Remaining
	if sessLeft >= 0 {
		spec.SessionGrant = sess.Grant
		if sess.Grant < spec.MaxTokens {
			spec.StopAt = sess.Grant
		}
	}
	keyLeft := int64(-1)
	if s.opts.Budgets != nil {
		grant, left, err := s.opts.Budgets.Reserve(key, spec.MaxTokens)
		if err != nil {
			s.refund(ctx, key, spec, true)
			if adm, ok := lateReplay(true); ok {
				return adm, nil
			}
			setBudgetRemaining(ctx, 0)
			return task.Admission{}, err
		}
		if key.TokenBudget > 0 {
			spec.Grant, keyLeft = grant, left
			if grant < spec.MaxTokens && (spec.StopAt == 0 || grant < spec.StopAt) {
				spec.StopAt = grant
			}
		}
	}
	submitted = true
	adm, err := s.opts.Tasks.Submit(ctx, spec)
	if err == nil && adm.Replayed && s.opts.Limits != nil {
		// A concurrent post of the same task won the race past Replay above: this one is no
		// new request either (refund refreshes the headers).
		s.opts.Limits.Unadmit(key.Name)
	}
	if err != nil || adm.Replayed {
		// Tokens are reserved once per task: a refused submission or a re-post gives them back.
		s.refund(ctx, key, spec, true)
	}
	if err != nil {
		return task.Admission{}, err
	}
	if adm.Replayed { // posted again meanwhile
		return s.replayed(key, spec, adm), nil
	}
	return withBudgetRemaining(adm, keyLeft, sessLeft), nil
}

// replayed is the admission of a re-post, with what is left of the budgets now, the first
// post's reservations still held.
func (s *Server) replayed(key *tenant.Key, spec task.Spec, adm task.Admission) task.Admission {
	keyLeft, sessLeft := int64(-1), int64(-1)
	if s.opts.Budgets != nil && key.TokenBudget > 0 {
		keyLeft = s.opts.Budgets.Remaining(key)
	}
	// Read now, after this post's own reservation went back; the task's own session only (one
	// deleted since, and perhaps named again by another key, is not the task's).
	if info, ok := s.opts.Sessions.Get(spec.SessionID); ok && info.TokensBudgetRemaining != nil &&
		info.Admitted(adm.SessionGen, key.Name) {
		sessLeft = *info.TokensBudgetRemaining
	}
	return withBudgetRemaining(adm, keyLeft, sessLeft)
}

// withBudgetRemaining sets X-Budget-Tokens-Remaining: the smaller of the key's and the
// session's remaining budgets (-1: none).
func withBudgetRemaining(adm task.Admission, keyLeft, sessLeft int64) task.Admission {
	adm.TokensBudgetRemaining = nil
	for _, left := range []int64{keyLeft, sessLeft} {
		if left >= 0 && (adm.TokensBudgetRemaining == nil || left < *adm.TokensBudgetRemaining) {
			adm.TokensBudgetRemaining = &left
		}
	}
	return adm
}

// setBudgetRemaining sets X-Budget-Tokens-Remaining on the response (a refusal's).
func setBudgetRemaining(ctx context.Context, left int64) {
	if h := responseHeader(ctx); h != nil {
		h.Set("X-Budget-Tokens-Remaining", strconv.FormatInt(left, 10))
	}
}

// callerKey is the request's key; without one (a handler called outside Auth, in tests) the
// all-scopes default tenant.
func callerKey(ctx context.Context) *tenant.Key {
	if k := KeyOf(ctx); k != nil {
		return k
	}
	return &tenant.Key{Name: tenant.DefaultName, Scopes: tenant.AllScopes, Weight: 1}
}

// refund returns what a submission reserved (tokens of the tpm bucket, the grant of the key's
// budget and, once the session took its reservation, the session's grant; a session the
// submission only claimed is forgotten) and refreshes the rate-limit headers.
func (s *Server) refund(ctx context.Context, key *tenant.Key, spec task.Spec, sessionReserved bool) {
	if sessionReserved {
		s.opts.Sessions.Settle(spec.SessionID, key.Name, spec.SessionGen, spec.SessionGrant, 0)
	}
	if s.opts.Budgets != nil && spec.Grant > 0 {
		_ = s.opts.Budgets.Settle(key.Name, spec.Grant, 0) // nothing used: nothing to persist
	}
	if s.opts.Limits == nil {
		return
	}
	s.opts.Limits.Settle(key.Name, spec.TPMReserved, 0)
	SetRateLimitHeaders(responseHeader(ctx), s.opts.Limits.Windows(key))
}

// ownedTask returns the task id names if the caller's key created it. Another key's task is
// ErrNotFound, exactly like an unknown id, so ids leak nothing.
func (s *Server) ownedTask(ctx context.Context, id string) (*task.Task, error) {
	t, err := s.opts.Tasks.Task(id)
	if err != nil {
		return nil, err
	}
	if t.Owner() != callerKey(ctx).Name {
		return nil, task.ErrNotFound
	}
	return t, nil
}

// specFromRequest converts and checks what the schema cannot express.
func specFromRequest(b *api.TaskRequest) (task.Spec, error) {
	if b == nil {
		return task.Spec{}, Errorf("INVALID_PARAMS", "body: a JSON TaskRequest is required")
	}
	prio, err := admission.ParsePriority(string(b.Priority))
	if err != nil {
		return task.Spec{}, Errorf("INVALID_PARAMS", "/priority: %v", err)
	}
	var prompt string
	switch {
	case b.Prompt != nil && b.Inputs != nil:
		return task.Spec{}, Errorf("INVALID_PARAMS", "/prompt: give either prompt or inputs, not both")
	case b.Prompt != nil:
		prompt = *b.Prompt
	case b.Inputs != nil:
		prompt = strings.Join(*b.Inputs, "")
	default:
		return task.Spec{}, Errorf("INVALID_PARAMS", "/prompt: one of prompt or inputs is required")
	}
	var messages []engine.Message
	if b.Workload == api.Chat {
		// A chat is one user message (prompt) or the conversation's turns (inputs), alternating
		// user and assistant and ending with the user's.
		turns := []string{prompt}
		if b.Inputs != nil {
			turns = *b.Inputs
			if len(turns)%2 == 0 {
				return task.Spec{}, Errorf("INVALID_PARAMS", "/inputs: a chat alternates user and assistant messages and ends with the user's: an odd count, got %d", len(turns))
			}
		}
		for i, c := range turns {
			role := "user"
			if i%2 == 1 {
				role = "assistant"
			}
			messages = append(messages, engine.Message{Role: role, Content: c})
		}
	}
	if b.MaxTokens > b.Ctx {
		return task.Spec{}, Errorf("INVALID_PARAMS", "/max_tokens: %d exceeds ctx %d", b.MaxTokens, b.Ctx)
	}
	// The fingerprint of the request as encoding/json writes it (appendTaskRequest, without
	// reflection): re-posts match whatever their key order and spacing, and fingerprints kept in
	// the journal by earlier builds still match.
	var canonBuf [512]byte
	canon := appendTaskRequest(canonBuf[:0], b)
	var idBuf [72]byte // both ids in one string
	ids := string(appendUUIDText(appendUUIDText(idBuf[:0], b.TaskId), b.SessionId))
	spec := task.Spec{
		ID: ids[:36], SessionID: ids[36:], Workload: string(b.Workload),
		ModelRef: b.ModelRef, Engine: string(b.Engine), Ctx: int(b.Ctx), Priority: prio,
		Seed: b.Seed, Prompt: prompt, Messages: messages, MaxTokens: int(b.MaxTokens),
		Deadline:    time.Duration(b.DeadlineMs) * time.Millisecond,
		Fingerprint: sha256.Sum256(canon),
	}
	if b.OnDisconnect != nil {
		spec.OnDisconnect = string(*b.OnDisconnect)
	}
	switch {
	case spec.OnDisconnect == task.OnDisconnectGrace && b.DisconnectGraceMs == nil:
		return task.Spec{}, Errorf("INVALID_PARAMS", "/disconnect_grace_ms: required when on_disconnect is grace")
	case spec.OnDisconnect != task.OnDisconnectGrace && b.DisconnectGraceMs != nil:
		return task.Spec{}, Errorf("INVALID_PARAMS", "/disconnect_grace_ms: only with on_disconnect grace")
	case b.DisconnectGraceMs != nil:
		spec.DisconnectGrace = time.Duration(*b.DisconnectGraceMs) * time.Millisecond
	}
	if b.Determinism != nil && *b.Determinism == api.Strict {
		spec.Deterministic = true
	}
	if b.ExpectedTokens != nil {
		spec.ExpectedTokens = int(*b.ExpectedTokens)
	}
	if p := b.Placement; p != nil {
		spec.Placement.AllowFallback = p.AllowFallback == nil || *p.AllowFallback
		if p.Mode != nil {
			spec.Placement.Mode = string(*p.Mode)
		}
		if p.PinPoolId != nil {
			spec.Placement.PinPool = *p.PinPoolId
		}
		if p.PreferPools != nil {
			spec.Placement.PreferPools = *p.PreferPools
		}
		if p.AvoidPools != nil {
			spec.Placement.AvoidPools = *p.AvoidPools
		}
		if p.PinReplicaId != nil {
			spec.Placement.PinReplica = *p.PinReplicaId
		}
		if p.PreferReplicas != nil {
			spec.Placement.PreferReplicas = *p.PreferReplicas
		}
		if p.AvoidReplicas != nil {
			spec.Placement.AvoidReplicas = *p.AvoidReplicas
		}
		if spec.Placement.Mode == "pin" && spec.Placement.PinPool == "" {
			return task.Spec{}, Errorf("INVALID_PARAMS", "/placement/pin_pool_id: required when mode is pin")
		}
		if spec.Placement.PinReplica != "" && spec.Placement.Mode != "pin" {
			return task.Spec{}, Errorf("INVALID_PARAMS", "/placement/pin_replica_id: requires mode pin with pin_pool_id")
		}
		if p.RequireDeviceMask != nil {
			return task.Spec{}, fmt.Errorf("%w: /placement/require_device_mask: none of the pools has a device mask", task.ErrNoMatch)
		}
	}
	return spec, nil
}

// GetTask returns a task's state.
func (s *Server) GetTask(ctx context.Context, req api.GetTaskRequestObject) (api.GetTaskResponseObject, error) {
	snap, err := s.opts.Tasks.Get(ctx, req.Id.String())
	if err != nil {
		return nil, err
	}
	if snap.Owner != callerKey(ctx).Name {
		return nil, task.ErrNotFound
	}
	body := api.TaskState{
		TaskId: req.Id, State: api.TaskStatus(snap.Status.String()), Priority: api.Priority(snap.Priority.String()),
		PoolId: snap.PoolID, TokensOut: int32(snap.TokensOut), CreatedMs: snap.Created.UnixMilli(),
	}
	_ = body.SessionId.UnmarshalText([]byte(snap.SessionID))
	if snap.QueuePosition != nil {
		p := int32(*snap.QueuePosition)
		body.QueuePosition = &p
		body.PredictedStartMs = snap.PredictedStartMs
	}
	if !snap.Started.IsZero() {
		ms := snap.Started.UnixMilli()
		body.StartedMs = &ms
	}
	if a := snap.Admission; a != nil {
		ex := api.AdmissionExplanation{KeyName: a.KeyName, Class: api.Priority(a.Class.String())}
		if pl := a.Placement; pl != nil {
			pos, vs := int32(pl.Position), pl.VirtualStart
			ex.Position, ex.VirtualStart = &pos, &vs
			ex.AheadByClass = &struct {
				Batch       int32 `json:"batch"`
				Interactive int32 `json:"interactive"`
			}{Batch: int32(pl.AheadBatch), Interactive: int32(pl.AheadInteractive)}
		}
		if a.RefusedClass != nil {
			r := api.ErrorKind(FailureCode(*a.RefusedClass))
			ex.ReasonIfRefused = &r
		}
		body.Admission = &ex
	}
	if !snap.Finished.IsZero() {
		ms := snap.Finished.UnixMilli()
		body.FinishedMs = &ms
	}
	if p := snap.Placement; p != nil && p.ReplicaID != "" {
		pl := api.Placement{PoolId: p.PoolID, ReplicaId: p.ReplicaID, Reason: api.PlacementReason(p.Reason),
			Candidates: make([]api.PlacementCandidate, len(p.Candidates))}
		for i, c := range p.Candidates {
			pl.Candidates[i] = api.PlacementCandidate{ReplicaId: c.ReplicaID, Score: c.Score}
			if c.ExcludedBecause != "" {
				why := c.ExcludedBecause
				pl.Candidates[i].ExcludedBecause = &why
			}
		}
		body.Placement = &pl
	}
	if snap.Migrations > 0 {
		m := int32(snap.Migrations)
		body.Migrations = &m
	}
	if e := snap.Error; e != nil {
		env := api.ErrorEnvelope{Code: api.ErrorKind(FailureCode(e.Class)), Message: textclip.Clip(e.Message, maxMessage), Retriable: e.Retriable}
		if e.RetryAfterMs > 0 {
			env.RetryAfterMs = &e.RetryAfterMs
		}
		if e.Engine != "" {
			eng := api.Engine(e.Engine)
			env.Engine = &eng
		}
		if e.PoolID != "" {
			env.PoolId = &e.PoolID
		}
		body.Error = &env
	}
	return api.GetTask200JSONResponse{Body: body, Headers: api.GetTask200ResponseHeaders{XCorrelationId: CorrelationID(ctx)}}, nil
}

// CancelTask cancels a task (idempotent).
func (s *Server) CancelTask(ctx context.Context, req api.CancelTaskRequestObject) (api.CancelTaskResponseObject, error) {
	if _, err := s.ownedTask(ctx, req.Id.String()); err != nil {
		return nil, err
	}
	if err := s.opts.Tasks.Cancel(ctx, req.Id.String()); err != nil {
		return nil, err
	}
	return api.CancelTask204Response{Headers: api.CancelTask204ResponseHeaders{XCorrelationId: CorrelationID(ctx)}}, nil
}

// StreamTask streams a task's events.
func (s *Server) StreamTask(ctx context.Context, req api.StreamTaskRequestObject) (api.StreamTaskResponseObject, error) {
	t, err := s.ownedTask(ctx, req.Id.String())
	if err != nil {
		return nil, err
	}
	from := 0
	if v := req.Params.LastEventID; v != nil {
		n, err := strconv.Atoi(*v)
		if err != nil || n < 0 {
			return nil, Errorf("INVALID_PARAMS", "header parameter \"Last-Event-ID\": must be a non-negative event id")
		}
		from = n + 1
	}
	r := &sseResponse{
		ctx: ctx, s: s, t: t, from: from, verbose: req.Params.Verbose != nil && *req.Params.Verbose,
		correlation: CorrelationID(ctx), headOnly: IsHead(ctx),
	}
	if !r.headOnly { // a HEAD holds nothing open
		if r.streamKey, err = s.openStream(ctx); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// openStream counts a response that the caller holds open while a task runs against its key's
// max_streams (tenant.Streams): the key's name, for closeStream, or the refusal. "" when nothing
// is counted (no Streams).
func (s *Server) openStream(ctx context.Context) (string, error) {
	if s.opts.Streams == nil {
		return "", nil
	}
	k := callerKey(ctx)
	if err := s.opts.Streams.Open(k); err != nil {
		s.opts.Metrics.TenantStreamsRefused.WithLabelValues(k.Name).Inc()
		return "", err
	}
	return k.Name, nil
}

// closeStream ends what openStream counted, once; *name is cleared.
func (s *Server) closeStream(name *string) {
	if *name != "" {
		s.opts.Streams.Close(*name)
		*name = ""
	}
}

// sseResponse writes a task's event log as Server-Sent Events, flushing after each batch of
// frames, with keep-alive comments while idle. It implements api.StreamTaskResponseObject.
type sseResponse struct {
	ctx         context.Context
	s           *Server
	t           *task.Task
	from        int
	verbose     bool
	correlation string
	// headOnly: a HEAD request gets the stream's status and headers, and no subscription: it
	// neither holds the connection nor, by going away, cancels the task.
	headOnly bool
	// streamKey is the key whose max_streams counts this stream ("" : none), closed when the
	// stream ends, whichever way.
	streamKey string
}

// VisitStreamTaskResponse writes the task's event stream until the task completes or the
// client goes away. Its frame stays on the stack of the stream's goroutine while the stream is
// open, under net/http's, echo's and the middlewares' frames: the stream's state is one heap
// object (sseStream) and everything but the wait happens in calls that return, so that an idle
// stream's goroutine uses little enough of its stack for the runtime to shrink it to 8 KiB.
func (r *sseResponse) VisitStreamTaskResponse(w http.ResponseWriter) error {
	if _, ok := w.(http.Flusher); !ok {
		return errors.New("streaming unsupported by the response writer")
	}
	if !r.headOnly && !r.s.opts.NetHTTPStreams {
		if st, hijacked := r.openHijacked(w); hijacked {
			if st != nil {
				go st.drain() // its end closes the count
			} else {
				r.s.closeStream(&r.streamKey)
			}
			return nil
		}
	}
	defer r.s.closeStream(&r.streamKey) // net/http's stream ends as this returns
	st := r.open(w)
	if st == nil {
		return nil
	}
	defer st.close()
	st.loop()
	return nil
}

// loop writes the stream until it is over: complete, or the client gone.
func (st *sseStream) loop() {
	for st.send() {
		// The loop waits on the cursor's wake channel alone (a select over the wake, heartbeat,
		// request-context and journal channels locked four channels per wake-up, that is per
		// batch of tokens): the client's leaving and a due heartbeat signal the cursor too, and
		// are checked when it wakes. Only while the journal holds frames back does it also wait
		// on the journal.
		if flushed := st.cur.Flushed(); flushed != nil {
			select {
			case <-st.cur.Wake():
			case <-flushed:
			}
		} else {
			<-st.cur.Wake()
		}
		if !st.woke() {
			return
		}
	}
}

// sseStream is an open event stream's state.
type sseStream struct {
	r   *sseResponse
	out streamWriter
	cur *task.Cursor
	// stopCtx stops signalling the cursor when the request's context ends; hb is the
	// keep-alive timer, which sets hbFired and signals the cursor.
	stopCtx  func() bool
	hb       *time.Timer
	hbFired  atomic.Bool
	interval time.Duration
	// buf holds the frames of one batch: it grows to the largest batch it carries, so an idle
	// stream keeps a few hundred bytes, not a preallocated 4 KiB.
	buf []byte
	// On a hijacked connection: gone is set when the client hung up (there is no request
	// context to end), complete when the last frame was written, and stopWatch ends the
	// watch for the hang-up.
	gone      atomic.Bool
	complete  bool
	stopWatch func()
	// keepAlive: the connection goes back to net/http after a clean end (ReturnConnections);
	// pre holds what the client sent after its request, for the next one.
	keepAlive bool
	pre       []byte
	// state and pending run a hijacked stream's drain (see notify).
	state   atomic.Int32
	pending atomic.Bool
	// unsent is what a write from the journal's goroutine left for the drain to write, wfail
	// that write failed (see shown).
	unsent []byte
	wfail  bool
	// span is the stream's task.stream span on a hijacked connection (nil: not traced).
	span trace.Span
}

// open answers the stream's request: its headers, and for a GET its 200 with the reader
// subscribed. It returns nil when there is nothing to follow (HEAD, or a client already gone).
func (r *sseResponse) open(w http.ResponseWriter) *sseStream {
	st := &sseStream{r: r, out: streamWriter{w: w, rc: http.NewResponseController(flushErrorWriter(w)), timeout: r.s.opts.StreamWriteTimeout}}
	r.setHeaders(w.Header())
	if r.headOnly {
		w.WriteHeader(http.StatusOK)
		_ = st.out.flush()
		st.out.extend() // the last chunk, written by net/http after the handler returns
		return nil      // no subscription: nothing to follow or cancel, whether the client stayed or not
	}
	// The reader is attached before its 200 goes out: a client that has its answer counts as a
	// reader, for a disconnect grace that ends right then as for everything else.
	st.cur = r.t.Subscribe(r.from, r.verbose)
	w.WriteHeader(http.StatusOK)
	if err := st.out.flush(); err != nil {
		r.disconnected(st.cur, false)
		st.cur.Close()
		st.out.extend()
		return nil
	}
	r.s.opts.Metrics.StreamsOpen.Inc()
	st.stopCtx = context.AfterFunc(r.ctx, st.cur.Signal)
	st.interval = r.s.opts.Heartbeat
	st.hb = time.AfterFunc(st.interval, st.heartbeatDue)
	return st
}

func (st *sseStream) heartbeatDue() {
	st.hbFired.Store(true)
	st.cur.Signal()
}

// close releases what open took, in the reverse order.
func (st *sseStream) close() {
	if st.out.conn != nil {
		st.closeHijacked()
		return
	}
	st.hb.Stop()
	st.stopCtx()
	st.r.s.opts.Metrics.StreamsOpen.Dec()
	st.cur.Close()
	st.out.extend() // the last chunk, written by net/http after the handler returns, gets a fresh deadline too
}

// send writes the frames ready for the reader; false: the stream is over (complete, or the
// client gone).
func (st *sseStream) send() bool {
	var complete bool
	pre := st.out.headroom()
	if cap(st.buf) < pre {
		st.buf = make([]byte, pre, 256)
	}
	st.buf, complete = st.cur.Next(st.buf[:pre])
	if len(st.buf) > pre {
		var err error
		if st.buf, err = st.out.writeBatch(st.buf, pre); err != nil {
			st.r.disconnected(st.cur, complete)
			return false
		}
		if st.out.conn != nil {
			st.r.s.batches.drain.Inc()
		} else {
			st.r.s.batches.netHTTP.Inc()
		}
	}
	if complete {
		st.complete = true
		return false
	}
	if cap(st.buf) > 1<<20 { // do not keep a huge buffer after a burst
		st.buf = nil
	}
	return true
}

// woke handles a wake-up of the cursor: the client's leaving (false) and a due heartbeat.
func (st *sseStream) woke() bool {
	r := st.r
	if st.clientGone() {
		r.disconnected(st.cur, false)
		return false
	}
	if st.hbFired.Load() {
		// A keep-alive comment goes one interval after the last write; the timer fired
		// earlier than that is set again for the rest of the interval.
		st.hbFired.Store(false)
		if idle := time.Since(st.out.last); idle < st.interval {
			st.hb.Reset(st.interval - idle)
			return true
		}
		st.hb.Reset(st.interval)
		if err := st.out.heartbeat(); err != nil {
			r.disconnected(st.cur, false)
			return false
		}
	}
	return true
}

// setHeaders sets an event stream's response headers. It is kept out of
// VisitStreamTaskResponse, whose frame stays on the stack of the stream's goroutine while the
// stream is open.
func (r *sseResponse) setHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	h.Set(HeaderCorrelationID, r.correlation)
	h.Set("X-Budget-Time-Remaining-Ms", strconv.FormatInt(max(time.Until(r.t.Deadline()).Milliseconds(), 0), 10))
	// The task's own session only: one deleted since, and perhaps named again by another key, is
	// not the task's (nor its budget this reader's to see).
	if info, ok := r.s.opts.Sessions.Get(r.t.SessionID()); ok && info.TokensBudgetRemaining != nil &&
		info.Admitted(r.t.SessionGen(), r.t.Owner()) {
		h.Set("X-Budget-Tokens-Remaining", strconv.FormatInt(*info.TokensBudgetRemaining, 10))
	}
}

// streamWriter writes and flushes a stream with a write deadline: a client that stops reading
// fills the socket buffers, and the write that would wait on it fails once the deadline passes
// instead of holding the handler, its buffers and the task forever.
//
// Setting a deadline is a timer operation in the runtime's poller; doing it for every batch of
// frames costs a lock and a timer update per token at high rates. The deadline is therefore set
// with some slack (timeout + timeout/8) and moved only when less than timeout is left: every
// write still gets at least timeout, at most 1.125 × timeout, and a busy stream moves its
// deadline once per timeout/8 instead of once per write.
type streamWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// conn is a hijacked connection (w and rc are nil): the writer frames chunks itself. raw
	// is its socket for writes that do not wait (nil: none, see socketWriter).
	conn    net.Conn
	raw     syscall.RawConn
	timeout time.Duration
	// until is the write deadline set last (zero: none yet); last is when the stream last wrote.
	until, last time.Time
}

// deadlineSlack is the part of timeout added to a deadline so that it need not move on every write.
const deadlineSlack = 8

// extend makes sure the write deadline is at least timeout from now. A writer without deadlines
// (a recorder in tests) is left as it is.
func (o *streamWriter) extend() {
	now := time.Now()
	o.last = now
	if o.timeout <= 0 || o.until.Sub(now) >= o.timeout {
		return
	}
	o.until = now.Add(o.timeout + o.timeout/deadlineSlack)
	if err := o.setWriteDeadline(o.until); err != nil {
		o.until = time.Time{} // not supported: try again next time, as before
	}
}

func (o *streamWriter) setWriteDeadline(t time.Time) error {
	if o.conn != nil {
		return o.conn.SetWriteDeadline(t)
	}
	return o.rc.SetWriteDeadline(t)
}

func (o *streamWriter) write(b []byte) error {
	o.extend()
	if _, err := o.w.Write(b); err != nil {
		return err
	}
	return o.rc.Flush()
}

// headroom is the room writeBatch wants in front of a batch: a chunk's size line on a
// hijacked connection.
func (o *streamWriter) headroom() int {
	if o.conn != nil {
		return chunkHeadroom
	}
	return 0
}

// writeBatch writes the frames b[pre:], pre being headroom(), in one write and flush; it may
// use b[:pre] and grow b, and returns b.
func (o *streamWriter) writeBatch(b []byte, pre int) ([]byte, error) {
	if o.conn == nil {
		return b, o.write(b[pre:])
	}
	o.extend()
	b, start := appendChunk(b, pre)
	_, err := o.conn.Write(b[start:])
	return b, err
}

// heartbeat writes a keep-alive comment.
func (o *streamWriter) heartbeat() error {
	if o.conn == nil {
		return o.write([]byte(sse.Heartbeat))
	}
	o.extend()
	_, err := o.conn.Write(heartbeatChunk)
	return err
}

func (o *streamWriter) flush() error {
	o.extend()
	return o.rc.Flush()
}

// heartbeat is the keep-alive timer of a stream: it fires interval after the stream's last
// write. Writes do not reset it (a timer operation per write); when it fires early, it is set
// again for the rest of the interval.
type heartbeat struct {
	t        *time.Timer
	interval time.Duration
}

func newHeartbeat(interval time.Duration) heartbeat {
	return heartbeat{t: time.NewTimer(interval), interval: interval}
}

// due reports whether a keep-alive comment is due now, the timer having fired; if not, it sets
// the timer for the rest of the interval since last.
func (h heartbeat) due(last time.Time) bool {
	if idle := time.Since(last); idle < h.interval {
		h.t.Reset(h.interval - idle)
		return false
	}
	h.t.Reset(h.interval)
	return true
}

// flushErrorWriter returns the writer under w when w flushes without reporting errors (echo's
// Response implements Flush() only): a flush that fails must end the stream.
func flushErrorWriter(w http.ResponseWriter) http.ResponseWriter {
	if _, ok := w.(interface{ FlushError() error }); ok {
		return w
	}
	if u, ok := w.(interface{ Unwrap() http.ResponseWriter }); ok {
		return u.Unwrap()
	}
	return w
}

// disconnected handles a client that went away mid-stream. Its cursor is closed first: the
// reader that left must not count as attached when the task's disconnect policy looks (a grace
// that ends at once would otherwise see it and keep the task).
func (r *sseResponse) disconnected(cur *task.Cursor, complete bool) {
	cur.Close()
	if complete {
		return
	}
	select {
	case <-r.t.Done():
		return
	default:
	}
	r.s.opts.Tasks.Disconnected(context.WithoutCancel(r.ctx), r.t)
}
