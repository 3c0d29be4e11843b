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
// host, whatever devices each replica was given. The daemon's clients' keys (ORCHD_API_KEYS)
// do not reach it.
func TestManagedLlamaCppGetsItsDevices(t *testing.T) {
	t.Setenv("ORCHD_API_KEYS", "client-key-0123456789abcdef")
	dir := t.TempDir()
	envFile := filepath.Join(dir, "engine.env")
	script := filepath.Join(dir, "llama-server")
	if err := os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\nenv > %q.tmp && mv %q.tmp %q\nexec sleep 30\n", envFile, envFile, envFile)), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := managedLlamaConfig(t, dir, script, "{devices: [3]}")
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
	if !strings.Contains("\n"+env, "\nCUDA_VISIBLE_DEVICES=3\n") {
		t.Fatalf("engine environment lacks CUDA_VISIBLE_DEVICES=3:\n%s", env)
	}
	if strings.Contains("\n"+env, "\nORCHD_API_KEYS=") {
		t.Errorf("the engine inherited the daemon's ORCHD_API_KEYS")
	}
}
