#!/usr/bin/env bash
# GPU smoke check for a host with an NVIDIA GPU: what the mocked tests cannot show.
#   1. NVML through go-nvml sees the devices (engine/gpu's TestRealNVML, ORCHD_NVML_REAL=1).
#   2. A daemon with a managed replica on GPU 0 (the engine simulator stands in for vLLM, so
#      no model is needed) reports the GPU in GET /v1/capabilities and the replica's devices
#      in pool health, runs a task whose KV memory fits the device, and refuses to place one
#      whose KV memory (ctx × kv_bytes_per_token) is more than the device has.
# Usage: tools/gpu-smoke.sh [BIN_DIR]
#   ORCHD_SMOKE_NO_GPU=1 runs it on a host without a GPU, to check the script itself: it then
#   expects no GPU in capabilities, and the large task placed (no inventory, no VRAM check).
#   BIN_DIR holds orchestratord, enginesim and gpu.test; without it they are built into
#   tmp/gpu-smoke/bin (needs Go). Exits non-zero on the first check that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-}
WORK=$(mktemp -d /tmp/gpu-smoke.XXXXXX)
if [ -z "$BIN" ]; then
  BIN=tmp/gpu-smoke/bin
  mkdir -p "$BIN"
  go build -o "$BIN/" ./cmd/orchestratord ./tools/enginesim
  go test -c -o "$BIN/gpu.test" ./engine/gpu
fi
BIN=$(cd "$BIN" && pwd)
PORT=${ORCHD_SMOKE_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
BASE=http://127.0.0.1:$PORT
fail() { echo "gpu-smoke: FAIL: $*" >&2; exit 1; }

echo "== 1. NVML (engine/gpu TestRealNVML)"
NOGPU=${ORCHD_SMOKE_NO_GPU:-}
if [ -z "$NOGPU" ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  ORCHD_NVML_REAL=1 "$BIN/gpu.test" -test.run 'RealNVML|SystemNVML' -test.v -test.count=1 || fail "NVML tests"
else
  "$BIN/gpu.test" -test.run 'SystemNVML' -test.count=1 || fail "NVML tests"
fi

echo "== 2. a daemon with a managed replica on GPU 0"
# 1 MiB of KV memory per token: a 2,048-token context needs 2 GiB, a 1,000,000-token one about
# 977 GiB, more than any single GPU has.
cat > "$WORK/config.yaml" <<YAML
addr: 127.0.0.1:$PORT
state_dir: $WORK/state
pools:
  - id: gpu
    engine: vllm
    model_ref: hf:sim/sim
    model_id: sim
    ctx_max: 1000000
    slots: 4
    kv_bytes_per_token: 1048576
    workloads: [completion]
    replicas:
      - managed:
          command: ["$BIN/enginesim", "-addr", "127.0.0.1:{port}", "-model", "{model_id}", "-n-ctx", "{ctx_max}"]
          devices: [0]
          start_timeout: 30s
YAML
env -u ORCHD_STATE_DIR -u ORCHD_ADDR "$BIN/orchestratord" --check-config "$WORK/config.yaml"
# The configuration file alone: no ORCHD_* variable of the caller's (make exports
# ORCHD_STATE_DIR) overrides it.
env -u ORCHD_ADDR -u ORCHD_API_KEYS -u ORCHD_API_KEYS_FILE -u ORCHD_CONFIG -u ORCHD_STATE_DIR \
  "$BIN/orchestratord" --config "$WORK/config.yaml" > "$WORK/daemon.log" 2>&1 &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null; echo "-- daemon log (tail)"; tail -n 20 "$WORK/daemon.log"; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
  kill -0 $DAEMON 2>/dev/null || fail "the daemon exited"
  [ -s "$WORK/state/api-key" ] && curl -sf "$BASE/openapi.json" >/dev/null 2>&1 && break
  sleep 0.2
done
[ -s "$WORK/state/api-key" ] || fail "the daemon did not start in 20 s"
KEY=$(cat "$WORK/state/api-key")
get() { curl -sf -H "X-API-Key: $KEY" "$BASE$1"; }
for _ in $(seq 1 150); do
  get /v1/pools/gpu/health | grep -q '"state":"ready"' && break
  sleep 0.2
done
echo "-- GET /v1/capabilities (gpus)"
get /v1/capabilities | NOGPU=$NOGPU python3 -c '
import json, os, sys
g = json.load(sys.stdin)["gpus"]
print(json.dumps(g, indent=1))
if os.environ["NOGPU"]:
    sys.exit("a GPU in capabilities on a host without one" if g["available"] else 0)
if not g["available"] or not g["devices"]:
    sys.exit("no GPU in capabilities")
d = g["devices"][0]
if d["memory_total_bytes"] <= 0 or not d["name"]:
    sys.exit("device 0 incomplete")
' || fail "capabilities"
echo "-- GET /v1/pools/gpu/health"
get /v1/pools/gpu/health | python3 -c '
import json, sys
h = json.load(sys.stdin)
print(json.dumps(h, indent=1))
r = h["replicas"][0]
if r["state"] != "ready" or r.get("devices") != [0]:
    sys.exit("replica not ready on device 0")
' || fail "pool health"

# submit CTX: posts a 16-token task with that context, streams it, prints the stream's last
# event name and the task's state.
submit() {
  local adm task
  adm=$(curl -s -H "X-API-Key: $KEY" -H 'Content-Type: application/json' "$BASE/v1/tasks" -d "{
    \"workload\": \"completion\", \"engine\": \"vllm\", \"model_ref\": \"sim\", \"ctx\": $1,
    \"priority\": \"interactive\", \"prompt\": \"hello\", \"max_tokens\": 16, \"deadline_ms\": 30000}") || return 1
  echo "admission: $adm"
  task=$(echo "$adm" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
  curl -sN --max-time 30 -H "X-API-Key: $KEY" "$BASE/v1/tasks/$task/stream" > "$WORK/stream-$1" || true
  echo "stream's last event: $(grep '^event:' "$WORK/stream-$1" | tail -n 1)"
  get "/v1/tasks/$task" > "$WORK/task-$1"
  python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))
print("task:", t["state"], json.dumps(t.get("placement") or t.get("error")))
' "$WORK/task-$1"
}
echo "-- a task whose KV memory fits (ctx 2048: 2 GiB)"
submit 2048
grep -q '"state":"succeeded"' "$WORK/task-2048" || fail "the fitting task did not complete"
echo "-- a task whose KV memory does not fit (ctx 1000000: about 977 GiB)"
submit 1000000
if [ -n "$NOGPU" ]; then
  grep -q '"state":"succeeded"' "$WORK/task-1000000" || fail "without an inventory the large task should run"
else
  grep -q '"state":"succeeded"' "$WORK/task-1000000" && fail "a task larger than the GPU was placed"
  grep -q 'KV memory' "$WORK/task-1000000" || fail "the refused task does not say why"
  grep -q '"retriable":false' "$WORK/task-1000000" || fail "the refused task is retriable"
fi
echo "gpu-smoke: ok"
