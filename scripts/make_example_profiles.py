#!/usr/bin/env python3
"""Write the ILLUSTRATIVE profile set prof_data/example/ (not measured on any GPU).

Each table follows ParvaGPU's format (`Mig instance,Batch size,Workload Number,Throughput,Latency`;
throughput of ONE process in samples/s, latency of one batch in seconds) and is computed from a
small analytic model, so that parva's planner, simulator and emulated backend have data to run on
in a fresh clone:

    latency_ms(size g, batch b, 1 process) = fixed + per_sample * b / g ** scaling
    latency_ms(g, b, p processes)          = latency_ms(g, b, 1) * (1 + k(b) * (p - 1))
    k(b) = 0.5 + 0.45 * min(1, b / 32)    # MPS helps most while small batches leave SMs idle

The constants per model are rough orders of magnitude, chosen by hand. Replace this directory's
use with tables measured by `parva profile` for real planning.

    scripts/make_example_profiles.py --shares prof_data/example-mps

    scripts/make_example_profiles.py --h100 prof_data/example-h100

writes the same MIG-keyed tables for an H100-like GPU: per-sample work H100_SPEED times faster than
the A100 model above and the fixed part H100_FIXED times faster (launches and copies gain less).

    scripts/make_example_profiles.py --shares prof_data/example-mps

writes the share-keyed set for an L4-like GPU without MIG (`MPS share` = percent of the SMs, 10 to
100): a share s computes like g = 7 * s / 100 GPCs of the model above, slowed by L4_SPEED, and
each process holds MEM_MIB[model] + 2 MiB per sample of batch (the `mem_mib` column, which the
planner checks against the share's memory).
"""
import csv
import os
import sys

MODELS = {
    # name: (fixed ms, ms per sample on one GPC, scaling with GPCs)
    "bert": (4.0, 38.0, 1.08),
    "mobilenetv2": (1.5, 0.9, 0.85),
    "resnet50": (2.0, 2.6, 1.02),
    "vgg16": (2.0, 11.0, 1.05),
}
SIZES = [1, 2, 3, 4, 7]
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128]
PROCS = [1, 2, 3]
SHARES = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
L4_SPEED = 0.55
H100_SPEED = 1.9
H100_FIXED = 1.25
MEM_MIB = {"bert": 1500, "mobilenetv2": 330, "resnet50": 450, "vgg16": 1100}


def latency_ms(fixed, per_sample, scaling, g, b, p):
    one = fixed + per_sample * b / g ** scaling
    k = 0.5 + 0.45 * min(1.0, b / 32)
    return one * (1 + k * (p - 1))


def main(out_dir, speed=1.0, fixed_speed=1.0):
    os.makedirs(out_dir, exist_ok=True)
    for name, (fixed, per_sample, scaling) in MODELS.items():
        fixed, per_sample = fixed / fixed_speed, per_sample / speed
        with open(os.path.join(out_dir, f"{name}.csv"), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["Mig instance", "Batch size", "Workload Number", "Throughput", "Latency"])
            for g in SIZES:
                for b in BATCHES:
                    for p in PROCS:
                        lat = latency_ms(fixed, per_sample, scaling, g, b, p)
                        w.writerow([g, b, p, f"{b / (lat / 1000):.3f}", f"{lat / 1000:.6f}"])


def main_shares(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name, (fixed, per_sample, scaling) in MODELS.items():
        with open(os.path.join(out_dir, f"{name}.csv"), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["MPS share", "Batch size", "Workload Number", "Throughput", "Latency", "mem_mib"])
            for s in SHARES:
                g = 7 * s / 100 * L4_SPEED
                for b in BATCHES:
                    for p in PROCS:
                        lat = latency_ms(fixed, per_sample, scaling, g, b, p)
                        w.writerow([s, b, p, f"{b / (lat / 1000):.3f}", f"{lat / 1000:.6f}", MEM_MIB[name] + 2 * b])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--h100"]:
        main(sys.argv[2] if len(sys.argv) > 2 else "prof_data/example-h100", H100_SPEED, H100_FIXED)
    elif sys.argv[1:2] == ["--shares"]:
        main_shares(sys.argv[2] if len(sys.argv) > 2 else "prof_data/example-mps")
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "prof_data/example")
