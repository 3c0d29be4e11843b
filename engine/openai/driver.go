package openai

import (
	"strings"

	"github.com/orchestratord/orchestratord/engine"
)

// Engine names served by this package.
const (
	NameVLLM   = "vllm"
	NameSGLang = "sglang"
	NameOpenAI = "openai" // any other OpenAI-compatible server (llama-server /v1, Ollama /v1): external only
)

var workloads = []string{engine.WorkloadCompletion, engine.WorkloadChat}

func newFor(f Flavor) func(engine.ReplicaOptions) engine.Replica {
	return func(o engine.ReplicaOptions) engine.Replica {
		return New(Options{BaseURL: o.BaseURL, APIKey: o.APIKey, Model: o.Model, Flavor: f, Logger: o.Logger, MaxIdleConns: o.Slots,
			Prefer: []string{strings.TrimPrefix(o.ModelRef, "hf:"), o.ModelID}})
	}
}

// VLLMDriver is vLLM's OpenAI-compatible server. Managed: `vllm serve` on loopback, serving the
// model under the pool's model id, its API key from VLLM_API_KEY (not in the process list), the
// replica's GPUs in CUDA_VISIBLE_DEVICES.
func VLLMDriver() engine.Driver {
	return engine.Driver{
		Name: NameVLLM, Workloads: workloads, New: newFor(FlavorVLLM),
		Managed: &engine.ManagedTemplate{
			Program: "vllm",
			Argv: []string{"{program}", "serve", "{model}", "--host", "127.0.0.1", "--port", "{port}",
				"--served-model-name", "{model_id}", "--max-num-seqs", "{slots}", "--max-model-len", "{ctx_max}"},
			Env: []string{"VLLM_API_KEY={api_key}", "CUDA_VISIBLE_DEVICES={devices}"},
		},
	}
}

// SGLangDriver is SGLang's server. Managed: `python3 -m sglang.launch_server` on loopback; SGLang
// takes its API key only as --api-key, so the key is visible in the process list of the host.
func SGLangDriver() engine.Driver {
	return engine.Driver{
		Name: NameSGLang, Workloads: workloads, New: newFor(FlavorSGLang),
		Managed: &engine.ManagedTemplate{
			Program: "python3",
			Argv: []string{"{program}", "-m", "sglang.launch_server", "--model-path", "{model}", "--host", "127.0.0.1",
				"--port", "{port}", "--served-model-name", "{model_id}", "--max-running-requests", "{slots}",
				"--context-length", "{ctx_max}", "--api-key", "{api_key}"},
			Env: []string{"CUDA_VISIBLE_DEVICES={devices}"},
		},
	}
}

// GenericDriver is any other OpenAI-compatible server, external only.
func GenericDriver() engine.Driver {
	return engine.Driver{Name: NameOpenAI, Workloads: workloads, New: newFor("")}
}
