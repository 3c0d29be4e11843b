// Package fake is a deterministic in-process engine.Replica for tests and demos of the
// packages above the engine (admission, queueing, the HTTP API).
//
// Whatever the prompt, a Replica generates the tokens of its text cycle in order — by
// default the same " The", " quick", ..., " dog", "." cycle as the real tiny test model
// (tools/ggufgen) — and stops with engine.StopLimit after Request.MaxTokens tokens, or with
// engine.StopEOS when Options.EOSAfter is set (streaming the end-of-sequence token as an
// empty-text token, as llama-server does).
//
// Tests steer it through its Go API, never through magic prompt values:
//
//   - FailNext arms a fault for the next generation (after n tokens it returns an
//     *engine.Error of the given kind); calls queue up, one per generation.
//   - SetHealthy(false) makes Health report live but not ready and Generate fail with
//     KindPoolUnavailable.
//   - Pause holds every running and new generation before its next token until Resume;
//     with WaitActive, tests can fill slots and observe them without sleeping.
//   - Active, Started and Requests tell what the engine saw, e.g. that cancelled
//     generations released their slot.
//
// Delays (Options.FirstTokenDelay, TokenDelay) are real time, for demos and benchmarks;
// unit tests should use Pause/Resume instead.
//
// # Concurrency
//
// A Replica is safe for concurrent use. Generate runs on the caller's goroutine and starts
// none; it honours ctx at every wait and before every token, returning ctx.Err() at once.
// State is guarded by one mutex; a channel closed and replaced on every change of Active or
// of the pause state wakes waiters (WaitActive, paused generations).
package fake
