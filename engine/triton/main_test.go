package triton

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/tools/tritontest"
)

// TestMain stops the shared tritonserver after the tests, then checks for leaked goroutines.
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
