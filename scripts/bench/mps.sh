#!/usr/bin/env bash
# GPUs without MIG (issue 17): GPUs needed by `--algorithm optimal`, by gpu-let's heuristic
# (`--algorithm gpulet`), by optimal under gpu-let's latency rule (`--latency-model gpulet`: the
# same rule as the heuristic, so the planners alone are compared) and with no sharing
# (`--max-shares 1`: one segment per GPU), on the same
# services and share-keyed tables, with each plan's SLO attainment in simulation (60 s of Poisson
# arrivals, 20 % interference between shares of a GPU: the planners' default margin).
# Writes a Markdown report on stdout.
#
#   scripts/bench/mps.sh > scripts/bench/mps-results.md
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(scripts/bootstrap)"
cargo build --release --quiet -p parva
PARVA=target/release/parva
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "# MPS-share planning: optimal vs gpu-let vs no sharing"
echo
echo "Produced by \`scripts/bench/mps.sh\` on $(nproc) cores ($(uname -m)), $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)."
echo "Each plan is simulated for 60 s (\`parva simulate --duration 60\`, seed 1), with the 20 % interference"
echo "slowdown for a segment that shares its GPU that the planners assume. \`attainment\` is the lowest"
echo "share of a service's requests within its SLO; \`pass\` counts services whose p99 meets the SLO."
echo
echo "| scenario | GPU type | services | algorithm | GPUs | lower bound | complete | pass | attainment (min) | plan s |"
echo "|---|---|---:|---|---:|---:|---|---:|---:|---:|"

scenario() { # name prof gpu services
  local name="$1" prof="$2" gpu="$3" svcs="$4" n
  n=$(($(wc -l < "$svcs") - 1))
  for alg in optimal gpulet rule none; do
    local args=(--algorithm "$alg")
    [[ $alg == none ]] && args=(--max-shares 1)
    [[ $alg == rule ]] && args=(--algorithm optimal --latency-model gpulet)
    if ! $PARVA plan --prof-data "$prof" --services "$svcs" --gpu-type "$gpu" "${args[@]}" --out "$tmp/$name-$alg.csv" --json > "$tmp/p.json" 2> "$tmp/err"; then
      [[ -s "$tmp/p.json" ]] || { echo "| $name | $gpu | $n | $alg | failed: $(head -1 "$tmp/err") | | | | | |"; continue; }
    fi
    $PARVA simulate --map "$tmp/$name-$alg.csv" --prof-data "$prof" --duration 60 --json > "$tmp/s.json" 2>/dev/null || true
    python3 - "$tmp/p.json" "$tmp/s.json" "$name" "$gpu" "$n" "$alg" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
try:
    s = json.load(open(sys.argv[2]))
    svcs = s["services"]
    passed = f'{sum(1 for x in svcs if x["pass"])} / {len(svcs)}'
    att = f'{min(x["attainment_pct"] for x in svcs):.2f} %'
except Exception:
    passed, att = "-", "-"
label = {"optimal": "optimal", "gpulet": "gpulet", "rule": "optimal under gpu-let's rule (--latency-model gpulet)", "none": "no sharing (--max-shares 1)"}[sys.argv[6]]
lb = p.get("lower_bound_gpus")
print(f'| {sys.argv[3]} | {sys.argv[4]} | {sys.argv[5]} | {label} | {p["gpus"]} | {lb if lb is not None else "-"} | {p["complete"]} | {passed} | {att} | {p["plan_seconds"]:.3f} |')
PY
  done
}

scenario "five services" prof_data/example-mps l4-24gb scripts/bench/mps-services.csv
for n in 10 30; do
  python3 scripts/gen_fleet.py prof_data/example-mps "$n" 1 > "$tmp/fleet$n.csv"
  scenario "fleet $n (seed 1)" prof_data/example-mps l4-24gb "$tmp/fleet$n.csv"
done
python3 scripts/gen_fleet.py prof_data/h100-80gb-nomig 12 2 > "$tmp/h100.csv"
scenario "fleet 12 (seed 2), measured tables" prof_data/h100-80gb-nomig h100-80gb-nomig "$tmp/h100.csv"

echo
echo "Tables: \`prof_data/example-mps\` (illustrative, L4-like) and \`prof_data/h100-80gb-nomig\`"
echo "(measured on an H100 without MIG, 2026-11-26; resnet50 has no 100 % share there)."
echo "Fleets: \`scripts/gen_fleet.py PROF N SEED\` (rates log-uniform 20-2000 req/s, SLOs 4-20x the"
echo "model's fastest batch-1 latency). \`scripts/bench/mps-services.csv\`: five hand-picked services."
