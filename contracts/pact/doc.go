// Package pact holds the consumer-driven contract tests of orchestratord (pact-go v2, Pact
// specification V4). They sit behind the `pact` build tag because pact-go links the native Pact
// FFI library (libpact_ffi, see tools/install-pact-ffi.sh); `go build ./...` and `go test ./...`
// need nothing native. Run them with `make pact`.
//
// consumer_test.go describes, with the generated Go client (gen/client) against Pact's mock
// server, the interactions a real client relies on, and writes them to
// pacts/orchestratord-go-client-orchestratord.json (committed).
//
// provider_test.go replays every interaction of that file against the real daemon (impl/app,
// started in-process behind a stable loopback address) and puts the daemon into each provider
// state for real, through its public API or its engine: a full queue is a paused engine whose
// slots are busy and a queue filled to capacity, a drained pool is a drain request, a stopped
// engine replica is an engine that reports itself unready. No state is produced by sentinel
// request values.
package pact
