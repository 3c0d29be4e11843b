// Command enginesim runs the inference-engine simulator of package sim as a standalone HTTP
// server, for load tests of orchestratord and of the proxies it is compared with (nginx,
// LiteLLM). It speaks llama.cpp's server protocol and the OpenAI-compatible protocol; see
// package sim for the endpoints and the timestamped token format.
//
// Usage:
//
//	enginesim [-addr 127.0.0.1:0] [-tokens 0] [-max-tokens 32768] [-default-tokens 16]
//	          [-first-token-delay 0] [-token-delay 0] [-slots 0] [-total-slots 0]
//	          [-model enginesim] [-n-ctx 4096] [-exit-after 0] [-log-level info]
//
// It listens on loopback only and prints `listening on http://127.0.0.1:PORT` on stdout once
// the socket is bound. It stops on SIGINT/SIGTERM, or by itself after -exit-after when set.
package main
