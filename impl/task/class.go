package task

import "github.com/orchestratord/orchestratord/engine"

// Class is the kind of a task's failure or refusal, in domain terms. The task package never
// spells API error codes: impl/errors.go names every class in its one table, and the Service
// learns those names through Options.Code (for error frames, logs and metric labels).
type Class uint8

// Failure classes.
const (
	ClassInternal        Class = iota // an unexpected fault
	ClassInvalid                      // the task cannot be served as asked (context too large, session past its limits, engine refused the request)
	ClassPoolUnavailable              // no pool can take the task now, or its pool or the daemon went away
	ClassQueueFull                    // refused: the queue is full under the reject policy
	ClassEvicted                      // refused or evicted because the queue is full under the drop-lru policy
	ClassDeadline                     // the task's deadline passed
	ClassWorkerReset                  // the engine dropped the request mid-stream
	ClassDecodeTimeout                // the engine produced no token within its idle timeout
	ClassOverload                     // the engine said it is busy; retry later (its replica is healthy)
	numClasses
)

// Classes returns every failure class, for tables that must cover them all.
func Classes() []Class {
	cs := make([]Class, 0, numClasses)
	for c := range numClasses {
		cs = append(cs, c)
	}
	return cs
}

// String is the class's domain name (not an API code).
func (c Class) String() string {
	switch c {
	case ClassInvalid:
		return "invalid"
	case ClassPoolUnavailable:
		return "pool_unavailable"
	case ClassQueueFull:
		return "queue_full"
	case ClassEvicted:
		return "evicted"
	case ClassDeadline:
		return "deadline"
	case ClassWorkerReset:
		return "worker_reset"
	case ClassDecodeTimeout:
		return "decode_timeout"
	case ClassOverload:
		return "overload"
	default:
		return "internal"
	}
}

// ClassOfKind classifies an engine failure. Replica faults other than the engine being
// unreachable or timing out (a 5xx answer, a broken protocol) are worker resets: the request
// died in the engine and may be retried elsewhere.
func ClassOfKind(k engine.Kind) Class {
	switch k {
	case engine.KindPoolUnavailable:
		return ClassPoolUnavailable
	case engine.KindWorkerReset, engine.KindEngineFailure, engine.KindProtocol:
		return ClassWorkerReset
	case engine.KindDecodeTimeout:
		return ClassDecodeTimeout
	case engine.KindInvalidRequest:
		return ClassInvalid
	case engine.KindOverload:
		return ClassOverload
	default:
		return ClassInternal
	}
}
