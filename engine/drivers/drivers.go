// Package drivers is the list of engine drivers built into orchestratord. Adding an engine is
// a package under engine/ with a Driver function, and one line here.
package drivers

import (
	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/llamacpp"
	"github.com/orchestratord/orchestratord/engine/openai"
	"github.com/orchestratord/orchestratord/engine/tgi"
	"github.com/orchestratord/orchestratord/engine/triton"
)

var registry, errRegistry = engine.NewRegistry(llamacpp.Driver(), openai.VLLMDriver(), openai.SGLangDriver(), openai.GenericDriver(),
	tgi.Driver(), triton.Driver())

// Registry returns the built-in drivers. The list is fixed at build time and checked by
// TestRegistryValid; were it invalid, Registry would be empty, so that configuration validation
// refuses every engine (Err says why).
func Registry() *engine.Registry {
	if errRegistry != nil {
		return empty
	}
	return registry
}

var empty, _ = engine.NewRegistry()

// Err is the reason Registry is empty, if it is.
func Err() error { return errRegistry }
