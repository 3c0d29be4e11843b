package app_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/sdk"
)

// guardDaemon loads the config file at path and serves it over the fake engine until the test
// ends (or stop is called). err is config.Load's or app.New's error.
func guardDaemon(t *testing.T, path string) (url string, stop func(), err error) {
	t.Helper()
	cfg, err := config.Load(config.Overrides{ConfigFile: path, APIKeys: testKey})
	if err != nil {
		return "", nil, err
	}
	f := fake.New(fake.Options{})
	a, err := app.New(cfg, app.Options{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(),
		HealthInterval: 20 * time.Millisecond, NewReplica: func(pool.Spec, pool.Endpoint) engine.Replica { return f }})
	if err != nil {
		return "", nil, err
	}
	addr, stopServe := serveLoopback(t, a, nil)
	stop = func() {
		if err := stopServe(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	return "http://" + addr, stop, nil
}

// runOne submits one completion with key and streams it to its end.
func runOne(t *testing.T, url, key string) error {
	t.Helper()
	c, err := sdk.New(url, sdk.Options{APIKey: key, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var lastErr error
	for range 50 { // the pool becomes ready after its first health check
		req := sdk.Completion("tiny", "hi")
		req.MaxTokens = 2
		a, err := c.Submit(ctx, req)
		if err != nil {
			lastErr = err
			var apiErr *sdk.APIError
			if errors.As(err, &apiErr) && apiErr.StatusCode == 503 {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		for _, err := range c.Stream(ctx, a.TaskId) {
			if err != nil {
				return err
			}
		}
		return nil
	}
	return lastErr
}

func writeGuardFile(t *testing.T, path, doc string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestNonFinitePriorDoesNotBreakThePool: config accepts prior_tokens_per_s: .inf and
// prior_service_ms: .nan (validation only checks "<= 0"), but the admission queue refuses
// such a pool: the daemon starts and then cannot run a single task on it.
func TestNonFinitePriorDoesNotBreakThePool(t *testing.T) {
	for _, prior := range []string{"prior_tokens_per_s: .inf", "prior_service_ms: .nan"} {
		t.Run(prior, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "config.yaml")
			writeGuardFile(t, p, fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 100ms
pools:
  - {id: p1, engine: llamacpp, model_ref: models/tiny.gguf, model_id: tiny, ctx_max: 4096, slots: 1, %s, replicas: [{url: "http://127.0.0.1:1"}]}
`, filepath.Join(dir, "state"), prior))
			url, _, err := guardDaemon(t, p)
			if err != nil {
				if strings.Contains(err.Error(), "pools[0].prior_") {
					return // refused at load, naming the field: fixed
				}
				t.Fatalf("start: %v", err)
			}
			if err := runOne(t, url, testKey); err != nil {
				t.Fatalf("config with %q loaded, but a task on its pool fails: %v", prior, err)
			}
		})
	}
}

// TestNaNKeyWeightDoesNotBrickTheJournal: the keys file accepts weight: .nan (the range check
// `w <= 0 || w > 1000` is false for NaN). Tasks of that key are journaled with an admission
// record json.Marshal refuses (an empty record), and the next start fails to replay it.
func TestNaNKeyWeightDoesNotBrickTheJournal(t *testing.T) {
	dir := t.TempDir()
	const nanKey = "nan-weight-key-0123456789"
	writeGuardFile(t, filepath.Join(dir, "keys.yaml"), "keys: [{name: nan, key: "+nanKey+", scopes: [tasks], weight: .nan}]\n")
	p := filepath.Join(dir, "config.yaml")
	writeGuardFile(t, p, fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 100ms
keys_file: keys.yaml
pools:
  - {id: p1, engine: llamacpp, model_ref: models/tiny.gguf, model_id: tiny, ctx_max: 4096, slots: 1, replicas: [{url: "http://127.0.0.1:1"}]}
`, filepath.Join(dir, "state")))
	url, stop, err := guardDaemon(t, p)
	if err != nil {
		if strings.Contains(err.Error(), "weight") {
			return // refused at load, naming the field: fixed
		}
		t.Fatalf("first start: %v", err)
	}
	if err := runOne(t, url, nanKey); err != nil {
		t.Fatalf("task of the NaN-weight key: %v", err)
	}
	stop()
	if _, _, err := guardDaemon(t, p); err != nil {
		t.Fatalf("the keys file was accepted with weight .nan; after one task of that key the daemon no longer starts: %v", err)
	}
}
