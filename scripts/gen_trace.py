#!/usr/bin/env python3
"""Generate a diurnal rate trace (time_s,service,rate) for the services of a services.csv.

    scripts/gen_trace.py SERVICES.csv [--days 1] [--hours H] [--step 300] [--trough 0.25]
                         [--bursts 6] [--burst-height 1.3,2] [--shape sine|peaked] [--start-hour 0]
                         [--day-jitter 0.15] [--cold-ramp 0] [--noise 0.05] [--phase-spread 2]
                         [--on-off 0] [--seed 1] > trace.csv

Each service's rate in the list is its daily peak. Over a day its rate follows
    peak x day_scale x (trough + (1 - trough) x d(t)),  d(t) = (1 - cos(2 pi (t - phase) / 24 h)) / 2
with --shape sine, or d(t)^2 with --shape peaked (the default: a busy afternoon and a long quiet
night, as web traffic usually is), so the peak/trough ratio is 1/trough (4 by default). Each
service's peak hour (around 14:00) is shifted by up to +-2 h (--phase-spread); every step gets
+-5 % noise (--noise; the noisy fourth trace of scripts/bench/day-results.md has +-20 % and peak
hours +-6 h apart).

Several days (--days, or --hours for any length) differ from each other: every day each service's
scale is drawn in [1 - j, 1 + j] (--day-jitter, 0.15 by default; the list rate is the mean day's
peak) and its peak hour moves by up to +-1 h, so no two days are the same and yesterday is a
forecast, not an answer. On top, --bursts short bursts per day (5-20 min, 1.3-2x, or the range
--burst-height gives) hit random services at random times.

--on-off K makes K services (drawn by the seed) business-hours services: at 2 % of their rate
(--off-level) outside their hours, at their rate (times the day's scale and the noise) inside, switching in
one row at the same hours every day (on between 07:00 and 10:00, off between 16:00 and 20:00):
a batch pipeline or an office's traffic, a 50x jump that the same hour of the day before
foretells.

--start-hour makes the trace begin at that hour of the first day (the node starts there, with
whatever load that hour has). --cold-ramp S makes every service start near zero and ramp to its
diurnal rate over the first S seconds (a node deployed for a quiet moment that the load then
finds): the cold start a live controller must not mistake for a quiet day.

One row per service per --step seconds (the format: README, "Load that changes over the day").
Deterministic per seed.
"""
import argparse
import csv
import math
import random
import sys

DAY = 86400.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("services")
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--hours", type=float, default=None, help="length in hours (overrides --days)")
    ap.add_argument("--step", type=float, default=300.0, help="seconds between rows of a service")
    ap.add_argument("--trough", type=float, default=0.25, help="lowest rate as a fraction of the peak")
    ap.add_argument("--bursts", type=int, default=6, help="bursts per day")
    ap.add_argument("--shape", choices=["sine", "peaked"], default="peaked")
    ap.add_argument("--start-hour", type=float, default=0.0, help="hour of the day the trace begins at")
    ap.add_argument("--day-jitter", type=float, default=0.15, help="day-to-day scale variation (fraction)")
    ap.add_argument("--cold-ramp", type=float, default=0.0, help="seconds over which every service ramps up from near zero")
    ap.add_argument("--noise", type=float, default=0.05, help="each step's uniform noise, +- this fraction")
    ap.add_argument("--phase-spread", type=float, default=2.0, help="services' peak hours spread by +- this many hours")
    ap.add_argument("--burst-height", default="1.3,2", help="bursts multiply the rate by LO..HI")
    ap.add_argument("--on-off", type=int, default=0, help="services on only in business hours")
    ap.add_argument("--off-level", type=float, default=0.02, help="an --on-off service's rate off hours, a fraction of its rate")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    try:
        lo, hi = (float(x) for x in a.burst_height.split(","))
    except ValueError:
        sys.exit("gen_trace.py: --burst-height must be LO,HI (e.g. 2,4)")
    if not (1 <= lo <= hi <= 100) or a.on_off < 0 or not (0 <= a.off_level <= 1):
        sys.exit("gen_trace.py: --burst-height needs 1 <= LO <= HI <= 100, --on-off 0 or more, --off-level in [0, 1]")
    hours = a.hours if a.hours is not None else a.days * 24.0
    if not (0 < a.trough <= 1) or a.step <= 0 or hours <= 0 or not (0 <= a.day_jitter < 1) or a.cold_ramp < 0 \
            or not (0 <= a.noise < 1) or not (0 <= a.phase_spread <= 12):
        sys.exit("gen_trace.py: --trough must be in (0, 1], --day-jitter in [0, 1), --step and the length positive, --cold-ramp >= 0, --noise in [0, 1), --phase-spread in [0, 12]")
    rng = random.Random(a.seed)
    with open(a.services) as f:
        services = [(r["service"], float(r["rate"])) for r in csv.DictReader(f)]
    end = hours * 3600.0
    offset = a.start_hour * 3600.0
    days = int(math.ceil((end + offset) / DAY)) + 1
    phase = {name: 14 * 3600.0 + rng.uniform(-a.phase_spread, a.phase_spread) * 3600.0 for name, _ in services}
    # Per day and service: a scale and a shift of the peak hour.
    scale = {(d, name): rng.uniform(1 - a.day_jitter, 1 + a.day_jitter) for d in range(days) for name, _ in services}
    shift = {(d, name): rng.uniform(-1, 1) * 3600.0 for d in range(days) for name, _ in services}
    bursts = []
    for _ in range(int(round(a.bursts * end / DAY))):
        name, _ = rng.choice(services)
        start = rng.uniform(0, end)
        bursts.append((name, start, start + rng.uniform(300, 1200), rng.uniform(lo, hi)))
    # Drawn after everything above, so that traces made without --on-off stay the same.
    on_off = {}
    if a.on_off > 0:
        for name, _ in rng.sample(services, min(a.on_off, len(services))):
            on_off[name] = (rng.uniform(7, 10) * 3600.0, rng.uniform(16, 20) * 3600.0)
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["time_s", "service", "rate"])
    steps = int(math.ceil(end / a.step))
    for i in range(steps):
        t = i * a.step
        clock = t + offset
        d = int(clock // DAY)
        for name, peak in services:
            p = phase[name] + shift[(d, name)]
            shape = (1 - math.cos(2 * math.pi * (clock - p + DAY / 2) / DAY)) / 2
            if a.shape == "peaked":
                shape = shape * shape
            level = a.trough + (1 - a.trough) * shape
            if name in on_off:
                on, off = on_off[name]
                level = 1.0 if on <= clock % DAY < off else a.off_level
            rate = peak * scale[(d, name)] * level * rng.uniform(1 - a.noise, 1 + a.noise)
            for b_name, b0, b1, k in bursts:
                if b_name == name and b0 <= t < b1:
                    rate *= k
            if a.cold_ramp > 0 and t < a.cold_ramp:
                rate *= 0.02 + 0.98 * t / a.cold_ramp
            w.writerow([f"{t:g}", name, f"{rate:.2f}"])


if __name__ == "__main__":
    main()
