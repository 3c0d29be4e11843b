package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
)

// A managed llama.cpp pool whose llama-server is missing fails at once, and its health says
// what to set (the daemon does not restart a program that is not there).
func TestMissingEngineProgramFailsThePool(t *testing.T) {
	dir := t.TempDir()
	cfg := managedLlamaConfig(t, dir, filepath.Join(dir, "no-such-llama-server"), "{}")
	a, err := app.New(cfg, app.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveLoopback(t, a, nil)

	var health struct {
		Ready     bool   `json:"ready"`
		LastError string `json:"last_error"`
	}
	eventually(t, "the pool reports its error", func() bool {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v1/pools/p1/health", nil)
		req.Header.Set("X-API-Key", testKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return json.Unmarshal(b, &health) == nil && health.LastError != ""
	})
	if health.Ready || !strings.Contains(health.LastError, "no-such-llama-server not found: set ORCHD_LLAMA_SERVER") {
		t.Fatalf("health: %+v", health)
	}
}

// managedLlamaConfig is the configuration of one managed llama.cpp replica (managed: the
// YAML flow mapping of its managed block) of a pool whose model, models/m.gguf in dir (the
// state directory), is written here, run by program.
func managedLlamaConfig(t *testing.T, dir, program, managed string) *config.Config {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "models"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "models", "m.gguf"), []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 50ms
llama_server: %q
pools:
  - id: p1
    engine: llamacpp
    model_ref: models/m.gguf
    ctx_max: 1024
    slots: 1
    replicas: [{managed: %s}]
`, dir, program, managed)
	return loadConfig(t, dir, yaml)
}
