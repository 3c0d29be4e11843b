// Package drivers is the list of engine drivers built into orchestratord. Adding an engine is
// a package under engine/ with a Driver function, and one line here.
package drivers

import (
	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/llamacpp"
	"github.com/orchestratord/orchestratord/engine/openai"
)

var registry = mustRegistry(llamacpp.Driver(), openai.VLLMDriver(), openai.SGLangDriver(), openai.GenericDriver())

func mustRegistry(ds ...engine.Driver) *engine.Registry {
	r, err := engine.NewRegistry(ds...)
	if err != nil {
		panic(err)
	}
	return r
}

// Registry returns the built-in drivers.
func Registry() *engine.Registry { return registry }
