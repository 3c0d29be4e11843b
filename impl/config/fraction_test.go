package config

import (
	"strings"
	"testing"
)

// TestFractionalIntegersRefused: an integer key given a fraction is refused naming the field.
// YAML's decoder truncated it (capacity: 1.9 loaded as 1, 0.5 as 0 and then the default).
func TestFractionalIntegersRefused(t *testing.T) {
	for _, tc := range []struct{ yaml, field string }{
		{"admission: {capacity: 1.9}\n", "admission.capacity"},
		{"admission: {capacity: 0.5}\n", "admission.capacity"},
		{"sessions: {max_turns: 2.7}\n", "sessions.max_turns"},
		{"tasks: {max_retained: 10.25}\n", "tasks.max_retained"},
	} {
		c, err := load(t, tc.yaml+minimal, Overrides{})
		if err == nil {
			t.Errorf("%q was accepted (capacity=%d max_turns=%d max_retained=%d); want an error naming %s",
				strings.TrimSpace(tc.yaml), c.Admission.Capacity, c.Sessions.MaxTurns, c.Tasks.MaxRetained, tc.field)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%q: error %q does not name %s", strings.TrimSpace(tc.yaml), err, tc.field)
		}
	}
}
