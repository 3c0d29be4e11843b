package sdk_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks, after every test and example, that nothing (streams, daemons, connections)
// leaked a goroutine.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
