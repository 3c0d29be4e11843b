// Package cpuclock reads this process's CPU time, which benchmarks report per operation: on a
// shared machine it is disturbed less than wall time by what else runs.
package cpuclock

import (
	"syscall"
	"time"
)

// Process is the user and the system CPU time of this process so far, every thread's.
func Process() (user, sys time.Duration, err error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, err
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), nil
}

// Total is Process's user and system time together; 0 when they cannot be read.
func Total() time.Duration {
	user, sys, err := Process()
	if err != nil {
		return 0
	}
	return user + sys
}
