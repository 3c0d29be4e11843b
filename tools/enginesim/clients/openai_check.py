"""Streams from an OpenAI-compatible server with the official `openai` Python client.

Usage: openai_check.py BASE_URL MAX_TOKENS

BASE_URL is the server's root (the client is given BASE_URL + "/v1"). Streams one completion
and one chat completion of MAX_TOKENS tokens each with stream_options.include_usage, then a chat
completion with continuous_usage_stats too (vLLM's and SGLang's extension: usage in every chunk),
and prints one JSON line per stream: {"kind", "chunks" (chunks with text), "text",
"finish_reason", "usage": {"prompt_tokens", "completion_tokens"} (the last seen),
"usage_chunks" (chunks that carried usage), "model"}. Any error the client raises (a
malformed chunk, a wrong content type) ends the script with a traceback and a non-zero status.
"""

import json
import sys

import openai


def main() -> int:
    base, max_tokens = sys.argv[1], int(sys.argv[2])
    client = openai.OpenAI(base_url=base.rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=30)
    model = client.models.list().data[0].id

    def report(kind, stream, text_of):
        chunks, text, finish, usage, usage_chunks = 0, "", None, None, 0
        for chunk in stream:
            if chunk.choices:
                piece = text_of(chunk.choices[0])
                if piece:
                    chunks += 1
                    text += piece
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                usage_chunks += 1
                usage = {"prompt_tokens": chunk.usage.prompt_tokens, "completion_tokens": chunk.usage.completion_tokens}
        print(json.dumps({"kind": kind, "chunks": chunks, "text": text, "finish_reason": finish, "usage": usage,
                          "usage_chunks": usage_chunks, "model": model}))

    report("completion",
           client.completions.create(model=model, prompt="Hello", max_tokens=max_tokens, stream=True,
                                     stream_options={"include_usage": True}),
           lambda c: c.text)
    report("chat",
           client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}],
                                          max_tokens=max_tokens, stream=True, stream_options={"include_usage": True}),
           lambda c: c.delta.content)
    report("chat-continuous",
           client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}],
                                          max_tokens=max_tokens, stream=True,
                                          stream_options={"include_usage": True, "continuous_usage_stats": True}),
           lambda c: c.delta.content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
