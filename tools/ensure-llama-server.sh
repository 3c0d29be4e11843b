#!/usr/bin/env bash
# ensure-llama-server.sh — print the path of a usable llama-server, installing one if needed.
#
# Order (the same as engine/llamacpp/llamatest.ServerPath):
#   1. $ORCHD_LLAMA_SERVER, if it names an executable file;
#   2. llama-server on PATH;
#   3. <repo>/.tools/llama/llama-server, installed there by tools/install-llama-server.sh
#      when missing or broken.
# The path alone goes to stdout; progress goes to stderr. Idempotent, and safe to run
# concurrently (the install holds a lock).
set -euo pipefail

log() { echo "ensure-llama-server: $*" >&2; }

if [ -n "${ORCHD_LLAMA_SERVER:-}" ]; then
	if [ -f "$ORCHD_LLAMA_SERVER" ] && [ -x "$ORCHD_LLAMA_SERVER" ]; then
		echo "$ORCHD_LLAMA_SERVER"
		exit 0
	fi
	log "ORCHD_LLAMA_SERVER=$ORCHD_LLAMA_SERVER is not an executable file; looking further"
fi

if p=$(command -v llama-server 2>/dev/null) && [ -n "$p" ]; then
	echo "$p"
	exit 0
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$REPO/.tools/llama"
BIN="$DIR/llama-server"

works() { [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; }

if ! works; then
	mkdir -p "$DIR"
	exec 9>"$DIR/.lock"
	if command -v flock >/dev/null; then
		flock 9
	fi
	if ! works; then # another run may have installed it while we waited
		log "installing llama-server into $DIR"
		bash "$REPO/tools/install-llama-server.sh" "$DIR" >&2
		works || { log "installed llama-server does not run"; exit 1; }
	fi
fi
echo "$BIN"
