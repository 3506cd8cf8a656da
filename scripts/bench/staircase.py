"""What a budget of changes costs with hindsight (issue 32, day-results.md, sixth pass).

    python3 scripts/bench/staircase.py DAY-PIECES.csv [CHANGES-PER-DAY=48] [POLICY=oracle]

Reads the pieces `parva simulate --rates ... --policy oracle --out DIR` writes (DIR/day-pieces.csv)
and finds, by dynamic programming, the cheapest staircase of GPUs over the trace with at most
CHANGES-PER-DAY x days changes that never has fewer GPUs than POLICY had in any piece: the least
GPU-hours a controller that knew the whole trace in advance, and changed its GPUs at most that
often, would hold. Prints it beside POLICY's GPU-hours, and how often POLICY's GPU count changes.

Superseded for the re-plan budget by `replan_bound.py` (day-results.md, ninth pass): this
staircase bounds the GPU count only, so a re-plan that moves capacity between services while
the count stays is free here; a controller pays a transition for it.
"""
import csv
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    per_day = float(sys.argv[2]) if len(sys.argv) > 2 else 48.0
    policy = sys.argv[3] if len(sys.argv) > 3 else "oracle"
    pieces = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["policy"] == policy:
                pieces[(float(r["start_s"]), float(r["end_s"]))] = int(r["gpus"])
    if not pieces:
        sys.exit(f"staircase.py: no pieces of policy {policy} in {path}")
    spans = sorted(pieces)
    length = [e - s for s, e in spans]
    g = [pieces[k] for k in spans]
    n = len(g)
    days = (spans[-1][1] - spans[0][0]) / 86400.0
    k_max = max(0, int(per_day * days))
    inf = float("inf")
    # best[j]: least GPU-seconds covering the first j pieces with the segments so far.
    best = [0.0] + [inf] * n
    answer = inf
    for _ in range(min(k_max + 1, n)):
        nxt = [inf] * (n + 1)
        for j in range(1, n + 1):
            top, width, b = 0, 0.0, inf
            for i in range(j - 1, -1, -1):
                top = max(top, g[i])
                width += length[i]
                if best[i] < inf and best[i] + top * width < b:
                    b = best[i] + top * width
            nxt[j] = b
        best = nxt
        answer = min(answer, best[n])
    own = sum(x * w for x, w in zip(g, length))
    changes = sum(1 for a, b in zip(g, g[1:]) if a != b)
    print(f"{policy}: {own / 3600:.1f} GPU-hours, its GPU count changes {changes} times ({changes / days:.1f} a day)")
    print(f"staircase of at most {k_max} changes ({per_day:g} a day over {days:.2f} days): "
          f"{answer / 3600:.1f} GPU-hours, {answer / own:.3f}x")


if __name__ == "__main__":
    main()
