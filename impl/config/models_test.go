package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const managedPool = `
state_dir: %STATE%
%EXTRA%
pools:
  - id: p1
    engine: llamacpp
    model_ref: %REF%
    ctx_max: 2048
    slots: 1
    replicas: [{managed: {}}]
`

func managedConfig(t *testing.T, state, extra, ref string) (*Config, error) {
	t.Helper()
	y := strings.NewReplacer("%STATE%", state, "%EXTRA%", extra, "%REF%", ref).Replace(managedPool)
	return load(t, y, Overrides{})
}

func writeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("symlinks unavailable: %v", err)
	}
}

func TestModelsDirsDefault(t *testing.T) {
	state := t.TempDir()
	c, err := managedConfig(t, state, "", "models/m.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(state, "models")}; len(c.ModelsDirs) != 1 || c.ModelsDirs[0] != want[0] {
		t.Fatalf("models_dirs = %q, want %q", c.ModelsDirs, want)
	}
	d, err := Load(Overrides{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	if d.ModelsDirs[0] != filepath.Join(state, "models") {
		t.Fatalf("embedded default models_dirs = %q", d.ModelsDirs)
	}
}

func TestResolveModel(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "state")
	models := filepath.Join(state, "models")
	extra := filepath.Join(root, "extra")
	outside := filepath.Join(root, "outside")
	writeFile(t, filepath.Join(models, "m.gguf"))
	writeFile(t, filepath.Join(models, "sub", "n.gguf"))
	writeFile(t, filepath.Join(extra, "e.gguf"))
	writeFile(t, filepath.Join(outside, "secret"))
	writeFile(t, filepath.Join(state, "api-key"))
	symlink(t, filepath.Join(outside, "secret"), filepath.Join(models, "escape.gguf"))
	symlink(t, filepath.Join(models, "m.gguf"), filepath.Join(models, "alias.gguf"))
	symlink(t, outside, filepath.Join(models, "outdir"))
	symlink(t, filepath.Join(state, "api-key"), filepath.Join(models, "key.gguf"))
	if err := os.Mkdir(filepath.Join(models, "dir.gguf"), 0o700); err != nil {
		t.Fatal(err)
	}
	c, err := managedConfig(t, state, "models_dirs: [models, "+extra+"]", "models/m.gguf")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ref  string
		want string // resolved path; "" means refused
	}{
		{"models/m.gguf", filepath.Join(models, "m.gguf")},
		{"file:models/m.gguf", filepath.Join(models, "m.gguf")},
		{filepath.Join(models, "m.gguf"), filepath.Join(models, "m.gguf")},
		{"models/sub/n.gguf", filepath.Join(models, "sub", "n.gguf")},
		{"models/sub/../m.gguf", filepath.Join(models, "m.gguf")},
		{filepath.Join(extra, "e.gguf"), filepath.Join(extra, "e.gguf")},
		{"models/alias.gguf", filepath.Join(models, "m.gguf")}, // a link that stays inside
		{"/etc/passwd", ""},
		{"file:/etc/passwd", ""},
		{"api-key", ""},                     // in the state directory, not a models directory
		{"models/../api-key", ""},           // ".." escape
		{"models/../../outside/secret", ""}, // ".." escape
		{filepath.Join(outside, "secret"), ""},
		{"models/escape.gguf", ""},   // a link inside pointing outside
		{"models/key.gguf", ""},      // a link to the API key
		{"models/outdir/secret", ""}, // through a linked directory
		{"models/missing.gguf", ""},
		{"models/dir.gguf", ""}, // not a regular file
		{"models", ""},          // the directory itself
		{"models/", ""},
		{"", ""},
		{"file:", ""},
		{"models/m.gguf\x00x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, err := c.ResolveModel(tt.ref)
			if tt.want == "" {
				if err == nil || !errors.Is(err, ErrModelRef) {
					t.Fatalf("ResolveModel(%q) = %q, %v; want ErrModelRef", tt.ref, got, err)
				}
				if !strings.Contains(err.Error(), models) {
					t.Errorf("error %q does not name the allowed roots", err)
				}
				if strings.Contains(err.Error(), "GGUF") {
					t.Errorf("error %q shows file content", err)
				}
				return
			}
			want, _ := filepath.EvalSymlinks(tt.want)
			if err != nil || got != want {
				t.Fatalf("ResolveModel(%q) = %q, %v; want %q", tt.ref, got, err, want)
			}
		})
	}
}

func TestManagedModelRefOutsideModelsDirs(t *testing.T) {
	state := t.TempDir()
	for _, tt := range []struct{ name, extra, ref, field string }{
		{"absolute elsewhere", "", "/etc/passwd", "pools[0].model_ref"},
		{"dot-dot escape", "", "models/../api-key", "pools[0].model_ref"},
		{"models dir is the state dir", "models_dirs: [.]", "m.gguf", "models_dirs[0]"},
		{"models dir contains the state dir", "models_dirs: [/]", "/m.gguf", "models_dirs[0]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := managedConfig(t, state, tt.extra, tt.ref)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("err = %v, want it to name %q", err, tt.field)
			}
		})
	}
	// A model file that does not exist yet is fine at load time (make run generates it).
	if _, err := managedConfig(t, state, "", "models/later.gguf"); err != nil {
		t.Fatal(err)
	}
	// External pools name their model however the engine does: no path check.
	if _, err := load(t, minimal, Overrides{StateDir: state}); err != nil {
		t.Fatal(err)
	}
}
