// Package openai implements engine.Replica for OpenAI-compatible servers: vLLM, SGLang,
// llama.cpp's llama-server under /v1, Ollama's /v1 and anything else that speaks the protocol.
// It is tested end to end against the real llama-server (its /v1/completions and
// /v1/chat/completions); vLLM and SGLang need GPUs and were not run here.
//
// # Protocol
//
// The completion workload POSTs {"model", "prompt", "max_tokens", "stream": true,
// "stream_options": {"include_usage": true}, ["seed"], [greedy: "temperature": 0, "top_p": 1]}
// to /v1/completions (an open-ended request has no "max_tokens", and asks for
// "continuous_usage_stats": usage in every chunk, so that the prompt's count is known where the
// daemon stops reading at its MaxTokens); the chat workload POSTs the same with "messages" instead of "prompt" to
// /v1/chat/completions. The answer is text/event-stream: one "data: {json}" event per chunk,
// ended by "data: [DONE]". Each chunk's choices[0].text (completions) or
// choices[0].delta.content (chat) is one token's text, emitted as it arrives (chunks without
// text, such as chat's opening role chunk, are not emitted). choices[0].finish_reason maps to
// the stop reason ("length" → limit, "stop" → eos, others verbatim); the usage object (in the
// last chunk, or a chunk of its own with no choices) gives tokens in, out and cached
// (usage.prompt_tokens_details.cached_tokens). Without usage, TokensOut counts the emitted
// chunks.
//
// The model name sent is Options.Model; when empty, the first id of GET /v1/models (asked once,
// then remembered). Health is GET /health (200 ready; vLLM, SGLang and llama-server all answer
// it), or GET /v1/models where /health is 404 (Ollama). Identify reads /v1/models and, where the server has one, /version (vLLM).
// Load reads /metrics with the names of the server's Flavor (vLLM: vllm:num_requests_running,
// vllm:num_requests_waiting, vllm:kv_cache_usage_perc, or vllm:gpu_cache_usage_perc before vLLM
// renamed it; SGLang: sglang:num_running_reqs,
// sglang:num_queue_reqs, sglang:token_usage; llama.cpp: llamacpp:requests_processing,
// llamacpp:requests_deferred, llamacpp:kv_cache_usage_ratio).
//
// # Errors
//
// Failures are *engine.Error values classified by whose fault they are: a dial failure, 503 and
// 401/403 (the daemon's key refused) are KindPoolUnavailable; 429 is KindOverload; other 4xx
// (context too long, unknown parameter) are KindInvalidRequest with the server's message; other
// 5xx are KindEngineFailure; a malformed chunk or a wrong content type is KindProtocol; a
// stream that breaks or ends before its end (neither [DONE] nor a finish_reason) is
// KindWorkerReset; no chunk within Options.IdleTimeout is KindDecodeTimeout. An error object
// inside the stream ({"error": {...}}, or vLLM's {"object": "error", ...}) is mapped by its code
// in the same way.
//
// # Cancellation
//
// Each generation runs under a child of ctx on a connection of its own; when ctx ends the
// transport closes the connection, which is how OpenAI-compatible servers learn to abort the
// request (vLLM and llama-server abort on disconnect), and Generate returns ctx's error.
//
// # Authentication
//
// With Options.APIKey every request carries "Authorization: Bearer <key>" (vLLM's and SGLang's
// --api-key, llama-server's --api-key or --api-key-file).
package openai
