package contracts

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// The keys of the tenant tests: alice and bob may run tasks (bob at most 2 a minute and 100
// tokens a minute), ops may only use the control plane.
const (
	aliceKey = "alice-contract-key-0123456789"
	bobKey   = "bob-contract-key-0123456789"
	opsKey   = "ops-contract-key-0123456789"
	keysDoc  = `keys:
  - {name: alice, key: ` + aliceKey + `, scopes: [tasks, sessions, artifacts]}
  - {name: bob, key: ` + bobKey + `, scopes: [tasks, sessions], rpm: 2, tpm: 100}
  - {name: ops, key: ` + opsKey + `, scopes: [control, metrics]}
`
)

// TestScopes: each operation needs the scopes its x-scopes names; a key without them gets 403
// FORBIDDEN, before anything reads the body.
func TestScopes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withKeys(keysDoc))
	ctx := h.ctx(t)
	alice, ops := h.as(t, aliceKey), h.as(t, opsKey)

	r, err := ops.CreateTaskWithResponse(ctx, nil, taskReq(uuid.New()))
	if err != nil || r.StatusCode() != http.StatusForbidden || r.JSON403 == nil || r.JSON403.Code != client.FORBIDDEN ||
		!strings.Contains(r.JSON403.Message, `"tasks"`) {
		t.Fatalf("ops createTask: %v %d %s, want 403 naming the tasks scope", err, r.StatusCode(), r.Body)
	}
	d, err := alice.DrainPoolWithResponse(ctx, poolID, nil, client.DrainRequest{DeadlineMs: 1000})
	if err != nil || d.StatusCode() != http.StatusForbidden {
		t.Fatalf("alice drainPool: %v %d %s, want 403", err, d.StatusCode(), d.Body)
	}
	rl, err := alice.ReloadPoolWithResponse(ctx, poolID, nil, client.ReloadRequest{NewModelRef: "models/x.gguf"})
	if err != nil || rl.StatusCode() != http.StatusForbidden {
		t.Fatalf("alice reloadPool: %v %d %s, want 403", err, rl.StatusCode(), rl.Body)
	}
	// A key whose max_priority is batch may not submit interactive tasks.
	h2 := newHarness(t, withKeys(keysDoc+"  - {name: dave, key: dave-contract-key-0123456789, scopes: [tasks], max_priority: batch}\n"))
	dave := h2.as(t, "dave-contract-key-0123456789")
	if r, err := dave.CreateTaskWithResponse(ctx, nil, taskReq(uuid.New())); err != nil || r.StatusCode() != http.StatusForbidden {
		t.Errorf("dave's interactive task: %v %d %s, want 403", err, r.StatusCode(), r.Body)
	}
	batch := taskReq(uuid.New())
	batch.Priority = client.Batch
	if r, err := dave.CreateTaskWithResponse(ctx, nil, batch); err != nil || r.StatusCode() != http.StatusAccepted {
		t.Errorf("dave's batch task: %v %d %s, want 202", err, r.StatusCode(), r.Body)
	}
	ph, err := ops.GetPoolHealthWithResponse(ctx, poolID, nil)
	if err != nil || ph.StatusCode() != http.StatusOK {
		t.Fatalf("ops getPoolHealth: %v %d %s, want 200", err, ph.StatusCode(), ph.Body)
	}
	// Capabilities need no particular scope; the generated key's successor, the plain test
	// key, holds every scope.
	for name, cl := range map[string]*client.ClientWithResponses{"alice": alice, "ops": ops, "plain": h.client} {
		c, err := cl.GetCapabilitiesWithResponse(ctx, nil)
		if err != nil || c.StatusCode() != http.StatusOK {
			t.Errorf("%s getCapabilities: %v %d", name, err, c.StatusCode())
		}
	}
	if d, err := h.client.DrainPoolWithResponse(ctx, "nope", nil, client.DrainRequest{DeadlineMs: 1000}); err != nil || d.StatusCode() != http.StatusNotFound {
		t.Errorf("plain key drainPool of an unknown pool: %v %d, want 404 (past the scope check)", err, d.StatusCode())
	}
}

// TestOwnership: only the key that created a task may read, stream or cancel it; any other key
// gets 404, exactly as for an unknown id.
func TestOwnership(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withKeys(keysDoc))
	h.fake.SetGated(true)
	ctx := h.ctx(t)
	alice, bob := h.as(t, aliceKey), h.as(t, bobKey)
	req := taskReq(uuid.New())
	if r, err := alice.CreateTaskWithResponse(ctx, nil, req); err != nil || r.StatusCode() != http.StatusAccepted {
		t.Fatalf("alice createTask: %v %d %s", err, r.StatusCode(), r.Body)
	}
	for name, cl := range map[string]*client.ClientWithResponses{"bob": bob, "plain": h.client} {
		g, err := cl.GetTaskWithResponse(ctx, req.TaskId, nil)
		if err != nil || g.StatusCode() != http.StatusNotFound || g.JSON404 == nil || g.JSON404.Code != client.NOTFOUND {
			t.Errorf("%s getTask of alice's task: %v %d %s, want 404", name, err, g.StatusCode(), g.Body)
		}
		c, err := cl.CancelTaskWithResponse(ctx, req.TaskId, nil)
		if err != nil || c.StatusCode() != http.StatusNotFound {
			t.Errorf("%s cancelTask of alice's task: %v %d, want 404", name, err, c.StatusCode())
		}
		s, err := cl.StreamTask(ctx, req.TaskId, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Body.Close()
		if s.StatusCode != http.StatusNotFound {
			t.Errorf("%s streamTask of alice's task: %d, want 404", name, s.StatusCode)
		}
		// The same body posted by another key names alice's session: 404, as for an unknown
		// session, never a replay of alice's admission.
		r, err := cl.CreateTaskWithResponse(ctx, nil, req)
		if err != nil || r.StatusCode() != http.StatusNotFound || r.JSON404 == nil || r.JSON404.Code != client.NOTFOUND {
			t.Errorf("%s re-post of alice's task: %v %d %s, want 404", name, err, r.StatusCode(), r.Body)
		}
		// The same id in the key's own session is a conflict.
		own := req
		own.SessionId = uuid.New()
		r, err = cl.CreateTaskWithResponse(ctx, nil, own)
		if err != nil || r.StatusCode() != http.StatusConflict {
			t.Errorf("%s post of alice's task id: %v %d %s, want 409", name, err, r.StatusCode(), r.Body)
		}
	}
	g, err := alice.GetTaskWithResponse(ctx, req.TaskId, nil)
	if err != nil || g.StatusCode() != http.StatusOK {
		t.Fatalf("alice getTask: %v %d %s", err, g.StatusCode(), g.Body)
	}
	if c, err := alice.CancelTaskWithResponse(ctx, req.TaskId, nil); err != nil || c.StatusCode() != http.StatusNoContent {
		t.Fatalf("alice cancelTask: %v %d", err, c.StatusCode())
	}
}

// TestRateLimited: bob may submit 2 tasks and reserve 100 tokens a minute. The x-ratelimit-*
// headers report both windows on every response to bob, none to a key without limits; over a
// limit the answer is 429 RATE_LIMITED naming the limit, with Retry-After from the bucket.
func TestRateLimited(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withKeys(keysDoc), withCapacity(8), withSlots(4))
	h.fake.SetGated(true)
	ctx := h.ctx(t)
	bob, alice := h.as(t, bobKey), h.as(t, aliceKey)

	req := taskReq(uuid.New())
	req.MaxTokens = 40
	r, err := bob.CreateTaskWithResponse(ctx, nil, req)
	if err != nil || r.StatusCode() != http.StatusAccepted {
		t.Fatalf("bob's first task: %v %d %s", err, r.StatusCode(), r.Body)
	}
	hd := r.HTTPResponse.Header
	for name, want := range map[string]string{
		"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1",
		"x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "60",
	} {
		if got := hd.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if reset, err := time.ParseDuration(hd.Get("x-ratelimit-reset-requests")); err != nil || reset <= 0 || reset > time.Minute {
		t.Errorf("x-ratelimit-reset-requests = %q", hd.Get("x-ratelimit-reset-requests"))
	}

	// 70 tokens do not fit in the 60 left: refused by the tokens limit, and no request taken.
	over := taskReq(uuid.New())
	over.MaxTokens = 70
	r, err = bob.CreateTaskWithResponse(ctx, nil, over)
	if err != nil || r.StatusCode() != http.StatusTooManyRequests || r.JSON429 == nil {
		t.Fatalf("bob over tpm: %v %d %s, want 429", err, r.StatusCode(), r.Body)
	}
	if e := r.JSON429; e.Code != client.RATELIMITED || e.Limit == nil || *e.Limit != client.BackpressureErrorEnvelopeLimitTokens || !e.Retriable {
		t.Errorf("tpm 429 body %s", r.Body)
	}
	if ra, _ := strconv.Atoi(r.HTTPResponse.Header.Get("Retry-After")); ra < 1 {
		t.Errorf("Retry-After %q", r.HTTPResponse.Header.Get("Retry-After"))
	}
	if got := r.HTTPResponse.Header.Get("x-ratelimit-remaining-requests"); got != "1" {
		t.Errorf("a refused submission took a request: remaining %s", got)
	}

	// Reads do not count: bob's getTask leaves the windows as they were, and reports them.
	g, err := bob.GetTaskWithResponse(ctx, req.TaskId, nil)
	if err != nil || g.StatusCode() != http.StatusOK || g.HTTPResponse.Header.Get("x-ratelimit-remaining-requests") != "1" {
		t.Fatalf("bob getTask: %v %d headers %v", err, g.StatusCode(), g.HTTPResponse.Header)
	}

	second := taskReq(uuid.New())
	second.MaxTokens = 10
	if r, err := bob.CreateTaskWithResponse(ctx, nil, second); err != nil || r.StatusCode() != http.StatusAccepted {
		t.Fatalf("bob's second task: %v %d %s", err, r.StatusCode(), r.Body)
	}
	third := taskReq(uuid.New())
	third.MaxTokens = 10
	r, err = bob.CreateTaskWithResponse(ctx, nil, third)
	if err != nil || r.StatusCode() != http.StatusTooManyRequests || r.JSON429 == nil {
		t.Fatalf("bob's third task: %v %d %s, want 429", err, r.StatusCode(), r.Body)
	}
	if e := r.JSON429; e.Code != client.RATELIMITED || e.Limit == nil || *e.Limit != client.BackpressureErrorEnvelopeLimitRequests ||
		e.PolicyLabel != "rate-limit" || e.RetryAfterMs < 1 {
		t.Errorf("rpm 429 body %s", r.Body)
	}
	if r.Headers429 == nil || r.Headers429.RetryAfter < 1 || r.Headers429.XBackoffMs < 1 {
		t.Errorf("rpm 429 headers %+v", r.Headers429)
	}
	// Refused: nothing of the task remains.
	if g, err := bob.GetTaskWithResponse(ctx, third.TaskId, nil); err != nil || g.StatusCode() != http.StatusNotFound {
		t.Errorf("refused task: %v %d, want 404", err, g.StatusCode())
	}
	// A re-post of an admitted task (a client's retry) is answered as the first post was; it
	// is no new request for the limits.
	if r, err := bob.CreateTaskWithResponse(ctx, nil, second); err != nil || r.StatusCode() != http.StatusAccepted ||
		r.JSON202.TaskId != second.TaskId {
		t.Fatalf("re-post of bob's second task: %v %d %s, want its 202 again", err, r.StatusCode(), r.Body)
	}

	// max_tokens above the whole minute's tokens can never pass: 400, not a wait.
	huge := taskReq(uuid.New())
	huge.MaxTokens = 101
	if r, err := bob.CreateTaskWithResponse(ctx, nil, huge); err != nil || r.StatusCode() != http.StatusBadRequest {
		t.Errorf("max_tokens over tpm: %v %d %s, want 400", err, r.StatusCode(), r.Body)
	}

	// alice has no limits: no headers, and bob's limits are not hers.
	r, err = alice.CreateTaskWithResponse(ctx, nil, taskReq(uuid.New()))
	if err != nil || r.StatusCode() != http.StatusAccepted {
		t.Fatalf("alice: %v %d %s", err, r.StatusCode(), r.Body)
	}
	if v := r.HTTPResponse.Header.Get("x-ratelimit-limit-requests"); v != "" {
		t.Errorf("a key without limits got x-ratelimit-limit-requests %q", v)
	}
	// Refusals are counted per key name (never the key itself).
	m := h.metricsText(t)
	for _, want := range []string{`tenant_rejections_total{key="bob",reason="RATE_LIMITED"} 2`, `tenant_rejections_total{key="bob",reason="INVALID_PARAMS"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("no %s in /metrics:\n%s", want, grepLines(m, "tenant_"))
		}
	}
	if strings.Contains(m, bobKey) {
		t.Error("/metrics shows a key")
	}
}

// TestBudgetExceeded: carol's 100-token budget. A task reserves its max_tokens, or what is
// left; the one granted less ends with stop "budget" after its grant; a key with nothing left
// gets 429 BUDGET_EXCEEDED; unused reservations come back when tasks end.
func TestBudgetExceeded(t *testing.T) {
	t.Parallel()
	const carolKey = "carol-contract-key-0123456789"
	h := newHarness(t, withKeys(keysDoc+"  - {name: carol, key: "+carolKey+", scopes: [tasks], token_budget: 100}\n"),
		withSlots(4), withCapacity(8))
	toks := make([]string, 50)
	for i := range toks {
		toks[i] = " w"
	}
	h.fake.SetTokens(toks...)
	h.fake.SetGated(true)
	ctx := h.ctx(t)
	carol := h.as(t, carolKey)
	var last client.TaskRequest // the body submit posted last
	submit := func(maxTokens int32) *client.CreateTaskResponse {
		t.Helper()
		req := taskReq(uuid.New())
		req.MaxTokens = maxTokens
		last = req
		r, err := carol.CreateTaskWithResponse(ctx, nil, req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	remaining := func(r *client.CreateTaskResponse) string {
		return r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining")
	}

	a := submit(64)
	if a.StatusCode() != http.StatusAccepted || remaining(a) != "36" {
		t.Fatalf("first task: %d %s, remaining %q; want 202 and 36", a.StatusCode(), a.Body, remaining(a))
	}
	b := submit(64) // granted the 36 left
	if b.StatusCode() != http.StatusAccepted || remaining(b) != "0" {
		t.Fatalf("second task: %d %s, remaining %q; want 202 and 0", b.StatusCode(), b.Body, remaining(b))
	}
	bReq := last
	c := submit(1)
	if c.StatusCode() != http.StatusTooManyRequests || c.JSON429 == nil || c.JSON429.Code != client.BUDGETEXCEEDED ||
		!c.JSON429.Retriable || remaining(c) != "0" || c.Headers429 == nil || c.Headers429.RetryAfter < 1 {
		t.Fatalf("third task: %d %s, remaining %q; want 429 BUDGET_EXCEEDED", c.StatusCode(), c.Body, remaining(c))
	}
	// A re-post of the second task (a client's retry) gets its admission again: the budget it
	// spent was its own.
	rb, err := carol.CreateTaskWithResponse(ctx, nil, bReq)
	if err != nil || rb.StatusCode() != http.StatusAccepted || rb.JSON202.TaskId != b.JSON202.TaskId || remaining(rb) != "0" {
		t.Fatalf("re-post of the second task: %v %d %s, remaining %q; want its 202 again", err, rb.StatusCode(), rb.Body, remaining(rb))
	}

	h.fake.Allow(200)
	s := h.openStream(t, b.JSON202.TaskId, streamOpts{key: carolKey})
	frames := s.rest()
	end := frames[len(frames)-1]
	if end.Event != "end" || end.Data["stop"] != "budget" || end.Data["stop_reason"] != "budget" || end.Data["tokens_out"] != float64(36) {
		t.Fatalf("the second task's end: %s", end.Raw)
	}
	sa := h.openStream(t, a.JSON202.TaskId, streamOpts{key: carolKey})
	fa := sa.rest()
	if end := fa[len(fa)-1]; end.Event != "end" || end.Data["stop"] != nil || end.Data["tokens_out"] != float64(50) {
		t.Fatalf("the first task's end: %s", end.Raw)
	}
	// Used 50 + 36: 14 left, granted to the next task whatever its max_tokens.
	eventually(t, "the budget settled", func() bool {
		d := submit(64)
		if d.StatusCode() == http.StatusAccepted {
			if remaining(d) != "0" {
				t.Fatalf("after the ends: remaining %q, want 0 (14 granted)", remaining(d))
			}
			return true
		}
		return false
	})
}

// TestAdmissionExplained: a queued task's state says whose it is and why it waits where it
// does: alice's second queued task waits behind bob's, who arrived later but has used less.
func TestAdmissionExplained(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withKeys(keysDoc), withSlots(1))
	h.fake.SetGated(true)
	ctx := h.ctx(t)
	alice, bob := h.as(t, aliceKey), h.as(t, bobKey)
	post := func(cl *client.ClientWithResponses, prio client.Priority) uuid.UUID {
		t.Helper()
		req := taskReq(uuid.New())
		req.Priority = prio
		r, err := cl.CreateTaskWithResponse(ctx, nil, req)
		if err != nil || r.StatusCode() != http.StatusAccepted {
			t.Fatalf("createTask: %v %d %s", err, r.StatusCode(), r.Body)
		}
		return req.TaskId
	}
	running := post(alice, client.Interactive) // takes the slot: alice's counter 64
	a1 := post(alice, client.Interactive)
	a2 := post(alice, client.Interactive)
	b1 := post(bob, client.Interactive)
	ab := post(alice, client.Batch)
	explain := func(cl *client.ClientWithResponses, id uuid.UUID) *client.AdmissionExplanation {
		t.Helper()
		g, err := cl.GetTaskWithResponse(ctx, id, nil)
		if err != nil || g.JSON200 == nil {
			t.Fatalf("getTask: %v %d %s", err, g.StatusCode(), g.Body)
		}
		return g.JSON200.Admission
	}
	if ex := explain(alice, running); ex != nil {
		t.Errorf("a running task explains its admission: %+v", ex)
	}
	for _, tc := range []struct {
		name       string
		cl         *client.ClientWithResponses
		id         uuid.UUID
		key        string
		class      client.Priority
		pos        int32
		inter, bat int32
		vstart     float64
	}{
		{"alice's first", alice, a1, "alice", client.Interactive, 0, 0, 0, 64},
		{"bob's, lifted to alice's counter", bob, b1, "bob", client.Interactive, 1, 1, 0, 64},
		{"alice's second, behind bob", alice, a2, "alice", client.Interactive, 2, 2, 0, 128},
		{"alice's batch, behind every interactive (counters are per class)", alice, ab, "alice", client.Batch, 3, 3, 0, 0},
	} {
		ex := explain(tc.cl, tc.id)
		if ex == nil || ex.KeyName != tc.key || ex.Class != tc.class || ex.Position == nil || *ex.Position != tc.pos ||
			ex.AheadByClass == nil || ex.AheadByClass.Interactive != tc.inter || ex.AheadByClass.Batch != tc.bat ||
			ex.VirtualStart == nil || *ex.VirtualStart != tc.vstart || ex.ReasonIfRefused != nil {
			t.Errorf("%s: admission %+v", tc.name, ex)
			if ex != nil && ex.Position != nil && ex.VirtualStart != nil {
				t.Logf("position %d virtual_start %v ahead %+v", *ex.Position, *ex.VirtualStart, ex.AheadByClass)
			}
		}
	}
}

// TestOnDisconnect: the task's disconnect policy. detach keeps generating for a later resume;
// grace cancels only when no reader came back within disconnect_grace_ms (on a fake clock).
func TestOnDisconnect(t *testing.T) {
	t.Parallel()
	clock := tasktest.NewClock(time.Now())
	h := newHarness(t, withSlots(4), withClock(clock))
	h.fake.SetGated(true)
	submit := func(policy client.TaskRequestOnDisconnect, graceMs int64) client.TaskRequest {
		t.Helper()
		r := taskReq(uuid.New())
		r.OnDisconnect = &policy
		if graceMs > 0 {
			r.DisconnectGraceMs = &graceMs
		}
		h.submit(t, r)
		h.waitState(t, r.TaskId, client.Running) // its deadline timer is armed
		return r
	}
	readOneAndLeave := func(id uuid.UUID) {
		t.Helper()
		h.fake.Allow(1)
		s := h.openStream(t, id, streamOpts{})
		s.until("a token", func(f frame) bool { return f.Event == "token" })
		s.close()
	}

	t.Run("detach", func(t *testing.T) {
		r := submit(client.Detach, 0)
		timers := clock.Timers()
		readOneAndLeave(r.TaskId)
		eventually(t, "the disconnect seen", func() bool {
			return strings.Contains(h.metricsText(t), "sse_client_disconnects_total 1")
		})
		if clock.Timers() != timers {
			t.Fatal("detach armed a timer")
		}
		h.fake.Allow(len(defaultTokens) - 1) // exactly the rest: no permit left for the next task
		st := h.waitState(t, r.TaskId, client.Succeeded)
		if st.TokensOut != int32(len(defaultTokens)) {
			t.Fatalf("detached task produced %d tokens", st.TokensOut)
		}
	})
	t.Run("grace passes", func(t *testing.T) {
		r := submit(client.Grace, 5000)
		timers := clock.Timers()
		readOneAndLeave(r.TaskId)
		eventually(t, "the grace timer armed", func() bool { return clock.Timers() == timers+1 })
		clock.Advance(5 * time.Second)
		h.waitState(t, r.TaskId, client.Canceled)
	})
	t.Run("reader back within the grace", func(t *testing.T) {
		r := submit(client.Grace, 5000)
		timers := clock.Timers()
		readOneAndLeave(r.TaskId)
		eventually(t, "the grace timer armed", func() bool { return clock.Timers() == timers+1 })
		last := 1 // started, token 0 (ids 0, 1)
		s := h.openStream(t, r.TaskId, streamOpts{lastEventID: &last, tokenBase: 1})
		clock.Advance(5 * time.Second)
		eventually(t, "the grace timer gone", func() bool { return clock.Timers() == timers })
		h.fake.Allow(len(defaultTokens) - 1)
		frames := s.rest()
		if end := frames[len(frames)-1]; end.Event != "end" || end.Data["canceled"] == true {
			t.Fatalf("the task ended with %s", end.Raw)
		}
	})
	t.Run("a client reconnecting in a loop keeps one grace", func(t *testing.T) {
		r := submit(client.Grace, 5000)
		timers := clock.Timers()
		for i := range 5 {
			s := h.openStream(t, r.TaskId, streamOpts{})
			s.until("started", func(f frame) bool { return f.Event == "started" })
			s.close()
			// Each return ends the grace the last leave armed; each leave arms one.
			eventually(t, fmt.Sprintf("one grace timer after leave %d", i+1), func() bool { return clock.Timers() == timers+1 })
		}
		clock.Advance(5 * time.Second)
		h.waitState(t, r.TaskId, client.Canceled)
	})
	t.Run("grace needs its duration", func(t *testing.T) {
		r := taskReq(uuid.New())
		g := client.Grace
		r.OnDisconnect = &g
		resp, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, r)
		if err != nil || resp.StatusCode() != http.StatusBadRequest {
			t.Fatalf("grace without disconnect_grace_ms: %v %d %s", err, resp.StatusCode(), resp.Body)
		}
	})
}

// TestGraceEndsAsTheReaderIsAnswered: a reader whose stream has been answered is attached. The
// grace of a task whose reader left ends (on the daemon's fake clock) at the very moment the
// returning reader's 200 is written, at the latest: the daemon subscribes the reader before it
// answers, and a reader subscribing ends the grace. Either the grace timer is gone by then, or
// it has decided before the 200 goes out; the task keeps running.
func TestGraceEndsAsTheReaderIsAnswered(t *testing.T) {
	t.Parallel()
	clock := tasktest.NewClock(time.Now())
	var atAnswer atomic.Pointer[func()]
	h := newHarness(t, withSlots(1), withClock(clock), withServerWrites(func(b []byte) {
		if bytes.HasPrefix(b, []byte("HTTP/1.1 200 ")) && bytes.Contains(b, []byte("text/event-stream")) {
			if f := atAnswer.Swap(nil); f != nil {
				(*f)()
			}
		}
	}))
	h.fake.SetGated(true)
	r := taskReq(uuid.New())
	grace, graceMs := client.Grace, int64(5000)
	r.OnDisconnect, r.DisconnectGraceMs = &grace, &graceMs
	h.submit(t, r)
	h.waitState(t, r.TaskId, client.Running)
	timers := clock.Timers()
	h.fake.Allow(1)
	first := h.openStream(t, r.TaskId, streamOpts{})
	first.until("a token", func(f frame) bool { return f.Event == "token" })
	first.close()
	eventually(t, "the grace timer armed", func() bool { return clock.Timers() == timers+1 })

	verdict := make(chan bool, 1) // on the daemon's goroutine: t.Fatal is not for it
	graceEnds := func() {
		if clock.Timers() == timers { // the reader's subscribe ended the grace
			verdict <- true
			return
		}
		stops := clock.Stops()
		clock.Advance(time.Duration(graceMs) * time.Millisecond)
		deadline := time.Now().Add(15 * time.Second) // only against a hung daemon
		for clock.Stops() == stops && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		verdict <- clock.Stops() > stops
	}
	atAnswer.Store(&graceEnds)
	last := 1 // started, token 0 (ids 0, 1)
	s := h.openStream(t, r.TaskId, streamOpts{lastEventID: &last, tokenBase: 1})
	select {
	case ok := <-verdict:
		if !ok {
			t.Fatal("the grace timer never decided")
		}
	default:
		t.Fatal("the stream was answered without the grace ending as it was")
	}
	h.fake.Allow(len(defaultTokens) - 1)
	frames := s.rest()
	if end := frames[len(frames)-1]; end.Event != "end" || end.Data["canceled"] == true {
		t.Fatalf("the task ended with %s", end.Raw)
	}
}

// TestSessionBudgetHolds: the session's token budget (sessions.token_budget) stops a task at
// what is left of it, and refuses a task of a session with nothing left.
func TestSessionBudgetHolds(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withTokenBudget(12))
	session := uuid.New()
	first := taskReq(session)
	h.submit(t, first)
	h.waitState(t, first.TaskId, client.Succeeded) // 10 tokens: 2 left
	second := taskReq(session)
	h.submit(t, second)
	frames := h.openStream(t, second.TaskId, streamOpts{}).rest()
	if end := frames[len(frames)-1]; end.Event != "end" || end.Data["stop"] != "budget" || end.Data["tokens_out"] != float64(2) {
		t.Fatalf("the second task's end: %s", end.Raw)
	}
	eventually(t, "the session's budget spent", func() bool {
		g, err := h.client.GetSessionWithResponse(h.ctx(t), session, nil)
		return err == nil && g.JSON200 != nil && g.JSON200.TokensBudgetRemaining != nil && *g.JSON200.TokensBudgetRemaining == 0
	})
	r, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, taskReq(session))
	if err != nil || r.StatusCode() != http.StatusTooManyRequests || r.JSON429 == nil || r.JSON429.Code != client.BUDGETEXCEEDED ||
		!strings.Contains(r.JSON429.Message, "session") || r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining") != "0" {
		t.Fatalf("a task of a spent session: %v %d %s", err, r.StatusCode(), r.Body)
	}
}

// TestSessionOwnership: a session belongs to the key whose task first named it. To another
// key (named or the plain test key) it is unknown: reading it is 404 NOT_FOUND, naming it in a
// task is 404 NOT_FOUND at admission, and deleting it is the unknown session's 204 and leaves
// it in place.
func TestSessionOwnership(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withKeys(keysDoc), withTokenBudget(1000))
	h.fake.SetGated(true)
	ctx := h.ctx(t)
	alice := h.as(t, aliceKey)
	session := uuid.New()
	if r, err := alice.CreateTaskWithResponse(ctx, nil, taskReq(session)); err != nil || r.StatusCode() != http.StatusAccepted {
		t.Fatalf("alice's task: %v %d %s", err, r.StatusCode(), r.Body)
	}
	ops := []struct {
		name string
		do   func(cl *client.ClientWithResponses) (int, *client.ErrorEnvelope, error)
		want int
	}{
		{"getSession", func(cl *client.ClientWithResponses) (int, *client.ErrorEnvelope, error) {
			r, err := cl.GetSessionWithResponse(ctx, session, nil)
			if err != nil {
				return 0, nil, err
			}
			return r.StatusCode(), r.JSON404, nil
		}, http.StatusNotFound},
		{"createTask", func(cl *client.ClientWithResponses) (int, *client.ErrorEnvelope, error) {
			r, err := cl.CreateTaskWithResponse(ctx, nil, taskReq(session))
			if err != nil {
				return 0, nil, err
			}
			return r.StatusCode(), r.JSON404, nil
		}, http.StatusNotFound},
		{"deleteSession", func(cl *client.ClientWithResponses) (int, *client.ErrorEnvelope, error) {
			r, err := cl.DeleteSessionWithResponse(ctx, session, nil)
			if err != nil {
				return 0, nil, err
			}
			return r.StatusCode(), nil, nil
		}, http.StatusNoContent},
	}
	// The answers are those for a session nobody has.
	nobody := uuid.New()
	if g, err := h.client.GetSessionWithResponse(ctx, nobody, nil); err != nil || g.StatusCode() != ops[0].want ||
		g.JSON404 == nil || !strings.Contains(g.JSON404.Message, "session not found") {
		t.Fatalf("getSession of an unknown session: %v %v", err, g)
	}
	if d, err := h.client.DeleteSessionWithResponse(ctx, nobody, nil); err != nil || d.StatusCode() != ops[2].want {
		t.Fatalf("deleteSession of an unknown session: %v %v", err, d)
	}
	for name, cl := range map[string]*client.ClientWithResponses{"bob": h.as(t, bobKey), "plain": h.client} {
		for _, op := range ops {
			code, env, err := op.do(cl)
			if err != nil || code != op.want {
				t.Errorf("%s %s of alice's session: %v %d, want %d", name, op.name, err, code, op.want)
				continue
			}
			if op.want == http.StatusNotFound && (env == nil || env.Code != client.NOTFOUND || !strings.Contains(env.Message, "session not found")) {
				t.Errorf("%s %s of alice's session: %+v, want the unknown session's NOT_FOUND", name, op.name, env)
			}
		}
	}
	// Alice's session is untouched: one turn, her task's 64 tokens reserved.
	g, err := alice.GetSessionWithResponse(ctx, session, nil)
	if err != nil || g.JSON200 == nil || g.JSON200.Turns != 1 || g.JSON200.TokensBudgetRemaining == nil || *g.JSON200.TokensBudgetRemaining != 1000-64 {
		t.Fatalf("alice's session after the others tried: %v %s", err, g.Body)
	}
	if d, err := alice.DeleteSessionWithResponse(ctx, session, nil); err != nil || d.StatusCode() != http.StatusNoContent {
		t.Fatalf("alice deleteSession: %v %v", err, d)
	}
	if g, err := alice.GetSessionWithResponse(ctx, session, nil); err != nil || g.StatusCode() != http.StatusNotFound {
		t.Fatalf("alice's session after her delete: %v %d", err, g.StatusCode())
	}
}

// TestSessionBudgetReserved: tasks of one session reserve their max_tokens of its budget at
// admission, so two running at once are never granted more than it has together: the second
// is granted what is left and ends with stop "budget" there, a third is refused with 429
// BUDGET_EXCEEDED naming the session's budget; what the tasks did not use comes back.
func TestSessionBudgetReserved(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withTokenBudget(100), withSlots(4), withCapacity(8))
	toks := make([]string, 50)
	for i := range toks {
		toks[i] = " w"
	}
	h.fake.SetTokens(toks...)
	h.fake.SetGated(true)
	ctx := h.ctx(t)
	session := uuid.New()
	submit := func() *client.CreateTaskResponse {
		t.Helper()
		r, err := h.client.CreateTaskWithResponse(ctx, nil, taskReq(session)) // max_tokens 64
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	remaining := func(r *client.CreateTaskResponse) string {
		return r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining")
	}
	a := submit()
	if a.StatusCode() != http.StatusAccepted || remaining(a) != "36" {
		t.Fatalf("first task: %d %s, remaining %q; want 202 and 36", a.StatusCode(), a.Body, remaining(a))
	}
	b := submit() // granted the 36 left while the first still runs
	if b.StatusCode() != http.StatusAccepted || remaining(b) != "0" {
		t.Fatalf("second task: %d %s, remaining %q; want 202 and 0", b.StatusCode(), b.Body, remaining(b))
	}
	c := submit()
	if c.StatusCode() != http.StatusTooManyRequests || c.JSON429 == nil || c.JSON429.Code != client.BUDGETEXCEEDED ||
		c.JSON429.Limit == nil || *c.JSON429.Limit != client.BackpressureErrorEnvelopeLimitSessionBudget ||
		!c.JSON429.Retriable || remaining(c) != "0" {
		t.Fatalf("third task: %d %s, remaining %q; want 429 BUDGET_EXCEEDED, limit session_budget", c.StatusCode(), c.Body, remaining(c))
	}

	h.fake.Allow(200)
	frames := h.openStream(t, b.JSON202.TaskId, streamOpts{}).rest()
	if end := frames[len(frames)-1]; end.Event != "end" || end.Data["stop"] != "budget" || end.Data["tokens_out"] != float64(36) {
		t.Fatalf("the second task's end: %s", end.Raw)
	}
	fa := h.openStream(t, a.JSON202.TaskId, streamOpts{}).rest()
	if end := fa[len(fa)-1]; end.Event != "end" || end.Data["stop"] != nil || end.Data["tokens_out"] != float64(50) {
		t.Fatalf("the first task's end: %s", end.Raw)
	}
	// Charged 50 + 36: 14 left, the first task's 14 unused tokens back.
	g, err := h.client.GetSessionWithResponse(ctx, session, nil)
	if err != nil || g.JSON200 == nil || g.JSON200.TokensBudgetRemaining == nil || *g.JSON200.TokensBudgetRemaining != 14 {
		t.Fatalf("the session after both ended: %v %s, want 14 left", err, g.Body)
	}
}

// TestKeyBudgetAcrossRestart: "Key budgets survive a restart", and a task reserves its
// max_tokens against its key's budget so that the key's tasks are never granted more than the
// budget together. A task that was queued when the daemon stopped is queued again by the next
// start, and runs there with the grant it was admitted with; the restarted daemon must count
// that grant as reserved. Otherwise a task admitted after the restart is granted the budget
// again, and the recovered task's end gives back a reservation it never took again (the new
// task's), so the key is charged more than its budget.
func TestKeyBudgetAcrossRestart(t *testing.T) {
	const carolKey = "carol-contract-key-0123456789"
	keys := keysDoc + "  - {name: carol, key: " + carolKey + ", scopes: [tasks, sessions], token_budget: 100}\n"
	toks := make([]string, 64)
	for i := range toks {
		toks[i] = " w"
	}
	stateDir := t.TempDir()
	setup := withFakeSetup(func(f *fakeEngine) { f.SetTokens(toks...); f.SetGated(true) })
	h := newHarness(t, withKeys(keys), withStateDir(stateDir), withSlots(1), withCapacity(8), setup)
	ctx := h.ctx(t)
	carol := h.as(t, carolKey)

	// The slot is taken by another key's task; carol's task waits in the queue with a grant of 64.
	x := taskReq(uuid.New())
	h.submit(t, x)
	h.waitState(t, x.TaskId, client.Running)
	a := taskReq(uuid.New())
	ra, err := carol.CreateTaskWithResponse(ctx, nil, a)
	if err != nil || ra.StatusCode() != http.StatusAccepted || ra.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining") != "36" {
		t.Fatalf("carol's first task: %v %d %s", err, ra.StatusCode(), ra.Body)
	}
	h.stop()

	h2 := newHarness(t, withKeys(keys), withStateDir(stateDir), withSlots(1), withCapacity(8), setup)
	carol = h2.as(t, carolKey)
	if st := h2.state(t, x.TaskId); st.State == client.Queued || st.State == client.Running {
		h2.cancel(t, x.TaskId)
	}
	carolState := func(id uuid.UUID) client.TaskState {
		t.Helper()
		r, err := carol.GetTaskWithResponse(ctx, id, nil)
		if err != nil || r.JSON200 == nil {
			t.Fatalf("carol getTask %s: %v %v", id, err, r)
		}
		return *r.JSON200
	}
	eventually(t, "carol's recovered task running", func() bool { return carolState(a.TaskId).State == client.Running })

	// carol's task admitted after the restart: 36 tokens are left of her budget, not 100.
	b := taskReq(uuid.New())
	rb, err := carol.CreateTaskWithResponse(ctx, nil, b)
	if err != nil || rb.StatusCode() != http.StatusAccepted {
		t.Fatalf("carol's task after the restart: %v %d %s", err, rb.StatusCode(), rb.Body)
	}
	if got := rb.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining"); got != "0" {
		t.Errorf("after the restart carol's new task is admitted with X-Budget-Tokens-Remaining %s, want 0 "+
			"(100 less the recovered task's 64 and this task's grant of 36)", got)
	}
	h2.fake.Allow(len(toks)) // the recovered task's 64 tokens: it ends, carol's second task is dispatched
	eventually(t, "carol's recovered task ended", func() bool { return carolState(a.TaskId).State == client.Succeeded })
	eventually(t, "carol's second task running", func() bool { return carolState(b.TaskId).State == client.Running })
	// Charged 64, and the running task holds the rest: nothing is left for a third task. The
	// recovered task's end must not have given back the running task's reservation.
	c := taskReq(uuid.New())
	rc, err := carol.CreateTaskWithResponse(ctx, nil, c)
	if err != nil {
		t.Fatal(err)
	}
	if rc.StatusCode() != http.StatusTooManyRequests {
		t.Errorf("carol's third task, with 64 charged and her running task holding its grant: %d %s (X-Budget-Tokens-Remaining %s), want 429 BUDGET_EXCEEDED",
			rc.StatusCode(), rc.Body, rc.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining"))
	}
	h2.fake.Allow(1000)
	var ga, gb client.TaskState
	eventually(t, "carol's tasks ended", func() bool {
		ga, gb = carolState(a.TaskId), carolState(b.TaskId)
		return ga.State == client.Succeeded && gb.State == client.Succeeded
	})
	var gc client.TaskState
	if rc.StatusCode() == http.StatusAccepted {
		eventually(t, "carol's third task ended", func() bool { gc = carolState(c.TaskId); return gc.State == client.Succeeded })
	}
	if total := ga.TokensOut + gb.TokensOut + gc.TokensOut; total > 100 {
		t.Errorf("carol's tasks produced %d + %d + %d = %d tokens against her token_budget of 100", ga.TokensOut, gb.TokensOut, gc.TokensOut, total)
	}
}

// TestCancelOnDisconnectKeepsAnotherReader: on_disconnect cancel acts when the LAST reader of
// the task's stream goes away (openapi: "What happens when the last client reading the task's
// stream goes away"). With two readers, the first one leaving must not cancel the task under
// the second, which must read the whole stream to a normal end.
func TestCancelOnDisconnectKeepsAnotherReader(t *testing.T) {
	t.Parallel()
	h := newHarness(t) // cancel_on_disconnect: true (the default)
	h.fake.SetGated(true)
	r := taskReq(uuid.New())
	h.submit(t, r)
	h.fake.Allow(1)
	a := h.openStream(t, r.TaskId, streamOpts{})
	b := h.openStream(t, r.TaskId, streamOpts{})
	a.until("token 0", isToken(0))
	b.until("token 0", isToken(0))
	a.close() // one of two readers leaves
	eventually(t, "the disconnect seen", func() bool {
		return strings.Contains(h.metricsText(t), "sse_client_disconnects_total 1")
	})
	h.fake.Allow(len(defaultTokens) - 1)
	frames := b.rest()
	if end := final(t, frames); end.Event != "end" || end.Data["canceled"] == true {
		t.Fatalf("the remaining reader's stream ended with %s %s, want a normal end (the other reader is still attached)", end.Event, end.Raw)
	}
	if st := h.state(t, r.TaskId); st.State != client.Succeeded {
		t.Fatalf("task %s with a reader still attached, want succeeded", st.State)
	}
}
