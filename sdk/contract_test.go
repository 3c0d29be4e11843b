package sdk

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestEventTypesMatchTheContract checks that each event type has exactly the properties of its
// x-sse-events schema in the contract, with `omitempty` on exactly the optional ones.
func TestEventTypesMatchTheContract(t *testing.T) {
	spec, err := openapi3.NewLoader().LoadFromFile("../openapi/orchestratord.yaml")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := spec.Paths.Value("/v1/tasks/{id}/stream").Get.Extensions["x-sse-events"].(map[string]any)
	types := map[string]Event{"started": &Started{}, "token": &Token{}, "metrics": &Metrics{}, "end": &End{}, "error": &ErrorEvent{}}
	if len(raw) != len(types) {
		t.Fatalf("x-sse-events has %d events, the SDK %d", len(raw), len(types))
	}
	for name, v := range raw {
		ref, _ := v.(map[string]any)["$ref"].(string)
		schema := spec.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")]
		ev, ok := types[name]
		if !ok || schema == nil {
			t.Errorf("event %q: no SDK type or schema (%s)", name, ref)
			continue
		}
		if ev.EventName() != name {
			t.Errorf("%T.EventName() = %q, want %q", ev, ev.EventName(), name)
		}
		want := map[string]bool{} // property → optional
		for p := range schema.Value.Properties {
			want[p] = !slices.Contains(schema.Value.Required, p)
		}
		got := map[string]bool{}
		rt := reflect.TypeOf(ev).Elem()
		for i := range rt.NumField() {
			tag := rt.Field(i).Tag.Get("json")
			if tag == "-" {
				continue
			}
			n, opts, _ := strings.Cut(tag, ",")
			got[n] = opts == "omitempty"
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%T fields (name → optional) %v, contract %s %v", ev, got, ref, want)
		}
	}
}
