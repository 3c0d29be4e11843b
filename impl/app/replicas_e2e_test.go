package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/llamacpp/llamatest"
	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/internal/gguf"
)

// startReplicaDaemon runs the daemon with one pool "default" of three managed llama-server
// replicas (one slot each, -t 1) of the medium test model and waits for all three.
func startReplicaDaemon(t *testing.T) (*daemon, string) {
	t.Helper()
	bin, ok := llamatest.ServerPath()
	if !ok {
		t.Skip("llama-server not found: set ORCHD_LLAMA_SERVER, put it on PATH or run make engine")
	}
	state := t.TempDir()
	model := filepath.Join(state, "models", "med.gguf")
	if err := os.MkdirAll(filepath.Dir(model), 0o700); err != nil {
		t.Fatal(err)
	}
	opts := gguf.DefaultOptions()
	opts.Embd, opts.Layers, opts.FF, opts.Heads = 256, 4, 512, 4
	if err := gguf.WriteFile(model, opts); err != nil {
		t.Fatal(err)
	}
	d := startDaemonYAML(t, fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
llama_server: %s
admission: {capacity: 64, policy: reject}
shutdown_grace: 2s
pools:
  - id: default
    engine: llamacpp
    model_ref: models/med.gguf
    model_id: med               # configured: it survives the reload, so the clients keep addressing it
    ctx_max: 2048
    slots: 1
    replicas:
      - managed: {count: 3, args: ["-t", "1", "-tb", "1"]}
`, state, bin))
	for i := 0; ; i++ {
		r, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
		if err == nil && r.JSON200 != nil && r.JSON200.Replicas != nil && readyReplicas(*r.JSON200.Replicas) == 3 {
			break
		}
		if i > 600 {
			t.Fatalf("three replicas never became ready: %v %s", err, r.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d, state
}

// waitBusy waits until replica id of pool "default" has a busy slot: a task runs on it. A
// fixed sleep instead let tasks of the tiny model (about 40 ms each) all end first on an idle
// machine, and the failover tests then proved nothing.
func waitBusy(t *testing.T, d *daemon, id string) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		r, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
		if err != nil || r.JSON200 == nil || r.JSON200.Replicas == nil {
			continue
		}
		for _, rep := range *r.JSON200.Replicas {
			if rep.Id == id && rep.SlotsBusy > 0 {
				return
			}
		}
	}
	t.Fatalf("no task ran on replica %s within 30 s", id)
}

func readyReplicas(rs []client.ReplicaHealth) int {
	n := 0
	for _, r := range rs {
		if r.State == client.ReplicaHealthStateReady {
			n++
		}
	}
	return n
}

// run submits a task and reads its stream to the end: the text, the end (or error) frame.
func (d *daemon) run(t *testing.T, session uuid.UUID, prompt string, maxTokens int32) (uuid.UUID, string, frame) {
	t.Helper()
	id := uuid.New()
	r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
		TaskId: id, SessionId: session, Workload: client.Completion, ModelRef: "med",
		Engine: client.Llamacpp, Ctx: 2048, Priority: client.Interactive, Prompt: &prompt, MaxTokens: maxTokens,
		DeadlineMs: 120000,
	})
	if err != nil || r.StatusCode() != 202 {
		t.Fatalf("create: %v %d %s", err, r.StatusCode(), r.Body)
	}
	resp, br := d.openStream(t, id)
	defer resp.Body.Close()
	var text strings.Builder
	var last frame
	next := 0
	for {
		f, ok := nextFrame(t, br)
		if !ok {
			break
		}
		last = f
		if f.event == "token" {
			var tok struct {
				T string
				I int
			}
			if err := json.Unmarshal([]byte(f.data), &tok); err != nil {
				t.Fatal(err)
			}
			if tok.I != next {
				t.Errorf("task %s: token index %d, want %d", id, tok.I, next)
			}
			next++
			text.WriteString(tok.T)
		}
	}
	return id, text.String(), last
}

func (d *daemon) placement(t *testing.T, id uuid.UUID) *client.Placement {
	t.Helper()
	r, err := d.c.GetTaskWithResponse(context.Background(), id, nil)
	if err != nil || r.JSON200 == nil {
		t.Fatalf("get task: %v %s", err, r.Body)
	}
	return r.JSON200.Placement
}

// TestReplicasRealEngines: three real llama-server replicas behind one pool. Tasks spread
// evenly under least-loaded placement; a session's second turn lands on its first turn's
// replica and hits the engine's prompt cache; SIGKILL of a replica while tasks stream fails
// none of them, the migrated ones' text is the model's text exactly, and the supervisor
// brings the replica back.
func TestReplicasRealEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("real engines")
	}
	d, state := startReplicaDaemon(t)

	t.Run("60 tasks spread within 40% of even", func(t *testing.T) {
		count := map[string]int{}
		var mu sync.Mutex
		for range 20 { // three at a time: one per replica's slot
			var wg sync.WaitGroup
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id, _, last := d.run(t, uuid.New(), "Once upon a time", 2)
					if last.event != "end" {
						t.Errorf("task ended %s %s", last.event, last.data)
						return
					}
					p := d.placement(t, id)
					if p == nil || len(p.Candidates) != 3 {
						t.Errorf("placement %+v", p)
						return
					}
					mu.Lock()
					count[p.ReplicaId]++
					mu.Unlock()
				}()
			}
			wg.Wait()
		}
		// Each round's three tasks see three idle replicas only when they are placed at once;
		// on a loaded machine one may be placed after another ended, or while it still runs,
		// and the tie among the replicas left rotates with the task's number (25/19/16 seen
		// in a CI rehearsal with other jobs running). Placement that ignored load would put
		// most on one replica.
		for _, id := range []string{"default/0", "default/1", "default/2"} {
			if n := count[id]; n < 12 || n > 28 {
				t.Errorf("replica %s ran %d of 60 tasks, want 12..28: %v", id, n, count)
			}
		}
	})

	t.Run("a session's second turn hits its replica's cache", func(t *testing.T) {
		session := uuid.New()
		prompt := "Once upon a time there was a story about a fox."
		id1, text1, _ := d.run(t, session, prompt, 8)
		id2, _, last := d.run(t, session, prompt+text1+" Then", 4)
		p1, p2 := d.placement(t, id1), d.placement(t, id2)
		if p2.ReplicaId != p1.ReplicaId || p2.Reason != client.Session {
			t.Fatalf("second turn on %s (%s), first on %s", p2.ReplicaId, p2.Reason, p1.ReplicaId)
		}
		var end struct {
			TokensCached int `json:"tokens_cached"`
		}
		_ = json.Unmarshal([]byte(last.data), &end)
		if last.event != "end" || end.TokensCached <= 0 {
			t.Fatalf("second turn's end %s: no prompt cache hit", last.data)
		}
	})

	t.Run("SIGKILL of a replica fails no task", func(t *testing.T) {
		const prompt = "Once upon a time"
		_, want, _ := d.run(t, uuid.New(), prompt, 48) // the model's text (greedy, deterministic)
		pids := launchedPIDs(t, d.logs.String())
		victim := "default/1"
		pid, ok := pids[victim]
		if !ok {
			t.Fatalf("no launch of %s in the log: %v", victim, pids)
		}
		type result struct {
			id   uuid.UUID
			text string
			last frame
		}
		results := make(chan result, 20)
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id, text, last := d.run(t, uuid.New(), prompt, 48)
				results <- result{id, text, last}
			}()
		}
		waitBusy(t, d, victim)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(results)
		migrated := 0
		for r := range results {
			if r.last.event != "end" {
				t.Errorf("task %s ended %s %s", r.id, r.last.event, r.last.data)
				continue
			}
			if r.text != want {
				t.Errorf("task %s text %q, want %q", r.id, r.text, want)
			}
			if strings.Contains(r.last.data, `"migrations":1`) {
				migrated++
			}
		}
		t.Logf("%d of 20 tasks migrated mid-stream", migrated)
		if !strings.Contains(d.logs.String(), "replica failed the task; placing it again") {
			t.Error("no task was running on the killed replica: the test proved nothing")
		}
		// The supervisor relaunches the replica and it serves again.
		for i := 0; ; i++ {
			r, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
			if err == nil && r.JSON200 != nil && r.JSON200.Replicas != nil {
				for _, rh := range *r.JSON200.Replicas {
					if rh.Id == victim && rh.State == client.ReplicaHealthStateReady && rh.Restarts >= 1 {
						return
					}
				}
			}
			if i > 600 {
				t.Fatalf("replica %s not back: %s", victim, r.Body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("reload under a steady load fails no task", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(state, "models", "med.gguf"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, "models", "med2.gguf"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		done, failed := 0, 0
		for range 3 { // a steady load: three clients, one task after another
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, _, last := d.run(t, uuid.New(), "Once upon a time", 16)
					mu.Lock()
					done++
					if last.event != "end" {
						failed++
						t.Errorf("task ended %s %s", last.event, last.data)
					}
					mu.Unlock()
				}
			}()
		}
		rr, err := d.c.ReloadPoolWithResponse(context.Background(), "default", nil, client.ReloadRequest{NewModelRef: "models/med2.gguf"})
		close(stop)
		wg.Wait()
		if err != nil || rr.StatusCode() != 200 {
			t.Fatalf("reload: %v %d %s", err, rr.StatusCode(), rr.Body)
		}
		t.Logf("%d tasks during the reload, %d failed", done, failed)
		r, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
		if err != nil || r.JSON200 == nil || r.JSON200.ModelRef == nil || *r.JSON200.ModelRef != "models/med2.gguf" {
			t.Fatalf("health after reload: %v %s", err, r.Body)
		}
	})
}

// launchedPIDs reads each replica's engine process id from the daemon's log.
func launchedPIDs(t *testing.T, logs string) map[string]int {
	t.Helper()
	out := map[string]int{}
	re := regexp.MustCompile(`engine process launched".*`)
	for _, line := range re.FindAllString(logs, -1) {
		rid := regexp.MustCompile(`replica_id=(\S+)`).FindStringSubmatch(line)
		pid := regexp.MustCompile(`pid=(\d+)`).FindStringSubmatch(line)
		if rid == nil || pid == nil {
			continue
		}
		n, _ := strconv.Atoi(pid[1])
		out[rid[1]] = n
	}
	return out
}

// TestMeasureFailover measures the time from a replica's death (SIGKILL) to the next token of
// the task it was streaming, which continues on another replica (BENCHMARKS.md). It runs only
// with ORCHD_MEASURE_FAILOVER=N (N kills; at most 12, since each supervisor's breaker trips
// after 5 restarts within 5 minutes).
func TestMeasureFailover(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ORCHD_MEASURE_FAILOVER"))
	if n <= 0 {
		t.Skip("set ORCHD_MEASURE_FAILOVER=N to measure N failovers")
	}
	d, _ := startReplicaDaemon(t)
	var gaps []time.Duration
	for i := 0; len(gaps) < n && i < 3*n; i++ {
		id := uuid.New()
		prompt := "Once upon a time"
		r, err := d.c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{
			TaskId: id, SessionId: uuid.New(), Workload: client.Completion, ModelRef: "med",
			Engine: client.Llamacpp, Ctx: 2048, Priority: client.Interactive, Prompt: &prompt, MaxTokens: 400,
			DeadlineMs: 120000,
		})
		if err != nil || r.StatusCode() != 202 {
			// Each supervisor's breaker trips after 5 restarts in 5 minutes.
			t.Logf("stopping after %d kills: %v %s", len(gaps), err, r.Body)
			break
		}
		resp, br := d.openStream(t, id)
		var killed time.Time
		var arrivals []time.Time
		for {
			f, ok := nextFrame(t, br)
			if !ok {
				break
			}
			if f.event != "token" {
				continue
			}
			arrivals = append(arrivals, time.Now())
			if len(arrivals) == 20 && killed.IsZero() {
				p := d.placement(t, id)
				pid := launchedPIDs(t, d.logs.String())[p.ReplicaId]
				killed = time.Now()
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
		}
		resp.Body.Close()
		// The first token the next replica made has the index of the tokens sent before the
		// failure (the daemon logs it); earlier ones may still have been on their way.
		m := regexp.MustCompile(`placing it again" task_id=` + id.String() + `.*tokens_sent=(\d+)`).FindStringSubmatch(d.logs.String())
		if m != nil {
			if sent, _ := strconv.Atoi(m[1]); sent < len(arrivals) && arrivals[sent].After(killed) {
				gaps = append(gaps, arrivals[sent].Sub(killed))
			}
		}
		// Let the supervisor bring the replica back before the next kill.
		for j := 0; j < 600; j++ {
			h, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
			if err == nil && h.JSON200 != nil && h.JSON200.Replicas != nil && readyReplicas(*h.JSON200.Replicas) == 3 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if len(gaps) == 0 {
		t.Fatal("no failover measured")
	}
	slices.Sort(gaps)
	q := func(p float64) time.Duration { return gaps[min(len(gaps)-1, int(p*float64(len(gaps))))] }
	t.Logf("failover: %d kills; death to next token p50 %v, p99 %v, max %v", len(gaps), q(0.50), q(0.99), gaps[len(gaps)-1])
}
