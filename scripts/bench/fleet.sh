#!/usr/bin/env bash
# Mixed-fleet planning benchmark (issue 35): plan time, cost, bound and each type alone, for the
# example fleet (deployment/example-fleet: A100, H100, L4 at public on-demand prices, illustrative
# tables) on its two service mixes and on generated fleets of 30 to 1,000 services.
# Writes a Markdown report on stdout.
#
#   scripts/bench/fleet.sh > scripts/bench/fleet-results.md
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(scripts/bootstrap)"
cargo build --release --quiet
PARVA=target/release/parva
FLEET=deployment/example-fleet/fleet.csv
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "# Mixed-fleet planning benchmark"
echo
echo "Produced by \`scripts/bench/fleet.sh\` on $(nproc) cores ($(uname -m)), $(date -u +%Y-%m-%d)."
echo "Fleet: \`$FLEET\` (a100-80gb 1.30/h, h100-80gb 3.00/h, l4-24gb 0.80/h; the illustrative example"
echo "tables). Generated services: \`scripts/gen_fleet.py prof_data/example N 1\` (4 models, rates"
echo "log-uniform 20-2000 req/s, SLOs 4-20x the model's fastest batch-1 latency). \`plan s\` is the"
echo "planner's own time (the mixed plan and each type alone); \`wall s\` the whole command."
echo
echo "| services | GPUs (A100/H100/L4) | cost/h | lower bound | proven | cheapest type alone | saving | plan s | wall s |"
echo "|---|---|---:|---:|---|---|---:|---:|---:|"
row() {
  local name="$1" file="$2"
  local start end
  start=$(date +%s.%N)
  $PARVA plan --fleet "$FLEET" --services "$file" --out "$tmp/map.csv" --json > "$tmp/p.json"
  end=$(date +%s.%N)
  python3 - "$tmp/p.json" "$name" "$start" "$end" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
by = "/".join(str(t["gpus"]) for t in d["types"])
alone = d["cheapest_alone"]
alone_s = f"{alone[0]} {alone[1]:.2f}/h" if alone else "none serves all"
saving = f"{d['saving_per_hour']:.2f}/h" if d["saving_per_hour"] is not None else "-"
print(f"| {sys.argv[2]} | {d['gpus']} ({by}) | {d['cost_per_hour']:.2f} | {d['lower_bound']:.2f} | {d['proven_optimal']} | {alone_s} | {saving} | {d['plan_seconds']:.3f} | {float(sys.argv[4]) - float(sys.argv[3]):.3f} |")
PY
}
row "example services.csv (6)" deployment/example-fleet/services.csv
row "example services-tight.csv (7)" deployment/example-fleet/services-tight.csv
for n in 30 60 61 100 1000; do
  python3 scripts/gen_fleet.py prof_data/example "$n" 1 > "$tmp/f$n.csv"
  row "generated $n" "$tmp/f$n.csv"
done
echo
echo "Up to 60 services the plan is one integer program over every type (proven optimal above);"
echo "larger fleets keep each service whole on its cheapest type and pack each type optimally, so"
echo "their gap is to the rate bound (fractional segments at the best price per sample/s), which is"
echo "loose: the A100-alone plans, proven optimal on their own, sit only 1-4 % above the mixed ones."
