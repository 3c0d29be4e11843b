package admission

import (
	"math"
	"time"
)

// PredictStartMs is the contract's prediction for an item at 0-based position in its pool's
// dispatch order, with slots total and free free slots:
//
//	0 if position < free, else ceil((position + 1 - free) / slots) * meanServiceMs
//
// converted to int64, saturated at its largest value (a prior service time of 1e300 ms is
// positive and finite: converted as is it would come out negative). slots below 1 count as 1
// and negative free as 0.
func PredictStartMs(position, slots, free int, meanServiceMs float64) int64 {
	free = max(free, 0)
	if position < free {
		return 0
	}
	slots = max(slots, 1)
	ahead := position + 1 - free
	waves := (ahead + slots - 1) / slots
	ms := float64(waves) * meanServiceMs
	if ms >= math.MaxInt64 { // float64(MaxInt64) is 2^63, itself out of range
		return math.MaxInt64
	}
	return int64(ms)
}

// RetryAfter is the back-off for a refused admission: meanServiceMs / slots, the expected time
// until one queued item of the pool leaves the queue, at least 1 ms. slots below 1 count as 1.
// The HTTP layer renders it as Retry-After (whole seconds, rounded up, at least 1) and
// X-Backoff-Ms.
func RetryAfter(meanServiceMs float64, slots int) time.Duration {
	ms := meanServiceMs / float64(max(slots, 1))
	if math.IsNaN(ms) || ms < 1 {
		return time.Millisecond
	}
	if ms > float64(math.MaxInt64/int64(time.Millisecond)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ms * float64(time.Millisecond))
}
