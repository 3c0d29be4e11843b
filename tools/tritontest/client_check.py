"""The official tritonclient against a running tritonserver (serve.py's models).

Usage: client_check.py HTTP_URL GRPC_ADDR   (e.g. 127.0.0.1:8000 127.0.0.1:8001)
Prints one JSON object: what tritonclient.http saw (liveness, readiness, metadata, a
non-streaming infer of "whole") and the responses tritonclient.grpc streamed from the decoupled
"words" model with max_tokens 4.
"""

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def inputs(mod, n):
    text = mod.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"Hello"], dtype=np.object_))
    mt = mod.InferInput("max_tokens", [1], "INT32")
    mt.set_data_from_numpy(np.array([n], dtype=np.int32))
    return [text, mt]


def main():
    http_url, grpc_addr = sys.argv[1], sys.argv[2]
    out = {}
    h = httpclient.InferenceServerClient(url=http_url)
    out["live"] = h.is_server_live()
    out["ready"] = h.is_server_ready()
    out["model_ready"] = h.is_model_ready("words")
    md = h.get_model_metadata("words")
    out["metadata"] = {"name": md["name"], "versions": md["versions"],
                       "inputs": [i["name"] for i in md["inputs"]], "outputs": [o["name"] for o in md["outputs"]]}
    r = h.infer("whole", inputs(httpclient, 3))
    out["http_infer"] = r.as_numpy("text_output")[0].decode()
    h.close()

    g = grpcclient.InferenceServerClient(url=grpc_addr)
    q = queue.Queue()
    g.start_stream(callback=lambda result, error: q.put((result, error)))
    g.async_stream_infer("words", inputs(grpcclient, 4), enable_empty_final_response=True)
    texts, final = [], False
    while not final:
        result, error = q.get(timeout=30)
        if error is not None:
            raise error
        resp = result.get_response()
        final = resp.parameters["triton_final_response"].bool_param
        t = result.as_numpy("text_output")
        if t is not None:
            texts.append(t[0].decode())
    g.stop_stream()
    g.close()
    out["grpc_stream"] = texts
    print(json.dumps(out))


if __name__ == "__main__":
    main()
