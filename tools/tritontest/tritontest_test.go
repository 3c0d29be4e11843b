package tritontest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestElideUsage(t *testing.T) {
	usage := "Usage: tritonserver [options]\n  --help\n\tPrint usage\n\nServer:\n  --id <string>\n\tIdentifier for this server.\n        \n"
	for _, tc := range []struct{ name, in, want string }{
		{"no usage", "E1203 failed to bind\n", "E1203 failed to bind\n"},
		{"bad option", usage + "Bad option: \"--allow-gpu-metrics\".\ninvalid value for bool option: Flase\nTraceback (most recent call last):\n  File \"serve.py\"\n",
			"[tritonserver's usage text elided]\nBad option: \"--allow-gpu-metrics\".\ninvalid value for bool option: Flase\nTraceback (most recent call last):\n  File \"serve.py\"\n"},
		{"text before", "I1203 starting\n" + usage + "reason\n", "I1203 starting\n[tritonserver's usage text elided]\nreason\n"},
		{"usage last", "x\n" + usage, "x\n[tritonserver's usage text elided]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := elideUsage(tc.in); got != tc.want {
				t.Errorf("elideUsage:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestElideUsageOfTritonserver checks the elision against the real usage text, when the
// virtualenv holds tritonserver: nothing of it is left but the reason.
func TestElideUsageOfTritonserver(t *testing.T) {
	py, ok := Python()
	if !ok {
		t.Skip(SkipMessage)
	}
	out, err := exec.Command(py, "-c", "import pytriton, os; print(os.path.dirname(pytriton.__file__))").Output()
	if err != nil {
		t.Fatalf("locating pytriton: %v", err)
	}
	dir := strings.TrimSpace(string(out)) + "/tritonserver"
	cmd := exec.Command(dir+"/bin/tritonserver", "--allow-gpu-metrics", "maybe")
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+dir+"/lib")
	b, _ := cmd.CombinedOutput()
	got := elideUsage(string(b))
	if !strings.Contains(string(b), "--model-repository") || strings.Contains(got, "--model-repository") {
		t.Fatalf("usage text not elided:\n%s", got)
	}
	if !strings.Contains(got, "invalid value for bool option: maybe") {
		t.Errorf("the reason is gone:\n%s", got)
	}
}

// TestStartTriesOnceMore: serve.py exiting at start is tried once more, and the error gives both
// outputs with the usage text elided.
func TestStartTriesOnceMore(t *testing.T) {
	dir := t.TempDir()
	fake := dir + "/python"
	script := "#!/bin/sh\necho start >> " + dir + "/starts\nprintf 'Usage: tritonserver [options]\\n  --help\\n\\tPrint usage\\nBad option: \"--http-port\".\\n'\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Start(fake)
	if err == nil {
		_ = s.Stop()
		t.Fatal("Start succeeded with a python that exits")
	}
	b, _ := os.ReadFile(dir + "/starts")
	if n := strings.Count(string(b), "start"); n != 2 {
		t.Errorf("serve.py started %d times, want 2", n)
	}
	msg := err.Error()
	if strings.Count(msg, errExited.Error()) != 2 || strings.Count(msg, `Bad option: "--http-port".`) != 2 || strings.Contains(msg, "--help") {
		t.Errorf("error does not give both reasons with the usage elided:\n%s", msg)
	}
}
