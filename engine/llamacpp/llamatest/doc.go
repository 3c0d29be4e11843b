// Package llamatest runs a real llama.cpp llama-server for end-to-end tests.
//
//	func TestE2E(t *testing.T) {
//		model := llamatest.TinyModel(t, gguf.DefaultOptions()) // 583,552 bytes in t.TempDir()
//		base := llamatest.Start(t, model, "-np", "2")         // skips the test when no server is installed
//		r := llamacpp.New(llamacpp.Options{BaseURL: base})
//		...
//	}
//
// ServerPath finds the server: $ORCHD_LLAMA_SERVER when it names an executable, else
// llama-server on PATH, else <repo>/.tools/llama/llama-server (installed there by
// tools/ensure-llama-server.sh). It installs nothing.
//
// Start runs the server on a free loopback port with one thread (-t 1 -tb 1: on 2-core
// machines more threads make decoding collapse), waits (at most StartTimeout) until /health
// answers 200, and registers a cleanup that stops it (SIGTERM to its process group, then
// SIGKILL after 10 s) and, if the test failed, logs the tail of its output. Each call starts
// its own process; tests may run servers in parallel.
//
// The tiny model (package internal/gguf) continues " The quick brown fox jumps over the
// lazy dog." whatever the prompt, so tests can assert exact text.
package llamatest
