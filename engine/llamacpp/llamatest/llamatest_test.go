package llamatest

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/orchestratord/orchestratord/internal/gguf"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestServerPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "my-llama")
	notExe := filepath.Join(dir, "not-exe")
	pathDir := filepath.Join(dir, "bin")
	onPath := filepath.Join(pathDir, "llama-server")
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{exe, 0o755}, {notExe, 0o644}, {onPath, 0o755}} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte("#!/bin/sh\n"), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	root, haveRoot := repoRoot()
	if !haveRoot {
		t.Fatal("repoRoot did not find this module's go.mod")
	}
	repoServer := filepath.Join(root, ".tools", "llama", "llama-server")

	tests := []struct {
		name, env, path string
		want            string // "" with ok=false, or "repo" for the repository fallback
	}{
		{name: "env", env: exe, path: pathDir, want: exe},
		{name: "env not executable falls back to PATH", env: notExe, path: pathDir, want: onPath},
		{name: "env missing falls back to PATH", env: filepath.Join(dir, "nope"), path: pathDir, want: onPath},
		{name: "PATH", path: pathDir, want: onPath},
		{name: "repository", path: filepath.Join(dir, "empty"), want: "repo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvServer, tt.env)
			t.Setenv("PATH", tt.path)
			got, ok := ServerPath()
			if tt.want == "repo" {
				if isExecutable(repoServer) != ok || (ok && got != repoServer) {
					t.Errorf("ServerPath() = %q, %v; repository server %q", got, ok, repoServer)
				}
				return
			}
			if !ok || got != tt.want {
				t.Errorf("ServerPath() = %q, %v, want %q", got, ok, tt.want)
			}
		})
	}
}

func TestStartAndStop(t *testing.T) {
	if _, ok := ServerPath(); !ok {
		t.Skip(SkipMessage)
	}
	model := TinyModel(t, gguf.DefaultOptions())
	var base string
	t.Run("running", func(t *testing.T) {
		base = Start(t, model, "-np", "1")
		resp, err := http.Get(base + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("health status %d", resp.StatusCode)
		}
		http.DefaultClient.CloseIdleConnections()
	})
	// The subtest's cleanup has stopped the server.
	if resp, err := http.Get(base + "/health"); err == nil {
		resp.Body.Close()
		t.Errorf("server at %s still answers after cleanup", base)
	}
}
