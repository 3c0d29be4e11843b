package pool

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// TestReloadSwitchedReplicaTakesNoTaskOfTheOldModel: while a reload of a pool whose
// model_id follows model_ref (not configured) switches its replicas one by one, a replica
// already on the new model must take no task: the pool still serves the old model_id, and a
// task that asked for it must never get the new model's text (README: such a task "never runs
// on the new model").
func TestReloadSwitchedReplicaTakesNoTaskOfTheOldModel(t *testing.T) {
	for _, tc := range []struct {
		name      string
		derived   bool
		wantReady int // replicas that take tasks while m/1 is being replaced
	}{
		{"derived model_id changes", true, 1},
		{"configured model_id stays", false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := Spec{ID: "m", Engine: "llamacpp", ModelRef: "models/a.gguf", ModelID: "a", ModelIDDerived: tc.derived,
				CtxMax: 1024, Slots: 1, Replicas: []ReplicaSpec{{ID: "m/0", Managed: true}, {ID: "m/1", Managed: true}}}
			reached, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			reg, err := New(Options{Pools: []Spec{spec}, HealthInterval: time.Hour, ReloadGrace: time.Millisecond,
				NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
					r := &fakeReplica{url: ep.URL}
					r.ready.Store(true)
					return r
				},
				StartManaged: func(ctx context.Context, _ Spec, rep ReplicaSpec, ref string) (Managed, error) {
					if ref == "models/b.gguf" && rep.ID == "m/1" {
						once.Do(func() { close(reached) })
						select {
						case <-release:
						case <-ctx.Done():
							return nil, ctx.Err()
						}
					}
					return &fakeManaged{url: "http://managed/" + ref + "@" + rep.ID}, nil
				}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			reg.Start(ctx)
			t.Cleanup(func() { cancel(); reg.Wait(); _ = reg.Stop(context.Background()) })
			for v, _ := reg.Get("m"); v.ReadyReplicas() != 2; v, _ = reg.Get("m") {
				time.Sleep(time.Millisecond)
			}
			done := make(chan error, 1)
			go func() { _, err := reg.Reload(context.Background(), "m", "models/b.gguf"); done <- err }()
			<-reached
			v, _ := reg.Get("m")
			if v.Replicas[0].ModelRef != "models/b.gguf" || v.ModelID != "a" {
				t.Fatalf("setup: pool %s, m/0 on %s", v.ModelID, v.Replicas[0].ModelRef)
			}
			got := v.ReadyReplicas()
			_, rel, aerr := reg.Acquire("m", "m/0")
			if aerr == nil {
				rel()
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got != tc.wantReady {
				t.Errorf("mid-reload, pool on model %s: %d replicas take tasks, want %d (m/0 already runs models/b.gguf)", v.ModelID, got, tc.wantReady)
			}
			if tc.derived && aerr == nil {
				t.Errorf("mid-reload, Acquire of m/0 (on model b) for the pool's model a succeeded")
			}
			want := "a"
			if tc.derived {
				want = "b"
			}
			if v, _ := reg.Get("m"); v.ModelID != want || v.ModelRef != "models/b.gguf" || v.ReadyReplicas() != 2 {
				t.Errorf("after the reload: model %s, %d ready", v.ModelID, v.ReadyReplicas())
			}
		})
	}
}
