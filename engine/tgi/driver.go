package tgi

import "github.com/orchestratord/orchestratord/engine"

// Name is the engine name of Hugging Face Text Generation Inference.
const Name = "tgi"

// Driver is TGI. External is how it is mostly run (its container image); managed runs
// `text-generation-launcher` on loopback with the replica's GPUs in CUDA_VISIBLE_DEVICES and
// --max-total-tokens (prompt plus output) set to the pool's ctx_max. The template passes no API
// key: a managed TGI's port is open to local processes (it listens on loopback only).
func Driver() engine.Driver {
	return engine.Driver{
		Name: Name, Workloads: []string{engine.WorkloadCompletion},
		New: func(o engine.ReplicaOptions) engine.Replica {
			return New(Options{BaseURL: o.BaseURL, APIKey: o.APIKey, Logger: o.Logger, MaxIdleConns: o.Slots})
		},
		Managed: &engine.ManagedTemplate{
			Program: "text-generation-launcher",
			Argv: []string{"{program}", "--model-id", "{model}", "--hostname", "127.0.0.1", "--port", "{port}",
				"--max-concurrent-requests", "{slots}", "--max-total-tokens", "{ctx_max}"},
			Env: []string{"CUDA_VISIBLE_DEVICES={devices}"},
		},
	}
}
