package config

import (
	"strings"
	"testing"
)

// TestUnknownProgramsEngineRefused: a programs entry for an engine that does not exist (a
// typo such as vlm for vllm) is refused naming programs.<key>, not silently ignored while the
// managed pool runs whatever is on PATH.
func TestUnknownProgramsEngineRefused(t *testing.T) {
	_, err := load(t, "programs: {vlm: /opt/vllm/bin/vllm}\n"+minimal, Overrides{})
	if err == nil {
		t.Fatal("programs.vlm (no such engine) was accepted; want an error naming programs.vlm")
	}
	if !strings.Contains(err.Error(), "programs.vlm") {
		t.Fatalf("error %q does not name programs.vlm", err)
	}
}
