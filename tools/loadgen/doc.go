// Command loadgen runs one bounded load scenario (package load) against a loopback target and
// reports latency, throughput, errors by class and, for streams, time to first token,
// delivered tokens/s and the per-token latency added between the engine and the client.
//
// Examples:
//
//	loadgen -target orchd-admit -url http://127.0.0.1:8080 -api-key K -model tiny -concurrency 32 -requests 20000 -duration 20s
//	loadgen -target orchd-stream -url http://127.0.0.1:8080 -api-key K -model tiny -tokens 128 -rate 50 -requests 1000
//	loadgen -target llamacpp-stream -url http://127.0.0.1:9001 -tokens 128 -concurrency 16
//	loadgen -target openai-stream -url http://127.0.0.1:4000 -model enginesim -api-key sk-1 -stream=false -tokens 1
//
// A human summary goes to stdout (to stderr when -json is "-"); -json PATH writes the
// load.Result as JSON. The API key may also come from the LOADGEN_API_KEY environment
// variable. Exit status: 0 after a run, 2 for invalid flags, 1 when the result could not be
// written, 3 when no request succeeded.
package main
