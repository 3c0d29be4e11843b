package app_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/app"
)

// A managed llama.cpp replica's devices reach its engine as CUDA_VISIBLE_DEVICES, as they do
// for the other engines: otherwise every llama-server of a pool spreads over every GPU of the
// host, whatever devices each replica was given. The devices are NVML's indices, so CUDA is
// told to number devices in PCI bus order as NVML does, unless the replica's env says
// otherwise; with no devices the engine's environment is left alone. The daemon's clients'
// keys (ORCHD_API_KEYS) do not reach it.
func TestManagedLlamaCppGetsItsDevices(t *testing.T) {
	t.Setenv("ORCHD_API_KEYS", "client-key-0123456789abcdef")
	tests := []struct {
		name    string
		managed string
		want    []string // lines the engine's environment has
		lacks   []string // variables it does not have
	}{
		{"devices", "{devices: [3]}", []string{"CUDA_VISIBLE_DEVICES=3", "CUDA_DEVICE_ORDER=PCI_BUS_ID"}, nil},
		{"order set by the user", `{devices: [0, 2], env: ["CUDA_DEVICE_ORDER=FASTEST_FIRST"]}`,
			[]string{"CUDA_VISIBLE_DEVICES=0,2", "CUDA_DEVICE_ORDER=FASTEST_FIRST"}, nil},
		{"no devices", "{}", nil, []string{"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			envFile := filepath.Join(dir, "engine.env")
			script := filepath.Join(dir, "llama-server")
			if err := os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\nenv > %q.tmp && mv %q.tmp %q\nexec sleep 30\n", envFile, envFile, envFile)), 0o700); err != nil {
				t.Fatal(err)
			}
			cfg := managedLlamaConfig(t, dir, script, tc.managed)
			a, err := app.New(cfg, app.Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			serveLoopback(t, a, nil)
			var env string
			eventually(t, "the engine starts", func() bool {
				b, err := os.ReadFile(envFile)
				env = string(b)
				return err == nil
			})
			lines := "\n" + env
			for _, w := range tc.want {
				if !strings.Contains(lines, "\n"+w+"\n") {
					t.Errorf("engine environment lacks %s:\n%s", w, env)
				}
			}
			for _, v := range append(tc.lacks, "ORCHD_API_KEYS") {
				if strings.Contains(lines, "\n"+v+"=") {
					t.Errorf("engine environment has %s:\n%s", v, env)
				}
			}
			if n := strings.Count(lines, "\nCUDA_DEVICE_ORDER="); n > 1 {
				t.Errorf("CUDA_DEVICE_ORDER set %d times:\n%s", n, env)
			}
		})
	}
}
