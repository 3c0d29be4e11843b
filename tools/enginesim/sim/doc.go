// Package sim is an inference-engine simulator for load tests: an http.Handler that speaks the
// llama.cpp server protocol (GET /health, GET /props, POST /completion), the OpenAI-compatible
// protocol (GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions) and
// Hugging Face TGI's protocol (GET /health, GET /info, POST /generate_stream, POST /generate and
// the compat POST / that TGI's text-generation client posts to), streaming synthetic tokens at
// a configurable pace. GET /metrics serves the load series of vLLM, SGLang, TGI and llama.cpp
// (running, waiting, usage) from the simulator's own counters. It is not a correctness oracle for either protocol;
// it emits the subset of fields that orchestratord's adapters, LiteLLM and nginx need, as cheaply
// as possible, so that the simulator is never the bottleneck of a benchmark. GET /sim/stats
// reports its counters (see Stats).
//
// Stream frames follow the engines: llama.cpp sends `data: {"content":"<tok>","tokens":[k],
// "stop":false}` per token and a final `data: {"content":"","stop":true,"stop_type":"limit",
// "tokens_evaluated":P,"tokens_cached":0,"timings":{"prompt_n":P,"predicted_n":N,…}}`;
// /v1/completions sends text_completion chunks with `"finish_reason":null`, a final chunk with
// `"finish_reason":"length"`, a usage chunk when stream_options.include_usage is set, and
// `data: [DONE]`; /v1/chat/completions does the same with chat.completion.chunk deltas (after
// a first role chunk). Without "stream":true each returns one JSON object after the whole
// generation. Prompt token counts (P) are estimates: words of a string prompt, elements of a
// token array.
//
// # Token text and emission stamps
//
// Every generated token's text carries the wall-clock time at which the simulator emitted it,
// so that a client at the end of a relay chain (engine → orchestratord or a proxy → client) can
// measure the latency the relay added to each token. The exact format of one token is
//
//	" t" + 19 decimal digits
//
// a space, the letter 't', and the emission time as Unix nanoseconds (time.Time.UnixNano),
// zero-padded to exactly 19 digits, e.g. " t1732800000123456789". A token is 21 bytes of plain
// ASCII, so it needs no JSON escaping. A non-stream response's text is the concatenation of
// its tokens, each stamped when it was produced.
//
// ParseStamp parses one token's text (the leading space is optional, to survive clients that
// trim it); EachStamp walks every stamp in a concatenation of token texts. AppendStamp writes
// the format.
//
// # Pacing
//
// A generation starts when a slot is free (Options.Slots; 0 means unlimited, and a request
// waits for a slot like llama.cpp queues it). Token i (from 0) is due FirstTokenDelay +
// i×TokenDelay after the slot was acquired; a token that is late is emitted at once, so the
// schedule does not drift. Every stream frame is flushed as soon as it is written. When the
// client disconnects, the request context is done and the generation stops before the next
// token; a failed write stops it too.
//
// # Faults
//
// Options.Fault (or SetFault, at any time) injects one failure into every generation request,
// in each protocol's own words (see FaultMode): overload, 503, a slow first token, a stream cut
// in the middle of a token's frame, a frame that is not JSON, a crash (the connection dies and
// Options.OnCrash is called; the enginesim command exits 3) and a "context too long" client
// error. TGI frames follow TGI's router: "data:{json}" per token with token.id/text/logprob/
// special; the last one carries generated_text and details (finish_reason "length",
// generated_tokens, input_length); errors are `data:{"error","error_type"}` frames of a 200
// stream, as TGI validates inside the stream.
//
// The handler starts no goroutines of its own: each generation runs on the net/http goroutine
// serving its request.
package sim
