package task

import (
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/journal"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/task/tasktest"
)

// migratingPools makes startDaemonWith's service run on a pool of two replicas that migrates
// tasks mid-stream: p/0 fails after two tokens, p/1 continues.
func migratingPools(first, second engine.Replica) func(*Options, *journal.Journal) {
	return func(o *Options, _ *journal.Journal) {
		v := pool.View{Spec: pool.Spec{ID: "p", Engine: "llamacpp", ModelRef: "/m/tiny.gguf", ModelID: "tiny", CtxMax: 4096,
			Slots: 1, PriorServiceMs: 100, PriorTokensPerS: 100, Workloads: []string{"completion"}, MigrateOnFailure: true},
			Live: true, Healthy: true}
		for _, id := range []string{"p/0", "p/1"} {
			v.Replicas = append(v.Replicas, pool.ReplicaView{ReplicaSpec: pool.ReplicaSpec{ID: id}, State: pool.StateReady,
				Live: true, Healthy: true, Slots: 1})
		}
		fp := &fakePools{views: []pool.View{v}, reps: map[string]engine.Replica{"p/0": first, "p/1": second},
			busy: map[string]int{"p/1": 1}} // p/0 is the least loaded: the task starts there
		o.Pools = fp
	}
}

// TestMigrationsSurviveRestart: README (Durability): finished tasks within tasks.retention
// stay readable after a restart. A task that migrated once shows migrations 1 and its placement
// on GET, before the restart and after it, as its replayed end frame says "migrations":1. (The
// final journal record carried neither: GET said 0 and had no placement after a restart.)
func TestMigrationsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	clock := tasktest.NewClock(time.Unix(1_700_000_000, 0))
	first := &replicaScript{tokens: []string{" The", " quick", " brown"}, failAfter: 2, err: resetErr()}
	second := &replicaScript{tokens: []string{" brown", " fox"}, failAfter: -1}
	d := startDaemonWith(t, dir, clock, migratingPools(first, second))
	s := spec(admission.Interactive)
	s.Prompt, s.MaxTokens = "Once:", 4
	if _, err := d.svc.Submit(d.ctx, s); err != nil {
		t.Fatal(err)
	}
	evs := parse(t, d.log(t, s.ID, 0))
	end := evs[len(evs)-1]
	if end.Event != "end" || !strings.Contains(end.Data, `"migrations":1`) {
		t.Fatalf("precondition: the task did not migrate: %s %s", ids(evs), end.Data)
	}
	before, err := d.svc.Get(d.ctx, s.ID)
	if err != nil || before.Migrations != 1 || before.Placement == nil {
		t.Fatalf("precondition: before the restart GET shows %+v %v", before, err)
	}
	d.stop()

	d = startDaemonWith(t, dir, clock, migratingPools(first, second))
	evs = parse(t, d.log(t, s.ID, 0))
	end = evs[len(evs)-1]
	after, err := d.svc.Get(d.ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Migrations != before.Migrations {
		t.Errorf("after a restart GET /v1/tasks/{id} shows migrations %d, but its replayed end frame says %s (before the restart: %d)",
			after.Migrations, end.Data, before.Migrations)
	}
	if after.Placement == nil {
		t.Errorf("after a restart GET /v1/tasks/{id} has no placement; before it named replica %s", before.Placement.ReplicaID)
	}
}
