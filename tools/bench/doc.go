// Command bench is orchestratord's benchmark harness (`make bench`, `make bench-full`). In one
// invocation it starts tools/enginesim on a free loopback port and, in front of that same
// simulator, every contender:
//
//   - direct: loadgen talks to the simulator itself (the upper bound);
//   - nginx: Debian's nginx as a reverse proxy with buffering off both ways, run by the bench
//     with a private prefix and configuration (no system service);
//   - go-relay (opt-in: name it in -contenders): tools/gorelay, net/http's server in front of
//     httputil.ReverseProxy flushing each write, keep-alive to the simulator: what any Go
//     relay pays on the machine, the runtime and net/http included;
//   - orchestratord: bin/orchestratord, built from this tree, with pools on the simulator
//     (external replicas), log_level warn, and limits sized so that its own admission and
//     session limits never refuse the load; the full path (auth, validation, queue, dispatch,
//     llama.cpp adapter, SSE);
//   - litellm: the LiteLLM proxy (PyPI, pinned by tools/bench/setup.sh, in the git-ignored
//     virtualenv .tools/litellm-venv) routing model "sim" to the simulator's OpenAI-compatible
//     /v1/completions (scenarios 1 and 2);
//   - orchestratord-info (plan full): the daemon with log_level info, to price its logging;
//   - orchestratord-base (-base-orchd PATH): another build of the daemon, to measure a change
//     before/after in the same run;
//   - orchestratord-nosync (opt-in: name it in -contenders; scenarios 1 and 2): this build with
//     journal.sync none, so that a 202 waits for its admission record's write and not for its
//     fdatasync: what the default durability mode costs admission.
//
// The same client, tools/loadgen (one process per run, loopback only, bounded in requests and
// time), drives every contender. Scenarios:
//
//  1. admission: closed loop at concurrency 1, 16, 64 with 1-token tasks (orchestratord:
//     POST /v1/tasks, which admits and answers 202; the others: a 1-token non-stream
//     completion, their nearest equivalent);
//  2. relay: 1, 100 and 1,000 concurrent streams of 256 tokens from a simulator that emits a
//     token every 5 ms: aggregate tokens/s, added per-token latency (receive time minus the
//     emission stamp in each token), TTFT, and the relay's CPU time per 1,000 tokens;
//  3. idle: 1,000 and 5,000 concurrent slow streams (a token every 5 s), each measurement on a
//     fresh simulator and relay: VmRSS of the relay's process group before and with the streams
//     open, per stream;
//  4. queue: `go test -bench` of the admission queue (enqueue, dispatch, cancel at depths 10,
//     1,000, 100,000);
//  5. aiperf: an independent client, NVIDIA's aiperf (PyPI, pinned by setup.sh in the git-ignored
//     .tools/aiperf-venv), streams chat completions from the simulator's OpenAI routes (direct)
//     and from orchestratord's OpenAI-compatible facade, with the Hugging Face tokenizer
//     generated for the project's models (internal/gguf.WriteHFTokenizer).
//
// After every run the harness waits until the simulator has no open generation and the relay
// is idle; a relay still busy 5 s later (LiteLLM, after loadgen aborted its unfinished requests)
// is restarted, and so is one that died between runs; the report lists each restart.
//
// Scenarios 1 and 2 run in rounds; within a round each (scenario, parameter) runs every
// contender back to back, in an order rotated each round and reversed on odd rounds, so that
// drift on a shared machine hits all contenders alike. The report gives medians over rounds and
// the ratios orchestratord ÷ each other contender. Outputs: <out>/<name>.json (every run, raw
// samples, medians, ratios, machine, versions, why a contender did not run) and <out>/<name>.md
// (the tables); logs, generated configurations and each loadgen result go to the scratch
// directory (tmp/bench/scratch/<name>, git-ignored).
//
// Usage:
//
//	go run ./tools/bench [-plan short|full] [-out DIR] [-name NAME] [-rounds N]
//	                     [-scenarios admission,relay,idle,queue,aiperf] [-contenders direct,nginx,orchestratord,litellm]
//	                     [-base-orchd PATH] [-litellm-venv DIR] [-aiperf-venv DIR] [-setup-status DIR] [-skip-build]
//	go run ./tools/bench profile [-scenario relay|admission|idle] [-streams N] [-requests N] [-journal-sync MODE] [-trace] [-out DIR]
//
// The profile subcommand runs the daemon in this process (impl/app, assembled as
// cmd/orchestratord does) on a simulator, drives one scenario with loadgen and writes a CPU
// profile and an allocation profile of exactly the measured run (relay, admission), or the heap
// and goroutine stacks per open stream (idle), with `go tool pprof -top` listings; -trace adds an
// execution trace of the measured run (`go tool trace -pprof=sched`: where goroutines waited to
// run). The daemon itself has no pprof endpoint.
package main
