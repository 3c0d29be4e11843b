// Package testdaemon runs a whole orchestratord in-process on loopback for the tests and the
// runnable examples of the SDK and orchctl: the real app (admission, queue, SSE, errors) over
// either the fake engine (engine/fake, deterministic) or a managed real llama-server with the
// tiny constructed model.
package testdaemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/internal/gguf"
)

// Key is the API key every daemon started here accepts.
const Key = "testdaemon-key-0123456789abcdef"

// PoolID and ModelID name the single pool of every daemon started here.
const (
	PoolID  = "p1"
	ModelID = "tiny"
)

// Options configures Start.
type Options struct {
	// Sections is YAML added to the top level of the configuration (for example
	// "stream: {cancel_on_disconnect: false}").
	Sections string
	// Fake configures the fake engine. Ignored when LlamaServer is set.
	Fake fake.Options
	// LlamaServer, when set, runs a managed llama-server (this executable) with the tiny model
	// instead of the fake engine.
	LlamaServer string
	// Logger receives the daemon's logs (default: discarded).
	Logger *slog.Logger
	// Dir is where the state directory and the configuration go (default: a new temporary
	// directory, removed by Close).
	Dir string
}

// Daemon is a running daemon.
type Daemon struct {
	// URL is the daemon's base URL (http://127.0.0.1:PORT).
	URL string
	// Fake is the fake engine replica (nil with a real engine).
	Fake *fake.Replica
	// StateDir is the daemon's state directory.
	StateDir string

	cancel  context.CancelFunc
	served  chan error
	tempDir string
}

// Start runs a daemon and returns once its pool is ready.
func Start(opts Options) (*Daemon, error) {
	dir, tempDir := opts.Dir, ""
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "testdaemon-"); err != nil {
			return nil, err
		}
		tempDir = dir
	}
	d := &Daemon{StateDir: filepath.Join(dir, "state"), tempDir: tempDir}
	fail := func(err error) (*Daemon, error) {
		if tempDir != "" {
			_ = os.RemoveAll(tempDir)
		}
		return nil, err
	}
	replica := "      - url: http://127.0.0.1:1\n"
	modelRef := "models/tiny.gguf"
	top := ""
	if opts.LlamaServer != "" {
		model := filepath.Join(d.StateDir, modelRef)
		if err := os.MkdirAll(filepath.Dir(model), 0o700); err != nil {
			return fail(err)
		}
		if err := gguf.WriteFile(model, gguf.DefaultOptions()); err != nil {
			return fail(err)
		}
		replica = "      - managed: {args: [\"-t\", \"1\", \"-tb\", \"1\"]}\n"
		top = fmt.Sprintf("llama_server: %q\n", opts.LlamaServer)
	}
	yaml := fmt.Sprintf(`addr: 127.0.0.1:0
state_dir: %q
shutdown_grace: 100ms
%s%s
pools:
  - id: %s
    engine: llamacpp
    model_ref: %s
    model_id: %s
    ctx_max: 4096
    slots: 1
    replicas:
%s`, d.StateDir, top, opts.Sections, PoolID, modelRef, ModelID, replica)
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		return fail(err)
	}
	cfg, err := config.Load(config.Overrides{ConfigFile: p, APIKeys: Key})
	if err != nil {
		return fail(err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	gpus := dgxh200.New()
	gpus.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	ao := app.Options{Logger: log, NVML: gpus, Registry: prometheus.NewRegistry(), HealthInterval: 20 * time.Millisecond}
	if opts.LlamaServer == "" {
		d.Fake = fake.New(opts.Fake)
		ao.NewReplica = func(pool.Spec, pool.Endpoint) engine.Replica { return d.Fake }
	} else {
		ao.HealthInterval = 200 * time.Millisecond
	}
	a, err := app.New(cfg, ao)
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	d.URL = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.served = cancel, make(chan error, 1)
	go func() { d.served <- a.Serve(ctx, ln) }()
	if err := d.waitReady(); err != nil {
		_ = d.Close()
		return nil, err
	}
	return d, nil
}

// waitReady polls the pool's health until it is ready; the bound only keeps a broken build
// (or an engine that never starts) from hanging.
func (d *Daemon) waitReady() error {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var last string
	for range 600 {
		req, err := http.NewRequest(http.MethodGet, d.URL+"/v1/pools/"+PoolID+"/health", nil)
		if err != nil {
			return err
		}
		req.Header.Set("X-API-Key", Key)
		res, err := hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			var h struct{ Ready bool }
			if json.Unmarshal(b, &h) == nil && h.Ready {
				return nil
			}
			last = string(b)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("testdaemon: pool never became ready: " + last)
}

// Close stops the daemon and removes its temporary directory.
func (d *Daemon) Close() error {
	d.cancel()
	err := <-d.served
	if d.tempDir != "" {
		_ = os.RemoveAll(d.tempDir)
	}
	return err
}
