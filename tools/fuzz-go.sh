#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a bounded time each (default 10s).
set -euo pipefail
t=${1:-10s}
cd "$(dirname "$0")/.."
fail=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== $pkg $target ($t)"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$t" "$pkg"; then
      fail=1
    fi
  done
done
exit $fail
