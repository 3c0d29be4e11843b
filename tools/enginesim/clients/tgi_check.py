"""Streams from a TGI server with the official `text-generation` Python client.

Usage: tgi_check.py BASE_URL MAX_NEW_TOKENS

Streams one generation of MAX_NEW_TOKENS tokens (the client POSTs to BASE_URL itself, TGI's
compat route), then asks for one without streaming, and prints one JSON line per call:
{"kind", "tokens" (stream frames with a token), "text", "generated_text", "finish_reason",
"generated_tokens"}. A frame the client's pydantic models refuse, or an error frame, ends the
script with a traceback and a non-zero status.
"""

import json
import sys

from text_generation import Client


def main() -> int:
    base, max_new = sys.argv[1], int(sys.argv[2])
    client = Client(base.rstrip("/"), timeout=30)

    tokens, text, generated, finish, count = 0, "", None, None, None
    for resp in client.generate_stream("Hello there", max_new_tokens=max_new):
        if not resp.token.special:
            tokens += 1
            text += resp.token.text
        if resp.generated_text is not None:
            generated = resp.generated_text
        if resp.details is not None:
            finish, count = resp.details.finish_reason.value, resp.details.generated_tokens
    print(json.dumps({"kind": "stream", "tokens": tokens, "text": text, "generated_text": generated,
                      "finish_reason": finish, "generated_tokens": count}))

    resp = client.generate("Hello there", max_new_tokens=max_new)
    print(json.dumps({"kind": "generate", "tokens": len(resp.details.tokens), "text": resp.generated_text,
                      "generated_text": resp.generated_text, "finish_reason": resp.details.finish_reason.value,
                      "generated_tokens": resp.details.generated_tokens}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
