#!/usr/bin/env bash
# The data path (issue 21): CPU per GB of tensor data and p99 against the simulator's prediction,
# for real-sized inputs (resnet50, FP32 3x224x224 = 602,112 bytes per request) at RATE req/s,
# emulated backend, loopback, on this machine. One `parva serve` per case; `parva verify` loads it
# open loop (Poisson) with the map's prediction. CPU is read from /proc before and after each
# verify run: the router (the `parva serve` process), its workers (their pid files), the load
# generator (verify itself, from its rusage).
#
#   scripts/bench/wire.sh [RATE=2000] [DURATION=20s] [OUT=reports/wire-<rate>]
#   PARVA=path       the binary under test (default target/release/parva)
#   BEFORE=path      an older binary to measure first as the baseline (it has no --worker-transport
#                    and no --wire shm; it runs the socket transport and the binary wire)
#   CASES="..."      which cases (default: "socket:binary shm:binary shm:shm")
#
# Each case: transport:wire. transport: how batches reach the workers (--worker-transport);
# wire: how verify sends tensors (--wire; shm = system shared memory, the generator moves no bytes).
# Bounded in time: cases x (DURATION + 2 s warm-up + ~10 s start-up).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
rate="${1:-2000}"
duration="${2:-20s}"
out="$(realpath -m "${3:-$root/reports/wire-$rate}")"
parva="$(realpath "${PARVA:-$root/target/release/parva}")"
cases="${CASES:-socket:binary shm:binary shm:shm}"
[[ -x "$parva" ]] || { echo "no parva binary at $parva (cargo build --release --locked, or set PARVA)" >&2; exit 1; }
rm -rf "$out"; mkdir -p "$out/models"
cp "$root/models/resnet50.json" "$out/models/"
# resnet50 on three 3g.40gb segments of one A100 (example profiles), one process each, batch 16:
# ~3 x 1028 = 3084 req/s of capacity for 2000 req/s; the SLO is 200 ms.
cat > "$out/map.csv" <<CSV
node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms
0,0,resnet50,resnet50,0,3,16,1,3g.40gb,a100-80gb,,$rate,200
0,0,resnet50,resnet50,4,3,16,1,3g.40gb,a100-80gb,,$rate,200
0,1,resnet50,resnet50,0,3,16,1,3g.40gb,a100-80gb,,$rate,200
CSV
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
ticks() { # utime + stime of a pid, in clock ticks (0 when gone)
  awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
hz="$(getconf CLK_TCK)"
echo "rate $rate req/s of 602,112-byte inputs ($(python3 -c "print(f'{$rate * 602112 / 1e9:.2f}')") GB/s), $duration per case after 2 s warm-up; $(nproc) cores"
printf '%-10s %-14s %9s %7s %8s %8s %9s %10s %10s %10s %11s\n' binary case achieved failed p99_ms pred_ms p99/pred router_cpu worker_cpu verify_cpu router_s/GB
run_case() { # label binary transport wire
  local label="$1" bin="$2" transport="$3" wire="$4" dir="$out/$1-$3-$4"
  mkdir -p "$dir"
  local extra=()
  [[ "$label" == before ]] || extra=(--worker-transport "$transport")
  "$bin" serve --map "$out/map.csv" --backend emulated --models "$out/models" --prof-data "$root/prof_data/example" \
    --listen 127.0.0.1:0 --run-dir "$dir/run" "${extra[@]}" > "$dir/serve.out" 2> "$dir/serve.err" & local serve=$!
  pids+=("$serve")
  local addr=""
  for _ in $(seq 300); do addr="$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$dir/serve.out" 2>/dev/null)"; [[ -n "$addr" ]] && break; sleep 0.1; done
  [[ -n "$addr" ]] || { echo "no address in $dir/serve.out" >&2; cat "$dir/serve.err" >&2; exit 1; }
  for _ in $(seq 300); do curl -sf "$addr/v2/health/ready" > /dev/null && break; sleep 0.1; done
  local workers=() w0=0 s0 v
  for f in "$dir"/run/*.pid; do workers+=("$(cat "$f")"); done
  s0="$(ticks "$serve")"
  for p in "${workers[@]}"; do w0=$((w0 + $(ticks "$p"))); done
  local t0; t0="$(date +%s.%N)"
  /usr/bin/time -f '%U %S' -o "$dir/verify.time" "$bin" verify --endpoint "$addr" --map "$out/map.csv" --prof-data "$root/prof_data/example" \
    --duration "$duration" --warmup 2s --out "$dir/verify" --wire "$wire" --json > "$dir/verify.json" 2> "$dir/verify.err" || true
  local t1 s1 w1=0; t1="$(date +%s.%N)"; s1="$(ticks "$serve")"
  for p in "${workers[@]}"; do w1=$((w1 + $(ticks "$p"))); done
  kill "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true
  python3 - "$dir" "$label" "$transport:$wire" "$((s1 - s0))" "$((w1 - w0))" "$hz" "$t0" "$t1" <<'PY'
import json, sys
d, label, case, router, workers, hz, t0, t1 = sys.argv[1:]
hz = float(hz); wall = float(t1) - float(t0)
rep = json.load(open(f"{d}/verify.json"))
s = rep["services"][0]
u, sy = open(f"{d}/verify.time").read().split()[:2]
verify_cpu = float(u) + float(sy)
sent = s["sent"] + 0.0
# Requests sent over the whole run (warm-up included, as the CPU counts): measured rate x wall.
gb = s["sent_rate"] * wall * 602112 / 1e9
router_s, worker_s = int(router) / hz, int(workers) / hz
pred = s.get("predicted_p99_ms")
row = {"binary": label, "case": case, "achieved_rate": s["achieved_rate"], "failed": s["failed"], "p99_ms": s["p99_ms"],
       "predicted_p99_ms": pred, "router_cores": router_s / wall, "worker_cores": worker_s / wall, "verify_cores": verify_cpu / wall,
       "router_s_per_gb": router_s / gb if gb else None, "worker_s_per_gb": worker_s / gb if gb else None, "gb": gb, "wall_s": wall}
json.dump(row, open(f"{d}/row.json", "w"))
ratio = f"{s['p99_ms'] / pred:9.2f}" if pred and s["p99_ms"] else f"{'-':>9}"
print(f"{label:<10} {case:<14} {s['achieved_rate']:9.1f} {s['failed']:7d} {s['p99_ms'] or 0:8.1f} {pred or 0:8.1f} {ratio} "
      f"{router_s / wall:10.2f} {worker_s / wall:10.2f} {verify_cpu / wall:10.2f} {router_s / gb if gb else 0:11.3f}")
PY
}
if [[ -n "${BEFORE:-}" ]]; then
  run_case before "$(realpath "$BEFORE")" socket binary | tee -a "$out/runs.txt"
fi
for c in $cases; do
  run_case after "$parva" "${c%%:*}" "${c##*:}" | tee -a "$out/runs.txt"
done
