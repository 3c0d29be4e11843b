package app_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"context"
	"github.com/orchestratord/orchestratord/impl/config"
	"net"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/impl/app"
)

// serveLoopback serves a on a new 127.0.0.1 listener (given to wrap first, when wrap is not
// nil) until stop, which cancels Serve and returns what it returned. stop runs once; the test's
// cleanup calls it too, and a Serve error fails the test there. A test that must let something
// go before the daemon stops (a gated engine) registers that cleanup after this call: cleanups
// run last in, first out.
func serveLoopback(tb testing.TB, a *app.App, wrap func(net.Listener) net.Listener) (addr string, stop func() error) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr = ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()
	var once sync.Once
	var serveErr error
	stop = func() error {
		once.Do(func() { cancel(); serveErr = <-served })
		return serveErr
	}
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return addr, stop
}

// loadConfig writes yaml to dir/config.yaml and loads it, with testKey as the API key.
func loadConfig(tb testing.TB, dir, yaml string) *config.Config {
	tb.Helper()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Load(config.Overrides{ConfigFile: path, APIKeys: testKey})
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// serveApp serves a daemon whose config is sections (the YAML after addr and state_dir, which
// are a loopback port and a temporary directory) until the test ends. opts' Logger and Registry
// default to a discarding logger and a registry of its own, HealthInterval to 20 ms.
func serveApp(t *testing.T, sections string, opts app.Options) (addr string, stop func() error) {
	t.Helper()
	dir := t.TempDir()
	cfg := loadConfig(t, dir, fmt.Sprintf("addr: 127.0.0.1:0\nstate_dir: %q\n%s", filepath.Join(dir, "state"), sections))
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.HealthInterval == 0 {
		opts.HealthInterval = 20 * time.Millisecond
	}
	a, err := app.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return serveLoopback(t, a, nil)
}
