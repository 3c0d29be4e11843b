#!/usr/bin/env bash
# Installs the benchmark's third-party contenders, idempotently, and says why when one cannot be:
#   - nginx: Debian's package, with apt-get, only when no nginx is on PATH or in /usr/sbin. The
#     package's service is never started (policy-rc.d); tools/bench runs nginx itself with a
#     private prefix and configuration.
#   - LiteLLM: the proxy from PyPI at a pinned version, into a git-ignored virtualenv.
#   - aiperf: NVIDIA's benchmark client from PyPI at a pinned version, into a git-ignored
#     virtualenv (scenario 5 drives orchestratord's OpenAI-compatible routes with it).
# Usage: tools/bench/setup.sh STATUS_DIR
# For each contender that is unavailable afterwards, STATUS_DIR/<contender>.reason holds the
# exact error; tools/bench copies it into the results. The script itself always exits 0.
set -uo pipefail

STATUS_DIR=${1:?usage: setup.sh STATUS_DIR}
# litellm[proxy] 1.108.7 is the newest release whose proxy extra resolves on PyPI as mirrored
# here: from 1.108.8 on, the extra pins litellm-proxy-extras / litellm-enterprise post-releases
# that are not published, and 1.110.x also needs a `litellm-proxy` distribution that is not.
LITELLM_VERSION=${LITELLM_VERSION:-1.108.7}
VENV=${LITELLM_VENV:-.tools/litellm-venv}
# aiperf 0.13.0: runs offline here with a local Hugging Face tokenizer directory (the bench
# generates one for the project's models); its `builtin` tokenizer downloads tiktoken's
# encoding at run time, which cannot work offline.
AIPERF_VERSION=${AIPERF_VERSION:-0.13.0}
AIPERF_VENV=${AIPERF_VENV:-.tools/aiperf-venv}
mkdir -p "$STATUS_DIR"
rm -f "$STATUS_DIR"/nginx.reason "$STATUS_DIR"/litellm.reason "$STATUS_DIR"/aiperf.reason

# --- nginx ---------------------------------------------------------------------------------
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  echo "setup: nginx present"
elif [ "$(id -u)" != 0 ]; then
  echo "nginx is not installed and installing it needs root (apt-get install nginx)" > "$STATUS_DIR/nginx.reason"
elif ! command -v apt-get >/dev/null 2>&1; then
  echo "nginx is not installed and there is no apt-get on this machine" > "$STATUS_DIR/nginx.reason"
else
  echo "setup: installing Debian's nginx"
  created_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
  fi
  log="$STATUS_DIR/nginx-install.log"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; } >"$log" 2>&1; then
    { echo "apt-get install nginx failed:"; tail -n 5 "$log"; } > "$STATUS_DIR/nginx.reason"
  fi
  [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

# --- LiteLLM -------------------------------------------------------------------------------
have_litellm() {
  [ -x "$VENV/bin/litellm" ] && "$VENV/bin/python" - "$LITELLM_VERSION" <<'EOF' 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("litellm") == sys.argv[1] else 1)
EOF
}
if have_litellm; then
  echo "setup: LiteLLM $LITELLM_VERSION present in $VENV"
elif ! command -v python3 >/dev/null 2>&1; then
  echo "python3 is not installed, so the LiteLLM proxy cannot be installed" > "$STATUS_DIR/litellm.reason"
else
  echo "setup: installing litellm[proxy]==$LITELLM_VERSION into $VENV (first time only; a few minutes)"
  log="$STATUS_DIR/litellm-install.log"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"; } >"$log" 2>&1; then
    { echo "pip install litellm[proxy]==$LITELLM_VERSION failed:"; grep -E '^(ERROR|error)' "$log" | tail -n 5 || tail -n 5 "$log"; } > "$STATUS_DIR/litellm.reason"
  elif ! have_litellm; then
    echo "litellm[proxy]==$LITELLM_VERSION installed but $VENV/bin/litellm is missing or reports another version" > "$STATUS_DIR/litellm.reason"
  fi
fi

# --- aiperf --------------------------------------------------------------------------------
have_aiperf() {
  [ -x "$AIPERF_VENV/bin/aiperf" ] && "$AIPERF_VENV/bin/python" - "$AIPERF_VERSION" <<'EOF' 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("aiperf") == sys.argv[1] else 1)
EOF
}
if have_aiperf; then
  echo "setup: aiperf $AIPERF_VERSION present in $AIPERF_VENV"
elif ! command -v python3 >/dev/null 2>&1; then
  echo "python3 is not installed, so aiperf cannot be installed" > "$STATUS_DIR/aiperf.reason"
else
  echo "setup: installing aiperf==$AIPERF_VERSION into $AIPERF_VENV (first time only; a few minutes, about 1.2 GB)"
  log="$STATUS_DIR/aiperf-install.log"
  if ! { python3 -m venv "$AIPERF_VENV" && "$AIPERF_VENV/bin/pip" install -q --disable-pip-version-check "aiperf==$AIPERF_VERSION"; } >"$log" 2>&1; then
    { echo "pip install aiperf==$AIPERF_VERSION failed:"; grep -E '^(ERROR|error)' "$log" | tail -n 5 || tail -n 5 "$log"; } > "$STATUS_DIR/aiperf.reason"
  elif ! have_aiperf; then
    echo "aiperf==$AIPERF_VERSION installed but $AIPERF_VENV/bin/aiperf is missing or reports another version" > "$STATUS_DIR/aiperf.reason"
  fi
fi
exit 0
