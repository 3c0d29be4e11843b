package task

import (
	"context"
	"errors"
	"fmt"
)

// causeReplicaDrain cancels the tasks still running on a drained replica at its deadline. It
// is a drain (errors.Is causeDrain): the task fails as POOL_UNAVAILABLE, retriable.
var causeReplicaDrain = fmt.Errorf("replica %w", causeDrain)

// ReplicaDrained cancels what still runs on a replica whose drain deadline passed. Queued tasks
// belong to the pool, not to a replica, and stay queued for the pool's other replicas.
func (s *Service) ReplicaDrained(ctx context.Context, poolID, replicaID string) {
	s.mu.Lock()
	var running []*Task
	for _, t := range s.tasks {
		if t.poolID == poolID {
			running = append(running, t)
		}
	}
	s.mu.Unlock()
	// The tasks to end are those on the replica when the deadline passed (acquiring it or
	// running there, not one that left it to be placed again), all chosen before
	// any is canceled: a cancel frees a slot, and the queued task dispatched into it may land
	// on this replica and be seen running there by a later turn of the loop.
	var ends []context.CancelCauseFunc
	for _, t := range running {
		t.mu.Lock()
		c := t.cancel
		on := t.onReplica == replicaID
		final := t.status.Final()
		t.mu.Unlock()
		if c != nil && on && !final {
			ends = append(ends, c)
		}
	}
	for _, c := range ends {
		c(causeReplicaDrain)
	}
	s.log.InfoContext(ctx, "replica drain deadline passed", "pool_id", poolID, "replica_id", replicaID, "canceled", len(ends))
}

// drainMessage is the error message of a task canceled by a drain's deadline.
func drainMessage(cause error) string {
	if errors.Is(cause, causeReplicaDrain) {
		return "the replica's drain deadline passed"
	}
	return "the pool's drain deadline passed"
}
