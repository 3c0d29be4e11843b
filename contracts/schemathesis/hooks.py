"""schemathesis hooks for orchestratord (loaded through `hooks` in schemathesis.toml).

They encode request constraints that OpenAPI 3.0 cannot express, so that *positive* cases are
really valid and `positive_data_acceptance` keeps its full meaning ("a valid request is never
answered 400"). Negative cases are left untouched. Nothing here changes what a check accepts.

createTask (POST /v1/tasks), both documented in the contract:
- `ctx` above the pool's `ctx_max` is 400 ("Context length the task needs; above the pool's
  `ctx_max` is 400"). ctx_max comes from the daemon's configuration, not from the schema:
  ORCHD_FUZZ_CTX_MAX (tools/schemathesis.sh reads it from contracts/schemathesis/daemon.yaml).
- `max_tokens` must not exceed `ctx` (a cross-field constraint).

createChatCompletion and createCompletion (the `openai` tag): `max_tokens` (and
`max_completion_tokens`) above the model's context length (`ctx_max`) is 400, as documented.
Positive cases fold them into 1..FACADE_MAX_TOKENS, below ctx_max: each such request generates
that many tokens on the real engine before it answers, and a few dozen keep the run short.
"""

from __future__ import annotations

import os

import schemathesis
from schemathesis.core.parameters import ParameterLocation

CTX_MAX = int(os.environ.get("ORCHD_FUZZ_CTX_MAX", "4096"))


FACADE_MAX_TOKENS = min(64, CTX_MAX)
FACADE_PATHS = ("/v1/chat/completions", "/v1/completions")


def _is_facade(case) -> bool:
    op = case.operation
    return op.method.upper() == "POST" and op.path in FACADE_PATHS


def _is_create_task(case) -> bool:
    op = case.operation
    return op.method.upper() == "POST" and op.path == "/v1/tasks"


def _positive_body(case) -> bool:
    meta = case.meta
    if meta is None:  # no generation metadata: a positive case
        return True
    return not meta.is_negative_at(ParameterLocation.BODY)


@schemathesis.hook
def map_case(context, case):
    if _is_create_task(case) and _positive_body(case):
        _fold_task(case)
    if _is_facade(case) and _positive_body(case):
        _fold_facade(case)
    return case


@schemathesis.hook
def before_add_examples(context, examples):
    # The examples phase does not go through map_case.
    for case in examples:
        if _is_create_task(case) and _positive_body(case):
            _fold_task(case)
        if _is_facade(case) and _positive_body(case):
            _fold_facade(case)


def _fold_task(case) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    ctx = body.get("ctx")
    if isinstance(ctx, int) and not isinstance(ctx, bool) and ctx > CTX_MAX:
        # Keep the variety of generated values, folded into the range the pool serves.
        body["ctx"] = ctx = (ctx - 1) % CTX_MAX + 1
    max_tokens = body.get("max_tokens")
    if (
        isinstance(ctx, int)
        and isinstance(max_tokens, int)
        and not isinstance(max_tokens, bool)
        and ctx >= 1
        and max_tokens > ctx
    ):
        body["max_tokens"] = (max_tokens - 1) % ctx + 1
    case.body = body


def _fold_facade(case) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    for key in ("max_tokens", "max_completion_tokens"):
        n = body.get(key)
        if isinstance(n, int) and not isinstance(n, bool) and n > FACADE_MAX_TOKENS:
            body[key] = (n - 1) % FACADE_MAX_TOKENS + 1
    case.body = body
