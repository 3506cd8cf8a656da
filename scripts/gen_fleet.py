#!/usr/bin/env python3
"""Generate a random service fleet (services.csv) over the models of a profile directory.

    scripts/gen_fleet.py PROF_DIR N SEED > services.csv

Each service picks a model uniformly, a request rate log-uniform in [20, 2000] req/s, and a
latency SLO uniform in [4, 20] x the model's fastest profiled batch-1 latency (so every service
is feasible but SLOs range from tight to loose). Deterministic for a given seed.
"""
import csv
import math
import os
import random
import sys


def fastest_ms(path):
    best = math.inf
    with open(path) as f:
        for row in csv.DictReader(f):
            if int(row["Batch size"]) == 1 and float(row["Throughput"]) > 0:
                best = min(best, float(row["Latency"]) * 1000)
    return best


def main(prof_dir, n, seed):
    rng = random.Random(seed)
    models = sorted(f[:-4] for f in os.listdir(prof_dir) if f.endswith(".csv"))
    fast = {m: fastest_ms(os.path.join(prof_dir, m + ".csv")) for m in models}
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["service", "model", "rate", "slo_ms"])
    for i in range(n):
        m = rng.choice(models)
        rate = math.exp(rng.uniform(math.log(20), math.log(2000)))
        slo = fast[m] * rng.uniform(4, 20)
        w.writerow([f"svc{i:05d}", m, f"{rate:.1f}", f"{slo:.1f}"])


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
