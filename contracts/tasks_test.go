package contracts

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

func TestCreateTask(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withTokenBudget(1000))
	h.fake.SetGated(true) // the task stays running: the admission answer is all we look at

	req := taskReq(uuid.New())
	req.DeadlineMs = 45000
	r := h.submit(t, req)
	adm := r.JSON202
	if adm.TaskId != req.TaskId {
		t.Errorf("task_id %s, want %s", adm.TaskId, req.TaskId)
	}
	if adm.QueuePosition != 0 || adm.PredictedStartMs != 0 || adm.BackoffMs != 0 {
		t.Errorf("a task with a free slot: position %d, predicted %d, backoff %d; want 0, 0, 0",
			adm.QueuePosition, adm.PredictedStartMs, adm.BackoffMs)
	}
	if adm.PoolId == nil || *adm.PoolId != poolID {
		t.Errorf("pool_id %v, want %s", adm.PoolId, poolID)
	}
	sse := "/v1/tasks/" + req.TaskId.String() + "/stream"
	if adm.Streams == nil || adm.Streams.Sse != sse || adm.Streams.SseVerbose != sse+"?verbose=true" {
		t.Errorf("streams %+v, want %s and its verbose variant", adm.Streams, sse)
	}
	hd := r.Headers202
	if hd == nil {
		t.Fatal("no parsed 202 headers")
	}
	if hd.XBudgetTimeRemainingMs == nil || *hd.XBudgetTimeRemainingMs < 0 || *hd.XBudgetTimeRemainingMs > req.DeadlineMs {
		t.Errorf("X-Budget-Time-Remaining-Ms %v, want within [0, %d]", hd.XBudgetTimeRemainingMs, req.DeadlineMs)
	}
	// The task holds its max_tokens of the session's budget while it runs.
	if want := 1000 - int64(req.MaxTokens); hd.XBudgetTokensRemaining == nil || *hd.XBudgetTokensRemaining != want {
		t.Errorf("X-Budget-Tokens-Remaining %v, want the configured budget 1000 less the task's reservation, %d",
			hd.XBudgetTokensRemaining, want)
	}

	// Without a configured token budget the header is absent.
	h2 := newHarness(t)
	r2 := h2.submit(t, taskReq(uuid.New()))
	if v := r2.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining"); v != "" {
		t.Errorf("X-Budget-Tokens-Remaining %q without a budget, want absent", v)
	}
}

func TestCreateTaskIdempotency(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.SetGated(true)
	req := taskReq(uuid.New())
	first := h.submit(t, req)

	t.Run("same body is the same task", func(t *testing.T) {
		again := h.submit(t, req)
		if again.JSON202.TaskId != first.JSON202.TaskId {
			t.Errorf("re-post answered task %s, want %s", again.JSON202.TaskId, first.JSON202.TaskId)
		}
		sess, err := h.client.GetSessionWithResponse(h.ctx(t), req.SessionId, nil)
		if err != nil || sess.JSON200 == nil {
			t.Fatalf("getSession: %v %v", err, sess)
		}
		if sess.JSON200.Turns != 1 {
			t.Errorf("turns %d after an idempotent re-post, want 1", sess.JSON200.Turns)
		}
	})
	t.Run("same body while queued answers the current position", func(t *testing.T) {
		q := taskReq(uuid.New())
		q.Priority = client.Batch
		h.submit(t, q)
		again := h.submit(t, q)
		if again.JSON202.TaskId != q.TaskId || again.JSON202.QueuePosition != 0 ||
			again.JSON202.PredictedStartMs != int64(h.cfg.priorServiceMs) {
			t.Errorf("re-post of a queued task: %s, want position 0 predicted %d", again.Body, h.cfg.priorServiceMs)
		}
		h.cancel(t, q.TaskId)
	})
	t.Run("concurrent posts of one body make one task", func(t *testing.T) {
		q := taskReq(uuid.New())
		const n = 8
		var wg sync.WaitGroup
		codes := make([]int, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, q)
				if err != nil {
					t.Error(err)
					return
				}
				codes[i] = r.StatusCode()
			}()
		}
		wg.Wait()
		for i, c := range codes {
			if c != http.StatusAccepted {
				t.Errorf("post %d: %d, want 202", i, c)
			}
		}
		sess, err := h.client.GetSessionWithResponse(h.ctx(t), q.SessionId, nil)
		if err != nil || sess.JSON200 == nil || sess.JSON200.Turns != 1 {
			t.Errorf("session after %d concurrent posts of one task: %v %s, want 1 turn", n, err, sess.Body)
		}
		h.cancel(t, q.TaskId)
	})
	t.Run("same body without session_id is the same task, in the session the daemon made", func(t *testing.T) {
		q := taskReq(uuid.Nil) // session_id left out: the daemon generates it
		q.TaskId = uuid.New()
		r := h.submit(t, q)
		for _, again := range []struct {
			name string
			req  client.TaskRequest
		}{
			{"byte for byte", q},
			{"with the session the 202 named", func() client.TaskRequest { x := q; x.SessionId = r.JSON202.SessionId; return x }()},
		} {
			a, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, again.req)
			if err != nil {
				t.Fatal(err)
			}
			if a.JSON202 == nil || a.JSON202.TaskId != q.TaskId || a.JSON202.SessionId != r.JSON202.SessionId {
				t.Errorf("re-post %s of a task posted without session_id: %d %s, want 202 for task %s in session %s",
					again.name, a.StatusCode(), a.Body, q.TaskId, r.JSON202.SessionId)
			}
		}
		other := q
		other.MaxTokens = q.MaxTokens + 1
		if c, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, other); err != nil || c.StatusCode() != http.StatusConflict {
			t.Errorf("a different body without session_id for a known task_id: %v %d, want 409", err, c.StatusCode())
		}
		h.cancel(t, q.TaskId)
	})
	t.Run("different body is a conflict", func(t *testing.T) {
		other := req
		other.MaxTokens = req.MaxTokens + 1
		r, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, other)
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode() != http.StatusConflict || r.JSON409 == nil || r.JSON409.Code != client.CONFLICT {
			t.Fatalf("different body for a known task_id: %d %s, want 409 CONFLICT", r.StatusCode(), r.Body)
		}
	})
}

func TestStreamFull(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	toks := []string{"Hello", ",", " wörld", " \"quoted\"", "\n", "\u2028", "\t😀", " end"}
	h.fake.SetTokens(toks...)
	req := taskReq(uuid.New())
	h.submit(t, req)

	for _, verbose := range []bool{false, true} {
		t.Run("verbose="+strconv.FormatBool(verbose), func(t *testing.T) {
			frames := h.openStream(t, req.TaskId, streamOpts{verbose: verbose}).rest()
			if got, want := text(frames), strings.Join(toks, ""); got != want {
				t.Errorf("streamed text %q, want %q", got, want)
			}
			end := final(t, frames)
			if end.Event != "end" {
				t.Fatalf("final frame %s %s, want end", end.Event, end.Raw)
			}
			if end.Data["tokens_out"] != float64(len(toks)) {
				t.Errorf("end tokens_out %v, want %d", end.Data["tokens_out"], len(toks))
			}
			if c, _ := end.Data["canceled"].(bool); c {
				t.Error("end canceled: true for a task that succeeded")
			}
			if got := end.Data["stop_reason"]; got != "eos" {
				t.Errorf("stop_reason %v, want eos (the engine ran out of tokens before max_tokens)", got)
			}
			st := frames[0]
			if st.Data["pool_id"] != poolID || st.Data["engine"] != "llamacpp" {
				t.Errorf("started %s, want pool_id %s and engine llamacpp", st.Raw, poolID)
			}
			for _, f := range frames {
				if f.Event == "metrics" {
					_, hasHuman := f.Data["human"]
					if hasHuman != verbose {
						t.Errorf("metrics frame %s: human present %t, want %t", f.Raw, hasHuman, verbose)
					}
				}
			}
		})
	}

	s := h.waitState(t, req.TaskId, client.Succeeded)
	if s.TokensOut != int32(len(toks)) || s.StartedMs == nil || s.FinishedMs == nil || s.Error != nil {
		t.Errorf("succeeded state %+v", s)
	}

	t.Run("max_tokens bounds the stream", func(t *testing.T) {
		req := taskReq(uuid.New())
		req.MaxTokens = 3
		h.submit(t, req)
		frames := h.openStream(t, req.TaskId, streamOpts{}).rest()
		if got, want := text(frames), strings.Join(toks[:3], ""); got != want {
			t.Errorf("text %q, want %q", got, want)
		}
		if end := final(t, frames); end.Data["stop_reason"] != "limit" {
			t.Errorf("end %s, want stop_reason limit", end.Raw)
		}
	})
}

func TestTaskStates(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withSlots(1))
	h.fake.SetGated(true)

	a := taskReq(uuid.New())
	h.submit(t, a)
	running := h.waitState(t, a.TaskId, client.Running)
	if running.StartedMs == nil || running.FinishedMs != nil || running.QueuePosition != nil {
		t.Errorf("running state %+v: want started_ms, no finished_ms, no queue_position", running)
	}
	if running.PoolId != poolID || running.SessionId != a.SessionId || running.Priority != client.Interactive {
		t.Errorf("running state %+v", running)
	}

	b := taskReq(uuid.New())
	b.Priority = client.Batch
	rb := h.submit(t, b)
	// Predictions: one slot, busy, no measurement yet: ceil((0+1-0)/1) × prior_service_ms.
	prior := int64(h.cfg.priorServiceMs)
	if rb.JSON202.QueuePosition != 0 || rb.JSON202.PredictedStartMs != prior {
		t.Errorf("queued admission: position %d predicted %d, want 0 and %d", rb.JSON202.QueuePosition, rb.JSON202.PredictedStartMs, prior)
	}
	queued := h.state(t, b.TaskId)
	if queued.State != client.Queued || queued.QueuePosition == nil || *queued.QueuePosition != 0 ||
		queued.PredictedStartMs == nil || *queued.PredictedStartMs != prior || queued.StartedMs != nil {
		t.Errorf("queued state %+v: want queued at 0, predicted %d, no started_ms", queued, prior)
	}
	// An interactive task goes ahead of the queued batch task.
	c := taskReq(uuid.New())
	rc := h.submit(t, c)
	if rc.JSON202.QueuePosition != 0 {
		t.Errorf("interactive task queued at %d behind a batch task, want 0", rc.JSON202.QueuePosition)
	}
	if s := h.state(t, b.TaskId); s.QueuePosition == nil || *s.QueuePosition != 1 || *s.PredictedStartMs != 2*prior {
		t.Errorf("batch task behind an interactive one: %+v, want position 1 predicted %d", s, 2*prior)
	}

	h.cancel(t, b.TaskId)
	canceled := h.state(t, b.TaskId)
	if canceled.State != client.Canceled || canceled.FinishedMs == nil || canceled.QueuePosition != nil || canceled.Error != nil {
		t.Errorf("canceled state %+v", canceled)
	}
	h.cancel(t, c.TaskId)

	h.fake.Allow(len(defaultTokens))
	done := h.waitState(t, a.TaskId, client.Succeeded)
	if done.TokensOut != int32(len(defaultTokens)) || done.FinishedMs == nil || *done.FinishedMs < *done.StartedMs ||
		*done.StartedMs < done.CreatedMs {
		t.Errorf("succeeded state %+v", done)
	}

	h.fake.SetGated(false)
	h.fake.FailAt(1)
	d := taskReq(uuid.New())
	h.submit(t, d)
	failed := h.waitState(t, d.TaskId, client.Failed)
	if failed.Error == nil || failed.Error.Code != client.WORKERRESET || !failed.Error.Retriable || failed.TokensOut != 1 {
		t.Errorf("failed state %+v (error %+v), want WORKER_RESET retriable after 1 token", failed, failed.Error)
	}

	r, err := h.client.GetTaskWithResponse(h.ctx(t), uuid.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode() != http.StatusNotFound || r.JSON404 == nil || r.JSON404.Code != client.NOTFOUND {
		t.Errorf("unknown task: %d %s, want 404 NOT_FOUND", r.StatusCode(), r.Body)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withSlots(1))
	h.fake.SetGated(true)

	t.Run("queued, before the stream", func(t *testing.T) {
		blocker := taskReq(uuid.New())
		h.submit(t, blocker)
		h.waitState(t, blocker.TaskId, client.Running)
		q := taskReq(uuid.New())
		h.submit(t, q)
		h.cancel(t, q.TaskId)
		s := h.openStream(t, q.TaskId, streamOpts{})
		s.chk.markCanceled()
		frames := s.rest()
		if len(frames) != 2 || frames[0].Event != "started" || frames[1].Event != "end" {
			t.Errorf("frames %s, want started then end", s.dump())
		}
		if h.state(t, q.TaskId).State != client.Canceled {
			t.Error("the task is not canceled")
		}
		h.cancel(t, blocker.TaskId)
		h.waitState(t, blocker.TaskId, client.Canceled)
	})

	t.Run("running, before the first token", func(t *testing.T) {
		r := taskReq(uuid.New())
		h.submit(t, r)
		h.waitState(t, r.TaskId, client.Running)
		eventually(t, "the engine has the request", func() bool { return h.fake.Active() == 1 })
		h.cancel(t, r.TaskId)
		s := h.openStream(t, r.TaskId, streamOpts{})
		s.chk.markCanceled()
		frames := s.rest()
		if count(frames, "token") != 0 || final(t, frames).Data["tokens_out"] != float64(0) {
			t.Errorf("frames %s, want no token and tokens_out 0", s.dump())
		}
		eventually(t, "the engine request ends", func() bool { return h.fake.Active() == 0 })
	})

	t.Run("mid-stream", func(t *testing.T) {
		r := taskReq(uuid.New())
		h.submit(t, r)
		h.fake.Allow(2)
		s := h.openStream(t, r.TaskId, streamOpts{})
		s.until("token 1", isToken(1))
		// The engine now waits for a third permit that never comes: no token can be produced
		// after this point, so none may be streamed.
		before := h.fake.Canceled()
		h.cancel(t, r.TaskId)
		s.chk.markCanceled()
		s.rest()
		if s.chk.tokensAfterCancel != 0 {
			t.Errorf("%d token frames after the cancel was acknowledged: %s", s.chk.tokensAfterCancel, s.dump())
		}
		if end := s.chk.finalObj; end["tokens_out"] != float64(2) {
			t.Errorf("end %v, want tokens_out 2", end)
		}
		eventually(t, "the engine request is canceled", func() bool {
			return h.fake.Canceled() == before+1 && h.fake.Active() == 0
		})
		if st := h.state(t, r.TaskId); st.State != client.Canceled || st.TokensOut != 2 {
			t.Errorf("state %+v, want canceled with 2 tokens", st)
		}
	})

	t.Run("racing a fast engine", func(t *testing.T) {
		// The engine streams as fast as it can; wherever the cancel lands, once it is
		// acknowledged the task's token count is frozen: the stream holds exactly that many
		// tokens and its end says so.
		h.fake.SetGated(false)
		defer h.fake.SetGated(true)
		many := make([]string, 4000)
		for i := range many {
			many[i] = "x"
		}
		h.fake.SetTokens(many...)
		defer h.fake.SetTokens(defaultTokens...)
		for range 5 {
			r := taskReq(uuid.New())
			r.MaxTokens = int32(len(many))
			r.Ctx = int32(len(many))
			h.submit(t, r)
			s := h.openStream(t, r.TaskId, streamOpts{})
			s.until("token 0", isToken(0))
			h.cancel(t, r.TaskId)
			frozen := h.state(t, r.TaskId).TokensOut
			frames := s.rest()
			end := final(t, frames)
			after := h.state(t, r.TaskId)
			n := count(frames, "token")
			if n != int(frozen) || after.TokensOut != frozen || end.Data["tokens_out"] != float64(n) {
				t.Errorf("tokens: %d when the cancel was acknowledged, %d streamed, %v in the end frame, %d in the final state",
					frozen, n, end.Data["tokens_out"], after.TokensOut)
			}
			if canceled, _ := end.Data["canceled"].(bool); canceled != (after.State == client.Canceled) {
				t.Errorf("end %s for a task in state %s", end.Raw, after.State)
			}
		}
	})

	t.Run("idempotent, and a no-op on a finished task", func(t *testing.T) {
		h.fake.SetGated(false)
		defer h.fake.SetGated(true)
		r := taskReq(uuid.New())
		h.submit(t, r)
		h.waitState(t, r.TaskId, client.Succeeded)
		h.cancel(t, r.TaskId)
		h.cancel(t, r.TaskId)
		if st := h.state(t, r.TaskId); st.State != client.Succeeded {
			t.Errorf("cancel changed a finished task to %s", st.State)
		}
		frames := h.openStream(t, r.TaskId, streamOpts{}).rest()
		if final(t, frames).Event != "end" || final(t, frames).Data["canceled"] == true {
			t.Errorf("stream of a finished task changed by a later cancel: %v", final(t, frames).Raw)
		}
	})

	t.Run("unknown task", func(t *testing.T) {
		r, err := h.client.CancelTaskWithResponse(h.ctx(t), uuid.New(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode() != http.StatusNotFound || r.JSON404 == nil || r.JSON404.Code != client.NOTFOUND {
			t.Errorf("cancel of an unknown task: %d %s, want 404", r.StatusCode(), r.Body)
		}
	})
}

func TestDisconnectCancelsTask(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.SetGated(true)
	r := taskReq(uuid.New())
	h.submit(t, r)
	h.fake.Allow(1)
	s := h.openStream(t, r.TaskId, streamOpts{})
	s.until("token 0", isToken(0))
	s.close()
	eventually(t, "the engine request is canceled", func() bool { return h.fake.Canceled() == 1 && h.fake.Active() == 0 })
	st := h.waitState(t, r.TaskId, client.Canceled)
	if st.TokensOut != 1 {
		t.Errorf("state %+v, want 1 token", st)
	}
	m := h.metricsText(t)
	if !strings.Contains(m, `reason="disconnect"`) {
		t.Errorf("tasks_canceled_total has no reason=\"disconnect\" sample:\n%s", grepLines(m, "tasks_canceled_total"))
	}
}

func TestResume(t *testing.T) {
	t.Parallel()

	t.Run("after a disconnect, when disconnects do not cancel", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, withCancelOnDisconnect(false))
		h.fake.SetGated(true)
		r := taskReq(uuid.New())
		h.submit(t, r)
		h.fake.Allow(2)
		s := h.openStream(t, r.TaskId, streamOpts{})
		last := s.until("token 1", isToken(1))
		first := text(s.frames)
		s.close()
		h.fake.Allow(len(defaultTokens))
		s2 := h.openStream(t, r.TaskId, streamOpts{lastEventID: &last.ID, tokenBase: 2})
		rest := s2.rest()
		if got, want := first+text(rest), h.fake.Text(len(defaultTokens)); got != want {
			t.Errorf("text over both connections %q, want %q", got, want)
		}
		if final(t, rest).Event != "end" {
			t.Errorf("resumed stream ends with %s", final(t, rest).Raw)
		}
		if st := h.waitState(t, r.TaskId, client.Succeeded); st.TokensOut != int32(len(defaultTokens)) {
			t.Errorf("state %+v", st)
		}
	})

	t.Run("replays exactly the frames after the id", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		r := taskReq(uuid.New())
		h.submit(t, r)
		h.waitState(t, r.TaskId, client.Succeeded)
		all := h.openStream(t, r.TaskId, streamOpts{}).rest()
		for k := 0; k < len(all)-1; k++ {
			tokensBefore := count(all[:k+1], "token")
			got := h.openStream(t, r.TaskId, streamOpts{lastEventID: &all[k].ID, tokenBase: tokensBefore}).rest()
			want := all[k+1:]
			if len(got) != len(want) {
				t.Fatalf("after id %d: %d frames, want %d", all[k].ID, len(got), len(want))
			}
			for i := range got {
				if got[i].ID != want[i].ID || got[i].Event != want[i].Event || got[i].Raw != want[i].Raw {
					t.Errorf("after id %d: frame %d is %d %s %s, want %d %s %s", all[k].ID, i,
						got[i].ID, got[i].Event, got[i].Raw, want[i].ID, want[i].Event, want[i].Raw)
				}
			}
		}
		// After the final frame there is nothing left to send.
		s := h.openStream(t, r.TaskId, streamOpts{lastEventID: &all[len(all)-1].ID})
		if ev, err := s.rd.Next(); err == nil {
			t.Errorf("resuming after the final frame sent %+v", ev)
		}
		// Beyond the final frame (a client that saw frames a crash of the machine took back
		// from the journal): the final frame once, numbered after the client's id.
		beyond := all[len(all)-1].ID + 3
		got := h.openStream(t, r.TaskId, streamOpts{lastEventID: &beyond}).rest()
		final := all[len(all)-1]
		if len(got) != 1 || got[0].ID != beyond+1 || got[0].Event != final.Event || got[0].Raw != final.Raw {
			t.Errorf("resuming after id %d (final frame %d): %+v", beyond, final.ID, got)
		}
	})
}

func TestDeadline(t *testing.T) {
	t.Parallel()
	clock := tasktest.NewClock(time.Now())
	h := newHarness(t, withSlots(1), withClock(clock))
	h.fake.SetGated(true) // the engine never produces a token: only the deadline ends the task

	t.Run("running", func(t *testing.T) {
		r := taskReq(uuid.New())
		r.DeadlineMs = 100
		h.submit(t, r)
		h.waitState(t, r.TaskId, client.Running) // the runner has armed the deadline
		clock.Advance(99 * time.Millisecond)
		if st := h.state(t, r.TaskId); st.State != client.Running {
			t.Fatalf("state %s before the deadline, want running", st.State)
		}
		clock.Advance(time.Millisecond)
		frames := h.openStream(t, r.TaskId, streamOpts{}).rest()
		end := final(t, frames)
		if end.Event != "error" || end.Data["code"] != "DEADLINE_UNMET" {
			t.Fatalf("final frame %s %s, want error DEADLINE_UNMET", end.Event, end.Raw)
		}
		st := h.waitState(t, r.TaskId, client.Failed)
		if st.Error == nil || st.Error.Code != client.DEADLINEUNMET {
			t.Errorf("state %+v", st)
		}
		eventually(t, "the engine request is canceled", func() bool { return h.fake.Active() == 0 })
	})

	t.Run("queued", func(t *testing.T) {
		blocker := taskReq(uuid.New())
		h.submit(t, blocker)
		h.waitState(t, blocker.TaskId, client.Running)
		r := taskReq(uuid.New())
		r.DeadlineMs = 1
		h.submit(t, r)
		// The task's deadline wakes its queue wait itself (no janitor scan).
		eventually(t, "both tasks' deadlines", func() bool { return clock.Timers() >= 2 })
		clock.Advance(time.Second)
		frames := h.openStream(t, r.TaskId, streamOpts{}).rest()
		if end := final(t, frames); end.Event != "error" || end.Data["code"] != "DEADLINE_UNMET" || count(frames, "token") != 0 {
			t.Fatalf("frames %v, want started then error DEADLINE_UNMET", frames)
		}
		h.cancel(t, blocker.TaskId)
	})
}

func TestEngineFailureMidStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.FailAt(3)
	r := taskReq(uuid.New())
	h.submit(t, r)
	frames := h.openStream(t, r.TaskId, streamOpts{}).rest()
	end := final(t, frames)
	if end.Event != "error" || end.Data["code"] != "WORKER_RESET" || end.Data["retriable"] != true {
		t.Fatalf("final frame %s %s, want a retriable error WORKER_RESET", end.Event, end.Raw)
	}
	if end.Data["pool_id"] != poolID || end.Data["engine"] != "llamacpp" {
		t.Errorf("error frame %s lacks pool_id/engine", end.Raw)
	}
	if got, want := text(frames), h.fake.Text(3); got != want {
		t.Errorf("text before the failure %q, want %q", got, want)
	}
	st := h.waitState(t, r.TaskId, client.Failed)
	if st.Error == nil || st.Error.Code != client.WORKERRESET || st.TokensOut != 3 {
		t.Errorf("state %+v", st)
	}
}

func TestAdmissionReject(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCapacity(1), withSlots(1), withPolicy("reject"))
	h.fake.SetGated(true)

	running := taskReq(uuid.New())
	h.submit(t, running) // takes the only slot
	h.waitState(t, running.TaskId, client.Running)
	queued := taskReq(uuid.New())
	h.submit(t, queued) // takes the only queue place

	refused := taskReq(uuid.New())
	r, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, refused)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode() != http.StatusTooManyRequests || r.JSON429 == nil {
		t.Fatalf("full queue: %d %s, want 429", r.StatusCode(), r.Body)
	}
	e := r.JSON429
	if e.Code != client.ADMISSIONREJECT || !e.Retriable || e.PolicyLabel != "reject" ||
		e.PoolId == nil || *e.PoolId != poolID || e.Engine == nil || *e.Engine != client.Llamacpp {
		t.Errorf("429 body %s", r.Body)
	}
	// Backpressure: mean_service_ms / slots, the configured prior before any measurement.
	want := int64(h.cfg.priorServiceMs)
	if r.Headers429 == nil || r.Headers429.XBackoffMs != want || r.Headers429.RetryAfter != int((want+999)/1000) {
		t.Errorf("429 headers %+v, want X-Backoff-Ms %d and Retry-After %d", r.Headers429, want, (want+999)/1000)
	}
	if e.RetryAfterMs != want {
		t.Errorf("retry_after_ms %d, want %d", e.RetryAfterMs, want)
	}

	// Nothing of the refused task remains: no task, no session.
	g, err := h.client.GetTaskWithResponse(h.ctx(t), refused.TaskId, nil)
	if err != nil || g.StatusCode() != http.StatusNotFound {
		t.Errorf("refused task: getTask %v %v, want 404", err, g.StatusCode())
	}
	sr, err := h.client.GetSessionWithResponse(h.ctx(t), refused.SessionId, nil)
	if err != nil || sr.StatusCode() != http.StatusNotFound {
		t.Errorf("session named only by a refused task: %v %d, want 404", err, sr.StatusCode())
	}

	// Once there is room, the same task id is admitted.
	h.cancel(t, queued.TaskId)
	h.submit(t, refused)

	if m := h.metricsText(t); !strings.Contains(grepLines(m, "tasks_rejected_total{"), `"ADMISSION_REJECT"`) {
		t.Errorf("no ADMISSION_REJECT sample in /metrics:\n%s", grepLines(m, "rejected"))
	}
}

func TestDropLRU(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCapacity(1), withSlots(1), withPolicy("drop-lru"))
	h.fake.SetGated(true)

	running := taskReq(uuid.New())
	h.submit(t, running)
	h.waitState(t, running.TaskId, client.Running)
	victim := taskReq(uuid.New())
	victim.Priority = client.Batch
	h.submit(t, victim)
	s := h.openStream(t, victim.TaskId, streamOpts{})
	s.until("started", func(f frame) bool { return f.Event == "started" })

	newer := taskReq(uuid.New()) // interactive: pushes the batch task out
	h.submit(t, newer)
	frames := s.rest()
	end := final(t, frames)
	if end.Event != "error" || end.Data["code"] != "QUEUE_FULL_DROP_LRU" || end.Data["retriable"] != true {
		t.Fatalf("evicted task's stream ends with %s %s, want error QUEUE_FULL_DROP_LRU", end.Event, end.Raw)
	}
	if st := h.waitState(t, victim.TaskId, client.Failed); st.Error == nil || st.Error.Code != client.QUEUEFULLDROPLRU {
		t.Errorf("evicted task state %+v", st)
	} else if a := st.Admission; a == nil || a.ReasonIfRefused == nil || *a.ReasonIfRefused != client.QUEUEFULLDROPLRU ||
		a.KeyName != "default" || a.Class != client.Batch || a.Position != nil {
		t.Errorf("evicted task's admission %+v, want reason_if_refused QUEUE_FULL_DROP_LRU", a)
	}
	if st := h.state(t, newer.TaskId); st.State != client.Queued {
		t.Errorf("the newer task is %s, want queued", st.State)
	}

	batch := taskReq(uuid.New())
	batch.Priority = client.Batch
	r, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, batch)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode() != http.StatusTooManyRequests || r.JSON429 == nil || r.JSON429.Code != client.QUEUEFULLDROPLRU ||
		r.JSON429.PolicyLabel != "drop-lru" {
		t.Fatalf("batch task facing only interactive queued tasks: %d %s, want 429 QUEUE_FULL_DROP_LRU", r.StatusCode(), r.Body)
	}
}

func TestPlacementRefusals(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name   string
		edit   func(*client.TaskRequest)
		status int
		code   client.ErrorKind
		msg    string
	}{
		{name: "ctx above the pool's ctx_max", edit: func(r *client.TaskRequest) { r.Ctx = int32(h.cfg.ctxMax) + 1 },
			status: 400, code: client.INVALIDPARAMS},
		// No configured pool can ever serve these: 503 POOL_UNAVAILABLE as the product specifies,
		// but not retriable (schemathesis: retriable true for a permanent condition).
		{name: "unknown model", edit: func(r *client.TaskRequest) { r.ModelRef = "no-such-model" }, status: 503, code: client.POOLUNAVAILABLE, msg: `engine llamacpp, model "no-such-model"`},
		{name: "engine without a pool", edit: func(r *client.TaskRequest) { r.Engine = client.Vllm }, status: 503, code: client.POOLUNAVAILABLE, msg: "engine vllm"},
		{name: "workload without a pool", edit: func(r *client.TaskRequest) { r.Workload = client.Embedding }, status: 503, code: client.POOLUNAVAILABLE, msg: "workload embedding"},
		{name: "every pool avoided", edit: func(r *client.TaskRequest) { r.Placement = &client.PlacementOverrides{AvoidPools: &[]string{poolID}} }, status: 503, code: client.POOLUNAVAILABLE},
		{name: "device mask", edit: func(r *client.TaskRequest) { r.Placement = &client.PlacementOverrides{RequireDeviceMask: ptr("0x1")} }, status: 503, code: client.POOLUNAVAILABLE, msg: "require_device_mask"},
		{name: "model by model_ref", edit: func(r *client.TaskRequest) { r.ModelRef = "models/tiny.gguf" }, status: 202},
		{name: "max_tokens above ctx", edit: func(r *client.TaskRequest) { r.Ctx = 16; r.MaxTokens = 17 }, status: 400, code: client.INVALIDPARAMS},
		// The contract itself rules these out (schemathesis: schema-valid requests answered 400).
		{name: "prompt and inputs", edit: func(r *client.TaskRequest) { r.Inputs = &[]string{"a"} }, status: 400, code: client.INVALIDPARAMS, msg: "exactly one of prompt or inputs is required"},
		{name: "neither prompt nor inputs", edit: func(r *client.TaskRequest) { r.Prompt = nil }, status: 400, code: client.INVALIDPARAMS, msg: "exactly one of prompt or inputs is required"},
		{name: "pin without a pool", edit: func(r *client.TaskRequest) { r.Placement = &client.PlacementOverrides{Mode: ptr(client.Pin)} }, status: 400, code: client.INVALIDPARAMS, msg: "mode pin requires pin_pool_id"},
		{name: "inputs", edit: func(r *client.TaskRequest) { r.Prompt = nil; r.Inputs = &[]string{"Once", " upon"} }, status: 202},
		{name: "pinned to an unknown pool without fallback", edit: func(r *client.TaskRequest) {
			r.Placement = &client.PlacementOverrides{Mode: ptr(client.Pin), PinPoolId: ptr("nope"), AllowFallback: ptr(false)}
		}, status: 503, code: client.POOLUNAVAILABLE, msg: `pinned pool "nope"`},
		{name: "pinned to the pool", edit: func(r *client.TaskRequest) {
			r.Placement = &client.PlacementOverrides{Mode: ptr(client.Pin), PinPoolId: ptr(poolID)}
		}, status: 202},
		{name: "replica pinned without a pinned pool", edit: func(r *client.TaskRequest) {
			r.Placement = &client.PlacementOverrides{PinReplicaId: ptr(poolID + "/0")}
		}, status: 400, code: client.INVALIDPARAMS, msg: "pin_replica_id requires mode pin with pin_pool_id"},
		{name: "pinned to a replica the pool lacks", edit: func(r *client.TaskRequest) {
			r.Placement = &client.PlacementOverrides{Mode: ptr(client.Pin), PinPoolId: ptr(poolID), PinReplicaId: ptr(poolID + "/7")}
		}, status: 503, code: client.POOLUNAVAILABLE, msg: "has no replica " + poolID + "/7"},
		{name: "pinned to the pool's replica, others hinted", edit: func(r *client.TaskRequest) {
			r.Placement = &client.PlacementOverrides{Mode: ptr(client.Pin), PinPoolId: ptr(poolID), PinReplicaId: ptr(poolID + "/0"),
				PreferReplicas: &[]string{poolID + "/0"}, AvoidReplicas: &[]string{"elsewhere/3"}}
		}, status: 202},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := taskReq(uuid.New())
			tt.edit(&req)
			r, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, req)
			if err != nil {
				t.Fatal(err)
			}
			if r.StatusCode() != tt.status {
				t.Fatalf("%d %s, want %d", r.StatusCode(), r.Body, tt.status)
			}
			if tt.status != 202 {
				e := envelope(t, r.Body)
				if e.Code != tt.code {
					t.Errorf("code %s, want %s (%s)", e.Code, tt.code, e.Message)
				}
				if e.Retriable {
					t.Errorf("retriable true for %s: retrying cannot change the answer", e.Code)
				}
				if !strings.Contains(e.Message, tt.msg) {
					t.Errorf("message %q, want one containing %q", e.Message, tt.msg)
				}
				if strings.Count(e.Message, "no pool") > 1 {
					t.Errorf("message %q repeats itself", e.Message)
				}
			}
		})
	}
}

func TestTurnLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withMaxTurns(2))
	session := uuid.New()
	h.submit(t, taskReq(session))
	h.submit(t, taskReq(session))
	r, err := h.client.CreateTaskWithResponse(h.ctx(t), nil, taskReq(session))
	if err != nil {
		t.Fatal(err)
	}
	// A valid request that the session's state refuses: 409, as schemathesis expects of a
	// schema-valid body (a 400 says the request itself is wrong).
	if r.StatusCode() != http.StatusConflict || r.JSON409 == nil || r.JSON409.Code != client.CONFLICT || r.JSON409.Retriable {
		t.Fatalf("third turn: %d %s, want 409 CONFLICT, not retriable", r.StatusCode(), r.Body)
	}
	// The session's own refusal reaches the client: the task service keeps it in the error chain.
	if want := "session has reached its limit of 2 turns"; r.JSON409.Message != want {
		t.Errorf("message %q, want %q", r.JSON409.Message, want)
	}
	// Other sessions are not affected.
	h.submit(t, taskReq(uuid.New()))
}
