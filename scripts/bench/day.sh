#!/usr/bin/env bash
# Day benchmark (issues 14, 32): a generated fleet on ParvaGPU's A100 profiles, a multi-day
# diurnal trace with day-to-day variation and bursts, and `parva simulate --rates` under static,
# oracle and the forecasting controller (the defaults); then `parva replan` of a 1,000-service
# fleet. Results: day-results.md.
#
#   scripts/bench/day.sh [SERVICES=12] [SEED=11] [OUT=reports/day-<services>-<seed>]
#   PARVA=path/to/parva (default target/release/parva; cargo build --release --locked first)
#   PARVA_REFERENCE_DIR (default ../shared/reference/parvagpu-a100)
#   DAYS       days of trace (default 3)
#   SCALE      the fleet's rates times this (default 12: a fleet of ~30 A100s at its peak)
#   SIM_ARGS   extra `parva simulate` arguments (e.g. "--policy static,oracle,forecast,follow")
#   TRACE_ARGS extra scripts/gen_trace.py arguments (default "--step 600 --start-hour 6 --trough 0.2")
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-12}"
seed="${2:-11}"
out="$(realpath -m "${3:-$root/reports/day-$n-$seed}")"
days="${DAYS:-3}"
scale="${SCALE:-12}"
parva="$(realpath "${PARVA:-$root/target/release/parva}")"
ref="$(realpath "${PARVA_REFERENCE_DIR:-$root/../shared/reference/parvagpu-a100}")"
[[ -x "$parva" ]] || { echo "no parva binary at $parva" >&2; exit 1; }
[[ -d "$ref/prof_data" ]] || { echo "no reference data at $ref (set PARVA_REFERENCE_DIR)" >&2; exit 1; }
mkdir -p "$out"
python3 "$root/scripts/gen_fleet.py" "$ref/prof_data" "$n" "$seed" | python3 -c '
import csv, sys
rows = list(csv.DictReader(sys.stdin))
w = csv.writer(sys.stdout, lineterminator="\n")
w.writerow(["service", "model", "rate", "slo_ms"])
for r in rows:
    w.writerow([r["service"], r["model"], round(float(r["rate"]) * float(sys.argv[1]), 1), r["slo_ms"]])
' "$scale" > "$out/services.csv"
# shellcheck disable=SC2086
python3 "$root/scripts/gen_trace.py" "$out/services.csv" --days "$days" --seed "$seed" \
    ${TRACE_ARGS:---step 600 --start-hour 6 --trough 0.2} > "$out/trace.csv"
# shellcheck disable=SC2086
/usr/bin/time -f "simulate --rates: %e s wall, %M KB max RSS" "$parva" simulate --rates "$out/trace.csv" \
    --services "$out/services.csv" --prof-data "$ref/prof_data" --gpu-type a100-80gb --duration "$((days * 24))h" \
    --out "$out" ${SIM_ARGS:-} | tee "$out/day.txt" || true
# replan: a 1,000-service fleet re-planned after a random change of rates (x0.5 .. x2)
python3 "$root/scripts/gen_fleet.py" "$ref/prof_data" 1000 1 > "$out/fleet1000.csv"
python3 - "$out/fleet1000.csv" "$out/fleet1000-b.csv" <<'PY'
import csv, random, sys
rows = list(csv.DictReader(open(sys.argv[1])))
rng = random.Random(7)
w = csv.writer(open(sys.argv[2], "w"), lineterminator="\n")
w.writerow(["service", "model", "rate", "slo_ms"])
for r in rows:
    w.writerow([r["service"], r["model"], round(float(r["rate"]) * rng.choice([0.5, 0.8, 1, 1, 1, 1.25, 2]), 3), r["slo_ms"]])
PY
"$parva" plan --prof-data "$ref/prof_data" --services "$out/fleet1000.csv" --gpu-type a100-80gb --out "$out/fleet1000.map.csv" > /dev/null
/usr/bin/time -f "replan 1000 services: %e s wall, %M KB max RSS" "$parva" replan --from "$out/fleet1000.map.csv" \
    --prof-data "$ref/prof_data" --services "$out/fleet1000-b.csv" --gpu-type a100-80gb \
    --out "$out/fleet1000-b.map.csv" --transition "$out/fleet1000-transition.json" | head -3
