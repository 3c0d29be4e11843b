package admission

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestTenantOrdFollowsNames files tenants in orders that exhaust the room between
// neighbours' ords (each new name first, or next to the last one filed) and checks that ord
// order stays name order.
func TestTenantOrdFollowsNames(t *testing.T) {
	for _, c := range []struct {
		name string
		key  func(i int) string
	}{
		{"descending", func(i int) string { return fmt.Sprintf("k%06d", 1000-i) }},
		{"ascending", func(i int) string { return fmt.Sprintf("k%06d", i) }},
		{"squeezed", func(i int) string { // each between "a" and the previous one
			if i == 0 {
				return "b"
			}
			return "a" + strings.Repeat("z", 1000-i)
		}},
		{"random", func(int) string { return fmt.Sprintf("k%x", rand.Uint64()) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var f fairQueue
			for i := range 1000 {
				f.tenant(c.key(i))
				for k := 1; k < len(f.byName); k++ {
					a, b := f.byName[k-1], f.byName[k]
					if a.name >= b.name || a.ord >= b.ord {
						t.Fatalf("after %d tenants: %q (ord %d) before %q (ord %d)", i+1, a.name, a.ord, b.name, b.ord)
					}
				}
			}
		})
	}
}
