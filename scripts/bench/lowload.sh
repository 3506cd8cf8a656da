#!/usr/bin/env bash
# Low-load batching (issue 36): one `parva serve` per case, emulated backend, loopback only; one
# `parva verify --rate-scale SCALES` loads it at each share of its planned rate in turn and puts the
# measured p50/p99 beside the simulator's prediction for the same map and load (the summary by load
# is each case's loads.csv). Results: lowload-results.md.
#
#   scripts/bench/lowload.sh [DURATION=20s] [OUT=reports/lowload]
#   PARVA=path     the binary under test (default target/release/parva; cargo build --release --locked)
#   SCALES=...     the loads (default 0.1,0.25,0.5,1)
#   BEFORE=path    an older binary (one --rate-scale per run) to measure first, on the same maps,
#                  as the baseline: its p50/p99 per load are printed above the new binary's table
#   DATA_PATH=FILE a data_path.csv measured on this machine (scripts/bench/wire.sh writes one): the
#                  prediction then counts each request's data path (copied beside the profiles)
#   CASES="..."    which cases (default "resnet50 resnet50-b32 scenario3 scenario4"):
#     resnet50     resnet50 with its real 602,112-byte inputs over shared memory (`--wire shm`),
#                  planned by `parva plan` for 2,000 req/s with a 200 ms SLO (A100 example profiles);
#     resnet50-b32 the issue's segments, `[2g b32x1][3g b32x2]` on one A100, at 1,600 req/s (their
#                  profiled throughput is 1,870 req/s on these profiles);
#     scenarioN    ParvaGPU's scenario N (../shared/reference/parvagpu-a100), planned by `parva
#                  plan` (queueing model), every model with tiny tensors (FP32 [-1, 2] -> [-1, 3]).
#
# Every load is measured on as many requests as the highest (`verify --equal-requests`: x0.1 runs
# ten times the measured seconds of x1), so that a low load's p99 is not the dozen slowest of a
# few thousand requests. Bounded in time: per case, the loads' (2 s warm-up + (DURATION - 2 s) x
# highest / load) plus ~10 s of start-up (20s and 0.1,0.25,0.5,1: about 5.5 minutes a case).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
duration="${1:-20s}"
out="$(realpath -m "${2:-$root/reports/lowload}")"
parva="$(realpath "${PARVA:-$root/target/release/parva}")"
scales="${SCALES:-0.1,0.25,0.5,1}"
cases="${CASES:-resnet50 resnet50-b32 scenario3 scenario4}"
ref="$(realpath -m "$root/../shared/reference/parvagpu-a100")"
[[ -x "$parva" ]] || { echo "no parva binary at $parva (cargo build --release --locked, or set PARVA)" >&2; exit 1; }
rm -rf "$out"; mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
echo "loads $scales, as many requests each as the highest in $duration (2 s warm-up); $(nproc) cores; $("$parva" --version)"

tiny_models() { # MAP DIR: a tiny-tensor metadata file for every model of MAP
  mkdir -p "$2"
  for m in $(tail -n +2 "$1" | cut -d, -f4 | sort -u); do
    printf '{"name": "%s", "platform": "pytorch_torchscript", "description": "tiny tensors (bench)",\n "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}], "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]}\n' "$m" > "$2/$m.json"
  done
}

run_case() { # NAME MAP PROF MODELS WIRE
  local name="$1" map="$2" prof="$3" models="$4" wire="$5" dir="$out/$1"
  mkdir -p "$dir"
  if [[ -n "${DATA_PATH:-}" ]]; then
    mkdir -p "$dir/prof"; cp "$prof"/*.csv "$dir/prof/"; cp "$DATA_PATH" "$dir/prof/data_path.csv"; prof="$dir/prof"
  fi
  if [[ -n "${BEFORE:-}" ]]; then
    "$BEFORE" serve --map "$map" --backend emulated --models "$models" --prof-data "$prof" \
      --listen 127.0.0.1:0 --run-dir "$dir/run-before" > "$dir/before.out" 2> "$dir/before.err" & local old=$!
    pids+=("$old")
    local at=""
    for _ in $(seq 600); do at="$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$dir/before.out" 2>/dev/null)"; [[ -n "$at" ]] && break; sleep 0.1; done
    echo; echo "== $name, before ($("$BEFORE" --version))"
    printf '%-7s %-20s %9s %8s %8s %8s %9s\n' load service offered/s p50_ms p99_ms sim_p99 in_SLO_%
    for scale in ${scales//,/ }; do
      "$BEFORE" verify --endpoint "$at" --map "$map" --prof-data "$prof" --models "$models" --wire "$wire" \
        --rate-scale "$scale" --duration "$duration" --warmup 2s --out "$dir/before-x$scale" --json > "$dir/before-x$scale.json" 2> /dev/null || true
      python3 - "$dir/before-x$scale.json" "$scale" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for s in r["services"]:
    f = lambda v: "-" if v is None else f"{v:.1f}"
    print(f"x{sys.argv[2]:<6} {s['service']:<20} {s['offered_rate']:9.1f} {f(s['p50_ms']):>8} {f(s['p99_ms']):>8} {f(s['predicted_p99_ms']):>8} {s['attainment_pct']:9.2f}")
PY
    done
    kill "$old" 2>/dev/null || true; wait "$old" 2>/dev/null || true
  fi
  "$parva" serve --map "$map" --backend emulated --models "$models" --prof-data "$prof" \
    --listen 127.0.0.1:0 --run-dir "$dir/run" > "$dir/serve.out" 2> "$dir/serve.err" & local serve=$!
  pids+=("$serve")
  local addr=""
  for _ in $(seq 600); do addr="$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$dir/serve.out" 2>/dev/null)"; [[ -n "$addr" ]] && break; sleep 0.1; done
  [[ -n "$addr" ]] || { echo "no address in $dir/serve.out" >&2; cat "$dir/serve.err" >&2; exit 1; }
  "$parva" verify --endpoint "$addr" --map "$map" --prof-data "$prof" --models "$models" --wire "$wire" \
    --rate-scale "$scales" --equal-requests --duration "$duration" --warmup 2s --out "$dir/verify" > "$dir/verify.txt" 2> "$dir/verify.err" || true
  kill "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true
  echo; echo "== $name ($(($(grep -c . "$map") - 1)) segments, wire $wire, $("$parva" --version))"
  sed -n '/^service .* load /,$p' "$dir/verify.txt"
  grep -h "warning: the load generator" "$dir/verify.txt" | sort -u | cut -c1-200 || true
}

for c in $cases; do
  case "$c" in
    resnet50)
      # resnet50 planned by `parva plan` for 2,000 req/s, SLO 200 ms, on the A100 example profiles.
      mkdir -p "$out/resnet50-in/models"
      cp "$root/models/resnet50.json" "$out/resnet50-in/models/"
      printf 'service,model,rate,slo_ms\nresnet50,resnet50,2000,200\n' > "$out/resnet50-in/services.csv"
      "$parva" plan --prof-data "$root/prof_data/example" --services "$out/resnet50-in/services.csv" --gpu a100-80gb \
        --out "$out/resnet50-in/map.csv" > "$out/resnet50-in/plan.txt" 2>&1
      run_case resnet50 "$out/resnet50-in/map.csv" "$root/prof_data/example" "$out/resnet50-in/models" shm ;;
    resnet50-b32)
      # The issue's segments, [2g b32x1][3g b32x2]: 1,870 req/s of profiled throughput on these
      # profiles, loaded at 1,600 req/s.
      mkdir -p "$out/resnet50-b32-in/models"
      cp "$root/models/resnet50.json" "$out/resnet50-b32-in/models/"
      cat > "$out/resnet50-b32-in/map.csv" <<'CSV'
node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms
0,0,resnet50,resnet50,0,2,32,1,2g.20gb,a100-80gb,743.714,1600,200
0,0,resnet50,resnet50,4,3,32,2,3g.40gb,a100-80gb,1126.668,1600,200
CSV
      run_case resnet50-b32 "$out/resnet50-b32-in/map.csv" "$root/prof_data/example" "$out/resnet50-b32-in/models" shm ;;
    scenario*)
      n="${c#scenario}"
      [[ -d "$ref" ]] || { echo "skip $c: no $ref" >&2; continue; }
      mkdir -p "$out/$c-in"
      "$parva" plan --prof-data "$ref/prof_data" --slo-dir "$ref/SLO" --slo "$n" --gpu a100-80gb \
        --out "$out/$c-in/map.csv" > "$out/$c-in/plan.txt" 2>&1
      tiny_models "$out/$c-in/map.csv" "$out/$c-in/models"
      run_case "$c" "$out/$c-in/map.csv" "$ref/prof_data" "$out/$c-in/models" binary ;;
    *) echo "unknown case $c" >&2; exit 2 ;;
  esac
done
