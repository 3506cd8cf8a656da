#!/usr/bin/env bash
# Issue 14, live: `parva deploy --follow` on 2 fake A100s with the emulated backend while
# `parva verify --rates` ramps one service 80 -> 240 -> 80 req/s (1x, 3x, 1x) over 32 s.
# Prints the verify summary, the controller's transitions and the node's metrics after.
#   PARVA=target/release/parva scripts/bench/follow-live.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
parva="${PARVA:-target/release/parva}"
out="$(realpath -m "${1:-reports/follow-live}")"
rm -rf "$out"; mkdir -p "$out"
prof=tests/fixtures/verify/prof; models=tests/fixtures/verify/models
printf 'service,model,rate,slo_ms\nroomy,fast,80,200\n' > "$out/services.csv"
printf 'time_s,service,rate\n0,roomy,80\n8,roomy,240\n20,roomy,80\n' > "$out/rates.csv"
"$parva" plan --prof-data $prof --services "$out/services.csv" --gpu-type a100-80gb --out "$out/map.csv" > /dev/null
RUST_LOG=info "$parva" deploy --map "$out/map.csv" --fake-gpus a100-80gb:2 --run-dir "$out/run" --backend emulated \
    --prof-data $prof --models $models --listen 127.0.0.1:0 --follow --services "$out/services.csv" \
    --window 1s --ewma 1 --min-interval 4s > "$out/deploy.out" 2> "$out/deploy.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until addr=$(grep -o '^listening on http://[0-9.:]*' "$out/deploy.out" 2>/dev/null | cut -d' ' -f3); do
    kill -0 $pid 2>/dev/null || { cat "$out/deploy.log" >&2; exit 1; }; sleep 0.2; done
until curl -sf "$addr/v2/health/ready" > /dev/null; do sleep 0.2; done
"$parva" verify --endpoint "$addr" --services "$out/services.csv" --rates "$out/rates.csv" --duration 32s --warmup 0 \
    --out "$out/verify" --json > "$out/verify.json" || true
curl -s "$addr/metrics" > "$out/metrics.txt"
"$parva" deploy --teardown --fake-gpus a100-80gb:2 --run-dir "$out/run" > /dev/null
python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
s = json.load(open(f"{out}/verify.json"))["services"][0]
print(f"sent {s['sent']}, succeeded {s['succeeded']}, failed {s['failed_by']}, dropped {s['dropped']}, "
      f"p99 {s['p99_ms']:.1f} ms (SLO {s['slo_ms']:.0f}), within SLO {s['attainment_pct']:.2f} %")
m = open(f"{out}/metrics.txt").read()
for name in ["parva_follow_transitions_total", "parva_follow_failures_total", "parva_free_gpus"]:
    v = re.search(rf"^{name} (\S+)", m, re.M)
    print(f"{name} {v.group(1) if v else '-'}")
for line in open(f"{out}/deploy.log"):
    if "follow:" in line:
        print(re.sub(r"^\S+\s+\S+\s+\S+\s+", "", line.rstrip())[:200])
PY
