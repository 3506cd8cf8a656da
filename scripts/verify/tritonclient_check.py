#!/usr/bin/env python3
"""Wire compatibility of a KServe v2 server (`parva serve`) with NVIDIA's own HTTP client.

Usage: tritonclient_check.py HOST:PORT SERVICE [SERVICE ...]

Needs `pip install "tritonclient[http]"` (which brings numpy). For every service it calls, through
`tritonclient.http.InferenceServerClient`: server live/ready/metadata, model ready, model metadata
(GET /v2/models/{m}), and inference (POST /v2/models/{m}/infer) with inputs shaped from that
metadata in four encodings: JSON in / JSON out, binary in / binary out (the binary tensor data
extension, `Inference-Header-Content-Length`), binary in with no outputs requested, and JSON through
the versioned path /v2/models/{m}/versions/1/infer. Every output must have the metadata's shape with
batch 1. An unknown model must raise InferenceServerException. Prints one line per check and exits
non-zero on the first failure.
"""

import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def inputs_for(meta, binary):
    out = []
    for inp in meta["inputs"]:
        shape = [1 if d == -1 else int(d) for d in inp["shape"]]
        data = (np.arange(int(np.prod(shape))) % 7).reshape(shape).astype(triton_to_np_dtype(inp["datatype"]))
        t = httpclient.InferInput(inp["name"], shape, inp["datatype"])
        t.set_data_from_numpy(data, binary_data=binary)
        out.append(t)
    return out


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    url, services = sys.argv[1], sys.argv[2:]
    client = httpclient.InferenceServerClient(url=url, connection_timeout=30, network_timeout=30)
    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    server = client.get_server_metadata()
    check("name" in server and "extensions" in server, f"server metadata {server}")
    for svc in services:
        check(client.is_model_ready(svc), f"{svc}: model ready")
        meta = client.get_model_metadata(svc)
        check(meta["name"] == svc and meta["inputs"] and meta["outputs"], f"{svc}: model metadata {meta}")
        cases = [("JSON in, JSON out", False, False, ""), ("binary in, binary out", True, True, ""),
                 ("binary in, outputs not named", True, None, ""), ("JSON, versioned path", False, False, "1")]
        for label, binary_in, binary_out, version in cases:
            outputs = None
            if binary_out is not None:
                outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary_out) for o in meta["outputs"]]
            result = client.infer(svc, inputs_for(meta, binary_in), outputs=outputs, model_version=version,
                                  request_id=f"{svc}-{label}")
            for o in meta["outputs"]:
                arr = result.as_numpy(o["name"])
                want = [1] + [int(d) for d in o["shape"][1:]]
                check(arr is not None and list(arr.shape) == want and arr.dtype == triton_to_np_dtype(o["datatype"]),
                      f"{svc} ({label}): output {o['name']} {None if arr is None else (list(arr.shape), str(arr.dtype))}")
    try:
        client.get_model_metadata("no-such-model-here")
        check(False, "unknown model raises")
    except InferenceServerException as e:
        check("no-such-model-here" in str(e), f"unknown model raises: {e}")
    print("tritonclient wire check passed", flush=True)


if __name__ == "__main__":
    main()
