"""schemathesis hooks for orchestratord (loaded through `hooks` in schemathesis.toml).

They encode request constraints that OpenAPI 3.0 cannot express, so that *positive* cases are
really valid and `positive_data_acceptance` keeps its full meaning ("a valid request is never
answered 400"). Negative cases are left untouched. Nothing here changes what a check accepts.

Two custom checks:
- `payload_too_large_only_over_the_limit` makes the 413 that the built-in checks accept
  (schemathesis.toml) precise: 413 only for a body over the daemon's body limit, and never a
  success for one (ORCHD_FUZZ_BODY_LIMIT, read by tools/schemathesis.sh from daemon.yaml).
- `use_after_free_tasks_create_sessions` is the built-in `use_after_free` (disabled in
  schemathesis.toml) taught the one way this API creates a resource that REST conventions do not
  show: createTask creates the session its `session_id` names ("Sessions are created by the
  first task that names them"), so a session read after DELETE and a createTask naming it is a new
  session, not a use after free. Everything else the built-in reports is reported.

createTask (POST /v1/tasks), both documented in the contract:
- `ctx` above the pool's `ctx_max` is 400 ("Context length the task needs; above the pool's
  `ctx_max` is 400"). ctx_max comes from the daemon's configuration, not from the schema:
  ORCHD_FUZZ_CTX_MAX (tools/schemathesis.sh reads it from contracts/schemathesis/daemon.yaml).
- `max_tokens` must not exceed `ctx` (a cross-field constraint).
- a `chat`'s `inputs` are messages alternating user and assistant and ending with the user's:
  an odd count (TaskRequest's description). An even count loses its last message.

createChatCompletion and createCompletion (the `openai` tag): `max_tokens` (and
`max_completion_tokens`) above the model's context length (`ctx_max`) is 400, as documented.
Positive cases fold them into 1..FACADE_MAX_TOKENS, below ctx_max: each such request generates
that many tokens on the real engine before it answers, and a few dozen keep the run short.

reloadPool (POST /v1/pools/{id}/reload), documented in the contract: for a managed pool,
`new_model_ref` must name a regular file inside the configured `models_dirs` (relative paths
against the state directory), else 400. daemon.yaml sets no models_dirs, so that is
<state>/models (ORCHD_FUZZ_STATE_DIR). A positive reference that names no file there is replaced
by one of several spellings of <state>/models/not-a-model.gguf, a regular file that is not a
model (tools/schemathesis.sh writes it): the reload then starts an engine that fails, and the
pool rolls back (409), as a generated path did before models_dirs. The real model is reached
through the dictionary in schemathesis.toml.
"""

from __future__ import annotations

import os
import re

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.openapi.checks import UseAfterFree
from schemathesis.specs.openapi.checks import use_after_free as _builtin_use_after_free

CTX_MAX = int(os.environ.get("ORCHD_FUZZ_CTX_MAX", "4096"))
BODY_LIMIT = int(os.environ.get("ORCHD_FUZZ_BODY_LIMIT", str(1 << 20)))
STATE_DIR = os.environ.get("ORCHD_FUZZ_STATE_DIR", "")
NOT_A_MODEL = "not-a-model.gguf"


def _is_reload(case) -> bool:
    op = case.operation
    return op.method.upper() == "POST" and op.path == "/v1/pools/{id}/reload"


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
    _fold(case)
    return case


@schemathesis.hook
def before_add_examples(context, examples):
    # The examples phase does not go through map_case.
    for case in examples:
        _fold(case)


def _fold(case) -> None:
    if not _positive_body(case):
        return
    if _is_create_task(case):
        _fold_task(case)
    elif _is_reload(case):
        _fold_reload(case)
    elif _is_facade(case):
        _fold_facade(case)


def _models_dir() -> str:
    return os.path.join(os.path.abspath(STATE_DIR), "models")


def _names_model_file(ref: str) -> bool:
    """Whether the daemon resolves ref to a regular file inside its models directory
    (impl/config ResolveModel: "file:" prefix, relative to the state directory, cleaned, inside
    the directory before and after resolving links)."""
    path = ref[len("file:") :] if ref.startswith("file:") else ref
    if not path or "\0" in path or not STATE_DIR:
        return False
    try:
        if not os.path.isabs(path):
            path = os.path.join(os.path.abspath(STATE_DIR), path)
        path = os.path.abspath(path)
        root = _models_dir()
        if not path.startswith(root + os.sep):
            return False
        real, real_root = os.path.realpath(path), os.path.realpath(root)
        return real.startswith(real_root + os.sep) and os.path.isfile(real)
    except (OSError, ValueError, UnicodeError):  # e.g. a lone surrogate has no file name
        return False


def _fold_reload(case) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    ref = body.get("new_model_ref")
    if not isinstance(ref, str) or _names_model_file(ref):
        return
    spellings = [
        f"models/{NOT_A_MODEL}",
        f"file:models/{NOT_A_MODEL}",
        os.path.join(_models_dir(), NOT_A_MODEL),
        f"models/./sub/../{NOT_A_MODEL}",
        f"file:{_models_dir()}//{NOT_A_MODEL}",
    ]
    # The same generated value always folds to the same spelling (runs stay reproducible).
    body["new_model_ref"] = spellings[sum(ref.encode("utf-8", "surrogatepass")) % len(spellings)]
    case.body = body


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
    inputs = body.get("inputs")
    if body.get("workload") == "chat" and isinstance(inputs, list) and len(inputs) % 2 == 0 and inputs:
        # A chat's messages alternate user and assistant and end with the user's.
        body["inputs"] = inputs[:-1]
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


def _body_size(request) -> int:
    body = request.body
    if body is None:
        return 0
    if isinstance(body, str):
        return len(body.encode("utf-8"))
    return len(body)


@schemathesis.check
def payload_too_large_only_over_the_limit(ctx, response, case):
    """413 PAYLOAD_TOO_LARGE answers exactly the bodies over the body limit.

    negative_data_rejection and positive_data_acceptance accept 413 for any body (a schema
    violation can make a body of any size, and createArtifact's free-form content is bounded by
    the body limit only); this check rules out a 413 for a body within the limit, which every
    other body of the contract is (contracts/bodylimit_test.go), and a success for a body over it.
    """
    size = _body_size(response.request)
    if response.status_code == 413 and size <= BODY_LIMIT:
        raise AssertionError(f"413 for a body of {size} bytes, within the body limit of {BODY_LIMIT} bytes")
    if size > BODY_LIMIT and 200 <= response.status_code < 300:
        raise AssertionError(f"{response.status_code} for a body of {size} bytes, over the body limit of {BODY_LIMIT} bytes")


_SESSION_DELETE = re.compile(r"^DELETE /v1/sessions/([^/?#]+)$")


@schemathesis.check
def use_after_free_tasks_create_sessions(ctx, response, case):
    """The built-in use_after_free, except for a session that a createTask created again."""
    try:
        return _builtin_use_after_free(ctx, response, case)
    except UseAfterFree as failure:
        m = _SESSION_DELETE.match(failure.free)
        if m is None or not _session_recreated(ctx, m.group(1), case.id):
            raise
        return None


def _session_recreated(ctx, session_id: str, current_case_id: str) -> bool:
    """Whether, in execution order before the current case, a successful createTask naming the
    session came after the last successful DELETE of it."""
    sid = session_id.lower()
    recreated = False
    for earlier in ctx.internals.find_all_cases():
        if earlier.id == current_case_id:
            return recreated
        resp = ctx.internals.find_response(case_id=earlier.id)
        if resp is None or not 200 <= resp.status_code < 300:
            continue
        method, path = earlier.operation.method.upper(), earlier.operation.path
        if method == "DELETE" and path == "/v1/sessions/{id}":
            if str((earlier.path_parameters or {}).get("id", "")).lower() == sid:
                recreated = False
        elif method == "POST" and path == "/v1/tasks" and isinstance(earlier.body, dict):
            if str(earlier.body.get("session_id", "")).lower() == sid:
                recreated = True
    return recreated
