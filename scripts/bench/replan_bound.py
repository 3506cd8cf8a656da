#!/usr/bin/env python3
"""How close to the oracle any controller could come on a rate trace with a re-plan budget.

The oracle of `parva simulate --policy oracle` re-plans every row of the trace for its exact
rates. A controller that re-plans at most K times must hold each plan over a stretch of rows,
and a plan that serves a stretch serves its highest row. Knowing the whole trace in advance,
the cheapest K stretches are found by dynamic programming; no controller, which sees only the
past, can do better. Costs are fluid: each service costs its GPCs per request/s (from a
deployment map of the same services: its GPCs over its segments' throughput) times its rate,
so the discrete segments' slack, which the oracle pays as well, is left out of both sides.

    scripts/bench/replan_bound.py TRACE.csv DEPLOY.csv [--per-day 12,24,36,48,72]

TRACE.csv: `time_s,service,rate` (a service's rate holds until its next row; `scripts/gen_trace.py`);
DEPLOY.csv: a `parva plan --services ... --out DEPLOY.csv` of the trace's services. Prints, per budget
in re-plans a day, the best stretch plan's GPU-hours over the oracle's (fluid), and how noisy
the rows are (what no forecast knows ahead). Standard library only; a 432-row, 12-service
trace takes a few seconds.
"""
import argparse
import collections
import csv
import sys

MAX_ROWS = 2016  # a week of 5-minute rows; the DP is quadratic in rows: bound it before allocating


def read_trace(path):
    rows = collections.defaultdict(dict)
    with open(path, newline="") as f:
        for n, r in enumerate(csv.DictReader(f), start=2):
            try:
                t, rate = float(r["time_s"]), float(r["rate"])
            except (KeyError, TypeError, ValueError) as e:
                sys.exit(f"{path}:{n}: want time_s,service,rate numbers: {e}")
            if not (rate >= 0.0 and rate < float("inf")):
                sys.exit(f"{path}:{n}: rate {rate} is not a finite number >= 0")
            if not (t >= 0.0 and t < float("inf")):
                sys.exit(f"{path}:{n}: time_s {t} is not a finite number >= 0")
            rows[t][r["service"]] = rate
            if len(rows) > MAX_ROWS:
                sys.exit(f"{path}: more than {MAX_ROWS} rows of time")
    times = sorted(rows)
    if len(times) < 2:
        sys.exit(f"{path}: fewer than two rows of time")
    return times, rows


def gpcs_per_rate(path):
    gpcs, thr = collections.Counter(), collections.Counter()
    try:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                gpcs[r["service"]] += int(r["instance_size"])
                thr[r["service"]] += float(r["throughput"])
    except (OSError, KeyError, TypeError, ValueError) as e:
        sys.exit(f"{path}: want a deployment map (service,instance_size,throughput): {e}")
    return {s: gpcs[s] / thr[s] for s in gpcs if thr[s] > 0}


def row_noise(raw):
    """Each service's rows over the median of their 7-row neighbourhood, minus 1: the part of
    the load no forecast from the shape of the day can know (p10, p50, p90, p99 over all)."""
    devs = []
    for c in range(len(raw[0])):
        col = [r[c] for r in raw]
        for k in range(3, len(col) - 3):
            m = sorted(col[k - 3:k + 4])[3]
            if m > 0:
                devs.append(col[k] / m - 1)
    devs.sort()
    return [devs[int(q * (len(devs) - 1))] for q in (0.1, 0.5, 0.9, 0.99)] if devs else []


def bounds(rates, edges, max_changes):
    """rates: rows x services (already weighted), row r from edges[r] to edges[r + 1]; the best
    cost with 0..max_changes re-plans."""
    n = len(rates)
    cols = range(len(rates[0]))
    # cost[j][i]: rows i..j-1 held by one plan (each service at its highest row).
    cost = [[0.0] * j for j in range(n + 1)]
    for i in range(n):
        top = [0.0] * len(rates[0])
        for j in range(i + 1, n + 1):
            top = [max(top[c], rates[j - 1][c]) for c in cols]
            cost[j][i] = sum(top) * (edges[j] - edges[i])
    # best[j]: the first j rows with the re-plans allowed so far; one more re-plan lets the
    # last plan start at any row i.
    best = [0.0] + [cost[j][0] for j in range(1, n + 1)]
    out = [best[n]]
    for _ in range(min(max_changes, n - 1)):
        nxt = best[:]
        for j in range(2, n + 1):
            row = cost[j]
            nxt[j] = min(best[j], min(best[i] + row[i] for i in range(1, j)))
        best = nxt
        out.append(best[n])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("deploy")
    ap.add_argument("--per-day", default="12,24,36,48,72", help="re-plan budgets a day to report")
    a = ap.parse_args()
    times, rows = read_trace(a.trace)
    # A row holds until the next; the last for as long as the one before it.
    edges = times + [2 * times[-1] - times[-2]]
    w = gpcs_per_rate(a.deploy)
    services = sorted({s for r in rows.values() for s in r})
    missing = [s for s in services if s not in w]
    if missing:
        sys.exit(f"{a.deploy}: no segments for {', '.join(missing)}")
    # A service's rate holds until its next row (as `parva simulate --rates` reads a trace).
    now = dict.fromkeys(services, 0.0)
    raw = []
    for t in times:
        now.update(rows[t])
        raw.append([now[s] for s in services])
    rates = [[r * w[s] for r, s in zip(row, services)] for row in raw]
    days = (edges[-1] - edges[0]) / 86400.0
    try:
        budgets = [float(x) for x in a.per_day.split(",") if x]
    except ValueError as e:
        sys.exit(f"--per-day: want numbers separated by commas: {e}")
    if not budgets or not all(0 <= b < 1e6 for b in budgets):
        sys.exit(f"--per-day {a.per_day}: want re-plans a day between 0 and 1e6")
    want = max(int(round(b * days)) for b in budgets)
    costs = bounds(rates, edges, want)
    oracle = sum(sum(r) * (edges[k + 1] - edges[k]) for k, r in enumerate(rates))
    # Each re-plan more can only help, and no plan is cheaper than the oracle's.
    assert all(y <= x * (1 + 1e-9) for x, y in zip(costs, costs[1:])), "more re-plans cost more"
    assert costs[-1] >= oracle * (1 - 1e-9), "a plan cheaper than the oracle"
    gpu_h = lambda c: c / 3600.0 / 7.0  # GPC-seconds to GPU-hours of a 7-GPC GPU
    print(f"{a.trace}: {len(times)} rows over {days:.2f} days, {len(services)} services; oracle {gpu_h(oracle):.0f} GPU-h (fluid)")
    noise = row_noise(raw)
    if noise:
        print("row noise (a row over the median of its 7 rows, -1): p10 {:+.3f} p50 {:+.3f} p90 {:+.3f} p99 {:+.3f}".format(*noise))
    print("re-plans/day  best plan / oracle")
    for b in budgets:
        k = min(int(round(b * days)), len(costs) - 1)
        print(f"{b:12.0f}  {costs[k] / oracle:.3f}x")


if __name__ == "__main__":
    main()
