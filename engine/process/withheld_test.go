package process

import (
	"context"
	"slices"
	"testing"
)

// TestWithheldVariables: the process inherits the daemon's environment but the variables
// Options.Withheld names (the daemon's own secrets), and gets Env besides.
func TestWithheldVariables(t *testing.T) {
	t.Setenv("ORCHD_TEST_WITHHELD", "client-key-0123456789")
	t.Setenv("ORCHD_TEST_KEPT", "kept")
	h := newHarness(t)
	o := h.options("HELPER_ENV=1", "HELPER_EXIT_EARLY=1")
	o.Withheld = []string{"ORCHD_TEST_WITHHELD"}
	s := h.newSupervisor(o)
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded")
	}
	env := h.lines("env")
	for _, want := range []string{"ORCHD_TEST_KEPT=kept", "HELPER_ENV=1"} {
		if !slices.Contains(env, want) {
			t.Errorf("the process's environment lacks %s", want)
		}
	}
	if slices.Contains(env, "ORCHD_TEST_WITHHELD=client-key-0123456789") {
		t.Errorf("the process inherited ORCHD_TEST_WITHHELD")
	}
}
