package impl_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/gen/api"
)

// TestReloadReasonsAreInTheContract: reloadPool's 409 carries a pool.ReloadError's reason as
// ReloadResponse.reason, a closed enum clients match on. Every Reason constant of impl/pool
// (read from its source, so that a new one is checked as soon as it is written) must be one
// of the contract's values: program_not_found was not.
func TestReloadReasonsAreInTheContract(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "pool/pool.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(f, func(node ast.Node) bool {
		vs, ok := node.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if !strings.HasPrefix(name.Name, "Reason") || i >= len(vs.Values) {
				continue
			}
			lit, ok := vs.Values[i].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				continue
			}
			v, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			n++
			if !api.ReloadResponseReason(v).Valid() {
				t.Errorf("pool.%s = %q is not a ReloadResponse.reason of the contract", name.Name, v)
			}
		}
		return true
	})
	if n < 8 {
		t.Fatalf("found %d Reason constants in pool/pool.go, want them all (at least 8)", n)
	}
}
