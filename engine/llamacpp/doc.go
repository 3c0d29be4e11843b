// Package llamacpp implements engine.Replica for llama.cpp's llama-server (verified against
// Debian's llama.cpp-tools 0.7.0, build b11669).
//
// # Protocol
//
// Generate POSTs {"prompt", "n_predict", "stream": true, "cache_prompt": true, ["seed"],
// [greedy sampling], ["id_slot"]} to /completion (id_slot: a session's turn asks for the slot
// that served its last one, when this Replica knows that slot is free; see slotAffinity) and reads the text/event-stream answer line by line.
// llama-server sends its response headers together with the first token, so the wait for the
// headers is the wait for the first frame. Each "data: {...}" line is one frame; non-final
// frames carry "content" and "tokens" (the sampled token's id), and the final frame has
// "stop": true, "stop_type" (limit, eos or word), "tokens_predicted", "tokens_evaluated" and
// "timings". See Replica.Generate for how frames map to engine.Token and engine.Result.
//
// Health reads /health (200 ready, 503 while the model loads) and Props reads /props (slot
// count, per-slot context, build).
//
// # Errors
//
// Failures are *engine.Error values, classified by whose fault they are (engine.Kind.Fault):
// connection refused or any dial failure, HTTP 503 and 401/403 (the daemon's key refused) are
// KindPoolUnavailable; 429 is KindOverload; other 4xx (context too long, bad parameter) are
// KindInvalidRequest carrying the engine's message; other 5xx are KindEngineFailure;
// malformed frames and a wrong content type are KindProtocol; a stream that breaks or ends
// before the final frame (engine killed, connection reset) is KindWorkerReset; no frame within
// Options.IdleTimeout is KindDecodeTimeout. An engine error reported inside the stream is
// mapped by its code in the same way.
//
// # Authentication
//
// With Options.APIKey every request carries "Authorization: Bearer <key>" (llama-server's
// --api-key / --api-key-file; /health stays open on the server side).
//
// # Cancellation and concurrency
//
// Each Generate runs its request under a child of ctx. When ctx ends, the HTTP transport
// closes the connection at once, Generate returns ctx.Err(), and llama-server, seeing the
// connection drop on its next write, cancels the task and frees the slot. The idle timeout is
// a timer that cancels the same child context with its own cause; it is stopped while emit
// runs, so a slow consumer is never mistaken for a stalled engine. Any early return (emit
// error, malformed frame) also cancels the request, so no engine work outlives Generate.
//
// A Replica is immutable after New and safe for concurrent use. Each generation uses a
// connection of its own ("Connection: close"): llama-server closes the connection after
// every stream despite answering "Keep-Alive", so reusing one fails the next request at
// random with EOF. Health and Props use the client's keep-alive pool. Generate starts no
// goroutines of its own (the idle timer runs its callback on the runtime's timer goroutine).
//
// # Hot path
//
// Per frame, Generate reads a line from a pooled bufio.Reader (no copy unless the line is
// longer than its 4 KiB buffer), decodes it with a small hand-written JSON scanner into a
// reused frame struct (no reflection, no allocation; FuzzDecodeFrame checks it against
// encoding/json), and allocates only the token's text string.
package llamacpp
