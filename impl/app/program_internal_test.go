package app

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/pool"
)

func TestResolveProgram(t *testing.T) {
	repo := t.TempDir() // a checkout: bin/orchestratord and .tools/llama/llama-server
	installed := filepath.Join(repo, ".tools", "llama", "llama-server")
	if err := os.MkdirAll(filepath.Dir(installed), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(installed, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	onPath := t.TempDir()
	if err := os.WriteFile(filepath.Join(onPath, "vllm"), []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", onPath)
	exe := filepath.Join(repo, "bin", "orchestratord")
	elsewhere := t.TempDir()

	tests := []struct {
		name, engine, program string
		isDefault             bool
		exe, wd               string
		want                  string // "" : a permanent StartError containing wantErr
		wantErr               string
	}{
		{"installed next to the binary", "llamacpp", "llama-server", true, exe, elsewhere, installed, ""},
		{"installed under the working directory", "llamacpp", "llama-server", true, "/usr/bin/orchestratord", repo, installed, ""},
		{"on PATH", "vllm", "vllm", true, exe, repo, filepath.Join(onPath, "vllm"), ""},
		{"absolute path", "llamacpp", installed, false, "", "", installed, ""},
		{"missing default", "llamacpp", "llama-server", true, "/usr/bin/orchestratord", elsewhere, "", "set ORCHD_LLAMA_SERVER"},
		{"configured program missing: no fallback", "llamacpp", "llama-server-custom", false, exe, repo, "", "set ORCHD_LLAMA_SERVER"},
		{"configured path missing", "llamacpp", filepath.Join(elsewhere, "llama-server"), false, exe, repo, "", "run make engine"},
		{"other engine", "sglang", "python3-missing", true, exe, repo, "", "set programs.sglang"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveProgram(tt.engine, tt.program, tt.isDefault, tt.exe, tt.wd)
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("resolveProgram = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			var se *pool.StartError
			if !errors.As(err, &se) || !se.Permanent || se.Reason != pool.ReasonProgramNotFound || !strings.Contains(se.Message, tt.wantErr) {
				t.Fatalf("resolveProgram = %q, %#v; want a permanent program_not_found saying %q", got, err, tt.wantErr)
			}
		})
	}
}
