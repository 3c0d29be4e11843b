package app_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: the daemon's stop must end
// every goroutine it started (servers, runners, pool supervisors, streams).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
