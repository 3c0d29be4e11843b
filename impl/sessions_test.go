package impl

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task"
	"github.com/orchestratord/orchestratord/impl/tenant"
)

// fakeTasks admits into the real session store the way the task service does (a turn of the
// task's session, for its owner), and ends tasks on demand by settling what they reserved
// the way the task service does at a task's end.
type fakeTasks struct {
	Tasks // the rest is not used by admission
	ss    *session.Store
	b     *tenant.Budgets

	mu     sync.Mutex
	specs  map[string]task.Spec
	refuse error // the next Submit's refusal
	// replays, when set, makes Replay answer for the tasks admitted, except for its next
	// missReplays calls (a concurrent post that looked before the first post's task existed).
	replays     bool
	missReplays int
}

// Replay leaves every post to Submit, which replays as the service's own does once the
// post's reservations are made (and then given back), unless replays is set.
func (f *fakeTasks) Replay(_ context.Context, spec task.Spec) (task.Admission, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.replays {
		return task.Admission{}, false, nil
	}
	if f.missReplays > 0 {
		f.missReplays--
		return task.Admission{}, false, nil
	}
	if prev, ok := f.specs[spec.ID]; ok {
		if prev.Owner != spec.Owner {
			return task.Admission{}, true, task.ErrConflict
		}
		return f.replayOf(prev), true, nil
	}
	return task.Admission{}, false, nil
}

// replayOf is the admission of a re-post of the task prev admitted, with its own session's
// budget left, as the task service answers it.
func (f *fakeTasks) replayOf(prev task.Spec) task.Admission {
	a := task.Admission{TaskID: prev.ID, Replayed: true, SessionGen: prev.SessionGen}
	if info, ok := f.ss.Get(prev.SessionID); ok && info.Gen == prev.SessionGen && info.Owner == prev.Owner {
		a.TokensBudgetRemaining = info.TokensBudgetRemaining
	}
	return a
}

func (f *fakeTasks) Submit(_ context.Context, spec task.Spec) (task.Admission, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if prev, ok := f.specs[spec.ID]; ok {
		if prev.Owner != spec.Owner {
			return task.Admission{}, task.ErrConflict
		}
		return f.replayOf(prev), nil
	}
	if err := f.refuse; err != nil {
		f.refuse = nil
		return task.Admission{}, err
	}
	info, err := f.ss.Admit(spec.SessionID, spec.Owner)
	if err != nil {
		return task.Admission{}, err
	}
	f.specs[spec.ID] = spec
	return task.Admission{TaskID: spec.ID, TokensBudgetRemaining: info.TokensBudgetRemaining}, nil
}

// end settles task id as the task service does when it ends after used tokens.
func (f *fakeTasks) end(t *testing.T, id string, used int) {
	t.Helper()
	f.mu.Lock()
	spec := f.specs[id]
	f.mu.Unlock()
	if spec.SessionGrant > 0 {
		f.ss.Settle(spec.SessionID, spec.Owner, spec.SessionGen, spec.SessionGrant, used)
	}
	if err := f.b.Settle(spec.Owner, spec.Grant, used); err != nil {
		t.Fatal(err)
	}
}

type admitEnv struct {
	s     *Server
	tasks *fakeTasks
	ss    *session.Store
}

func newAdmitEnv(t *testing.T, sessionBudget int64) admitEnv {
	t.Helper()
	ss, err := session.New(session.Options{TokenBudget: sessionBudget, MaxTurns: 1000})
	if err != nil {
		t.Fatal(err)
	}
	b, err := tenant.OpenBudgets(filepath.Join(t.TempDir(), "budgets.json"))
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTasks{ss: ss, b: b, specs: map[string]task.Spec{}}
	return admitEnv{s: NewServer(Options{Tasks: ft, Sessions: ss, Budgets: b}), tasks: ft, ss: ss}
}

var (
	aliceKey = &tenant.Key{Name: "alice", Scopes: tenant.AllScopes, Weight: 1}
	bobKey   = &tenant.Key{Name: "bob", Scopes: tenant.AllScopes, Weight: 1}
)

// as is a request context of key k, with the response headers admission writes.
func as(k *tenant.Key) (context.Context, http.Header) {
	h := http.Header{}
	return context.WithValue(context.Background(), stateKey, &reqState{key: k, respHeader: h}), h
}

func spec(sessionID string, maxTokens int) task.Spec {
	return task.Spec{ID: uuid.NewString(), SessionID: sessionID, MaxTokens: maxTokens, Priority: admission.Interactive}
}

// TestSessionOwnershipHandlers: a session belongs to the key whose task first named it;
// another key's read, use and delete see an unknown session. The default key (single-key
// mode) is one owner like any other.
func TestSessionOwnershipHandlers(t *testing.T) {
	owners := []struct {
		name         string
		owner, other *tenant.Key
	}{
		{"named keys", aliceKey, bobKey},
		{"default key and a named one", &tenant.Key{Name: tenant.DefaultName, Scopes: tenant.AllScopes}, bobKey},
	}
	ops := []struct {
		name string
		// do runs as the other key and fails the test unless it was answered as for an
		// unknown session.
		do func(t *testing.T, e admitEnv, ctx context.Context, id uuid.UUID)
	}{
		{"get", func(t *testing.T, e admitEnv, ctx context.Context, id uuid.UUID) {
			_, err := e.s.GetSession(ctx, api.GetSessionRequestObject{Id: id})
			if ae := toAPIError(err); ae.Code != "NOT_FOUND" || ae.Message != errSessionNotFound().Message {
				t.Fatalf("GetSession: %v, want the unknown session's 404", err)
			}
		}},
		{"use", func(t *testing.T, e admitEnv, ctx context.Context, id uuid.UUID) {
			_, err := e.s.admit(ctx, spec(id.String(), 5))
			if ae := toAPIError(err); ae.Code != "NOT_FOUND" || statusOf(ae.Code) != http.StatusNotFound {
				t.Fatalf("admit: %v, want 404", err)
			}
		}},
		{"delete", func(t *testing.T, e admitEnv, ctx context.Context, id uuid.UUID) {
			r, err := e.s.DeleteSession(ctx, api.DeleteSessionRequestObject{Id: id})
			if _, ok := r.(api.DeleteSession204Response); err != nil || !ok {
				t.Fatalf("DeleteSession: %v %T, want 204 as for an unknown session", err, r)
			}
		}},
	}
	for _, o := range owners {
		for _, op := range ops {
			t.Run(o.name+"/"+op.name, func(t *testing.T) {
				e := newAdmitEnv(t, 100)
				id := uuid.New()
				ctx, _ := as(o.owner)
				if _, err := e.s.admit(ctx, spec(id.String(), 10)); err != nil {
					t.Fatal(err)
				}
				octx, _ := as(o.other)
				op.do(t, e, octx, id)
				// The owner's session is as it was: one turn, 10 tokens reserved.
				r, err := e.s.GetSession(ctx, api.GetSessionRequestObject{Id: id})
				got, ok := r.(api.GetSession200JSONResponse)
				if err != nil || !ok || got.Body.Turns != 1 || *got.Body.TokensBudgetRemaining != 90 {
					t.Fatalf("owner's GetSession after the other key's %s: %+v %v", op.name, r, err)
				}
				if _, err := e.s.DeleteSession(ctx, api.DeleteSessionRequestObject{Id: id}); err != nil {
					t.Fatal(err)
				}
				if _, err := e.s.GetSession(ctx, api.GetSessionRequestObject{Id: id}); toAPIError(err).Code != "NOT_FOUND" {
					t.Fatalf("owner's session after the owner's delete: %v", err)
				}
			})
		}
	}
}

// TestSessionBudgetAdmission: a task reserves its max_tokens of the session's budget as well
// as of the key's; the header gives the smaller remaining, the refusal names the budget.
func TestSessionBudgetAdmission(t *testing.T) {
	e := newAdmitEnv(t, 100)
	carol := &tenant.Key{Name: "carol", Scopes: tenant.AllScopes, Weight: 1, TokenBudget: 150}
	sess := uuid.NewString()
	type want struct {
		grant, sessionGrant, stopAt int
		header                      string
		limit                       string // the refusal's limit; "" admitted
	}
	steps := []struct {
		name      string
		session   string
		maxTokens int
		want      want
	}{
		// session 100 → 40 left, key 150 → 90 left: the header is the session's.
		{"first", sess, 60, want{grant: 60, sessionGrant: 60, header: "40"}},
		// The session grants its 40 left: the task stops there.
		{"second, granted what the session has left", sess, 60, want{grant: 60, sessionGrant: 40, stopAt: 40, header: "0"}},
		{"third, the session is spent", sess, 10, want{header: "0", limit: "session_budget"}},
		// Another session of carol's: the key's 30 left is smaller than the session's 100.
		{"other session, granted what the key has left", "", 50, want{grant: 30, sessionGrant: 50, stopAt: 30, header: "0"}},
		{"other session, the key is spent", "", 5, want{header: "0", limit: "key_budget"}},
	}
	var admitted []task.Spec
	for _, st := range steps {
		ctx, h := as(carol)
		sid := st.session
		if sid == "" {
			sid = uuid.NewString()
		}
		sp := spec(sid, st.maxTokens)
		adm, err := e.s.admit(ctx, sp)
		if st.want.limit != "" {
			ae := toAPIError(err)
			if ae.Code != "BUDGET_EXCEEDED" || ae.Limit != st.want.limit || h.Get("X-Budget-Tokens-Remaining") != st.want.header {
				t.Fatalf("%s: %v (limit %q, header %q), want BUDGET_EXCEEDED %s", st.name, err, ae.Limit,
					h.Get("X-Budget-Tokens-Remaining"), st.want.limit)
			}
			if _, ok := e.ss.Get(sid); ok && st.session == "" {
				t.Fatalf("%s: a session named only by a refused task is still there", st.name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if adm.TokensBudgetRemaining == nil || strconv.FormatInt(*adm.TokensBudgetRemaining, 10) != st.want.header {
			t.Fatalf("%s: remaining %v, want %s", st.name, adm.TokensBudgetRemaining, st.want.header)
		}
		got := e.tasks.specs[sp.ID]
		if got.Grant != st.want.grant || got.SessionGrant != st.want.sessionGrant || got.StopAt != st.want.stopAt {
			t.Fatalf("%s: grant %d, session grant %d, stop at %d; want %+v", st.name, got.Grant, got.SessionGrant, got.StopAt, st.want)
		}
		admitted = append(admitted, got)
	}
	// The first two end: 60 and 40 reserved, 25 and 40 used → 100 − 65 = 35 left.
	e.tasks.end(t, admitted[0].ID, 25)
	e.tasks.end(t, admitted[1].ID, 40)
	if info, _ := e.ss.Get(sess); *info.TokensBudgetRemaining != 35 {
		t.Fatalf("session after its tasks ended: %d left, want 35", *info.TokensBudgetRemaining)
	}
}

// TestSessionBudgetRefunds: what admission reserved of the session's budget returns when the
// task service refuses the task, and when the post is a replay.
func TestSessionBudgetRefunds(t *testing.T) {
	e := newAdmitEnv(t, 100)
	ctx, _ := as(aliceKey)
	sess := uuid.NewString()
	first := spec(sess, 30)
	if _, err := e.s.admit(ctx, first); err != nil {
		t.Fatal(err)
	}
	// Refused by the task service: its 30 come back.
	e.tasks.refuse = &task.RejectError{Class: task.ClassQueueFull}
	if _, err := e.s.admit(ctx, spec(sess, 30)); !errors.Is(err, task.ErrRejected) {
		t.Fatalf("refused: %v", err)
	}
	// Replayed: reserved once, for the first post.
	adm, err := e.s.admit(ctx, first)
	if err != nil || !adm.Replayed || adm.TokensBudgetRemaining == nil || *adm.TokensBudgetRemaining != 70 {
		t.Fatalf("replay: %+v %v, want 70 left", adm, err)
	}
	if info, _ := e.ss.Get(sess); *info.TokensBudgetRemaining != 70 || info.Turns != 1 {
		t.Fatalf("session %+v, want 70 left and 1 turn", info)
	}
	// A first task refused leaves no session behind.
	fresh := uuid.NewString()
	e.tasks.refuse = &task.RejectError{Class: task.ClassQueueFull}
	if _, err := e.s.admit(ctx, spec(fresh, 30)); err == nil {
		t.Fatal("want a refusal")
	}
	if _, ok := e.ss.Get(fresh); ok {
		t.Fatal("a session named only by a refused task is still there")
	}
}

// TestSessionBudgetConcurrentAdmissions: concurrent tasks of one session are never granted
// more than its budget together.
func TestSessionBudgetConcurrentAdmissions(t *testing.T) {
	e := newAdmitEnv(t, 100)
	sess := uuid.NewString()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, _ := as(aliceKey)
			_, _ = e.s.admit(ctx, spec(sess, 15))
		}()
	}
	wg.Wait()
	total := 0
	for _, sp := range e.tasks.specs {
		total += sp.SessionGrant
		if sp.StopAt != 0 && sp.StopAt != sp.SessionGrant {
			t.Errorf("task granted %d stops at %d", sp.SessionGrant, sp.StopAt)
		}
	}
	if total != 100 {
		t.Fatalf("granted %d of the session's 100 in all", total)
	}
}

// TestReplayTakesNoRequest: a post that the task service answers as a replay of the task
// its id names (the concurrent post of one body that lost the race: admission's Replay missed
// it, Submit found it) is the first post's 202 again. It must take nothing of the key's
// limits, like the re-post Replay answers up front ("no new request for the limits"): its
// tokens go back, and so must its request. bob may post 2 tasks a minute; posting one task
// twice leaves him one more.
func TestReplayTakesNoRequest(t *testing.T) {
	env := newAdmitEnv(t, 0)
	lim := tenant.NewLimiter(nil)
	env.s.opts.Limits = lim
	bob := &tenant.Key{Name: "bob", Scopes: tenant.AllScopes, Weight: 1, RPM: 2, TPM: 100}
	ctx, _ := as(bob)
	sp := spec("s1", 10)
	if _, err := env.s.admit(ctx, sp); err != nil {
		t.Fatal(err)
	}
	adm, err := env.s.admit(ctx, sp) // the same task again: Submit answers it as a replay
	if err != nil || !adm.Replayed {
		t.Fatalf("second post: %+v %v, want a replay", adm, err)
	}
	for _, w := range lim.Windows(bob) {
		want := map[tenant.Limit]int{tenant.LimitRequests: 1, tenant.LimitTokens: 90}[w.Limit]
		if w.Remaining != want {
			t.Errorf("after one task posted twice: %s remaining %d, want %d (the replay took %d)", w.Limit, w.Remaining, want, want-w.Remaining)
		}
	}
	// The second task bob may still post this minute.
	if _, err := env.s.admit(ctx, spec("s2", 10)); err != nil {
		t.Errorf("bob's second task after posting his first twice: %v, want it admitted (rpm 2)", err)
	}
}

// TestLateReplayIsNotRefused: a post of a task whose first post a concurrent one admitted
// after this one's replay check looked is refused by a limit or a budget the first post used
// up. It is a re-post all the same: it gets the task's admission, and gives back what it took.
func TestLateReplayIsNotRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  *tenant.Key
	}{
		{"requests per minute", &tenant.Key{Name: "bob", Scopes: tenant.AllScopes, Weight: 1, RPM: 1}},
		{"tokens per minute", &tenant.Key{Name: "bob", Scopes: tenant.AllScopes, Weight: 1, TPM: 10}},
		{"token budget", &tenant.Key{Name: "bob", Scopes: tenant.AllScopes, Weight: 1, RPM: 5, TokenBudget: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newAdmitEnv(t, 0)
			now := time.Unix(1_700_000_000, 0)
			lim := tenant.NewLimiter(func() time.Time { return now })
			env.s.opts.Limits = lim
			env.tasks.replays = true
			ctx, _ := as(tc.key)
			sp := spec("s1", 10)
			if _, err := env.s.admit(ctx, sp); err != nil {
				t.Fatal(err)
			}
			before := lim.Windows(tc.key)
			env.tasks.mu.Lock()
			env.tasks.missReplays = 1 // the second post looked before the first's task existed
			env.tasks.mu.Unlock()
			adm, err := env.s.admit(ctx, sp)
			if err != nil || !adm.Replayed || adm.TaskID != sp.ID {
				t.Fatalf("a concurrent re-post refused by what its first post used: %+v %v, want the task's admission", adm, err)
			}
			if after := lim.Windows(tc.key); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("limits after the re-post: %+v, want them as the first post left them: %+v", after, before)
			}
		})
	}
}
