package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/tenant"
)

func TestInvalidConfigExitsNamingTheField(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte("admission: {capacity: 0, policy: fifo}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"--config", p}, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "admission.policy") {
		t.Fatalf("stderr = %q", stderr.String())
	}
}

func TestNonLoopbackWithoutKeyRefused(t *testing.T) {
	t.Setenv("ORCHD_API_KEYS", "")
	var stderr bytes.Buffer
	if code := run([]string{"--addr", "0.0.0.0:0", "--state-dir", t.TempDir()}, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit code %d, want 2 (%s)", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "not a loopback address") {
		t.Fatalf("stderr = %q", stderr.String())
	}
}

func TestUnknownFlag(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"--bogus"}, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit code %d", code)
	}
}

// exampleEngines names the engine of the examples not named after it.
var exampleEngines = map[string]string{"three-replicas": "llamacpp", "tenants": "llamacpp"}

// TestCheckConfigExamples: every file in examples/ is accepted by --check-config, with a
// one-line summary naming its engine. keys.yaml is the keys file of
// tenants.yaml, not a config: it must parse as a keys file.
func TestCheckConfigExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("examples: %v %v", files, err)
	}
	t.Setenv("ORCHD_API_KEYS", "")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if filepath.Base(f) == "keys.yaml" {
				keys, err := tenant.ParseFile(f)
				if err != nil || len(keys) != 3 {
					t.Fatalf("keys.yaml: %d keys, %v", len(keys), err)
				}
				return
			}
			var stdout, stderr bytes.Buffer
			if code := run([]string{"--check-config", f}, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			engine := strings.TrimSuffix(filepath.Base(f), ".yaml")
			if e, ok := exampleEngines[engine]; ok { // examples named after what they show
				engine = e
			}
			out := stdout.String()
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, ": ok: ") || !strings.Contains(out, "engines "+engine) {
				t.Errorf("summary %q, want one line naming engine %s", out, engine)
			}
		})
	}
}

func TestCheckConfigRejects(t *testing.T) {
	t.Setenv("ORCHD_API_KEYS", "")
	pool := "pools:\n  - {id: p, engine: %s, model_ref: m, ctx_max: 512, slots: 1, workloads: [%s], replicas: [%s]}\n"
	tests := []struct {
		name, doc, want string
	}{
		{"unknown engine", fmt.Sprintf(pool, "exllama", "completion", "{url: 'http://127.0.0.1:1'}"), "pools[0].engine: must be one of the registered engines (llamacpp, vllm, sglang, openai, tgi, triton)"},
		{"workload", fmt.Sprintf(pool, "llamacpp", "chat", "{url: 'http://127.0.0.1:1'}"), "pools[0].workloads[0]"},
		{"url", fmt.Sprintf(pool, "vllm", "chat", "{url: 'ftp://x'}"), "pools[0].replicas[0].url"},
		{"unknown field", "bogus: 1\n" + fmt.Sprintf(pool, "vllm", "chat", "{url: 'http://127.0.0.1:1'}"), "bogus"},
		{"yaml", "pools: [", "config:"},
		{"missing file", "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.yaml")
			if tt.doc != "" {
				if err := os.WriteFile(p, []byte(tt.doc), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var stdout, stderr bytes.Buffer
			if code := run([]string{"--check-config", p}, &stdout, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2 (%s)", code, stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.want) || stdout.Len() != 0 {
				t.Errorf("stderr %q, want it to say %q", stderr.String(), tt.want)
			}
		})
	}
}

// A deprecated key (journal.fsync_interval) still loads: --check-config accepts the file and
// warns on stderr.
func TestCheckConfigWarnsOfDeprecatedKeys(t *testing.T) {
	t.Setenv("ORCHD_API_KEYS", "")
	doc := "journal: {fsync_interval: 2ms}\n" +
		"pools:\n  - {id: p, engine: llamacpp, model_ref: m, ctx_max: 512, slots: 1, workloads: [completion], replicas: [{url: 'http://127.0.0.1:1'}]}\n"
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--check-config", p}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), ": ok: ") || !strings.Contains(stderr.String(), "warning: journal.fsync_interval is deprecated and ignored") {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

// --help and -h print the usage and exit 0; --version prints version, commit and Go version.
func TestHelpAndVersion(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{arg}, &stdout, &stderr); code != 0 {
			t.Errorf("%s: exit %d, want 0", arg, code)
		}
		if !strings.Contains(stdout.String()+stderr.String(), "-check-config") {
			t.Errorf("%s: no usage in %q", arg, stdout.String()+stderr.String())
		}
	}
	var stdout bytes.Buffer
	if code := run([]string{"--version"}, &stdout, io.Discard); code != 0 {
		t.Fatalf("--version: exit %d", code)
	}
	if !regexp.MustCompile(`^orchestratord \S+ \(commit \S+, go1\.\d+\S* \w+/\w+\)\n$`).MatchString(stdout.String()) {
		t.Errorf("--version printed %q", stdout.String())
	}
}

// The daemon takes no positional argument: one is refused (exit 2, named), not ignored with
// every flag after it (`orchestratord my.yaml --addr 0.0.0.0:9000` started the embedded
// default).
func TestStrayArgumentsRefused(t *testing.T) {
	t.Setenv("ORCHD_API_KEYS", "")
	for _, args := range [][]string{
		{"--check-config", "../../examples/llamacpp.yaml", "../../examples/vllm.yaml"},
		{"../../examples/llamacpp.yaml", "--addr", "127.0.0.1:0"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d (stdout %q, stderr %q), want 2", args, code, stdout.String(), stderr.String())
		}
		if !strings.Contains(stderr.String(), "unexpected argument") {
			t.Errorf("%q: stderr %q does not name the argument", args, stderr.String())
		}
	}
}
