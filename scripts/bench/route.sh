#!/usr/bin/env bash
# Router-tier overhead (issue 16): p99 of one service at RATE req/s of small tensors (FP32 [-1, 2]
# -> [-1, 3], binary), verified directly on its `parva segment` and through `parva route` in front
# of it, alternating (direct, route, direct, route, ...) on this machine, loopback only, emulated
# backend. Prints each run and the medians; the added p99 is route - direct. Results:
# route-results.md.
#
#   scripts/bench/route.sh [RATE=5000] [DURATION=20s] [ROUNDS=3] [OUT=reports/route-<rate>-b<batch>]
#   PARVA=path/to/parva  the binary (default target/release/parva; cargo build --release --locked)
#   BATCH=32             the segment's batch size (7g, one process; a batch of b takes 1 + 0.02 b ms)
#
# Bounded in time: ROUNDS x 2 x (DURATION + 1 s warm-up) plus a few seconds of start-up.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
rate="${1:-5000}"
duration="${2:-20s}"
rounds="${3:-3}"
out="$(realpath -m "${4:-$root/reports/route-$rate-b${BATCH:-32}}")"
parva="$(realpath "${PARVA:-$root/target/release/parva}")"
[[ -x "$parva" ]] || { echo "no parva binary at $parva (cargo build --release --locked, or set PARVA)" >&2; exit 1; }
rm -rf "$out"; mkdir -p "$out/models" "$out/prof"
cat > "$out/models/tiny.json" <<'JSON'
{"name": "tiny", "platform": "pytorch_torchscript", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
 "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]}
JSON
# A 7g segment whose batch of b takes 1 + 0.02 b ms: batch 32 (1.64 ms) serves ~19,500 req/s.
python3 - "$out/prof/tiny.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("Mig instance,Batch size,Workload Number,Throughput,Latency\n")
    for b in (1, 2, 4, 8, 16, 32, 64):
        lat = (1 + 0.02 * b) / 1000
        f.write(f"7,{b},1,{b / lat:.3f},{lat:.6f}\n")
PY
cat > "$out/map.csv" <<CSV
node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms
0,0,tiny,tiny,0,7,${BATCH:-32},1,7g.80gb,a100-80gb,,$rate,100
CSV
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_line() { for _ in $(seq 200); do grep -q "listening on" "$1" 2>/dev/null && { sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$1"; return; }; sleep 0.1; done; echo "no address in $1" >&2; exit 1; }
"$parva" segment --map "$out/map.csv" --segment n0-g0-p0 --backend emulated --models "$out/models" --prof-data "$out/prof" \
  --listen 127.0.0.1:0 --run-dir "$out/run" > "$out/segment.out" 2> "$out/segment.err" & pids+=($!)
seg="$(wait_line "$out/segment.out")"
echo "segment,url" > "$out/segments.csv"; echo "n0-g0-p0,$seg" >> "$out/segments.csv"
"$parva" route --map "$out/map.csv" --segments "$out/segments.csv" --listen 127.0.0.1:0 > "$out/route.out" 2> "$out/route.err" & pids+=($!)
router="$(wait_line "$out/route.out")"
for _ in $(seq 100); do curl -sf "$router/v2/health/ready" > /dev/null && break; sleep 0.1; done
echo "rate $rate req/s, batch ${BATCH:-32}, $duration per run, $rounds rounds; segment $seg, router $router; $(nproc) cores"
printf '%-7s %-6s %10s %8s %8s %8s %8s %8s\n' round via achieved/s failed p50_ms p99_ms lag_p99 pass
for r in $(seq "$rounds"); do
  for via in direct route; do
    ep="$seg"; [[ $via == route ]] && ep="$router"
    "$parva" verify --endpoint "$ep" --map "$out/map.csv" --prof-data "$out/prof" --duration "$duration" --warmup 1s \
      --out "$out/$via-$r" --json > "$out/$via-$r.json" 2> "$out/$via-$r.err" || true
    python3 - "$out/$via-$r.json" "$r" "$via" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["services"][0]
print(f"{sys.argv[2]:<7} {sys.argv[3]:<6} {s['achieved_rate']:10.1f} {s['failed']:8d} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f} {s['lag_p99_ms']:8.2f} {str(s['pass']):>8}")
PY
  done
done | tee "$out/runs.txt"
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def med(via, key):
    return statistics.median(json.load(open(f"{out}/{via}-{r}.json"))["services"][0][key] for r in range(1, rounds + 1))
d, r = med("direct", "p99_ms"), med("route", "p99_ms")
print(f"median p99: direct {d:.2f} ms, through the router {r:.2f} ms: the router tier adds {r - d:+.2f} ms")
print(f"median p50: direct {med('direct', 'p50_ms'):.2f} ms, through the router {med('route', 'p50_ms'):.2f} ms")
PY
