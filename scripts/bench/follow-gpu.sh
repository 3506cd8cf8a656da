#!/usr/bin/env bash
# Issue 14 on a real GPU: `parva deploy --follow --no-mig` (one MPS daemon for the whole GPU, each
# segment's workers capped by CUDA_MPS_ACTIVE_THREAD_PERCENTAGE; MIG mode is never touched) with
# TorchScript workers on CUDA, while `parva verify --rates` ramps one bert service 40 -> 120 -> 40
# req/s. Prints the verify summary, the transitions and what each cost.
#
#   scripts/bench/follow-gpu.sh [OUT_DIR]            # on the GPU machine, binaries in $BIN (.gpu)
#   BACKEND=emulated FAKE=h200-141gb:1 BIN=target/release scripts/bench/follow-gpu.sh /tmp/fg   # rehearsal here
# Env: BIN (parva and parva-worker), GPU_TYPE (h200-141gb), PROF (prof_data/$GPU_TYPE-mps),
#      BACKEND (torch), FAKE (fake GPUs for a rehearsal without a GPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
bin="$(realpath "${BIN:-.gpu}")"; gpu_type="${GPU_TYPE:-h200-141gb}"; prof="${PROF:-prof_data/$gpu_type-mps}"
backend="${BACKEND:-torch}"; out="$(realpath -m "${1:-reports/follow-gpu}")"
rm -rf "$out"; mkdir -p "$out"
export PARVA_WORKER="$bin/parva-worker"
# Fake GPUs have MIG on: the rehearsal deploys MIG instances instead of MPS shares.
fake=(); mig=(--no-mig); [[ -n "${FAKE:-}" ]] && { fake=(--fake-gpus "$FAKE"); mig=(); }
if [[ $backend == torch ]]; then
    python3 scripts/export_models.py --out "$out/models" bert > "$out/export.log" 2>&1 || { cat "$out/export.log"; exit 1; }
    models="$out/models"; device=(--device cuda)
else
    models=models; device=()
fi
printf 'service,model,rate,slo_ms\nnlp,bert,40,400\n' > "$out/services.csv"
printf 'time_s,service,rate\n0,nlp,40\n15,nlp,120\n35,nlp,40\n' > "$out/rates.csv"
"$bin/parva" plan --prof-data "$prof" --services "$out/services.csv" --gpu-type "$gpu_type" --out "$out/map.csv" > /dev/null || exit 1
RUST_LOG=info "$bin/parva" deploy --map "$out/map.csv" "${mig[@]}" "${fake[@]}" --run-dir "$out/run" --backend "$backend" "${device[@]}" \
    --prof-data "$prof" --models "$models" --listen 127.0.0.1:0 --follow --services "$out/services.csv" \
    --window 2s --ewma 1 --down-after 8s --warmup-window 0s --max-changes-per-hour 3 > "$out/deploy.out" 2> "$out/deploy.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
t0=$(date +%s)
until addr=$(grep -o '^listening on http://[0-9.:]*' "$out/deploy.out" 2>/dev/null | cut -d' ' -f3); do
    kill -0 $pid 2>/dev/null || { cat "$out/deploy.log" >&2; exit 1; }; sleep 0.2; done
until curl -sf "$addr/v2/health/ready" > /dev/null; do
    kill -0 $pid 2>/dev/null || { tail -20 "$out/deploy.log" >&2; exit 1; }
    (( $(date +%s) - t0 > 180 )) && { echo "not ready after 180 s" >&2; tail -20 "$out/deploy.log" >&2; exit 1; }
    sleep 0.5; done
echo "ready after $(( $(date +%s) - t0 )) s"
"$bin/parva" verify --endpoint "$addr" --services "$out/services.csv" --rates "$out/rates.csv" --duration 55s --warmup 0 \
    --out "$out/verify" --json > "$out/verify.json"
curl -s "$addr/metrics" > "$out/metrics.txt"
"$bin/parva" deploy --teardown "${fake[@]}" --run-dir "$out/run" > "$out/teardown.log" 2>&1
python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
s = json.load(open(f"{out}/verify.json"))["services"][0]
print(f"sent {s['sent']}, succeeded {s['succeeded']}, failed {s['failed_by']}, dropped {s['dropped']}, "
      f"p50 {s['p50_ms']:.1f} p99 {s['p99_ms']:.1f} ms (SLO {s['slo_ms']:.0f}), within SLO {s['attainment_pct']:.2f} %")
m = open(f"{out}/metrics.txt").read()
for name in ["parva_follow_transitions_total", "parva_follow_failures_total", "parva_free_gpus"]:
    v = re.search(rf"^{name} (\S+)", m, re.M)
    print(f"{name} {v.group(1) if v else '-'}")
for line in open(f"{out}/deploy.log"):
    if "follow:" in line or "segment" in line or "worker ready" in line:
        print(line.rstrip()[:220])
PY
