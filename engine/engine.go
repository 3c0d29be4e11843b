// Package engine declares what the daemon needs from an inference engine replica, and the error
// kinds an adapter maps engine failures to. One sub-package per engine protocol implements it
// (engine/llamacpp); engine/fake is a deterministic in-process engine for tests and demos.
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
	// Seed, when set, fixes the sampler's seed.
	Seed *int64
	// Deterministic asks for greedy, reproducible decoding (temperature 0, top_p 1).
	Deterministic bool
	// Ctx is the context length the task needs.
	Ctx int
}

// Token is one generated piece of text.
type Token struct {
	// Text is the decoded text of the token (may be empty or a partial UTF-8 sequence joined by
	// the engine).
	Text string
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
// Generate then returns that error.
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

// Kind classifies engine failures; it maps to the API's error codes.
type Kind int

// Error kinds.
const (
	KindInternal        Kind = iota // anything unclassified
	KindPoolUnavailable             // the engine cannot be reached or refuses work (503 from the engine, connection refused)
	KindWorkerReset                 // the engine dropped the request mid-stream (connection reset, process died)
	KindDecodeTimeout               // the engine produced no token within the idle timeout
	KindInvalidRequest              // the engine rejected the request as invalid (4xx)
)

func (k Kind) String() string {
	switch k {
	case KindPoolUnavailable:
		return "POOL_UNAVAILABLE"
	case KindWorkerReset:
		return "WORKER_RESET"
	case KindDecodeTimeout:
		return "DECODE_TIMEOUT"
	case KindInvalidRequest:
		return "INVALID_PARAMS"
	default:
		return "INTERNAL"
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
