#!/usr/bin/env bash
# Best-effort jobs over a day (issue 15): the day benchmark's fleet and diurnal trace (day.sh),
# simulated with and without best-effort jobs on the idle GPCs. Results: jobs-results.md.
#
#   scripts/bench/jobs-day.sh [SERVICES=40] [SEED=5] [OUT=reports/jobs-day-<services>-<seed>]
#   PARVA=path/to/parva (default target/release/parva; cargo build --release --locked first)
#   PARVA_REFERENCE_DIR (default ../shared/reference/parvagpu-a100)
#   JOBS (default scripts/bench/jobs-day.csv)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-40}"
seed="${2:-5}"
out="$(realpath -m "${3:-$root/reports/jobs-day-$n-$seed}")"
parva="$(realpath "${PARVA:-$root/target/release/parva}")"
ref="$(realpath "${PARVA_REFERENCE_DIR:-$root/../shared/reference/parvagpu-a100}")"
jobs="$(realpath "${JOBS:-$root/scripts/bench/jobs-day.csv}")"
[[ -x "$parva" ]] || { echo "no parva binary at $parva" >&2; exit 1; }
[[ -d "$ref/prof_data" ]] || { echo "no reference data at $ref (set PARVA_REFERENCE_DIR)" >&2; exit 1; }
mkdir -p "$out/with" "$out/without"
python3 "$root/scripts/gen_fleet.py" "$ref/prof_data" "$n" "$seed" > "$out/services.csv"
python3 "$root/scripts/gen_trace.py" "$out/services.csv" --seed "$seed" > "$out/trace.csv"
common=(--rates "$out/trace.csv" --services "$out/services.csv" --prof-data "$ref/prof_data" --gpu-type a100-80gb --duration 24h)
/usr/bin/time -f "with jobs: %e s wall, %M KB max RSS" "$parva" simulate "${common[@]}" --jobs "$jobs" \
    --out "$out/with" | tee "$out/with/day.txt" || true
/usr/bin/time -f "without jobs (follow): %e s wall, %M KB max RSS" "$parva" simulate "${common[@]}" --policy follow \
    --out "$out/without" | tee "$out/without/day.txt" || true
python3 - "$out/with/day.json" "$out/without/day.json" <<'PY'
import json, sys
w = {p["policy"]: p for p in json.load(open(sys.argv[1]))["policies"]}
wo = {p["policy"]: p for p in json.load(open(sys.argv[2]))["policies"]}
surplus = w["static"]["gpu_hours"] - w["oracle"]["gpu_hours"]
f = w["follow"]
print(f"static leaves {surplus:.1f} GPU-hours idle (static {w['static']['gpu_hours']:.1f} - oracle {w['oracle']['gpu_hours']:.1f})")
print(f"follow with jobs gives {f['job_gpu_hours']:.1f} GPU-hours to jobs: {100 * f['job_gpu_hours'] / surplus:.1f} % of them")
print(f"worst service within SLO: follow with jobs {f['worst_service_pct']:.3f} %, without {wo['follow']['worst_service_pct']:.3f} %")
per = {s["service"]: s["within_slo_pct"] for s in wo["follow"]["services"]}
below = [s["service"] for s in f["services"] if s["within_slo_pct"] < 99.0]
print(f"services below 99 % with jobs: {len(below)} {below}; without: {sum(1 for v in per.values() if v < 99.0)}")
PY
