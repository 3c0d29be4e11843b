package pool

import (
	"context"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// TestPermanentStartFailureIsNotStarting: a managed replica whose program is missing is given
// up on at once (README: "the pool fails at once and its health says what to set"; the registry
// never retries it). Pool health shows the replica unhealthy (the contract's states: starting,
// ready, draining, unhealthy, stopped), not "starting", which an operator alerting on unhealthy
// replicas, or waiting for "starting" to end, would wait on forever.
func TestPermanentStartFailureIsNotStarting(t *testing.T) {
	reg, err := New(Options{
		Pools:      []Spec{managedSpec},
		NewReplica: func(Spec, Endpoint) engine.Replica { return &fakeReplica{} },
		StartManaged: func(context.Context, Spec, ReplicaSpec, string) (Managed, error) {
			return nil, &StartError{Reason: ReasonProgramNotFound, Message: "llama-server not found", Permanent: true}
		},
		HealthInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg.Start(ctx)
	done := make(chan struct{})
	go func() { reg.Wait(); close(done) }()
	select {
	case <-done: // the start goroutine gave up for good
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("the start was not given up")
	}
	cancel()
	v, _ := reg.Get("m")
	r := v.Replicas[0]
	if r.State != StateUnhealthy {
		t.Errorf("replica %s after a permanent start failure: state %q (last_error %q), want %q", r.ID, r.State, r.LastError, StateUnhealthy)
	}
}
