// Package triton implements engine.Replica for NVIDIA Triton Inference Server through its HTTP
// generate extension. It is tested end to end against a real tritonserver 2.51.0 (bundled by
// nvidia-pytriton 0.7.0, CPU only; tools/tritontest) serving decoupled Python models.
//
// # Protocol
//
// Generate POSTs {"<text_input>": prompt, "<max_tokens>": n, "<stream>": true} to
// /v2/models/{model}/generate_stream; each JSON field fills the model input of that name, so
// the names are configurable (Tensors; a pool's engine_options). The defaults are the
// TensorRT-LLM and vLLM backends' conventional names: inputs text_input, max_tokens and
// stream, output text_output. A seed and a temperature (0 for deterministic tasks) are sent
// only when their input names are configured (TensorRT-LLM: random_seed, temperature); the
// vLLM backend takes its sampling parameters as one JSON string input, which this adapter
// does not build.
//
// The answer is text/event-stream: one "data: {json}" event per model response, holding
// model_name, model_version and the output tensor (a string, or an array of strings, which are
// joined). Triton writes no event: or id: lines and no terminator: the stream simply ends,
// so a server that closes the connection between two frames cannot be told from one that has
// finished. Each response with text is one emit (one token for TensorRT-LLM and for the vLLM
// backend in streaming mode; for other models, whatever one response holds).
//
// Triton reports no finish reason and no token counts: TokensOut counts the responses with
// text, TokensIn and TokensCached stay 0, and the stop reason is "limit" when TokensOut reached
// max tokens, else "eos".
//
// Health is GET /v2/health/ready and GET /v2/models/{model}/ready (both 200: ready; any answer:
// live). Identify reads GET /v2/models/{model} (the model's name and newest version) and GET
// /v2 (Triton's version). Load reads Triton's metrics port (Options.MetricsURL, 8002 by
// default; not the HTTP port): Waiting is nv_inference_pending_request_count for the model;
// Triton has no gauge of executing requests, so Running and KVUsage come only from the
// TensorRT-LLM backend's nv_trt_llm_request_metrics{request_type="active"} and
// nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used"|"max"}, and are -1 otherwise.
//
// # Errors
//
// Triton's errors are {"error": "..."} bodies. Before the stream: 400 (a missing or malformed
// input) is KindInvalidRequest; 404 (the configured model is not on this server) and 503 are
// KindPoolUnavailable, the replica's fault; 429 is KindOverload; other 5xx are
// KindEngineFailure. Inside the stream Triton sends {"error": "..."} with status 200 (a model
// exception) and ends the stream; it carries no code, so it is KindEngineFailure unless its
// text says the request was too long or invalid ("exceeds", "too long", "invalid argument",
// ...), which is KindInvalidRequest. A malformed frame or a wrong content type is
// KindProtocol; a connection cut inside a frame is KindWorkerReset; no frame within
// Options.IdleTimeout is KindDecodeTimeout.
//
// # Cancellation
//
// Each generation runs on a connection of its own, closed when ctx ends; Generate returns ctx's
// error at once. Triton 2.51's HTTP frontend does not cancel the request when its client goes
// away: the model runs on to its end (the end-to-end test shows it with a slow model), so the
// engine's slot is freed only when the model finishes. Triton cancels requests only through
// gRPC, which this adapter does not speak.
package triton
