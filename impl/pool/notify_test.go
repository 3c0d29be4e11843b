package pool

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// TestLastChangeToldIsCurrent: the replicas' pollers report their changes concurrently; the
// last view OnChange is told is the pool as it is, so that the queue's slots, set from it,
// are never left at an older total (before, a poller that computed its view first could tell
// it last).
func TestLastChangeToldIsCurrent(t *testing.T) {
	spec := Spec{ID: "x", Engine: "llamacpp", ModelRef: "tiny", ModelID: "tiny", CtxMax: 1024, Slots: 2}
	for i := range 8 {
		spec.Replicas = append(spec.Replicas, ReplicaSpec{ID: fmt.Sprintf("x/%d", i), URL: fmt.Sprintf("http://%d", i)})
	}
	for round := range 30 {
		var mu sync.Mutex
		var last View
		told := 0
		reg, err := New(Options{Pools: []Spec{spec}, HealthInterval: time.Hour,
			NewReplica: func(_ Spec, ep Endpoint) engine.Replica {
				r := &fakeReplica{url: ep.URL}
				r.ready.Store(true)
				return r
			},
			OnChange: func(v View) {
				mu.Lock()
				defer mu.Unlock()
				last = v
				told++
			}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		reg.Start(ctx)
		for {
			if v, _ := reg.Get("x"); v.ReadyReplicas() == 8 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
		reg.Wait() // every poller has told its change
		mu.Lock()
		got, n := last.ReadyReplicas(), told
		mu.Unlock()
		if got != 8 {
			t.Fatalf("round %d: the last of %d views told has %d ready replicas, the pool 8", round, n, got)
		}
	}
}
