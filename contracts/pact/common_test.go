//go:build pact

package pact

import (
	"os"
	"path/filepath"
	"testing"
)

// The pacticipants, and the pact file the consumer tests write and the provider test verifies.
const (
	consumerName = "orchestratord-go-client"
	providerName = "orchestratord"
	// pactDir is the repository's pacts/ directory, relative to this package's directory.
	pactDir  = "../../pacts"
	pactFile = consumerName + "-" + providerName + ".json"
)

// apiKey is the key the consumer sends; the provider's daemon is configured with it.
const apiKey = "pact-consumer-key-0123456789"

// Keys of the provider's keys file, each with one restriction: tasksOnlyKey has only the tasks
// scope, limitedKey may submit one task a minute, budgetKey has a 16-token budget.
const (
	tasksOnlyKey = "pact-tasks-only-key-0123456789"
	limitedKey   = "pact-limited-key-0123456789"
	budgetKey    = "pact-budget-key-0123456789"
	keysFile     = `keys:
  - {name: tasks-only, key: ` + tasksOnlyKey + `, scopes: [tasks]}
  - {name: limited, key: ` + limitedKey + `, scopes: [tasks], rpm: 1}
  - {name: budgeted, key: ` + budgetKey + `, scopes: [tasks], token_budget: 16}
`
)

// The daemon's single pool, as the consumer knows it.
const (
	poolID   = "default"
	modelID  = "tiny"
	modelRef = "models/tiny.gguf"
	// brokenModelRef is in the models directory, but llama-server cannot load it.
	brokenModelRef = "models/broken.gguf"
)

// Provider states. Each names a precondition the provider test produces for real (see
// provider_test.go); states that create a resource return its id under the key the consumer's
// FromProviderState expressions use.
const (
	// The daemon serves pool default, ready, with a free slot and an empty queue.
	stateReady = "pool default is ready"
	// Key limited (rpm 1) submitted a task this minute.
	stateRateLimited = "key limited has used its submissions for this minute"
	// Key budgeted (token_budget 16) submitted a task with max_tokens 16.
	stateBudgetSpent = "key budgeted has reserved its whole token budget"
	// A task was admitted and is still running (its engine generation is held): {taskId, sessionId}.
	stateTask = "a task is running"
	// A task ran to completion: {taskId}.
	stateFinishedTask = "a task has finished"
	// A task of a session ran: {sessionId}.
	stateSession = "a session exists"
	// An artifact is stored: {artifactId}.
	stateArtifact = "an artifact is stored"
	// Pool default is served by a replica the daemon runs itself (llama.cpp's llama-server on
	// models/tiny.gguf), so it can be reloaded.
	// Its models directory also holds models/broken.gguf, a file llama-server cannot load.
	stateManaged = "pool default runs a managed llama.cpp replica"
	// The daemon refuses request bodies over 4096 bytes.
	stateBodyLimit = "request bodies are limited to 4096 bytes"
	// The artifact store holds one artifact, its limit (artifacts.max_count: 1).
	stateArtifactsFull = "the artifact store is full"
	// Every slot of pool default is busy and the queue is at capacity (policy reject).
	stateQueueFull = "the queue of pool default is full"
	// Policy drop-lru, every slot busy and the queue at capacity with interactive tasks only.
	stateQueueFullInteractive = "the drop-lru queue of pool default is full of interactive tasks"
	// Pool default was drained.
	stateDrained = "pool default is drained"
	// Replica default/0, the only replica of pool default, was drained (the pool is not ready).
	stateReplicaDrained = "replica default/0 of pool default is drained"
	// The engine replica of pool default stopped serving (it reports itself not ready).
	stateEngineStopped = "the engine replica of pool default is stopped"
)

// Example identifiers the consumer tests use; the provider replaces those marked as coming from
// a provider state with the ids its states return.
const (
	exampleTaskID     = "6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11"
	exampleSessionID  = "0a9d7b6e-2f39-4f47-8f0e-8b1c0c0f7c22"
	unknownTaskID     = "7d3a1c52-9b8e-4f0a-8c21-5e6f7a8b9c0d"
	exampleArtifactID = "sha256:643fdb540f6bfbbcb6c51e8aaf82557f4181780de070ce77945db1d9f0ad5db4"
	// replicaID is pool default's only replica; in a path it is escaped (default%2F0).
	replicaID      = "default/0"
	replicaPath    = "/v1/pools/" + poolID + "/replicas/default%2F0"
	unknownReplica = "default/9"
)

// Regular expressions of values the consumer matches by shape.
const (
	uuidRe        = `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`
	artifactIDRe  = `^sha256:[0-9a-f]{64}$`
	jsonTypeRe    = `^application/json`
	positiveIntRe = `^[1-9][0-9]*$`
	nonNegIntRe   = `^[0-9]+$`
)

// pactPath is the pact file's path relative to this package's directory.
func pactPath() string { return filepath.Join(pactDir, pactFile) }

// pactEnv checks what every pact test needs.
func pactEnv(t *testing.T) {
	t.Helper()
	if os.Getenv("PACT_DO_NOT_TRACK") != "true" {
		t.Fatal("set PACT_DO_NOT_TRACK=true (the Pact FFI otherwise sends usage data); use `make pact`")
	}
}
