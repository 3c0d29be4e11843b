#!/usr/bin/env bash
# Runs schemathesis against the real daemon: builds cmd/orchestratord, starts it on a free loopback
# port with contracts/schemathesis/daemon.yaml (a managed llama.cpp llama-server on the tiny model,
# small queue) in a fresh state directory with a random API key, waits until the pool is ready, runs
# the schemathesis passes of contracts/schemathesis/schemathesis.toml, stops the daemon with SIGTERM
# and exits non-zero on any failure (a schemathesis failure, a daemon that crashed, logged a panic
# or did not stop cleanly).
#
# Usage: tools/schemathesis.sh [ci|long] [extra `schemathesis run` options...]
#   ci    (default, `make fuzz`)      FUZZ_EXAMPLES examples per operation (default 200)
#   long  (`make fuzz-long`)          FUZZ_EXAMPLES default 2000
# Environment:
#   FUZZ_EXAMPLES   max examples per operation and phase
#   FUZZ_SEED       the seed (default: the first 8 hex digits of the commit, `git rev-parse HEAD`,
#                   as an integer, so that each commit explores new cases; always printed)
#   FUZZ_WORKERS    schemathesis workers (default 1)
#   FUZZ_REPORT_DIR where the JUnit/NDJSON reports and the daemon log go (default tmp/schemathesis)
#   ORCHD_LLAMA_SERVER  llama-server binary (default: tools/ensure-llama-server.sh)
#   SCHEMATHESIS    schemathesis executable (default .venv/bin/schemathesis, see `make venv`)
set -euo pipefail

mode=${1:-ci}
case "$mode" in
ci | long) shift || true ;;
-*) mode=ci ;;
*)
	echo "usage: $0 [ci|long] [schemathesis run options...]" >&2
	exit 2
	;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=contracts/schemathesis
st=${SCHEMATHESIS:-$root/.venv/bin/schemathesis}
report_dir=${FUZZ_REPORT_DIR:-$root/tmp/schemathesis}
# One worker: schemathesis workers are threads, and with two of them hypothesis' ast.parse of a
# lambda's source failed here under Python 3.11.7 ("SystemError: AST constructor recursion depth
# mismatch", a CPython thread-safety bug), which schemathesis reports as an error of the run. The
# daemon answers in milliseconds, so generation (CPU-bound, one core under the GIL anyway) sets
# the pace; more workers would gain little.
workers=${FUZZ_WORKERS:-1}
if [[ $mode == long ]]; then
	examples=${FUZZ_EXAMPLES:-2000}
else
	examples=${FUZZ_EXAMPLES:-200}
fi

log() { printf '[schemathesis.sh] %s\n' "$*" >&2; }

# The pinned schemathesis must be installed (make venv does it).
want=$(sed -nE 's/^schemathesis==([^ ;#]+).*/\1/p' "$dir/requirements.txt")
have=$("$st" --version 2>/dev/null | sed -nE 's/.*version ([^ ]+).*/\1/p' || true)
if [[ -z $have || $have != "$want" ]]; then
	log "schemathesis $want is not installed at $st (found: ${have:-none}); run: make venv"
	exit 2
fi

llama=${ORCHD_LLAMA_SERVER:-}
if [[ -z $llama ]]; then
	llama=$(bash tools/ensure-llama-server.sh)
fi
[[ -x $llama ]] || {
	log "llama-server not executable: $llama"
	exit 2
}

# The custom checks of hooks.py have tests of their own: a check that is wrong fails nothing.
log "testing the custom checks (contracts/schemathesis/hooks_test.py)"
if ! out=$(PYTHONDONTWRITEBYTECODE=1 "$(dirname "$st")/python" -m unittest discover -s "$dir" -p hooks_test.py 2>&1); then
	printf '%s\n' "$out" >&2
	log "the custom checks' tests failed"
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/orchd-fuzz.XXXXXX")
state=$work/state
mkdir -p "$state/models" "$report_dir"
daemon_log=$report_dir/daemon.log
: >"$daemon_log"
pid=
stpid=
cleanup() {
	if [[ -n $stpid ]] && kill -0 "$stpid" 2>/dev/null; then
		kill -TERM "$stpid" 2>/dev/null || true
		wait "$stpid" 2>/dev/null || true
	fi
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
# Children run in the background and are waited for, so that a signal is handled at once.
trap 'exit 130' INT TERM

log "building the daemon and the tiny model"
go build -o "$work/orchestratord" ./cmd/orchestratord
go run ./tools/ggufgen -o "$state/models/tiny.gguf" >/dev/null
# A file of models_dirs that is not a model: hooks.py folds positive reload references into it,
# and its reload rolls back (409). hooks.py assumes the default models_dirs, <state>/models.
printf 'not a GGUF model\n' >"$state/models/not-a-model.gguf"
if grep -q '^models_dirs:' "$dir/daemon.yaml"; then
	log "$dir/daemon.yaml sets models_dirs; hooks.py assumes the default (<state>/models)"
	exit 2
fi
export ORCHD_FUZZ_STATE_DIR=$state

# hooks.py folds positive createTask cases into the pool's ctx_max (a configuration value).
ORCHD_FUZZ_CTX_MAX=$(sed -nE 's/^[[:space:]]*ctx_max:[[:space:]]*([0-9]+).*/\1/p' "$dir/daemon.yaml" | head -n1)
export ORCHD_FUZZ_CTX_MAX
# hooks.py checks that 413 answers exactly the bodies over the daemon's body limit.
ORCHD_FUZZ_BODY_LIMIT=$(sed -nE 's/^body_limit_bytes:[[:space:]]*([0-9]+).*/\1/p' "$dir/daemon.yaml" | head -n1)
[[ -n $ORCHD_FUZZ_BODY_LIMIT ]] || {
	log "body_limit_bytes missing from $dir/daemon.yaml"
	exit 2
}
export ORCHD_FUZZ_BODY_LIMIT

key=orchd_fuzz_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export ORCHD_FUZZ_KEY=$key

# --addr 127.0.0.1:0: the kernel picks a free port; the daemon logs the address it bound.
ORCHD_API_KEYS=$key ORCHD_LLAMA_SERVER=$llama "$work/orchestratord" \
	--config "$dir/daemon.yaml" --addr 127.0.0.1:0 --state-dir "$state" >"$daemon_log" 2>&1 &
pid=$!

addr=
for _ in $(seq 1 100); do
	addr=$(sed -nE 's/.*msg="orchestratord listening" addr=([0-9.:]+).*/\1/p' "$daemon_log" | head -n1)
	[[ -n $addr ]] && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if [[ -z $addr ]]; then
	log "the daemon did not start:"
	cat "$daemon_log" >&2
	exit 1
fi
base=http://$addr
log "daemon pid $pid at $base; waiting for pool default to be ready"
ready=
for _ in $(seq 1 180); do
	if curl -fsS -H "X-API-Key: $key" "$base/v1/pools/default/health" 2>/dev/null | grep -q '"ready":true'; then
		ready=1
		break
	fi
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.5
done
if [[ -z $ready ]]; then
	log "pool default did not become ready:"
	tail -n 50 "$daemon_log" >&2
	exit 1
fi

# The seed: FUZZ_SEED, else derived from the commit (reproducible for a commit, new cases for the
# next one), else (no git) a fixed one.
seed=${FUZZ_SEED:-}
if [[ -n $seed ]]; then
	[[ $seed =~ ^[0-9]+$ ]] || {
		log "FUZZ_SEED must be a non-negative integer, got: $seed"
		exit 2
	}
	log "seed $seed (FUZZ_SEED)"
elif rev=$(git rev-parse HEAD 2>/dev/null) && [[ $rev =~ ^[0-9a-f]{8} ]]; then
	seed=$((16#${rev:0:8}))
	dirty=
	[[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || dirty=", with uncommitted changes"
	log "seed $seed (commit ${rev:0:12}$dirty); rerun with FUZZ_SEED=$seed"
else
	seed=20261128
	log "seed $seed (fixed: not a git checkout)"
fi
seed_args=(--seed "$seed")

# Pass 1: every operation but drainPool, against a ready pool. A drain stops admission for the
# rest of the daemon's life (only a successful reload ends it), so it gets its own pass.
# Pass 2: drainPool, then the operations whose answers depend on the pool's state, against the
# drained pool (createTask must now answer 503 POOL_UNAVAILABLE, health/capabilities report it).
status=0
run_pass() {
	local name=$1
	shift
	log "pass $name: $* (max examples $examples, workers $workers)"
	local rc=0
	"$st" --config-file "${cfg:-$dir/schemathesis.toml}" run openapi/orchestratord.yaml \
		--url "$base" --max-examples "$examples" --workers "$workers" "${seed_args[@]}" \
		--report junit,ndjson --report-dir "$report_dir" \
		--report-junit-path "$report_dir/$name.junit.xml" --report-ndjson-path "$report_dir/$name.ndjson" \
		"$@" "${extra[@]}" &
	stpid=$!
	wait "$stpid" || rc=$?
	stpid=
	if ((rc != 0)); then
		log "pass $name failed (exit $rc)"
		status=1
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		log "the daemon died during pass $name"
		status=1
	fi
}
extra=("$@")
run_pass ready --exclude-operation-id drainPool
if kill -0 "$pid" 2>/dev/null; then
	# Drain through the public API first, so that every case of this pass sees a drained pool
	# whatever order schemathesis picks.
	curl -fsS -o /dev/null -H "X-API-Key: $key" -H 'Content-Type: application/json' \
		-d '{"deadline_ms": 1000}' "$base/v1/pools/default/drain" || {
		log "draining pool default failed"
		status=1
	}
	run_pass drained --include-operation-id drainPool --include-operation-id createTask \
		--include-operation-id getPoolHealth --include-operation-id getCapabilities
fi

log "stopping the daemon (SIGTERM)"
if kill -0 "$pid" 2>/dev/null; then
	kill -TERM "$pid"
	drc=0
	wait "$pid" || drc=$?
	pid=
	if ((drc != 0)); then
		log "the daemon exited with $drc after SIGTERM"
		status=1
	fi
else
	wait "$pid" 2>/dev/null || true
	pid=
	log "the daemon was not running at the end"
	status=1
fi
# A handler panic is recovered into a 500 (which schemathesis reports), but anything logged at
# ERROR level (internal errors, recovered panics) or a Go runtime panic fails the run too. One
# ERROR is the run's own doing: the engine started for a reload to not-a-model.gguf (hooks.py)
# fails, and the supervisor logs that before the pool rolls back; only those lines are expected.
expected='level=ERROR msg="engine process failed" .*not-a-model\.gguf'
if grep -nE '^(panic|fatal error): |level=ERROR|WARNING: DATA RACE' "$daemon_log" | grep -vE "$expected" | cut -c1-400 >&2; then
	log "the daemon logged errors (see $daemon_log)"
	status=1
fi
if n=$(grep -cE "$expected" "$daemon_log"); then
	log "$n expected engine start failures (reloads to not-a-model.gguf, rolled back)"
fi
log "reports and daemon log: $report_dir"
if ((status != 0)); then
	log "FAILED"
else
	log "passed"
fi
exit $status
