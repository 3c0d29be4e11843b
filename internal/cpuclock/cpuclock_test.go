package cpuclock

import (
	"testing"
	"time"
)

// The clock moves with work done on the CPU and never back.
func TestTotalCountsWork(t *testing.T) {
	before := Total()
	if before <= 0 {
		t.Fatalf("CPU time so far %v", before)
	}
	x := 0
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
		x++
	}
	if after := Total(); after <= before {
		t.Fatalf("CPU time %v after 50 ms of work, %v before (%d spins)", after, before, x)
	}
	user, sys, err := Process()
	if err != nil || user <= 0 || sys < 0 {
		t.Fatalf("Process = %v, %v, %v", user, sys, err)
	}
}
