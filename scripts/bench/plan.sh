#!/usr/bin/env bash
# Planning benchmark: plan time and GPUs vs lower bound for generated fleets, and the ParvaGPU
# reference scenarios under both planners and latency models, with simulated p99 checks.
# Writes a Markdown report on stdout. Needs ../shared/reference/parvagpu-a100 (or REF=...).
#
#   scripts/bench/plan.sh > scripts/bench/plan-results.md
set -euo pipefail
cd "$(dirname "$0")/../.."
REF="${REF:-../shared/reference/parvagpu-a100}"
if [[ ! -d "$REF/prof_data" ]]; then
  echo "skipped: ParvaGPU reference data not found at $REF (set REF=...)" >&2
  exit 0
fi
eval "$(scripts/bootstrap)"
cargo build --release --quiet
PARVA=target/release/parva
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
field() { python3 -c "import json,sys; d=json.load(open('$1')); print($2)"; }

echo "# Planning benchmark"
echo
echo "Produced by \`scripts/bench/plan.sh\` on $(nproc) cores ($(uname -m)), $(date -u +%Y-%m-%d)."
echo "Fleets: \`scripts/gen_fleet.py $REF/prof_data N 1\` (11 reference models, rates log-uniform"
echo "20-2000 req/s, SLOs 4-20x the model's fastest batch-1 latency). GPU: a100-80gb, 1-3 processes."
echo "\`plan s\` is the planner's own time (\`plan_seconds\`); \`wall s\` the whole command (reading included)."
echo
echo "## Generated fleets (\`--algorithm optimal\`)"
echo
echo "| services | latency model | GPUs | lower bound | gap | proven optimal | plan s | wall s |"
echo "|---:|---|---:|---:|---:|---|---:|---:|"
for n in 100 1000 10000; do
  python3 scripts/gen_fleet.py "$REF/prof_data" "$n" 1 > "$tmp/fleet$n.csv"
  for lm in parvagpu queueing; do
    start=$(date +%s.%N)
    $PARVA plan --prof-data "$REF/prof_data" --services "$tmp/fleet$n.csv" --gpu-type a100-80gb --latency-model "$lm" \
      --out "$tmp/plan-$n-$lm.csv" --json > "$tmp/p.json"
    end=$(date +%s.%N)
    field "$tmp/p.json" "'| $n | $lm | %d | %d | %.2f %% | %s | %.3f | %.3f |' % (d['gpus'], d['lower_bound_gpus'], 100*(d['gpus']-d['lower_bound_gpus'])/d['lower_bound_gpus'], d['proven_optimal'], d['plan_seconds'], $end-$start)"
  done
done
echo
echo "## ParvaGPU reference scenarios (A100 80GB)"
echo
echo "Simulated with \`parva simulate --duration 60s --warmup 5s --seed 1\` (Poisson arrivals); a service"
echo "misses when its simulated p99 exceeds its SLO."
echo
echo "| scenario | planner | latency model | GPUs | lower bound | proven | services missing p99 <= SLO |"
echo "|---:|---|---|---:|---:|---|---|"
for n in 1 2 3 4 5 6; do
  for cfg in "parvagpu parvagpu" "optimal parvagpu" "optimal queueing"; do
    set -- $cfg
    $PARVA plan --prof-data "$REF/prof_data" --slo-dir "$REF/SLO" --slo "$n" --gpu-type a100-80gb --algorithm "$1" \
      --latency-model "$2" --out "$tmp/s$n.csv" --json > "$tmp/p.json"
    $PARVA simulate --map "$tmp/s$n.csv" --prof-data "$REF/prof_data" --json > "$tmp/s.json" || true
    misses=$(field "$tmp/s.json" "', '.join('%s (p99 %.0f ms > %.1f)' % (s['service'], s['p99_ms'], s['slo_ms']) for s in d['services'] if not s['pass']) or 'none'")
    field "$tmp/p.json" "'| $n | $1 | $2 | %d | %s | %s | $misses |' % (d['gpus'], d['lower_bound_gpus'] if d['lower_bound_gpus'] is not None else '-', d['proven_optimal'])"
  done
done
echo
echo "## Simulating the 1,000-service queueing plan"
echo
echo "\`parva simulate --duration 60s --warmup 5s\` on the plan above (Poisson arrivals, seeds 1-3)."
echo
echo "| seed | requests/s offered | events | wall s | peak RSS MB | services missing p99 <= SLO |"
echo "|---:|---:|---:|---:|---:|---|"
for seed in 1 2 3; do
  /usr/bin/time -f "%e %M" -o "$tmp/time" $PARVA simulate --map "$tmp/plan-1000-queueing.csv" --prof-data "$REF/prof_data" \
    --seed "$seed" --json > "$tmp/s.json" || true
  read -r wall rss < <(tail -n 1 "$tmp/time")
  field "$tmp/s.json" "'| $seed | %.0f | %d | $wall | %.0f | %s |' % (sum(s['offered_rate'] for s in d['services']), d['events'], $rss/1024, ', '.join('%s (p99 %.1f ms > %.1f)' % (s['service'], s['p99_ms'], s['slo_ms']) for s in d['services'] if not s['pass']) or 'none')"
done
