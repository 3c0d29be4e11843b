package devtest

import (
	"os/exec"
	"strings"
	"testing"
)

// makeIn runs make in the repository root with args and returns its output.
func makeIn(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	cmd := exec.Command("make", append([]string{"-s", "--no-print-directory", "-C", "../.."}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// make help prints values, not the variables' names.
func TestMakeHelpPrintsValues(t *testing.T) {
	out := makeIn(t, "help", "BENCH_OUT=out/bench")
	if strings.Contains(out, "$(") {
		t.Errorf("make help shows an unexpanded variable:\n%s", out)
	}
	if !strings.Contains(out, "writes out/bench/short.{json,md}") {
		t.Errorf("make help does not show BENCH_OUT's value:\n%s", out)
	}
}

// The cgo compiler flags make passes silence go-nvml's deprecation warnings, and keep
// what the environment adds.
func TestMakeQuietsNVMLDeprecationWarnings(t *testing.T) {
	t.Setenv("CGO_CFLAGS", "-O1 -DMINE")
	out := makeIn(t, "--eval", "print-cgo-cflags: ; @echo $$CGO_CFLAGS", "print-cgo-cflags")
	if got := strings.TrimSpace(out); got != "-O1 -DMINE -Wno-deprecated-declarations" {
		t.Errorf("CGO_CFLAGS in make's recipes = %q", got)
	}
}
