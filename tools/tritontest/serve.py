"""A real tritonserver (bundled by nvidia-pytriton) with small decoupled text models, for the
engine/triton tests. Not a simulator: the HTTP generate extension, readiness, metadata,
metrics and error bodies are Triton's own.

Models (all decoupled: one response per word, streamed by /v2/models/NAME/generate_stream):
  words   " The quick brown fox jumps over the lazy dog." word by word, repeated up to
          max_tokens words (optional INT32 input; default: the sentence once).
  slow    the same, one word every --slow-delay seconds; writes "start", "word N" and "end"
          lines to --events so a test can see what the model did after a cancel.
  failing two words, then raises: Triton sends a mid-stream {"error": ...} frame.
  whole   not decoupled: the whole sentence in one response (for /generate and tritonclient
          HTTP infer).

Usage: serve.py --http-port P --grpc-port G --metrics-port M [--events FILE] [--slow-delay S]
Prints "ready" on stdout when every model is loaded. SIGTERM and SIGINT shut the server down
cleanly (tritonserver and the Python backend stubs exit; pytriton removes its /dev/shm files).
"""

import argparse
import signal
import sys
import threading
import time

import numpy as np
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

WORDS = [" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog."]


def _max_tokens(req):
    if "max_tokens" not in req:
        return len(WORDS)
    return int(np.asarray(req["max_tokens"]).reshape(-1)[0])


def _out(word):
    return {"text_output": np.array([word.encode()], dtype=np.object_)}


def words_fn(requests):
    # Decoupled: a generator; each yield is one response for every request of the batch
    # (batching is off, so there is one request).
    n = _max_tokens(requests[0])
    for i in range(n):
        yield [_out(WORDS[i % len(WORDS)]) for _ in requests]


def make_slow_fn(delay, events):
    lock = threading.Lock()

    def log(line):
        if events:
            with lock, open(events, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def slow_fn(requests):
        n = _max_tokens(requests[0])
        log("start")
        try:
            for i in range(n):
                time.sleep(delay)
                log(f"word {i}")
                yield [_out(WORDS[i % len(WORDS)]) for _ in requests]
        finally:
            log("end")

    return slow_fn


def failing_fn(requests):
    for w in WORDS[:2]:
        yield [_out(w) for _ in requests]
    raise ValueError("boom after 2 words")


def whole_fn(requests):
    n = _max_tokens(requests[0])
    text = "".join(WORDS[i % len(WORDS)] for i in range(n))
    return [_out(text) for _ in requests]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--events", default="")
    p.add_argument("--slow-delay", type=float, default=0.2)
    a = p.parse_args()

    # Plain SIGTERM would kill only this process and orphan tritonserver: turn it into
    # KeyboardInterrupt so that the context manager below shuts the server down.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    inputs = [
        Tensor(name="text_input", dtype=bytes, shape=(1,)),
        Tensor(name="max_tokens", dtype=np.int32, shape=(1,), optional=True),
    ]
    outputs = [Tensor(name="text_output", dtype=bytes, shape=(1,))]
    decoupled = ModelConfig(batching=False, decoupled=True)
    cfg = TritonConfig(
        http_address="127.0.0.1", http_port=a.http_port,
        grpc_address="127.0.0.1", grpc_port=a.grpc_port,
        metrics_address="127.0.0.1", metrics_port=a.metrics_port,
        allow_gpu_metrics=False, log_verbose=0,
    )
    with Triton(config=cfg) as triton:
        triton.bind("words", words_fn, inputs=inputs, outputs=outputs, config=decoupled, strict=False)
        triton.bind("slow", make_slow_fn(a.slow_delay, a.events), inputs=inputs, outputs=outputs,
                    config=decoupled, strict=False)
        triton.bind("failing", failing_fn, inputs=inputs, outputs=outputs, config=decoupled, strict=False)
        triton.bind("whole", whole_fn, inputs=inputs, outputs=outputs,
                    config=ModelConfig(batching=False), strict=False)
        print("ready", flush=True)
        try:
            triton.serve()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
