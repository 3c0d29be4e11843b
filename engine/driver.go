package engine

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// Driver is everything the daemon knows about one engine. The rest of the daemon names no
// engine: configuration validation, the capabilities document, replica construction and
// managed start-up all go through a Registry of drivers.
type Driver struct {
	// Name is the engine's name in configuration and in the API (e.g. "llamacpp", "vllm").
	Name string
	// Workloads are the workloads the driver serves (e.g. "completion", "chat").
	Workloads []string
	// New builds a Replica for an engine endpoint. The Replica's Health is the driver's health
	// probe; it may also implement LoadProber and Identifier.
	New func(ReplicaOptions) Replica
	// Managed is how the daemon starts the engine itself; nil when the engine is external only.
	Managed *ManagedTemplate
	// Options are the keys a pool's engine_options may set for this engine (none when empty).
	Options []string
	// CheckOptions, when set, validates a pool's engine_options values (keys are already
	// checked against Options); the error names the offending key.
	CheckOptions func(map[string]string) (key string, err error)
}

// ReplicaOptions are what a driver needs to talk to one endpoint.
type ReplicaOptions struct {
	// BaseURL is the endpoint's root, e.g. "http://127.0.0.1:8080".
	BaseURL string
	// APIKey, when set, is sent on every request as "Authorization: Bearer <key>".
	APIKey string
	// Model is the model name to request, where the protocol needs one; empty: the driver asks
	// the engine which model it serves.
	Model string
	// ModelRef is the pool's model_ref ("hf:" references as configured).
	ModelRef string
	// ModelID is the pool's short model id (its model_id).
	ModelID string
	// EngineOptions are the pool's engine_options (keys among the driver's Options).
	EngineOptions map[string]string
	// Logger receives debug records; nil discards them.
	Logger *slog.Logger
	// Slots is the replica's parallel sequences (the pool's slots; 0: unknown): it bounds the
	// connections an adapter keeps alive to the engine.
	Slots int
}

// ManagedTemplate is an engine's default command line. Placeholders, replaced in Argv and Env:
//
//	{program}    the engine's program (Program, unless the configuration names another)
//	{model}      the model file or name
//	{model_id}   the pool's short model id (the name the engine serves it under)
//	{port}       the port the engine must listen on (chosen by the supervisor)
//	{slots}      parallel sequences
//	{ctx_max}    context per sequence
//	{ctx_total}  context over all sequences (ctx_max × slots)
//	{devices}    the replica's GPU indices, comma-separated ("" when none are configured)
//	{api_key}    the replica's random API key (visible in the process list: prefer the file or
//	             an environment variable where the engine reads one)
//	{api_key_file} a 0600 file holding that key
type ManagedTemplate struct {
	// Program is the default executable for {program}.
	Program string
	// Argv is the command line template; Argv[0] is normally "{program}".
	Argv []string
	// Env is added to the daemon's environment ("NAME=value" templates).
	Env []string
}

// Load is a replica's load as the engine reports it. Negative values are unknown.
type Load struct {
	Running int     // requests being decoded
	Waiting int     // requests queued inside the engine
	KVUsage float64 // KV cache usage, 0..1
}

// LoadProber is implemented by replicas that can report their engine's load.
type LoadProber interface {
	Load(ctx context.Context) (Load, error)
}

// ConnStats counts the connections a replica's adapter made to its engine for generations
// (engine/httpengine.Conns keeps them alive between generations). The counts only grow, from
// the replica's creation: a reload's new replica starts again from 0.
type ConnStats struct {
	// Dialed: connections set up. Reused: generations sent on a connection kept from an
	// earlier one. Retried: requests sent again on a fresh connection after a kept one failed
	// before any byte of the answer came.
	Dialed, Reused, Retried uint64
	// Fallbacks: the times the replica fell back to one connection per generation (the engine
	// closes streamed connections, or ended its answers late several times in a row).
	Fallbacks uint64
	// LateEnds: complete answers whose end did not come in time; their connections were closed.
	LateEnds uint64
	// Idle: connections kept now, waiting for a generation.
	Idle int
	// OnePerGeneration: the replica gets a connection per generation now (after a fallback,
	// until keep-alive is tried again).
	OnePerGeneration bool
}

// ConnReporter is implemented by replicas whose adapter keeps its engine connections: ok is
// false when this replica does not (an https engine, which net/http's Transport serves).
type ConnReporter interface {
	EngineConns() (s ConnStats, ok bool)
}

// Identity is what an engine says it serves.
type Identity struct {
	ModelID string // the served model's id
	Version string // the engine's build or version, when it says
}

// Identifier is implemented by replicas that can report the served model and engine version.
type Identifier interface {
	Identify(ctx context.Context) (Identity, error)
}

// Registry is an immutable set of drivers, in registration order.
type Registry struct {
	drivers []Driver
}

// NewRegistry builds a registry; names must be unique and non-empty and every driver needs New.
func NewRegistry(drivers ...Driver) (*Registry, error) {
	seen := map[string]bool{}
	for _, d := range drivers {
		switch {
		case d.Name == "":
			return nil, fmt.Errorf("engine: driver without a name")
		case seen[d.Name]:
			return nil, fmt.Errorf("engine: driver %q registered twice", d.Name)
		case d.New == nil:
			return nil, fmt.Errorf("engine: driver %q has no New", d.Name)
		case len(d.Workloads) == 0:
			return nil, fmt.Errorf("engine: driver %q serves no workload", d.Name)
		case d.Managed != nil && !slices.ContainsFunc(d.Managed.Argv, func(a string) bool { return strings.Contains(a, "{port}") }):
			return nil, fmt.Errorf("engine: driver %q: managed argv lacks {port}", d.Name)
		}
		seen[d.Name] = true
	}
	return &Registry{drivers: slices.Clone(drivers)}, nil
}

// Lookup returns the driver named name.
func (r *Registry) Lookup(name string) (Driver, bool) {
	for _, d := range r.drivers {
		if d.Name == name {
			return d, true
		}
	}
	return Driver{}, false
}

// Names returns the registered engine names, in registration order.
func (r *Registry) Names() []string {
	out := make([]string, len(r.drivers))
	for i, d := range r.drivers {
		out[i] = d.Name
	}
	return out
}

// All returns every driver, in registration order.
func (r *Registry) All() []Driver { return slices.Clone(r.drivers) }
