// Package engine declares what the daemon needs from an inference engine replica, the error
// kinds an adapter maps engine failures to, and the Driver registry through which the rest of the
// daemon knows engines. One sub-package per engine protocol implements a driver (engine/llamacpp,
// engine/openai, engine/tgi, engine/triton); engine/drivers lists them; engine/fake is a
// deterministic in-process engine for tests and demos.
//
// An adapter streams incrementally: Generate calls emit once per generated token, in order, as
// the engine produces it. Cancelling ctx aborts the engine request (the HTTP request is closed,
// which frees the engine slot) and Generate returns promptly with ctx's error.
package engine

import (
	"context"
	"errors"
	"fmt"
)

// Request is one generation on one replica.
type Request struct {
	// TaskID names the task in logs; it is never sent to the engine as text.
	TaskID string
	// Prompt is the full prompt text.
	Prompt string
	// MaxTokens bounds the number of generated tokens (n_predict).
	MaxTokens int
	// OpenEnded: MaxTokens is the context's bound, not one the client asked for (an OpenAI
	// chat without max_tokens). An adapter whose engine refuses a prompt plus max_tokens over
	// its context (vLLM, SGLang, TGI) sends none, and the engine generates to its context or the
	// end of sequence; the daemon still stops reading at MaxTokens.
	OpenEnded bool
	// Seed, when set, fixes the sampler's seed.
	Seed *int64
	// Deterministic asks for greedy, reproducible decoding (temperature 0, top_p 1).
	Deterministic bool
	// Ctx is the context length the task needs.
	Ctx int
	// Workload is "completion" (Prompt) or "chat" (Messages); empty means completion.
	Workload string
	// Messages is the conversation of a chat workload, oldest first.
	Messages []Message
	// SessionID names the conversation the request continues ("" for none): an engine with
	// per-slot caches may send the session's turns to the slot that holds its earlier ones
	// (llama.cpp: id_slot). It is never sent to the engine as text.
	SessionID string
}

// Message is one turn of a chat conversation.
type Message struct {
	Role    string // "system", "user" or "assistant"
	Content string
}

// Workloads.
const (
	WorkloadCompletion = "completion"
	WorkloadChat       = "chat"
)

// Token is one generated piece of text.
type Token struct {
	// Text is the decoded text of the token (may be empty or a partial UTF-8 sequence joined by
	// the engine). It is valid only during the EmitFunc call that receives it: adapters hand
	// out a view into their read or decode buffer, reused for the next frame, so that a relayed
	// token costs no allocation. A callee that keeps the text copies it.
	Text []byte
	// Index is the 0-based position of the token in this generation.
	Index int
}

// StopReason says why a generation ended.
type StopReason string

// Stop reasons reported by engines.
const (
	StopLimit StopReason = "limit" // max tokens reached
	StopEOS   StopReason = "eos"   // end of sequence
	StopWord  StopReason = "word"  // a stop word
)

// Result summarises a finished generation.
type Result struct {
	TokensOut    int
	TokensIn     int // prompt tokens evaluated, when the engine reports it
	TokensCached int // prompt tokens served from the engine's KV cache, when reported
	Stop         StopReason
}

// EmitFunc receives each token as it is produced. Returning an error stops the generation;
// Generate then returns that error. The token's Text is valid only until EmitFunc returns.
// It must not block: an HTTP adapter calls it from the poller that reads the connections of
// many generations (engine/httpengine), so a wait in one would hold up the others.
type EmitFunc func(Token) error

// Health is a replica's health as the engine reports it.
type Health struct {
	Live  bool // the process answers
	Ready bool // the model is loaded and the engine accepts work
	// Detail is the engine's own word when not ready (e.g. "loading model").
	Detail string
}

// Replica is one engine endpoint serving one model.
type Replica interface {
	// Generate runs req and streams its tokens to emit.
	Generate(ctx context.Context, req Request, emit EmitFunc) (Result, error)
	// Health asks the engine for its health.
	Health(ctx context.Context) (Health, error)
}

// Kind classifies engine failures. A kind carries no API error code: the API layer maps kinds
// to codes (impl/errors.go). Each kind says whose fault the failure is (Fault), which decides
// whether it may count against a replica's health.
type Kind int

// Error kinds.
const (
	KindInternal        Kind = iota // the daemon's own failure, or anything unclassified
	KindPoolUnavailable             // replica: the engine cannot be reached or is not ready (connection refused, 503 while loading)
	KindWorkerReset                 // replica: the engine dropped the request mid-stream (connection reset, process died)
	KindDecodeTimeout               // replica: the engine produced no frame within the idle timeout
	KindInvalidRequest              // request: the engine rejected the request itself (context too long, bad parameter)
	KindOverload                    // overload: the engine says it is busy (429); retry later, the replica is healthy
	KindEngineFailure               // replica: the engine answered with a server error (5xx other than 503)
	KindProtocol                    // replica: the engine's answer broke its protocol (malformed frame, wrong content type)
)

// Kinds lists every kind, for tables that must cover them all.
func Kinds() []Kind {
	return []Kind{KindInternal, KindPoolUnavailable, KindWorkerReset, KindDecodeTimeout, KindInvalidRequest,
		KindOverload, KindEngineFailure, KindProtocol}
}

// String is the kind's metric label value (not an API code).
func (k Kind) String() string {
	switch k {
	case KindPoolUnavailable:
		return "unavailable"
	case KindWorkerReset:
		return "reset"
	case KindDecodeTimeout:
		return "timeout"
	case KindInvalidRequest:
		return "invalid_request"
	case KindOverload:
		return "overload"
	case KindEngineFailure:
		return "engine_failure"
	case KindProtocol:
		return "protocol"
	default:
		return "internal"
	}
}

// Fault says whose fault a failure is.
type Fault int

// Faults.
const (
	// FaultDaemon: the daemon's own failure (or unclassified); never counts against a replica.
	FaultDaemon Fault = iota
	// FaultRequest: the request is at fault (the task fails with INVALID_PARAMS); the replica is healthy.
	FaultRequest
	// FaultReplica: the replica is suspect; the only fault that counts against its health.
	FaultReplica
	// FaultOverload: the replica is healthy but busy; the task may be retried.
	FaultOverload
)

func (f Fault) String() string {
	switch f {
	case FaultRequest:
		return "request"
	case FaultReplica:
		return "replica"
	case FaultOverload:
		return "overload"
	default:
		return "daemon"
	}
}

// Fault returns whose fault a failure of kind k is.
func (k Kind) Fault() Fault {
	switch k {
	case KindPoolUnavailable, KindWorkerReset, KindDecodeTimeout, KindEngineFailure, KindProtocol:
		return FaultReplica
	case KindInvalidRequest:
		return FaultRequest
	case KindOverload:
		return FaultOverload
	default:
		return FaultDaemon
	}
}

// Error is an engine failure of a known kind.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Kind, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error.
func Errorf(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// KindOf returns the kind of err (KindInternal when err is not an *Error).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}
