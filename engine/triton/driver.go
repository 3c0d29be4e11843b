package triton

import (
	"fmt"
	"net/url"

	"github.com/orchestratord/orchestratord/engine"
)

// Name is the engine's name in configuration and in the API.
const Name = "triton"

// Engine option keys (a pool's engine_options). Tensor keys name the model's tensors; setting
// max_tokens, stream, seed or temperature to "" stops sending that input.
const (
	OptModel       = "model"       // the Triton model name; default: the pool's model_id
	OptInput       = "text_input"  // prompt input; default "text_input"
	OptOutput      = "text_output" // text output; default "text_output"
	OptMaxTokens   = "max_tokens"  // max tokens input; default "max_tokens"
	OptStream      = "stream"      // streaming switch input; default "stream"
	OptSeed        = "seed"        // seed input (e.g. TensorRT-LLM's "random_seed"); default: not sent
	OptTemperature = "temperature" // temperature input, 0 for deterministic tasks; default: not sent
	OptMetricsURL  = "metrics_url" // Triton's metrics endpoint, e.g. http://127.0.0.1:8002; default: no load probe
)

// Driver is Triton Inference Server through its HTTP generate extension. External only: a
// Triton model repository is a directory of backend configurations that the daemon does not
// build, Triton would also open its gRPC and metrics ports (fixed defaults that collide between
// replicas), and it has no API key of its own to close its port to others.
func Driver() engine.Driver {
	return engine.Driver{
		Name: Name, Workloads: []string{engine.WorkloadCompletion}, New: newReplica,
		Options:      []string{OptModel, OptInput, OptOutput, OptMaxTokens, OptStream, OptSeed, OptTemperature, OptMetricsURL},
		CheckOptions: checkOptions,
	}
}

func checkOptions(o map[string]string) (string, error) {
	for _, k := range []string{OptModel, OptInput, OptOutput} {
		if v, ok := o[k]; ok && v == "" {
			return k, fmt.Errorf("must not be empty")
		}
	}
	if v := o[OptMetricsURL]; v != "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return OptMetricsURL, fmt.Errorf("must be an http(s) URL, got %q", v)
		}
	}
	return "", nil
}

// OptionsFrom builds Options from a driver's ReplicaOptions.
func OptionsFrom(o engine.ReplicaOptions) Options {
	t := DefaultTensors()
	set := func(dst *string, key string) {
		if v, ok := o.EngineOptions[key]; ok {
			*dst = v
		}
	}
	set(&t.Input, OptInput)
	set(&t.Output, OptOutput)
	set(&t.MaxTokens, OptMaxTokens)
	set(&t.Stream, OptStream)
	set(&t.Seed, OptSeed)
	set(&t.Temperature, OptTemperature)
	model := o.ModelID
	set(&model, OptModel)
	if o.Model != "" {
		model = o.Model
	}
	return Options{BaseURL: o.BaseURL, Model: model, Tensors: t, MetricsURL: o.EngineOptions[OptMetricsURL],
		APIKey: o.APIKey, Logger: o.Logger, MaxIdleConns: o.Slots}
}

func newReplica(o engine.ReplicaOptions) engine.Replica { return New(OptionsFrom(o)) }
