// Package load is a bounded HTTP load generator for orchestratord and for the engines and
// proxies it is compared with (llama.cpp's server, an nginx proxy, a LiteLLM proxy), usually
// with tools/enginesim as the engine.
//
// # Safety bounds
//
// A run only ever talks to loopback: Options.URL must name localhost or a loopback IP, every
// dialed address is checked to be loopback, and redirects are not followed. A run is bounded by
// Options.Requests (requests issued) and Options.Duration (time during which requests are
// issued); requests still in flight at the end of Duration get Options.Grace to finish and are
// aborted after it, so a run always ends by itself within Duration + Grace.
//
// # Modes
//
// Closed loop (Options.Rate == 0): Concurrency workers each issue one request after the other.
// Open loop (Options.Rate > 0): request i is due at i/Rate seconds after the start, whatever
// the state of earlier requests; at most Concurrency are in flight, and a request that is due
// while Concurrency are in flight is not sent and counted under the error class
// "client_overload". Open-loop latencies are measured from the request's due time, not from
// when it was sent, so a slow generator does not hide queueing (no coordinated omission).
//
// # Targets
//
//   - orchd-admit: POST /v1/tasks; 202 is success. Latency is admission latency.
//   - orchd-stream: POST /v1/tasks, then GET the task's SSE stream until `end`. Latency is from
//     the start of the POST to the `end` frame; TTFT to the first `token` frame.
//   - llamacpp-stream: POST /completion (llama.cpp server, or a proxy in front of it).
//   - openai-stream: POST /v1/completions (an OpenAI-compatible server, e.g. LiteLLM).
//
// llamacpp-stream and openai-stream with Options.NoStream send stream=false and measure the
// request latency of one JSON response instead.
//
// # Per-token latency
//
// Token texts produced by tools/enginesim carry their emission time (see sim.ParseStamp). For
// every token frame received, the run records receive time − emission time, the latency added
// by everything between the engine and the client, in a fixed-size log-bucketed Histogram
// (0 to 60 s, buckets at most 1/16 wide). Tokens without a stamp are counted but not timed.
//
// # Error classes
//
// A failed request is counted under exactly one class: "http_<status>" (the POST of
// orchd-stream, or the only request of the other targets), "stream_http_<status>" (the GET of
// orchd-stream), "sse_<CODE>" (an orchd `error` frame, by its code), "truncated" (the stream
// ended before its final frame), "protocol" (an unparsable response or frame), "transport"
// (connection errors), "timeout" (Options.Timeout expired), "aborted" (cut at the end of
// Duration + Grace), "canceled" (the caller's context ended) and "client_overload" (open loop
// only, see above).
package load
