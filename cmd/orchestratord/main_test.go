package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInvalidConfigExitsNamingTheField(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte("admission: {capacity: 0, policy: fifo}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"--config", p}, &stderr); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "admission.policy") {
		t.Fatalf("stderr = %q", stderr.String())
	}
}

func TestNonLoopbackWithoutKeyRefused(t *testing.T) {
	t.Setenv("ORCHD_API_KEYS", "")
	var stderr bytes.Buffer
	if code := run([]string{"--addr", "0.0.0.0:0", "--state-dir", t.TempDir()}, &stderr); code != 2 {
		t.Fatalf("exit code %d, want 2 (%s)", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "not a loopback address") {
		t.Fatalf("stderr = %q", stderr.String())
	}
}

func TestUnknownFlag(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"--bogus"}, &stderr); code != 2 {
		t.Fatalf("exit code %d", code)
	}
}
