#!/usr/bin/env python3
"""Generate a diurnal rate trace (time_s,service,rate) for the services of a services.csv.

    scripts/gen_trace.py SERVICES.csv [--hours 24] [--step 300] [--trough 0.25] [--bursts 6]
                         [--shape sine|peaked] [--seed 1] > trace.csv

Each service's rate in the list is its daily peak. Over the day its rate follows
    peak x (trough + (1 - trough) x d(t)),  d(t) = (1 - cos(2 pi (t - phase) / 24 h)) / 2
with --shape sine, or d(t)^2 with --shape peaked (the default: a busy afternoon and a long quiet
night, as web traffic usually is; the day's mean is then 3/8 of the way from trough to peak
instead of 1/2), so the peak/trough ratio is 1/trough (4 by default); each service's phase (its peak hour,
around 14:00) is shifted by up to +-2 h, and every step gets +-5 % noise. On top, --bursts
short bursts (5-20 min, 1.3-2x) hit random services at random times. One row per service per
--step seconds (the format: README, "Load that changes over the day"). Deterministic per seed.
"""
import argparse
import csv
import math
import random
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("services")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--step", type=float, default=300.0, help="seconds between rows of a service")
    ap.add_argument("--trough", type=float, default=0.25, help="lowest rate as a fraction of the peak")
    ap.add_argument("--bursts", type=int, default=6)
    ap.add_argument("--shape", choices=["sine", "peaked"], default="peaked")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not (0 < a.trough <= 1) or a.step <= 0 or a.hours <= 0:
        sys.exit("gen_trace.py: --trough must be in (0, 1], --step and --hours positive")
    rng = random.Random(a.seed)
    with open(a.services) as f:
        services = [(r["service"], float(r["rate"])) for r in csv.DictReader(f)]
    end = a.hours * 3600.0
    day = 86400.0
    phase = {name: 14 * 3600.0 + rng.uniform(-2, 2) * 3600.0 for name, _ in services}
    bursts = []
    for _ in range(a.bursts):
        name, _ = rng.choice(services)
        start = rng.uniform(0, end)
        bursts.append((name, start, start + rng.uniform(300, 1200), rng.uniform(1.3, 2.0)))
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["time_s", "service", "rate"])
    steps = int(math.ceil(end / a.step))
    for i in range(steps):
        t = i * a.step
        for name, peak in services:
            shape = (1 - math.cos(2 * math.pi * (t - phase[name] + day / 2) / day)) / 2
            if a.shape == "peaked":
                shape = shape * shape
            rate = peak * (a.trough + (1 - a.trough) * shape) * rng.uniform(0.95, 1.05)
            for b_name, b0, b1, k in bursts:
                if b_name == name and b0 <= t < b1:
                    rate *= k
            w.writerow([f"{t:g}", name, f"{rate:.2f}"])


if __name__ == "__main__":
    main()
