package pool

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// A managed replica whose start fails for a reason only the configuration can fix (a missing
// program) is not retried: the pool stays down with the message, and its start goroutine ends
// without ctx ending. Other start failures are retried.
func TestPermanentStartFailureIsNotRetried(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantCalls int32 // at least
		retried   bool
	}{
		{"permanent", &StartError{Reason: ReasonProgramNotFound, Message: "llama-server not found: set ORCHD_LLAMA_SERVER", Permanent: true}, 1, false},
		{"transient", errors.New("exited"), 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			changes := make(chan View, 16)
			reg, err := New(Options{
				Pools:      []Spec{managedSpec},
				NewReplica: func(Spec, Endpoint) engine.Replica { return &fakeReplica{} },
				StartManaged: func(context.Context, Spec, ReplicaSpec, string) (Managed, error) {
					calls.Add(1)
					return nil, tt.err
				},
				HealthInterval: time.Hour,
				OnChange:       func(v View) { changes <- v },
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			reg.Start(ctx)
			done := make(chan struct{})
			go func() { reg.Wait(); close(done) }()
			if tt.retried {
				for calls.Load() < tt.wantCalls { // the first retry comes after 1 s
					time.Sleep(10 * time.Millisecond)
				}
				cancel()
				<-done
				return
			}
			select {
			case <-done: // the start goroutine gave up by itself
			case <-time.After(30 * time.Second): // only a hang guard: a retry waits 1 s, then 2 s, ...
				t.Fatal("the pool keeps retrying a permanent failure")
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("StartManaged called %d times, want 1", n)
			}
			v := <-changes
			if v.LastError != "llama-server not found: set ORCHD_LLAMA_SERVER" || v.Ready() {
				t.Errorf("view: last_error %q ready %v", v.LastError, v.Ready())
			}
		})
	}
}
