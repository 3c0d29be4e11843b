// Package tgi implements engine.Replica for Hugging Face Text Generation Inference (TGI)'s own
// protocol. No TGI runs here (it needs a GPU): the adapter is tested against httptest servers
// and tools/enginesim's TGI personality, which the official text-generation Python client is
// checked to accept.
//
// # Protocol
//
// The completion workload POSTs {"inputs": prompt, "parameters": {"max_new_tokens",
// "details": true, "decoder_input_details": false, "do_sample", ["seed"],
// "return_full_text": false}} to /generate_stream. Greedy decoding is TGI's default
// (do_sample false); a request that is not deterministic and names a seed samples with it.
// The answer is text/event-stream, one "data:{json}" event per generated token:
// {"index", "token": {"id", "text", "logprob", "special"}, "generated_text", "details",
// "top_tokens"}. Each token's text is emitted as it arrives, except special tokens (the
// end-of-sequence token), which are not text. The last event carries generated_text and
// details: details.finish_reason maps to the stop reason (length → limit, eos_token → eos,
// stop_sequence → word), details.generated_tokens is TokensOut and details.input_length
// (TGI ≥ 2.1) is TokensIn. TGI reports no cached prompt tokens.
//
// Health is GET /health (200 ready). Identify and Info read GET /info (model_id, version,
// max_input_tokens or, before TGI 2.1, max_input_length, and max_total_tokens). Load reads
// /metrics: tgi_batch_current_size (running) and tgi_queue_size (waiting); TGI publishes no KV
// cache usage, so it is unknown (-1).
//
// # Errors
//
// TGI validates a streamed request inside the stream: its errors are error events
// {"error": message, "error_type": type} of a 200 answer; before the stream (or from a proxy)
// they are the same body with a status (422 validation, 424 generation, 429 overloaded, 500
// incomplete generation). error_type decides the kind: validation (prompt plus
// max_new_tokens beyond max_total_tokens, bad parameter) is KindInvalidRequest, the request's
// fault; overloaded (--max-concurrent-requests reached) is KindOverload; generation (the model
// server failed) is KindEngineFailure; incomplete_generation is KindWorkerReset. Without a
// known error_type the status decides as in engine/openai: dial failures, 503 and 401/403 are
// KindPoolUnavailable, 429 KindOverload, other 4xx KindInvalidRequest, other 5xx
// KindEngineFailure. A malformed event, an event without token.text or a wrong content type
// is KindProtocol; a stream that breaks or ends before its last event is KindWorkerReset; no
// event within Options.IdleTimeout is KindDecodeTimeout.
//
// # Cancellation
//
// Each generation runs on a connection of its own under a child of ctx; when ctx ends the
// connection is closed, TGI's router drops the request from its batch, and Generate returns
// ctx's error.
package tgi
