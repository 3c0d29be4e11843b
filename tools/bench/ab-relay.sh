#!/usr/bin/env bash
# ab-relay.sh: two builds of orchestratord, A and B, relaying streams from one simulator, in
# alternating windows on long-lived daemons. `make bench-full` starts each run on a fresh
# daemon for a few seconds; what builds up only over minutes of sustained load (journal
# compactions, heap growth) shows here.
#
#   tools/bench/ab-relay.sh A_BINARY B_BINARY
#
# Environment: STREAMS (concurrent streams, 1000), REQUESTS (streams per window, 4000), TOKENS
# (256), ROUNDS (3), OUT (tmp/bench/ab-relay), A_CONF / B_CONF (YAML lines appended to each
# daemon's configuration, e.g. 'journal: {enabled: false}'), PERF_EVENTS (perf events counted
# on the daemon over each window and printed per 1,000 tokens, e.g.
# 'context-switches,syscalls:sys_enter_nanosleep,syscalls:sys_enter_futex'; needs perf).
#
# Per window: tokens/s and the added per-token latency (loadgen), the daemon's CPU per 1,000
# tokens (utime+stime from /proc over the window), the bytes it wrote to files per token (its
# journal: write_bytes from /proc/PID/io), the failed streams by class when any; at
# the end each daemon's peak RSS (VmHWM) and its journal compactions (from its info-level log:
# how long each took, how long it held the writers), then each figure's median over each
# daemon's windows and B's median ÷ A's (one window of a build spreads by ±10% and more at
# 1,000 streams: read the ratios of several windows, never one).
set -euo pipefail

if [ $# -ne 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
A_BIN=$(realpath "$1")
B_BIN=$(realpath "$2")
STREAMS=${STREAMS:-1000}
REQUESTS=${REQUESTS:-4000}
TOKENS=${TOKENS:-256}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-tmp/bench/ab-relay}
KEY=sk-bench-0123456789abcdef

cd "$(dirname "$0")/../.."
rm -rf "$OUT"
mkdir -p "$OUT/bin"
OUT=$(cd "$OUT" && pwd) # the daemons' state_dir is under it, whatever the caller's OUT
go build -o "$OUT/bin/" ./tools/enginesim ./tools/loadgen

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SIM_PORT=$(freeport)
"$OUT/bin/enginesim" -addr "127.0.0.1:$SIM_PORT" -token-delay 5ms -model sim -log-level warn >"$OUT/sim.log" 2>&1 &
PIDS=($!)
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

start() { # name binary port extra-config
  local pools=""
  for i in 0 1 2; do
    pools+="  - id: bench$i
    engine: llamacpp
    model_ref: sim
    ctx_max: 4096
    slots: 1024
    replicas:
      - url: http://127.0.0.1:$SIM_PORT
"
  done
  cat >"$OUT/$1.yaml" <<EOF
addr: 127.0.0.1:$3
state_dir: $OUT/state-$1
log_level: info
log_format: text
admission: {capacity: 100000, policy: reject}
sessions: {max_turns: 1000000, max_sessions: 100000}
tasks: {max_retained: 1024}
shutdown_grace: 2s
pools:
$pools$4
EOF
  ORCHD_API_KEYS=$KEY "$2" --config "$OUT/$1.yaml" >"$OUT/$1.log" 2>&1 &
  echo $!
}
A_PORT=$(freeport)
B_PORT=$(freeport)
A_PID=$(start a "$A_BIN" "$A_PORT" "${A_CONF:-}")
B_PID=$(start b "$B_BIN" "$B_PORT" "${B_CONF:-}")
PIDS+=("$A_PID" "$B_PID")
for port in "$A_PORT" "$B_PORT"; do
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done
sleep 1 # the pools' first readiness probe

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
disk_bytes() { awk '$1 == "write_bytes:" {print $2}' "/proc/$1/io"; }
window() { # name pid port
  local t0 t1 w0 w1 perf=""
  if [ -n "${PERF_EVENTS:-}" ]; then
    perf stat -x, -e "$PERF_EVENTS" -p "$2" -o "$OUT/$1.perf" &
    perf=$!
  fi
  t0=$(cpu_ticks "$2")
  w0=$(disk_bytes "$2")
  "$OUT/bin/loadgen" -target orchd-stream -url "http://127.0.0.1:$3" -api-key "$KEY" -model sim \
    -concurrency "$STREAMS" -requests "$REQUESTS" -tokens "$TOKENS" -duration 10m >"$OUT/$1.txt" 2>&1
  t1=$(cpu_ticks "$2")
  w1=$(disk_bytes "$2")
  local tokens
  tokens=$(awk '$1 == "tokens" {print $2}' "$OUT/$1.txt")
  if [ -n "$perf" ]; then
    kill -INT "$perf"
    wait "$perf" || true
  fi
  printf '%-4s cpu %6.2f ms/1k tokens  disk %5.1f B/token  %s  %s%s\n' "$1" \
    "$(echo "($t1 - $t0) * 1000 / $(getconf CLK_TCK) * 1000 / $tokens" | bc -l)" \
    "$(echo "($w1 - $w0) / $tokens" | bc -l)" \
    "$(grep -E '^ +tokens ' "$OUT/$1.txt" | sed -E 's/ +/ /g; s/\(stamped.*//')" \
    "$(grep -E '^ +token added' "$OUT/$1.txt" | sed -E 's/ +/ /g; s/max.*//')" \
    "$(grep -E '^ +errors ' "$OUT/$1.txt" | sed -E 's/^ +errors +/  FAILED: /')"
  if [ -n "$perf" ]; then
    awk -F, -v t="$tokens" '$1 ~ /^[0-9]+$/ {printf "     %-32s %8.1f per 1k tokens\n", $3, $1 * 1000 / t}' "$OUT/$1.perf"
  fi
}
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then
    window "a$r" "$A_PID" "$A_PORT"; window "b$r" "$B_PID" "$B_PORT"
  else
    window "b$r" "$B_PID" "$B_PORT"; window "a$r" "$A_PID" "$A_PORT"
  fi
done | tee "$OUT/windows.txt"
for d in a b; do
  pid=$A_PID
  [ $d = b ] && pid=$B_PID
  echo "$d peak RSS $(awk '/VmHWM/ {print $2, $3}' "/proc/$pid/status"), compactions:"
  grep 'journal compacted' "$OUT/$d.log" | sed -E 's/.*(bytes_before=[0-9]+).*(took=[^ ]+).*(writers_held=[^ ]+).*/  \1 \2 \3/; s/.*(bytes_before=[0-9]+) (bytes_after=[0-9]+)$/  \1 \2/' || echo "  none"
done

# The medians over each daemon's windows, from the lines printed above.
median() { # daemon (a or b), the word next to the figure in a window's line, where the figure is (1: after, -1: before)
  awk -v d="$1" -v k="$2" -v at="$3" '$1 ~ "^" d "[0-9]+$" { for (i = 2; i <= NF; i++) if ($i == k) { print $(i + at); break } }' \
    "$OUT/windows.txt" |
    sort -g | awk '{v[NR] = $1} END {if (NR == 0) exit; print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}
echo "medians over the windows (b ÷ a: below 1 is better for CPU and latency, above 1 for tokens/s):"
printf '     %14s %14s %14s %14s %14s\n' "cpu ms/1k tok" "disk B/token" "tokens/s" "p50 ms" "p99 ms"
figures=("cpu 1" "disk 1" "tokens/s -1" "p50 1" "p99 1")
declare -A med
for d in a b; do
  line=""
  for i in "${!figures[@]}"; do
    read -r key at <<<"${figures[$i]}"
    med[$d$i]=$(median "$d" "$key" "$at")
    line+=$(printf ' %14s' "${med[$d$i]}")
  done
  echo "$d   $line"
done
line=""
for i in "${!figures[@]}"; do
  line+=$(printf ' %14s' "$(awk -v a="${med[a$i]}" -v b="${med[b$i]}" 'BEGIN {if (a > 0) printf "%.3f", b / a; else print "—"}')")
done
echo "b÷a $line"
