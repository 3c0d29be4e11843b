"""Drives orchestratord's OpenAI-compatible routes with the official `openai` Python client.

Usage: openai_client.py BASE_URL API_KEY MODEL CHECK [MAX_TOKENS]

BASE_URL is the daemon's root (the client gets BASE_URL + "/v1"). Each CHECK prints one JSON
line (read by impl/app/openai_client_test.go); any exception the client raises that the check
does not expect ends the script with a traceback and a non-zero status.

  text       models.list, then completions and chat completions of MAX_TOKENS tokens, each
             non-streaming and streaming (with stream_options.include_usage): their text,
             finish_reason, usage and the X-Task-Id header.
  errors     a wrong API key (AuthenticationError) and an unknown model (NotFoundError).
  ratelimit  one chat completion, which must raise RateLimitError (the caller filled the queue).
  close      opens a chat stream of MAX_TOKENS tokens, reads one content chunk and closes the
             stream: prints the task id, which the caller checks is canceled.
"""

import json
import sys

import openai


def out(**kw):
    print(json.dumps(kw), flush=True)


def text_check(client, model, max_tokens):
    models = [m.id for m in client.models.list().data]
    out(check="models", models=models)
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say the sentence."}]

    raw = client.completions.with_raw_response.create(model=model, prompt="Hello", max_tokens=max_tokens)
    c = raw.parse()
    out(check="completion", task_id=raw.headers.get("x-task-id"), object=c.object, text=c.choices[0].text,
        finish_reason=c.choices[0].finish_reason, usage=c.usage.model_dump())

    raw = client.chat.completions.with_raw_response.create(model=model, messages=msgs, max_tokens=max_tokens)
    c = raw.parse()
    out(check="chat", task_id=raw.headers.get("x-task-id"), object=c.object, role=c.choices[0].message.role,
        text=c.choices[0].message.content, finish_reason=c.choices[0].finish_reason, usage=c.usage.model_dump())

    def stream(kind, resp, piece):
        chunks, text, finish, usage = 0, "", None, None
        for chunk in resp.parse():
            if chunk.choices:
                p = piece(chunk.choices[0])
                if p:
                    chunks += 1
                    text += p
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage.model_dump()
        out(check=kind, task_id=resp.headers.get("x-task-id"), chunks=chunks, text=text, finish_reason=finish, usage=usage)

    stream("completion-stream",
           client.completions.with_raw_response.create(model=model, prompt="Hello", max_tokens=max_tokens, stream=True,
                                                       stream_options={"include_usage": True}),
           lambda ch: ch.text)
    stream("chat-stream",
           client.chat.completions.with_raw_response.create(model=model, messages=msgs, max_tokens=max_tokens,
                                                            stream=True, stream_options={"include_usage": True}),
           lambda ch: ch.delta.content)


def errors_check(base, model):
    bad = openai.OpenAI(base_url=base, api_key="not-the-key", max_retries=0, timeout=30)
    try:
        bad.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
        out(check="auth", raised=None)
    except openai.AuthenticationError as e:
        out(check="auth", raised="AuthenticationError", status=e.status_code, code=e.code, type=e.type)
    good = openai.OpenAI(base_url=base, api_key=sys.argv[2], max_retries=0, timeout=30)
    try:
        good.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
        out(check="notfound", raised=None)
    except openai.NotFoundError as e:
        out(check="notfound", raised="NotFoundError", status=e.status_code, code=e.code, type=e.type, param=e.param)


def ratelimit_check(client, model):
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
        out(check="ratelimit", raised=None)
    except openai.RateLimitError as e:
        h = e.response.headers
        out(check="ratelimit", raised="RateLimitError", status=e.status_code, code=e.code, type=e.type,
            retry_after=h.get("retry-after"), backoff_ms=h.get("x-backoff-ms"),
            reset=h.get("x-ratelimit-reset-requests"))


def close_check(client, model, max_tokens):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=max_tokens, stream=True)
    s = raw.parse()
    got = ""
    for chunk in s:
        if chunk.choices and chunk.choices[0].delta.content:
            got = chunk.choices[0].delta.content
            break
    s.close()
    out(check="close", task_id=raw.headers.get("x-task-id"), first=got)


def main() -> int:
    base, key, model, check = sys.argv[1].rstrip("/") + "/v1", sys.argv[2], sys.argv[3], sys.argv[4]
    max_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)
    if check == "text":
        text_check(client, model, max_tokens)
    elif check == "errors":
        errors_check(base, model)
    elif check == "ratelimit":
        ratelimit_check(client, model)
    elif check == "close":
        close_check(client, model, max_tokens)
    else:
        print(f"unknown check {check!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
