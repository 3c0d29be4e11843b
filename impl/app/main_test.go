package app_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/tools/tritontest"
)

// TestMain fails the package when a test leaves a goroutine behind: the daemon's stop must end
// every goroutine it started (servers, runners, pool supervisors, streams). The shared
// tritonserver (TestEndToEndTriton) is stopped first.
func TestMain(m *testing.M) {
	code := tritontest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}
