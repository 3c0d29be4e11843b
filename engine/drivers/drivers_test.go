package drivers

import (
	"slices"
	"testing"

	"github.com/orchestratord/orchestratord/gen/api"
)

func TestRegistryValid(t *testing.T) {
	if err := Err(); err != nil || len(Registry().Names()) == 0 {
		t.Fatalf("registry: %v, %v", Registry().Names(), err)
	}
}

// TestRegistryMatchesContract: every registered engine and every workload a driver declares is
// a value of the contract's Engine and Workload enums.
func TestRegistryMatchesContract(t *testing.T) {
	spec, err := api.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	enum := func(name string) []string {
		var out []string
		for _, v := range spec.Components.Schemas[name].Value.Enum {
			out = append(out, v.(string))
		}
		return out
	}
	engines, workloads := enum("Engine"), enum("Workload")
	if len(Registry().Names()) == 0 {
		t.Fatal("no drivers")
	}
	for _, d := range Registry().All() {
		if !slices.Contains(engines, d.Name) {
			t.Errorf("engine %q is not in the contract's Engine enum %v", d.Name, engines)
		}
		for _, w := range d.Workloads {
			if !slices.Contains(workloads, w) {
				t.Errorf("engine %s: workload %q is not in the contract's Workload enum %v", d.Name, w, workloads)
			}
		}
	}
}
