#!/usr/bin/env python3
"""Router + IPC overhead: worker throughput at a fixed batch through `parva serve` (HTTP, KServe v2
binary tensors, router, Unix socket, worker) against a bare tch loop on the same model and thread
count (`parva-worker --bench`). Standard library only.

    python3 runner/bench/router_overhead.py --model resnet50 --batch 8 --threads 2 --iters 20 --rounds 3

Needs release builds (`cargo build --release -p parva -p parva-worker`, with libtorch: see
scripts/bootstrap) and the exported model (`scripts/export_models.py resnet50`). Runs alternate
(bare, router, bare, router, ...) and the median of each is reported. The client keeps
`--concurrency` requests of `--batch` rows in flight so the worker always has a full batch queued.

Two figures: the throughput ratio (sensitive to anything else running on the machine, since the
two modes run at different times) and the share of wall time the worker was NOT executing a
batch while driven through the router (1 - sum of the worker-measured batch times / wall time,
from /metrics): the router + IPC overhead proper, insensitive to the model's own speed drifting.
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bare(args):
    out = subprocess.run(
        [args.worker, "--bench", str(args.iters), "--model-meta", f"{args.models}/{args.model}.json",
         "--model", f"{args.models}/{args.model}.pt", "--max-batch", str(args.batch), "--threads", str(args.threads),
         "--device", args.device],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["samples_per_s"]


def request_body(meta, batch):
    inputs, blobs = [], []
    for t in meta["inputs"]:
        shape = [batch] + t["shape"][1:]
        n = 1
        for d in shape:
            n *= d
        size = {"FP32": 4, "INT64": 8}[t["datatype"]]
        blob = bytes(n * size) if t["datatype"] == "INT64" else struct.pack(f"<{n}f", *([0.5] * n))
        inputs.append({"name": t["name"], "shape": shape, "datatype": t["datatype"], "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    head = json.dumps({"inputs": inputs, "outputs": [{"name": o["name"], "parameters": {"binary_data": True}} for o in meta["outputs"]]}).encode()
    return head, b"".join([head] + blobs)


def post(url, head, body):
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))})
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}")


def exec_seconds(base):
    """Total batch execution time the worker reported so far (parva_exec_seconds_sum)."""
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("parva_exec_seconds_sum"):
                return float(line.split()[-1])
    return 0.0


def via_router(args, meta):
    with tempfile.TemporaryDirectory(prefix="pvb", dir="/tmp") as tmp:
        plan = os.path.join(tmp, "plan.csv")
        with open(plan, "w") as f:
            f.write("node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n")
            f.write(f"0,0,bench,{args.model},0,7,{args.batch},1,,,,1,600000\n")
        proc = subprocess.Popen(
            [args.parva, "serve", "--map", plan, "--backend", "torch", "--device", args.device, "--models", args.models, "--threads", str(args.threads),
             "--listen", "127.0.0.1:0", "--run-dir", os.path.join(tmp, "run")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = proc.stdout.readline()
            base = "http://" + line.split("http://")[1].split()[0]
            while True:
                try:
                    with urllib.request.urlopen(base + "/v2/health/ready", timeout=5) as r:
                        if r.status == 200:
                            break
                except Exception:
                    time.sleep(0.2)
            head, body = request_body(meta, args.batch)
            url = base + "/v2/models/bench/infer"
            for _ in range(2):
                post(url, head, body)
            remaining = [args.iters]
            lock = threading.Lock()

            def client():
                while True:
                    with lock:
                        if remaining[0] == 0:
                            return
                        remaining[0] -= 1
                    post(url, head, body)

            exec0 = exec_seconds(base)
            t0 = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            busy = (exec_seconds(base) - exec0) / wall
            return args.iters * args.batch / wall, busy
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20, help="batches per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the worker runs (both modes)")
    ap.add_argument("--models", default=os.path.join(ROOT, "models"))
    ap.add_argument("--parva", default=os.path.join(ROOT, "target/release/parva"))
    ap.add_argument("--worker", default=os.path.join(ROOT, "target/release/parva-worker"))
    args = ap.parse_args()
    with open(f"{args.models}/{args.model}.json") as f:
        meta = json.load(f)
    b, r, busy = [], [], []
    for i in range(args.rounds):
        b.append(bare(args))
        thr, bz = via_router(args, meta)
        r.append(thr)
        busy.append(bz)
        print(f"round {i + 1}: bare {b[-1]:.2f} samples/s, router {r[-1]:.2f} samples/s, worker busy {100 * bz:.2f} %", file=sys.stderr)
    mb, mr, mbusy = statistics.median(b), statistics.median(r), statistics.median(busy)
    print(f"device: {args.device}")
    print()
    print("| model | batch | threads | bare samples/s (median) | router samples/s (median) | throughput overhead | worker idle through the router |")
    print(f"| {args.model} | {args.batch} | {args.threads} | {mb:.2f} | {mr:.2f} | {100 * (1 - mr / mb):+.2f} % | {100 * (1 - mbusy):.2f} % |")


if __name__ == "__main__":
    main()
