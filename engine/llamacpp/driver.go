package llamacpp

import (
	"context"
	"net/http"

	"github.com/orchestratord/orchestratord/engine"
)

// Name is the engine's name in configuration and in the API.
const Name = "llamacpp"

// Driver returns the llama.cpp driver: completion on llama-server's native /completion, a
// managed command line that binds loopback and reads its API key from a 0600 file (so the key
// is not in the process list), --metrics for the load probe, and the replica's devices in
// CUDA_VISIBLE_DEVICES.
func Driver() engine.Driver {
	return engine.Driver{
		Name:      Name,
		Workloads: []string{engine.WorkloadCompletion},
		New: func(o engine.ReplicaOptions) engine.Replica {
			return New(Options{BaseURL: o.BaseURL, APIKey: o.APIKey, Logger: o.Logger, MaxIdleConns: o.Slots})
		},
		Managed: &engine.ManagedTemplate{
			Program: "llama-server",
			Argv: []string{"{program}", "-m", "{model}", "--host", "127.0.0.1", "--port", "{port}",
				"-np", "{slots}", "-c", "{ctx_total}", "--api-key-file", "{api_key_file}", "--metrics"},
			Env: []string{"CUDA_VISIBLE_DEVICES={devices}"},
		},
	}
}

var (
	_ engine.Identifier = (*Replica)(nil)
	_ engine.LoadProber = (*Replica)(nil)
)

// Identify implements engine.Identifier from /props: the model file and the server build.
func (r *Replica) Identify(ctx context.Context) (engine.Identity, error) {
	p, err := r.Props(ctx)
	if err != nil {
		return engine.Identity{}, err
	}
	return engine.Identity{ModelID: p.ModelPath, Version: p.BuildInfo}, nil
}

// Version is the server build (/props build_info); the pool registry shows it.
func (r *Replica) Version(ctx context.Context) (string, error) {
	p, err := r.Props(ctx)
	return p.BuildInfo, err
}

// Metric names of llama-server's /metrics (enabled with --metrics) used by Load.
const (
	metricRunning = "llamacpp:requests_processing"
	metricWaiting = "llamacpp:requests_deferred"
	metricKVUsage = "llamacpp:kv_cache_usage_ratio"
)

// Load implements engine.LoadProber from /metrics: requests processing and deferred, and the
// KV cache usage ratio (-1 when the server does not export it).
func (r *Replica) Load(ctx context.Context) (engine.Load, error) {
	resp, err := r.get(ctx, "/metrics")
	if err != nil {
		return engine.Load{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return engine.Load{}, statusError(ctx, resp)
	}
	m, err := engine.ReadMetrics(resp.Body, metricRunning, metricWaiting, metricKVUsage)
	if err != nil {
		return engine.Load{}, engine.Errorf(engine.KindProtocol, "llamacpp: %w", err)
	}
	return engine.LoadFromMetrics(m, metricRunning, metricWaiting, metricKVUsage), nil
}
