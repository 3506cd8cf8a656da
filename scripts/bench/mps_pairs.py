#!/usr/bin/env python3
"""Interference between MPS shares of one GPU (issue 17's input): each model's batch latency at a
share of the SMs alone, then beside each other model running flat out on the rest of the GPU.

    python3 scripts/bench/mps_pairs.py --models DIR [--share 50] [--batch 8] [--seconds 2] > pairs.md

DIR holds TorchScript models made by scripts/export_models.py (resnet50, mobilenetv2, bert).
Starts its own MPS control daemon (private pipe directory; quit at the end). Every measuring
process is an MPS client with CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=share, the neighbour with
100 - share. Never changes MIG mode, clocks, power or compute mode. Prints a Markdown table:
mean batch latency alone, with each neighbour, and the slowdown factor.
"""
import argparse, json, os, subprocess, sys, tempfile, time

CHILD = r'''
import sys, time, torch
path, kind, batch, seconds, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
m = torch.jit.load(path, map_location="cuda").eval()
if kind == "bert":
    ids = torch.ones(batch, 128, dtype=torch.int64, device="cuda")
    args = (ids, ids)
else:
    args = (torch.rand(batch, 3, 224, 224, device="cuda"),)
with torch.inference_mode():
    for _ in range(5):
        m(*args)
    torch.cuda.synchronize()
    print("ready", flush=True)
    if mode == "loop":
        while True:
            m(*args)
            torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        m(*args)
        torch.cuda.synchronize()
        n += 1
    print(f"{(time.perf_counter() - t0) / n * 1000:.3f}", flush=True)
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--names", default="resnet50,mobilenetv2,bert")
    ap.add_argument("--share", type=int, default=50)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    names = a.names.split(",")
    work = tempfile.mkdtemp(prefix="parva-pairs-")
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=f"{work}/pipe", CUDA_MPS_LOG_DIRECTORY=f"{work}/log")
    os.makedirs(env["CUDA_MPS_PIPE_DIRECTORY"]); os.makedirs(env["CUDA_MPS_LOG_DIRECTORY"])
    subprocess.run(["nvidia-cuda-mps-control", "-d"], env=env, check=True)

    def start(name, share, mode):
        e = dict(env, CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=str(share))
        p = subprocess.Popen([sys.executable, "-c", CHILD, f"{a.models}/{name}.pt", name, str(a.batch), str(a.seconds), mode],
                             env=e, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready", f"{name} did not start"
        return p

    def measure(name, neighbour):
        bg = start(neighbour, 100 - a.share, "loop") if neighbour else None
        try:
            p = start(name, a.share, "measure")
            ms = float(p.stdout.readline())
            p.wait()
            return ms
        finally:
            if bg:
                bg.kill(); bg.wait()

    try:
        alone = {n: measure(n, None) for n in names}
        print(f"MPS shares: measured model at {a.share} % of the SMs, neighbour at {100 - a.share} % running back to back; batch {a.batch}; mean batch latency over {a.seconds} s\n")
        print("| model | alone ms | " + " | ".join(f"beside {n}: ms (x)" for n in names) + " |")
        print("|---|---:|" + "---:|" * len(names))
        for n in names:
            cells = []
            for b in names:
                ms = measure(n, b)
                cells.append(f"{ms:.2f} ({ms / alone[n]:.2f}x)")
            print(f"| {n} | {alone[n]:.2f} | " + " | ".join(cells) + " |", flush=True)
    finally:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, env=env)


if __name__ == "__main__":
    main()
