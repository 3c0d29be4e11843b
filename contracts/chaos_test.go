package contracts

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/impl"
)

// TestChaos drives one daemon with many clients at once, each doing at random what clients
// do: submit (with short deadlines, either priority, each disconnect policy), re-post, read a
// stream part of the way and leave, resume it with Last-Event-ID, cancel, poll, complete
// through the OpenAI facade, and store artifacts (more than the store holds). The engine produces tokens at a random pace and now and then
// fails mid-stream, so the queue fills, refuses or evicts, deadlines pass in the queue and on
// the engine, tasks move to another replica, and cancels land at every step of a task's life;
// with two replicas, an operator drains them in turn (deadlines passing) and resumes them, or
// drains the whole pool once, mid-run. No answer is scripted: each is checked against what the
// API promises.
//
//   - Every response and every stream frame meets the contract (the validating transport, the
//     SSE checker); a submission is answered 202, or refused for the queue or the session's
//     budget (429), the pool (503) or its deadline (400 DEADLINE_UNMET, short deadlines only).
//   - A task's state reads consistently: queued with its place, running with its start, ended
//     with its end; as one client sees it, it never goes back, nor do its tokens; once ended, it
//     never changes again. After a 204 to a cancel, the task has ended. To another key, the
//     task does not exist (404 to every operation).
//   - A stream read to its end, in one piece or resumed, holds exactly the engine's tokens in
//     order (across a move to another replica too), and its last frame says what GET says of
//     the task. A facade completion's text is the engine's, and its task is its key's. An
//     artifact stored again is answered as the first time, even with the store full.
//   - When the clients are done: every task ends; the queue, the slots, the streams and the
//     engine are idle; the metrics count every task and token once, and each key's tokens;
//     each session has one turn per task admitted in it, and has been charged the tokens its
//     tasks produced, never more than its budget; the artifact store holds what it answered
//     201 to, within its limit; and a daemon restarted on the same state directory shows
//     every task and its stream byte for byte, and every artifact, as before.
//   - From the 202 to a drain of the whole pool on, every submission (task API or facade) is
//     refused 503 POOL_UNAVAILABLE, and once its deadline has passed every task has ended, the
//     engine giving no more tokens.
//   - A daemon stopped with tasks queued and running, and started again on its state directory,
//     keeps all of the above for a second round of clients: no task lost, none changed once
//     ended, every stream whole.
//
// ORCHD_CHAOS_SEED replays a run's choices (the interleavings differ); the seed is logged.
func TestChaos(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ORCHD_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ORCHD_CHAOS_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (ORCHD_CHAOS_SEED replays its choices)", seed)
	plain := map[string]string{testKey: ""}
	tenants := map[string]string{testKey: "", chaosAlice: "alice", chaosBob: "bob"}
	for i, tc := range []struct {
		name string
		cfg  chaosConfig
		opts []option
	}{
		{"disconnects cancel, drop-lru, two replicas drained and resumed", chaosConfig{keys: plain, operator: true},
			[]option{withCancelOnDisconnect(true), withPolicy("drop-lru"), withReplicas(2)}},
		{"disconnects detach, reject, three keys, session budgets", chaosConfig{keys: tenants},
			[]option{withCancelOnDisconnect(false), withPolicy("reject"), withTokenBudget(100), withKeys(chaosKeys)}},
		{"restarted with tasks queued and running", chaosConfig{keys: plain, restart: true},
			[]option{withCancelOnDisconnect(true), withPolicy("drop-lru")}},
		{"pool drained mid-run, replicas drained and resumed, reject", chaosConfig{keys: plain, drain: true, operator: true},
			[]option{withCancelOnDisconnect(true), withPolicy("reject"), withReplicas(2)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runChaos(t, seed+uint64(i), tc.cfg, append(tc.opts, withCapacity(10), withSlots(3), withArtifactsMaxCount(chaosArtifactsMax))...)
		})
	}
}

// The named keys of the chaos test's tenants (the plain test key is the third client key).
const (
	chaosAlice = "alice-chaos-key-0123456789"
	chaosBob   = "bob-chaos-key-0123456789"
	chaosKeys  = `keys:
  - {name: alice, key: ` + chaosAlice + `, scopes: [tasks, sessions, artifacts]}
  - {name: bob, key: ` + chaosBob + `, scopes: [tasks, sessions, artifacts]}
`
)

// chaosTokens is what the fake engine emits in the chaos test: distinct pieces, so that a
// stream's text shows any token lost, repeated or out of order.
var chaosTokens = func() []string {
	toks := make([]string, 40)
	for i := range toks {
		toks[i] = "c" + strconv.Itoa(i) + " "
	}
	return toks
}()

// chaosPrompt is every chaos task's prompt.
const chaosPrompt = "chaos: "

func chaosText(n int) string { return strings.Join(chaosTokens[:min(n, len(chaosTokens))], "") }

const (
	chaosWorkers = 12
	chaosOps     = 50 // per worker
)

// chaosRun is what the clients of one run share.
type chaosRun struct {
	mu      sync.Mutex
	h       *harness                       // the daemon now (a restart replaces it)
	tasks   []chaosTask                    // accepted
	tasksOf map[string][]chaosTask         // accepted, by key
	final   map[uuid.UUID]client.TaskState // the first ended state seen of each task
	counts  map[string]int                 // what the clients got, for the log
	// artifacts: what storing each chaos artifact (by its content's n) answered: 201's ref.
	artifacts map[int]client.ArtifactRef
	// drained is set once the pool's drain has been answered 202: no submission is admitted
	// after it.
	drained atomic.Bool
	ops     atomic.Int64 // the clients' operations begun
	// drainAt is the operation (counted in ops) whose client drains the pool with drain
	// before it (0: none).
	drainAt atomic.Int64
	drain   func(t *testing.T)
}

// daemon returns the daemon now.
func (c *chaosRun) daemon() *harness {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.h
}

// chaosConfig is one run's setting.
type chaosConfig struct {
	keys    map[string]string // each client's key (round robin) → its name in the keys file ("": none)
	restart bool              // stop the daemon mid-run and start it again for a second round
	// operator drains the pool's replicas now and then, with short deadlines, and resumes them.
	operator bool
	// drain drains the whole pool once, mid-run, with a short deadline.
	drain bool
}

// runChaos runs the clients against a daemon, then checks. With restart, the daemon is
// stopped once the clients are done, with tasks queued and running, and started again on
// its state directory for a second round of clients.
func runChaos(t *testing.T, seed uint64, cfg chaosConfig, opts ...option) {
	stateDir := t.TempDir()
	opts = append(opts, withStateDir(stateDir), withFakeSetup(func(f *fakeEngine) {
		f.SetTokens(chaosTokens...)
		f.SetContinues(chaosPrompt)
		f.SetGated(true)
	}))
	c := &chaosRun{h: newHarness(t, opts...), final: map[uuid.UUID]client.TaskState{},
		tasksOf: map[string][]chaosTask{}, counts: map[string]int{}, artifacts: map[int]client.ArtifactRef{}}
	keys := slices.Sorted(maps.Keys(cfg.keys))

	// The engine's pace: a few tokens now and then (never more than a few ahead of the
	// generations that wait for them), and a generation failing now and then.
	pumpStop := make(chan struct{})
	var pumping sync.WaitGroup
	stopPump := sync.OnceFunc(func() { close(pumpStop); pumping.Wait() })
	pumping.Add(1)
	go func() {
		defer pumping.Done()
		rng := rand.New(rand.NewPCG(seed, 1))
		for {
			select {
			case <-pumpStop:
				return
			case <-time.After(time.Duration(rng.IntN(1500)) * time.Microsecond):
			}
			fake := c.daemon().fake
			for range rng.IntN(6) {
				if len(fake.permits) < 4 {
					fake.permits <- struct{}{}
				}
			}
			if rng.IntN(40) == 0 {
				fake.FailNext(rng.IntN(len(chaosTokens)))
			}
		}
	}()
	defer stopPump()

	rounds := 1
	if cfg.restart {
		rounds = 2
	}
	clients := make([]*chaosClient, chaosWorkers)
	for w := range clients {
		clients[w] = &chaosClient{c: c, key: keys[w%len(keys)], seen: map[uuid.UUID]client.TaskState{}}
	}
	for round := range rounds {
		if round > 0 {
			// A last burst of tasks, so that the stop finds some queued and some running.
			burst := &chaosClient{c: c, t: t, key: keys[0], rng: rand.New(rand.NewPCG(seed, 0)), seen: map[uuid.UUID]client.TaskState{}}
			for range 8 {
				burst.submit(nil)
			}
			m := c.daemon().metricsText(t)
			t.Logf("stopping the daemon with %v tasks queued and %v running", metricSum(m, "queue_depth"), metricSum(m, "active_leases"))
			c.daemon().stop()
			h := newHarness(t, opts...)
			c.mu.Lock()
			c.h = h
			c.mu.Unlock()
		}
		// Neither the operator nor the pool's drain is a parallel subtest: each waits on the
		// clients' progress, and holding one of go test's -parallel slots (GOMAXPROCS of them)
		// while the clients wait for one hangs the run. The operator runs beside the clients
		// until they are done; the client whose operation reaches the drain's point drains.
		c.drainAt.Store(0)
		if cfg.drain {
			rng := rand.New(rand.NewPCG(seed, uint64(2000+round)))
			total := chaosWorkers * chaosOps
			c.drainAt.Store(int64(total/5 + rng.IntN(total*2/3-total/5)))
			c.drain = func(t *testing.T) { c.drainPool(t, rng, keys[0], stopPump) }
		}
		t.Run(fmt.Sprintf("clients, round %d", round), func(t *testing.T) {
			clientsDone := make(chan struct{})
			var operator sync.WaitGroup
			if cfg.operator {
				operator.Go(func() { c.operate(t, rand.New(rand.NewPCG(seed, uint64(1000+round))), clientsDone) })
			}
			t.Run("clients", func(t *testing.T) {
				for w, cc := range clients {
					t.Run(fmt.Sprintf("client %d", w), func(t *testing.T) {
						t.Parallel()
						cc.t, cc.rng = t, rand.New(rand.NewPCG(seed, uint64(round*chaosWorkers+w)+2))
						cc.run()
					})
				}
			})
			close(clientsDone)
			operator.Wait()
		})
		if t.Failed() {
			return
		}
	}
	h := c.daemon()

	if cfg.drain {
		// Past the drain's deadline, every task has ended or ends now, with no more tokens.
		stopPump()
		if !c.drained.Load() {
			t.Fatal("the clients were done before the pool was drained")
		}
		c.mu.Lock()
		tasks := slices.Clone(c.tasks)
		c.mu.Unlock()
		for _, task := range tasks {
			eventually(t, "task "+task.req.TaskId.String()+" on the drained pool ends", func() bool {
				return isEnded(stateAs(t, h, task).State)
			})
		}
		// The replicas' resumes did not end the pool's drain.
		g, err := h.client.GetPoolHealthWithResponse(h.ctx(t), poolID, nil)
		if err != nil || g.JSON200 == nil || !g.JSON200.Draining || g.JSON200.Ready {
			t.Errorf("health of the drained pool at the end: %v %s, want draining, not ready", err, g.Body)
		}
	}

	// Every task ends once the engine is quick and sound again.
	h.fake.FailNext(-1)
	h.fake.SetGated(false)
	c.mu.Lock()
	tasks := slices.Clone(c.tasks)
	counts := fmt.Sprint(c.counts)
	c.mu.Unlock()
	t.Logf("%d tasks accepted; answers and outcomes: %s", len(tasks), counts)
	ended := map[uuid.UUID]client.TaskState{}
	for _, task := range tasks {
		var st client.TaskState
		eventually(t, "task "+task.req.TaskId.String()+" ends", func() bool {
			st = stateAs(t, h, task)
			return isEnded(st.State)
		})
		c.checkState(t, task.req, st, nil)
		ended[task.req.TaskId] = st
	}

	// Each stream, read whole, agrees with its task's state.
	logs := map[uuid.UUID][]frame{}
	var tokens int32
	tokensOf := map[string]int32{} // by key name
	byState := map[string]int{}
	for _, task := range tasks {
		id, st := task.req.TaskId, ended[task.req.TaskId]
		s := h.openStream(t, id, streamOpts{key: task.key})
		frames := s.rest()
		s.close()
		c.checkStreamed(t, task.req, frames, st)
		logs[id] = frames
		tokens += st.TokensOut
		tokensOf[cfg.keys[task.key]] += st.TokensOut
		outcome := string(st.State)
		if st.Error != nil {
			outcome += " " + string(st.Error.Code)
		}
		byState[outcome]++
	}
	migrations := 0
	for _, st := range ended {
		if st.Migrations != nil {
			migrations += int(*st.Migrations)
		}
	}
	t.Logf("final states: %v; %d tokens; %d migrations", byState, tokens, migrations)
	if h.cfg.replicas == 1 && migrations > 0 {
		t.Errorf("%d migrations with one replica: no task could move", migrations)
	}

	// Nothing is left busy, and the metrics count each task and token once (when the daemon
	// saw them all).
	eventually(t, "the engine idle", func() bool { return h.fake.Active() == 0 })
	var m string
	eventually(t, "no stream open, no slot busy, nothing queued", func() bool {
		m = h.metricsText(t)
		return metricSum(m, "sse_streams_open") == 0 && metricSum(m, "active_leases") == 0 && metricSum(m, "queue_depth") == 0
	})
	c.checkArtifacts(t, h, m)
	if !cfg.restart { // a restarted daemon counts what it saw since; it keeps sessions in memory only
		want := map[string]float64{"tasks_finished_total": float64(len(tasks)), "tokens_out_total": float64(tokens),
			"task_migrations_total": float64(migrations)}
		for name, n := range tokensOf {
			if name != "" {
				want[`tenant_tokens_served_total{key="`+name+`"}`] = float64(n)
			}
		}
		for series, n := range want {
			if got := metricSum(m, series); got != n {
				t.Errorf("%s sums to %v, want %v:\n%s", series, got, n, grepLines(m, strings.SplitN(series, "{", 2)[0]))
			}
		}
		c.checkSessions(t, h, tasks, ended, h.cfg.tokenBudget)
	}

	// A restart on the same state directory shows the same tasks, streams and artifacts.
	h.stop()
	h2 := newHarness(t, opts...)
	c.checkArtifacts(t, h2, h2.metricsText(t))
	for _, task := range tasks {
		id := task.req.TaskId
		before, after := ended[id], stateAs(t, h2, task)
		if !sameEnd(before, after) {
			t.Errorf("task %s after a restart: %s", id, diffStates(before, after))
		}
		s := h2.openStream(t, id, streamOpts{key: task.key})
		frames := s.rest()
		s.close()
		if a, b := rawFrames(logs[id]), rawFrames(frames); a != b {
			t.Errorf("task %s's stream after a restart:%s\nbefore:%s", id, b, a)
		}
	}
}

// operate drains a replica of the pool, with a deadline that may pass while tasks still run
// on it, and resumes it a moment later, over and over until the clients are done (done closed),
// eight times at least: 202 to each drain, 200 to each resume (after a drain of the whole pool
// too, which a replica's resume does not end). It runs on a goroutine of its own, beside the
// clients' tests: it reports with Errorf and stops.
func (c *chaosRun) operate(t *testing.T, rng *rand.Rand, done <-chan struct{}) {
	h := c.daemon()
	for i := 0; ; i++ {
		if i >= 8 {
			select {
			case <-done:
				return
			default:
			}
		}
		replica := fmt.Sprintf("%s/%d", poolID, rng.IntN(h.cfg.replicas))
		d, err := h.client.DrainReplicaWithResponse(h.ctx(t), poolID, replica, nil,
			client.DrainRequest{DeadlineMs: int64(5 + rng.IntN(80))})
		if err != nil || d.StatusCode() != http.StatusAccepted {
			t.Errorf("drain %s: %v %d %s", replica, err, d.StatusCode(), d.Body)
			return
		}
		c.count("replica drained")
		time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
		r, err := h.client.ResumeReplicaWithResponse(h.ctx(t), poolID, replica, nil)
		if err != nil || r.StatusCode() != http.StatusOK {
			t.Errorf("resume %s: %v %d %s", replica, err, r.StatusCode(), r.Body)
			return
		}
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
	}
}

// drainPool drains the whole pool, right after a burst of tasks (so that some are queued), with
// a short deadline: 202, and the pool's health says so. Half the time the engine stalls (stall)
// as the drain begins, so that the deadline ends what is left. The client whose operation
// reaches drainAt (between a fifth and two thirds of the clients' operations) calls it.
func (c *chaosRun) drainPool(t *testing.T, rng *rand.Rand, key string, stall func()) {
	burst := &chaosClient{c: c, t: t, key: key, rng: rng, seen: map[uuid.UUID]client.TaskState{}}
	for range 8 {
		burst.submit(nil)
	}
	h := c.daemon()
	deadline := int64(10 + rng.IntN(150))
	d, err := h.client.DrainPoolWithResponse(h.ctx(t), poolID, nil, client.DrainRequest{DeadlineMs: deadline})
	if err != nil || d.StatusCode() != http.StatusAccepted {
		t.Fatalf("drain %s: %v %d %s", poolID, err, d.StatusCode(), d.Body)
	}
	c.drained.Store(true)
	c.count("pool drained")
	m := h.metricsText(t)
	t.Logf("drained the pool (deadline %d ms) with %v tasks queued and %v running", deadline, metricSum(m, "queue_depth"), metricSum(m, "active_leases"))
	if rng.IntN(2) == 0 {
		stall()
		c.count("engine stalled at the drain")
	}
	g, err := h.client.GetPoolHealthWithResponse(h.ctx(t), poolID, nil)
	if err != nil || g.JSON200 == nil || !g.JSON200.Draining || g.JSON200.Ready {
		t.Errorf("health of the drained pool: %v %s, want draining, not ready", err, g.Body)
	}
}

// stateAs reads a task's state with its owner's key.
func stateAs(t *testing.T, h *harness, task chaosTask) client.TaskState {
	t.Helper()
	r, err := h.as(t, task.key).GetTaskWithResponse(h.ctx(t), task.req.TaskId, nil)
	if err != nil {
		t.Fatalf("getTask: %v", err)
	}
	if r.JSON200 == nil {
		t.Fatalf("getTask %s: %d %s", task.req.TaskId, r.StatusCode(), r.Body)
	}
	return *r.JSON200
}

// checkSessions checks that each session has taken one turn per task admitted in it and,
// with a token budget, has been charged exactly the tokens its tasks produced. A facade
// task's session, its own, went with it.
func (c *chaosRun) checkSessions(t *testing.T, h *harness, tasks []chaosTask, ended map[uuid.UUID]client.TaskState, budget int64) {
	turns, used, owner := map[uuid.UUID]int32{}, map[uuid.UUID]int64{}, map[uuid.UUID]string{}
	facade := map[uuid.UUID]bool{}
	for _, task := range tasks {
		id := task.req.SessionId
		turns[id]++
		used[id] += int64(ended[task.req.TaskId].TokensOut)
		owner[id] = task.key
		facade[id] = task.facade
	}
	for id, n := range turns {
		r, err := h.as(t, owner[id]).GetSessionWithResponse(h.ctx(t), id, nil)
		if err != nil {
			t.Fatalf("getSession: %v", err)
		}
		switch s := r.JSON200; {
		case facade[id]:
			if r.StatusCode() != http.StatusNotFound {
				t.Errorf("session %s of a facade task that ended: %d %s, want 404 (it goes with its task)", id, r.StatusCode(), r.Body)
			}
		case s == nil || s.Turns != n:
			t.Errorf("session %s: %d %s, want %d turns", id, r.StatusCode(), r.Body, n)
		case budget == 0:
		case used[id] > budget:
			t.Errorf("session %s: its tasks produced %d tokens, over its budget of %d", id, used[id], budget)
		case s.TokensBudgetRemaining == nil || *s.TokensBudgetRemaining != budget-used[id]:
			t.Errorf("session %s: %s, want %d tokens of its budget left (%d used)", id, r.Body, budget-used[id], used[id])
		}
	}
}

// chaosTask is an accepted task and the key that owns it.
type chaosTask struct {
	req    client.TaskRequest // a facade task's: its id, max_tokens and session only
	key    string
	facade bool // submitted through the OpenAI facade
}

// chaosClient is one client: its key, its choices, and its last view of each task.
type chaosClient struct {
	c    *chaosRun
	t    *testing.T
	key  string
	rng  *rand.Rand
	seen map[uuid.UUID]client.TaskState
}

// run is one client's run of random operations. On another key's task, every operation is
// answered 404, as for an unknown task.
func (cc *chaosClient) run() {
	sessions := []uuid.UUID{uuid.New(), uuid.New()}
	for range chaosOps {
		if n := cc.c.ops.Add(1); n == cc.c.drainAt.Load() {
			cc.c.drain(cc.t)
		}
		p := cc.rng.IntN(100)
		switch {
		case p < 30:
			cc.submit(sessions)
			continue
		case p < 36:
			cc.facade()
			continue
		case p < 40:
			cc.artifact()
			continue
		}
		task, ok := cc.c.pick(cc.rng, cc.key)
		switch {
		case !ok:
		case task.key != cc.key:
			cc.foreign(task)
		case p < 50:
			cc.cancel(task.req)
		case p < 72:
			cc.stream(task.req)
		case p < 92 || task.facade: // a facade task has no task body to post again
			cc.observe(task.req)
		default:
			cc.repost(task.req)
		}
	}
}

// api is the client of the daemon now, with this client's key.
func (cc *chaosClient) api() (*harness, *client.ClientWithResponses) {
	h := cc.c.daemon()
	return h, h.as(cc.t, cc.key)
}

// observe reads a task's state and checks it against this client's last view.
func (cc *chaosClient) observe(req client.TaskRequest) client.TaskState {
	t := cc.t
	h, api := cc.api()
	r, err := api.GetTaskWithResponse(h.ctx(t), req.TaskId, nil)
	if err != nil {
		t.Fatalf("getTask: %v", err)
	}
	if r.JSON200 == nil {
		t.Fatalf("getTask %s: %d %s", req.TaskId, r.StatusCode(), r.Body)
	}
	st := *r.JSON200
	prev, had := cc.seen[req.TaskId]
	cc.c.checkState(t, req, st, opt(prev, had))
	cc.seen[req.TaskId] = st
	return st
}

// foreign tries another key's task, or its session: neither exists for this key. A delete of
// the session is answered 204, as for an unknown one, and leaves it as it was (checkSessions
// finds every turn in it at the end).
func (cc *chaosClient) foreign(task chaosTask) {
	t, req := cc.t, task.req
	h, api := cc.api()
	ops := 6
	if task.facade { // no task body to post again
		ops = 5
	}
	var code int
	switch cc.rng.IntN(ops) {
	case 3:
		r, err := api.GetSessionWithResponse(h.ctx(t), req.SessionId, nil)
		if err != nil {
			t.Fatalf("getSession: %v", err)
		}
		code = r.StatusCode()
	case 4:
		r, err := api.DeleteSessionWithResponse(h.ctx(t), req.SessionId, nil)
		if err != nil {
			t.Fatalf("deleteSession: %v", err)
		}
		if r.StatusCode() != http.StatusNoContent {
			t.Errorf("another key's session %s deleted: %d %s, want 204", req.SessionId, r.StatusCode(), r.Body)
		}
		cc.c.count("another key's session deleted")
		return
	case 0:
		r, err := api.GetTaskWithResponse(h.ctx(t), req.TaskId, nil)
		if err != nil {
			t.Fatalf("getTask: %v", err)
		}
		code = r.StatusCode()
	case 1:
		r, err := api.CancelTaskWithResponse(h.ctx(t), req.TaskId, nil)
		if err != nil {
			t.Fatalf("cancelTask: %v", err)
		}
		code = r.StatusCode()
	case 2:
		r, err := api.StreamTask(h.ctx(t), req.TaskId, nil)
		if err != nil {
			t.Fatalf("streamTask: %v", err)
		}
		_ = r.Body.Close()
		code = r.StatusCode
	default: // the same body names the owner's session
		r, err := api.CreateTaskWithResponse(h.ctx(t), nil, req)
		if err != nil {
			t.Fatalf("createTask: %v", err)
		}
		code = r.StatusCode()
	}
	if code != http.StatusNotFound {
		t.Errorf("another key's task %s or its session: %d, want 404", req.TaskId, code)
	}
	cc.c.count("another key's task")
}

func (cc *chaosClient) submit(sessions []uuid.UUID) {
	t, rng := cc.t, cc.rng
	h, api := cc.api()
	session := uuid.New()
	if len(sessions) > 0 && rng.IntN(2) == 0 {
		session = sessions[rng.IntN(len(sessions))]
	}
	req := taskReq(session)
	req.Prompt = ptr(chaosPrompt)
	req.MaxTokens = int32(1 + rng.IntN(len(chaosTokens)))
	if rng.IntN(3) == 0 {
		req.Priority = client.Batch
	}
	short := rng.IntN(5) == 0
	if short {
		req.DeadlineMs = int64(5 + rng.IntN(300))
	}
	switch rng.IntN(4) {
	case 0:
		req.OnDisconnect = ptr(client.Cancel)
	case 1:
		req.OnDisconnect = ptr(client.Detach)
	case 2:
		req.OnDisconnect = ptr(client.Grace)
		req.DisconnectGraceMs = ptr(int64(1 + rng.IntN(50)))
	}
	drained := cc.c.drained.Load()
	r, err := api.CreateTaskWithResponse(h.ctx(t), nil, req)
	if err != nil {
		t.Fatalf("createTask: %v", err)
	}
	if drained && (r.JSON503 == nil || r.JSON503.Code != client.POOLUNAVAILABLE) {
		t.Errorf("createTask after the pool's drain: %d %s, want 503 POOL_UNAVAILABLE", r.StatusCode(), r.Body)
	}
	switch code := r.StatusCode(); {
	case code == http.StatusAccepted:
		if r.JSON202 == nil || r.JSON202.TaskId != req.TaskId {
			t.Fatalf("createTask: 202 %s for task %s", r.Body, req.TaskId)
		}
		cc.c.mu.Lock()
		task := chaosTask{req: req, key: cc.key}
		cc.c.tasks = append(cc.c.tasks, task)
		cc.c.tasksOf[cc.key] = append(cc.c.tasksOf[cc.key], task)
		cc.c.mu.Unlock()
		cc.c.count("202")
		cc.observe(req) // admitted: a GET finds it, whatever became of it since
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable ||
		code == http.StatusBadRequest && short:
		e := envelope(t, r.Body)
		if code == http.StatusBadRequest && e.Code != client.DEADLINEUNMET {
			t.Fatalf("createTask: %d %s", code, r.Body)
		}
		cc.c.count(strconv.Itoa(code) + " " + string(e.Code))
	default:
		t.Fatalf("createTask: %d %s", code, r.Body)
	}
}

// facade runs a completion through the OpenAI facade, streamed (read to its end, or left
// part of the way) or not: its text is the engine's, and its task (X-Task-Id) is the key's,
// as one submitted through the task API.
func (cc *chaosClient) facade() {
	t, rng := cc.t, cc.rng
	h := cc.c.daemon()
	maxTokens := 1 + rng.IntN(len(chaosTokens))
	stream := rng.IntN(2) == 0
	body := fmt.Sprintf(`{"model":%q,"prompt":%q,"max_tokens":%d,"stream":%t}`, modelID, chaosPrompt, maxTokens, stream)
	hreq, err := http.NewRequestWithContext(h.ctx(t), http.MethodPost, h.url+"/v1/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hreq.Header = bearer(cc.key)
	drained := cc.c.drained.Load()
	resp, err := h.raw.Do(hreq)
	if err != nil {
		t.Fatalf("completions: %v", err)
	}
	defer resp.Body.Close()
	if drained && (resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(impl.HeaderTaskID) != "") {
		t.Errorf("completion after the pool's drain: %d, task %q, want 503 and no task", resp.StatusCode, resp.Header.Get(impl.HeaderTaskID))
	}
	if resp.Header.Get(impl.HeaderTaskID) == "" { // refused before a task was made
		if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("completions: %d %s", resp.StatusCode, b)
		}
		cc.c.count("facade " + strconv.Itoa(resp.StatusCode))
		return
	}
	id := taskOf(t, resp)
	var text string
	switch {
	case resp.StatusCode != http.StatusOK: // the task failed; the transport checked the error
	case stream && rng.IntN(3) == 0:
		br := bufio.NewReader(resp.Body)
		for range 1 + rng.IntN(4) {
			if _, err := br.ReadString('\n'); err != nil {
				break
			}
		}
		cc.c.count("facade stream left")
	case stream:
		chunks, _ := readChunks(t, resp.Body)
		text = chunkText(chunks)
		cc.c.count("facade stream read")
	default:
		var c chunk
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
			t.Fatalf("completion: %v", err)
		}
		text = chunkText([]chunk{c})
		if c.Usage == nil || text != chaosText(c.Usage.CompletionTokens) {
			t.Errorf("completion of task %s: %q, want the engine's first %v tokens", id, text, c.Usage)
		}
		cc.c.count("facade completion")
	}
	if !strings.HasPrefix(chaosText(len(chaosTokens)), text) {
		t.Errorf("facade completion of task %s: %q is not the engine's text", id, text)
	}
	req := client.TaskRequest{TaskId: id, MaxTokens: int32(maxTokens)}
	req.SessionId = cc.observe(req).SessionId
	task := chaosTask{req: req, key: cc.key, facade: true}
	cc.c.mu.Lock()
	cc.c.tasks = append(cc.c.tasks, task)
	cc.c.tasksOf[cc.key] = append(cc.c.tasksOf[cc.key], task)
	cc.c.mu.Unlock()
}

// chaosArtifacts is how many distinct artifacts the clients store, chaosArtifactsMax how
// many the store holds (artifacts.max_count).
const (
	chaosArtifacts    = 16
	chaosArtifactsMax = 10
)

// artifact stores one of a few artifacts, often one stored before: the same content is
// answered the same id and created_ms, even with the store full; new content is refused
// when it is full (507). What is stored reads back as it was.
func (cc *chaosClient) artifact() {
	t := cc.t
	h, api := cc.api()
	n := cc.rng.IntN(chaosArtifacts)
	cc.c.mu.Lock()
	before, stored := cc.c.artifacts[n]
	cc.c.mu.Unlock()
	content := map[string]any{"chaos": n}
	r, err := api.CreateArtifactWithResponse(h.ctx(t), nil, client.Artifact{Kind: client.Plan, Content: content})
	if err != nil {
		t.Fatalf("createArtifact: %v", err)
	}
	switch {
	case r.JSON201 != nil:
		ref := *r.JSON201
		cc.c.mu.Lock()
		first, had := cc.c.artifacts[n]
		if !had {
			cc.c.artifacts[n] = ref
		}
		cc.c.mu.Unlock()
		if had && (ref.Id != first.Id || ref.CreatedMs != first.CreatedMs) {
			t.Errorf("artifact %d stored again: %s, first %+v", n, r.Body, first)
		}
		g, err := api.GetArtifactWithResponse(h.ctx(t), ref.Id, nil)
		if err != nil {
			t.Fatalf("getArtifact: %v", err)
		}
		if g.JSON200 == nil || g.JSON200.Content["chaos"] != float64(n) || g.JSON200.CreatedMs != ref.CreatedMs {
			t.Errorf("artifact %d (%s) reads back as %d %s", n, ref.Id, g.StatusCode(), g.Body)
		}
		cc.c.count("artifact stored")
	case r.JSON507 != nil && r.JSON507.Code == client.STORAGEFULL:
		if stored {
			t.Errorf("artifact %d, stored before as %s, refused: %s", n, before.Id, r.Body)
		}
		cc.c.count("artifact refused, store full")
	default:
		t.Fatalf("createArtifact: %d %s", r.StatusCode(), r.Body)
	}
}

// checkArtifacts checks that the store holds what was stored, and no more than its limit.
func (c *chaosRun) checkArtifacts(t *testing.T, h *harness, m string) {
	if got, want := metricSum(m, "artifacts_stored"), float64(len(c.artifacts)); got != want || got > chaosArtifactsMax {
		t.Errorf("artifacts_stored %v, want %v (at most %d)", got, want, chaosArtifactsMax)
	}
	for n, ref := range c.artifacts {
		g, err := h.client.GetArtifactWithResponse(h.ctx(t), ref.Id, nil)
		if err != nil {
			t.Fatalf("getArtifact: %v", err)
		}
		if g.JSON200 == nil || g.JSON200.Content["chaos"] != float64(n) || g.JSON200.CreatedMs != ref.CreatedMs {
			t.Errorf("artifact %d (%s) reads back as %d %s", n, ref.Id, g.StatusCode(), g.Body)
		}
	}
}

// repost posts an accepted task again: the same task is answered.
func (cc *chaosClient) repost(req client.TaskRequest) {
	t := cc.t
	h, api := cc.api()
	r, err := api.CreateTaskWithResponse(h.ctx(t), nil, req)
	if err != nil {
		t.Fatalf("createTask: %v", err)
	}
	if r.StatusCode() != http.StatusAccepted || r.JSON202 == nil || r.JSON202.TaskId != req.TaskId {
		t.Errorf("re-post of task %s: %d %s, want 202 for the same task", req.TaskId, r.StatusCode(), r.Body)
	}
	cc.c.count("re-post")
}

// cancel cancels a task: 204, and the task has ended when it comes.
func (cc *chaosClient) cancel(req client.TaskRequest) {
	t := cc.t
	h, api := cc.api()
	r, err := api.CancelTaskWithResponse(h.ctx(t), req.TaskId, nil)
	if err != nil {
		t.Fatalf("cancelTask: %v", err)
	}
	if r.StatusCode() != http.StatusNoContent {
		t.Fatalf("cancelTask: %d %s", r.StatusCode(), r.Body)
	}
	cc.c.count("cancel")
	if st := cc.observe(req); !isEnded(st.State) {
		t.Errorf("task %s is %s after the 204 to its cancel", req.TaskId, st.State)
	}
}

// stream reads a task's stream part of the way or to its end, leaving and resuming with
// Last-Event-ID on the way.
func (cc *chaosClient) stream(req client.TaskRequest) {
	t, rng := cc.t, cc.rng
	h := cc.c.daemon()
	var all []frame
	s := h.openStream(t, req.TaskId, streamOpts{key: cc.key})
	for {
		n := 1 + rng.IntN(12)
		if rng.IntN(3) == 0 {
			n = 1 << 30
		}
		ended := false
		for range n {
			if _, ok := s.next(); !ok {
				ended = true
				break
			}
		}
		all = append(all, s.frames...)
		if last := all[len(all)-1].Event; last == "end" || last == "error" {
			ended = true // nothing follows: a resume after it would find no frame
		}
		if ended {
			cc.c.count("stream read to its end")
			// The stream ended, so the task has: GET says what the last frame said.
			cc.c.checkStreamed(t, req, all, cc.observe(req))
			return
		}
		s.close()
		cc.c.count("stream left")
		if rng.IntN(2) == 0 {
			return
		}
		last := all[len(all)-1].ID
		s = h.openStream(t, req.TaskId, streamOpts{key: cc.key, lastEventID: &last, tokenBase: count(all, "token")})
		cc.c.count("stream resumed")
	}
}

func opt[T any](v T, ok bool) *T {
	if !ok {
		return nil
	}
	return &v
}

func (c *chaosRun) count(what string) {
	c.mu.Lock()
	c.counts[what]++
	c.mu.Unlock()
}

// pick returns one of the tasks of key, the newer ones more often, or now and then another
// key's task.
func (c *chaosRun) pick(rng *rand.Rand, key string) (chaosTask, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tasks := c.tasks
	if rng.IntN(8) != 0 {
		tasks = c.tasksOf[key]
	}
	n := len(tasks)
	if n == 0 {
		return chaosTask{}, false
	}
	if rng.IntN(2) == 0 {
		return tasks[n-1-rng.IntN(min(n, 8))], true
	}
	return tasks[rng.IntN(n)], true
}

func isEnded(s client.TaskStatus) bool {
	return s == client.Succeeded || s == client.Failed || s == client.Canceled
}

func rank(s client.TaskStatus) int {
	switch s {
	case client.Queued:
		return 0
	case client.Running:
		return 1
	}
	return 2
}

// checkState checks one view of a task: its fields agree with its state; it has not gone back
// from prev (the same client's last view, nil when none); once ended, it is what it was the
// first time any client saw it ended.
func (c *chaosRun) checkState(t *testing.T, req client.TaskRequest, st client.TaskState, prev *client.TaskState) {
	t.Helper()
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	switch st.State {
	case client.Queued:
		if st.QueuePosition == nil || st.StartedMs != nil || st.FinishedMs != nil {
			bad("queued: want a queue_position, no started_ms, no finished_ms")
		}
	case client.Running:
		if st.QueuePosition != nil || st.StartedMs == nil || st.FinishedMs != nil {
			bad("running: want started_ms, no queue_position, no finished_ms")
		}
	case client.Succeeded, client.Canceled, client.Failed:
		if st.QueuePosition != nil || st.FinishedMs == nil {
			bad("ended: want finished_ms, no queue_position")
		}
		if (st.State == client.Failed) != (st.Error != nil) {
			bad("an error %v with state %s", st.Error, st.State)
		}
	default:
		bad("unknown state")
	}
	if st.StartedMs != nil && *st.StartedMs < st.CreatedMs || st.FinishedMs != nil && *st.FinishedMs < st.CreatedMs ||
		st.StartedMs != nil && st.FinishedMs != nil && *st.FinishedMs < *st.StartedMs {
		bad("times out of order")
	}
	if st.TokensOut < 0 || st.TokensOut > req.MaxTokens {
		bad("tokens_out %d with max_tokens %d", st.TokensOut, req.MaxTokens)
	}
	if prev != nil && (rank(st.State) < rank(prev.State) || st.TokensOut < prev.TokensOut) {
		bad("went back from %s with %d tokens", prev.State, prev.TokensOut)
	}
	if isEnded(st.State) {
		c.mu.Lock()
		first, had := c.final[st.TaskId]
		if !had {
			c.final[st.TaskId] = st
		}
		c.mu.Unlock()
		if had && !sameEnd(first, st) {
			bad("changed after it ended: %s", diffStates(first, st))
		}
	}
	if len(problems) > 0 {
		t.Errorf("task %s: %s\n  %s", req.TaskId, fmtState(st), strings.Join(problems, "\n  "))
	}
}

// checkStreamed checks a stream read from its start to its end against the task's ended state.
func (c *chaosRun) checkStreamed(t *testing.T, req client.TaskRequest, frames []frame, st client.TaskState) {
	t.Helper()
	n := count(frames, "token")
	if got := text(frames); got != chaosText(n) {
		t.Errorf("task %s streamed %q, want the engine's first %d tokens %q", req.TaskId, got, n, chaosText(n))
	}
	last := final(t, frames)
	var problems []string
	switch {
	case !isEnded(st.State):
		problems = append(problems, "the stream ended before the task")
	case int32(n) != st.TokensOut:
		problems = append(problems, fmt.Sprintf("%d tokens streamed, %d in the state", n, st.TokensOut))
	}
	switch st.State {
	case client.Succeeded, client.Canceled:
		canceled, _ := last.Data["canceled"].(bool)
		if last.Event != "end" || canceled != (st.State == client.Canceled) || last.Data["tokens_out"] != float64(n) {
			problems = append(problems, "the last frame does not say so")
		}
	case client.Failed:
		if last.Event != "error" || st.Error == nil || last.Data["code"] != string(st.Error.Code) {
			problems = append(problems, "the last frame does not say so")
		}
	}
	if len(problems) > 0 {
		t.Errorf("task %s, %s: %s; frames:%s", req.TaskId, fmtState(st), strings.Join(problems, "; "), rawFrames(frames))
	}
}

// sameEnd reports whether two views of an ended task agree on everything that is final.
func sameEnd(a, b client.TaskState) bool {
	code := func(s client.TaskState) string {
		if s.Error == nil {
			return ""
		}
		return string(s.Error.Code)
	}
	eq := func(x, y *int64) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.State == b.State && a.TokensOut == b.TokensOut && code(a) == code(b) &&
		eq(a.FinishedMs, b.FinishedMs) && eq(a.StartedMs, b.StartedMs) && a.CreatedMs == b.CreatedMs
}

func diffStates(a, b client.TaskState) string { return fmtState(a) + " then " + fmtState(b) }

func fmtState(s client.TaskState) string {
	v := func(p *int64) string {
		if p == nil {
			return "-"
		}
		return strconv.FormatInt(*p, 10)
	}
	out := fmt.Sprintf("%s tokens=%d created=%d started=%s finished=%s", s.State, s.TokensOut, s.CreatedMs, v(s.StartedMs), v(s.FinishedMs))
	if s.QueuePosition != nil {
		out += fmt.Sprintf(" position=%d", *s.QueuePosition)
	}
	if s.Error != nil {
		out += " error=" + string(s.Error.Code)
	}
	return out
}

func rawFrames(frames []frame) string {
	var b strings.Builder
	for _, f := range frames {
		fmt.Fprintf(&b, "\n    %d %s %s", f.ID, f.Event, f.Raw)
	}
	return b.String()
}

// metricSum sums the samples of the metric family name in a text exposition.
func metricSum(exposition, name string) float64 {
	var sum float64
	for _, l := range strings.Split(exposition, "\n") {
		rest, ok := strings.CutPrefix(l, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}
