package contracts

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the suite under goleak, and after a full run requires that every operation of
// the contract was exercised. No goroutine is ignored by goleak: every harness stops its daemon
// (app.Serve returns only after its loops ended) and closes its idle client connections.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(coverageM{m})
}

// coverageM adds the operation coverage check to m.Run.
type coverageM struct{ m *testing.M }

func (c coverageM) Run() int {
	code := c.m.Run()
	if code != 0 || flag.Lookup("test.run").Value.String() != "" || flag.Lookup("test.skip").Value.String() != "" {
		return code
	}
	if missing := uncoveredOperations(); len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "contracts: operations never exercised: %s\n", strings.Join(missing, ", "))
		code = 1
	}
	if testing.Verbose() {
		var seen []string
		coverage.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
		slices.Sort(seen)
		fmt.Fprintf(os.Stderr, "contracts: (operation status) pairs seen:\n  %s\n", strings.Join(seen, "\n  "))
	}
	return code
}

// uncoveredOperations lists the contract's operations for which no response was seen.
func uncoveredOperations() []string {
	c, err := loadContract()
	if err != nil {
		return []string{err.Error()}
	}
	var missing []string
	for _, item := range c.spec.Paths.Map() {
		for _, op := range item.Operations() {
			found := false
			coverage.Range(func(k, _ any) bool {
				found = strings.HasPrefix(k.(string), op.OperationID+" ")
				return !found
			})
			if !found {
				missing = append(missing, op.OperationID)
			}
		}
	}
	slices.Sort(missing)
	return missing
}
