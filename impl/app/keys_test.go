package app_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
)

// TestReloadKeys: ReloadKeys (SIGHUP) swaps the keys file's keys, keeps the plain keys, and a
// file that does not parse leaves the current keys in place.
func TestReloadKeys(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.yaml")
	write := func(doc string) {
		t.Helper()
		if err := os.WriteFile(keys, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("keys: [{name: alice, key: alice-key-0123456789, scopes: [tasks]}]\n")
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(`addr: 127.0.0.1:0
keys_file: keys.yaml
state_dir: `+filepath.Join(dir, "state")+`
pools:
  - {id: p0, engine: llamacpp, model_ref: models/tiny.gguf, model_id: tiny, ctx_max: 4096, slots: 1, replicas: [{url: "http://127.0.0.1:1"}]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Overrides{ConfigFile: cfgPath, APIKeys: "plain-key-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, app.Options{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	status := func(key string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/v1/capabilities", nil)
		req.Header.Set("X-API-Key", key)
		a.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	for _, step := range []struct {
		name   string
		doc    string // "" : no rewrite
		reload bool
		wantOK bool
		want   map[string]int
	}{
		{name: "start", want: map[string]int{"alice-key-0123456789": 200, "bob-key-0123456789": 403, "plain-key-0123456789": 200}},
		{name: "bob replaces alice", doc: "keys: [{name: bob, key: bob-key-0123456789, scopes: [tasks]}]\n", reload: true, wantOK: true,
			want: map[string]int{"alice-key-0123456789": 403, "bob-key-0123456789": 200, "plain-key-0123456789": 200}},
		{name: "a broken file keeps bob", doc: "keys: [{name: carol}]\n", reload: true,
			want: map[string]int{"alice-key-0123456789": 403, "bob-key-0123456789": 200, "plain-key-0123456789": 200}},
	} {
		if step.doc != "" {
			write(step.doc)
		}
		if step.reload {
			if err := a.ReloadKeys(); (err == nil) != step.wantOK {
				t.Fatalf("%s: ReloadKeys = %v", step.name, err)
			}
		}
		for key, want := range step.want {
			if got := status(key); got != want {
				t.Errorf("%s: key %s… → %d, want %d", step.name, key[:5], got, want)
			}
		}
	}
}
