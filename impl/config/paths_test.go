package config

import (
	"reflect"
	"regexp"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/orchestratord/orchestratord/impl/internal/yamldoc"
)

// goTypeName matches what yaml.v3's own messages say ("!!str `many` into int", "in type
// config.Admission"): a config error names YAML paths, never Go types.
var goTypeName = regexp.MustCompile(`into |in type |config\.[A-Z]|time\.Duration|unmarshal errors`)

func TestParseErrorsNameTheYAMLPath(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"duration", "stream: {heartbeat: 10 minutes}\n", `config: stream.heartbeat: invalid duration "10 minutes"`},
		{"unknown key", "admission:\n  max_queue: 3\n", "config: admission.max_queue: unknown field"},
		{"unknown top-level key", "bogus: 1\n", "config: bogus: unknown field"},
		{"integer", "admission: {capacity: many}\n", `config: admission.capacity: want an integer, got "many"`},
		{"in a list", "pools:\n  - id: a\n    slots: x\n", `config: pools[0].slots: want an integer, got "x"`},
		{"unknown key in a list", "pools:\n  - id: a\n  - id: b\n    bogus: 1\n", "config: pools[1].bogus: unknown field"},
		{"nested list", "pools:\n  - replicas:\n      - managed: {devices: [0, gpu1]}\n", `config: pools[0].replicas[0].managed.devices[1]: want an integer, got "gpu1"`},
		{"devices per replica", "pools:\n  - replicas:\n      - managed: {devices: [[0], [1, gpu2]]}\n", `config: pools[0].replicas[0].managed.devices[1][1]: want an integer, got "gpu2"`},
		{"mapping expected", "server: 3\n", `config: server: want a mapping of keys to values, got "3"`},
		{"list expected", "pools: {id: a}\n", "config: pools: want a list, got a mapping"},
		{"bool", "journal: {enabled: maybe}\n", `config: journal.enabled: want true or false, got "maybe"`},
		{"duration in a list", "pools:\n  - replicas:\n      - managed: {start_timeout: 1 hour}\n", `config: pools[0].replicas[0].managed.start_timeout: invalid duration "1 hour"`},
		{"string map value", "programs: {llama: [a]}\n", `config: programs.llama: want a string, got a list`},
		{"api keys come from elsewhere", "api_keys: [k]\n", "config: api_keys: unknown field"},
		{"key set twice", "admission:\n  capacity: 1\n  capacity: 2\n", "config: admission.capacity: set twice (lines 2 and 3)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Parse: %v\nwant      %s", err, tt.want)
			}
			if goTypeName.MatchString(err.Error()) {
				t.Errorf("names a Go type: %v", err)
			}
		})
	}
	for _, ok := range []string{"", "# nothing\n", "stream: {heartbeat: 10s}\nadmission: ~\n", string(DefaultYAML())} {
		if _, err := Parse([]byte(ok)); err != nil {
			t.Errorf("Parse(%q): %v", ok, err)
		}
	}
}

// FuzzParseErrorPaths: the walk and the strict decoder agree. A document the walk accepts
// decodes (so the decoder's messages, which name Go types, never reach a user), and Parse
// never panics. The walk reads the first document; a file whose later part is refused (a YAML
// error there, or a second document: yamldoc.Check) is Parse's to refuse as well.
func FuzzParseErrorPaths(f *testing.F) {
	f.Add(string(DefaultYAML()))
	f.Add("stream: {heartbeat: 10 minutes}\n")
	f.Add("pools:\n  - id: a\n    slots: x\n")
	f.Add("a: &x {b: 1}\nadmission: *x\n")
	f.Add("admission: {capacity: 1.5}\n")
	f.Fuzz(func(t *testing.T, doc string) {
		_, perr := Parse([]byte(doc))
		var n yaml.Node
		if yaml.Unmarshal([]byte(doc), &n) != nil || checkNode(&n, reflect.TypeFor[Config](), "") != nil || yamldoc.Check([]byte(doc)) != nil {
			return
		}
		if perr != nil {
			t.Fatalf("the walk accepts %q, the decoder says %v", doc, perr)
		}
	})
}
