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
#   CASES="..."      which cases (default: "socket:binary:image shm:binary:image shm:shm:image
#                    shm:binary:tiny shm:shm:tiny")
#
# Each case: transport:wire:tensors. transport: how batches reach the workers
# (--worker-transport); wire: how verify sends tensors (--wire; shm = system shared memory, the
# generator moves no bytes); tensors: image (resnet50's real shapes) or tiny (the same plan and
# profiles with FP32 [-1, 2] -> [-1, 3] metadata: the per-request cost alone).
# From each wire's tiny and image cases it derives the data path's cost and writes it as
# OUT/data_path.csv (parva_core::data_path): per request (tiny) and per MiB of tensors (the rest of
# image), each the larger of two measurements: the router's and workers' CPU per request at RATE,
# and the latency a lone request spends outside the model: a second `verify` at LOW_SCALE x RATE
# (default 0.05: 100 req/s, LOW_DURATION 10 s), where nothing queues, measures its median against
# the simulator's median for the same load without any data path (thread wake-ups and copies cost
# latency that no CPU counter shows). With PREDICT_DATA_PATH=FILE the prediction of every case
# includes FILE's costs (and no latency is derived).
# Bounded in time: cases x (DURATION + 2 s warm-up + ~10 s start-up).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
rate="${1:-2000}"
duration="${2:-20s}"
out="$(realpath -m "${3:-$root/reports/wire-$rate}")"
parva="$(realpath "${PARVA:-$root/target/release/parva}")"
cases="${CASES:-socket:binary:image shm:binary:image shm:shm:image shm:binary:tiny shm:shm:tiny}"
low_scale="${LOW_SCALE:-0.05}"
low_duration="${LOW_DURATION:-10s}"
[[ -x "$parva" ]] || { echo "no parva binary at $parva (cargo build --release --locked, or set PARVA)" >&2; exit 1; }
rm -rf "$out"; mkdir -p "$out/models-image" "$out/models-tiny" "$out/prof"
cp "$root/models/resnet50.json" "$out/models-image/"
cat > "$out/models-tiny/resnet50.json" <<'JSON'
{"name": "resnet50", "platform": "pytorch_torchscript", "description": "resnet50's plan with tiny tensors (bench)",
 "inputs": [{"name": "input__0", "datatype": "FP32", "shape": [-1, 2]}], "outputs": [{"name": "output__0", "datatype": "FP32", "shape": [-1, 3]}]}
JSON
cp "$root/prof_data/example/resnet50.csv" "$out/prof/"
# The old binary reads every *.csv of its profile directory as a table: it gets one without data_path.csv.
mkdir -p "$out/prof-plain"; cp "$root/prof_data/example/resnet50.csv" "$out/prof-plain/"
[[ -z "${PREDICT_DATA_PATH:-}" ]] || cp "$PREDICT_DATA_PATH" "$out/prof/data_path.csv"
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
printf '%-7s %-20s %9s %7s %8s %8s %9s %10s %10s %10s %11s %9s\n' binary case achieved failed p99_ms pred_ms p99/pred router_cpu worker_cpu verify_cpu router_s/GB cpu_us/req
run_case() { # label binary transport wire tensors
  local label="$1" bin="$2" transport="$3" wire="$4" tensors="$5" dir="$out/$1-$3-$4-$5"
  mkdir -p "$dir"
  local extra=() prof="$out/prof"
  [[ "$label" == before ]] && prof="$out/prof-plain" || extra=(--worker-transport "$transport")
  "$bin" serve --map "$out/map.csv" --backend emulated --models "$out/models-$tensors" --prof-data "$prof" \
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
  local models=()
  [[ "$label" == before ]] || models=(--models "$out/models-$tensors")
  /usr/bin/time -f '%U %S' -o "$dir/verify.time" "$bin" verify --endpoint "$addr" --map "$out/map.csv" --prof-data "$prof" "${models[@]}" \
    --duration "$duration" --warmup 2s --out "$dir/verify" --wire "$wire" --json > "$dir/verify.json" 2> "$dir/verify.err" || true
  local t1 s1 w1=0; t1="$(date +%s.%N)"; s1="$(ticks "$serve")"
  for p in "${workers[@]}"; do w1=$((w1 + $(ticks "$p"))); done
  # A lone request's latency outside the model (the new binary on the shm transport only).
  if [[ "$label" == after && "$transport" == shm && -z "${PREDICT_DATA_PATH:-}" ]]; then
    "$bin" verify --endpoint "$addr" --map "$out/map.csv" --prof-data "$prof" "${models[@]}" --rate-scale "$low_scale" \
      --duration "$low_duration" --warmup 2s --out "$dir/verify-low" --wire "$wire" --json > "$dir/verify-low.json" 2> "$dir/verify-low.err" || true
  fi
  kill "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true
  python3 - "$dir" "$label" "$transport:$wire:$tensors" "$((s1 - s0))" "$((w1 - w0))" "$hz" "$t0" "$t1" <<'PY'
import json, sys
d, label, case, router, workers, hz, t0, t1 = sys.argv[1:]
tensor_bytes = {"image": 602112 + 4000, "tiny": 8 + 12}[case.split(":")[2]]
hz = float(hz); wall = float(t1) - float(t0)
rep = json.load(open(f"{d}/verify.json"))
s = rep["services"][0]
# (GNU time writes "Command exited with non-zero status N" first when verify fails the SLO.)
u, sy = open(f"{d}/verify.time").read().strip().splitlines()[-1].split()[:2]
verify_cpu = float(u) + float(sy)
sent = s["sent"] + 0.0
# Requests sent over the whole run (warm-up included, as the CPU counts): measured rate x wall.
requests = s["sent_rate"] * wall
gb = requests * tensor_bytes / 1e9
router_s, worker_s = int(router) / hz, int(workers) / hz
cpu_us_per_req = (router_s + worker_s) / requests * 1e6 if requests else None
pred = s.get("predicted_p99_ms")
# The low-load run: the measured median less the simulator's (no data path in it), microseconds.
latency_us = None
try:
    low = json.load(open(f"{d}/verify-low.json"))["services"][0]
    if low.get("p50_ms") is not None and low.get("predicted_p50_ms") is not None and not low["failed"]:
        latency_us = max(low["p50_ms"] - low["predicted_p50_ms"], 0.0) * 1000
except (OSError, ValueError, KeyError, IndexError):
    pass
row = {"latency_us_per_request": latency_us, "binary": label, "case": case, "achieved_rate": s["achieved_rate"], "failed": s["failed"], "p99_ms": s["p99_ms"],
       "predicted_p99_ms": pred, "router_cores": router_s / wall, "worker_cores": worker_s / wall, "verify_cores": verify_cpu / wall,
       "router_s_per_gb": router_s / gb if gb else None, "worker_s_per_gb": worker_s / gb if gb else None, "gb": gb, "wall_s": wall,
       "requests": requests, "tensor_bytes": tensor_bytes, "cpu_us_per_request": cpu_us_per_req}
json.dump(row, open(f"{d}/row.json", "w"))
ratio = f"{s['p99_ms'] / pred:9.2f}" if pred and s["p99_ms"] else f"{'-':>9}"
print(f"{label:<7} {case:<20} {s['achieved_rate']:9.1f} {s['failed']:7d} {s['p99_ms'] or 0:8.1f} {pred or 0:8.1f} {ratio} "
      f"{router_s / wall:10.2f} {worker_s / wall:10.2f} {verify_cpu / wall:10.2f} {router_s / gb if gb else 0:11.3f} {cpu_us_per_req or 0:9.1f}")
PY
}
if [[ -n "${BEFORE:-}" ]]; then
  run_case before "$(realpath "$BEFORE")" socket binary image | tee -a "$out/runs.txt"
fi
for c in $cases; do
  IFS=: read -r transport wire tensors <<< "$c"
  run_case after "$parva" "$transport" "$wire" "$tensors" | tee -a "$out/runs.txt"
done
# The data path's cost per wire, from its tiny and image cases on the shm transport: per request
# (tiny) and per MiB (the rest of the image case's CPU per request over its MiB).
python3 - "$out" <<'PY'
import glob, json, sys
out = sys.argv[1]
rows = [json.load(open(f)) for f in glob.glob(f"{out}/after-*/row.json")]
by = {tuple(r["case"].split(":")): r for r in rows}
lines = ["wire,per_request_us,per_mib_us"]
seen = []
for wire in ("binary", "json", "shm"):
    tiny, image = by.get(("shm", wire, "tiny")), by.get(("shm", wire, "image"))
    if not (tiny and image and tiny["cpu_us_per_request"] and image["cpu_us_per_request"]):
        continue
    mib = image["tensor_bytes"] / 2**20
    cost = {}
    for what in ("cpu", "latency"):
        t, i = tiny.get(f"{what}_us_per_request"), image.get(f"{what}_us_per_request")
        if t is not None and i is not None:
            cost[what] = (t, max(i - t, 0.0) / mib)
            seen.append(f"{wire:<7} {what:<8} {t:9.1f} {cost[what][1]:9.1f}")
    per_req = max(c[0] for c in cost.values())
    per_mib = max(c[1] for c in cost.values())
    lines.append(f"{wire},{per_req:.1f},{per_mib:.1f}")
open(f"{out}/data_path.csv", "w").write("\n".join(lines) + "\n")
print("the data path per request and per MiB of tensors, microseconds: router + worker CPU at the")
print("bench's rate, and a lone request's latency outside the model (low load):")
print(f"{'wire':<7} {'measure':<8} {'per_req':>9} {'per_mib':>9}")
print("\n".join(seen))
print("data_path.csv (the larger of the two):")
print("\n".join(lines))
PY
