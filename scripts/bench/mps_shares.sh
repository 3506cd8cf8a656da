#!/usr/bin/env bash
# MPS-share profile tables on a real GPU used without MIG (issue 17): each model at 20, 40, 50, 60,
# 80 and 100 % of the SMs (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, one MPS daemon that parva starts and
# stops), 1-2 processes, batches 1..32. The GPU's type is its `-nomig` type (h100-80gb-nomig).
#
#   scripts/bench/mps_shares.sh BIN_DIR MODELS_DIR OUT_DIR [CAP_SECONDS]
#
# BIN_DIR holds `parva` and `parva-worker` (scripts/gpu-check --prepare); MODELS_DIR the TorchScript
# files (scripts/export_models.py --out MODELS_DIR resnet50 mobilenetv2 bert). Each model's sweep is
# stopped by SIGINT after CAP_SECONDS (default 80) and kept as far as it got; running it again
# resumes it. Never changes MIG mode, MIG instances, clocks, power or compute mode.
set -uo pipefail
bin="$1" models="$2" out="$3" cap="${4:-80}"
export PARVA_WORKER="$bin/parva-worker"
mkdir -p "$out"
for m in resnet50 mobilenetv2 bert; do
    echo "== $m ($(date -u +%T))"
    timeout -s INT -k 15 "$cap" "$bin/parva" profile --model "$models/$m.pt" --partition mps \
        --shares 20,40,50,60,80,100 --procs 1,2 --batches 1,2,4,8,16,32 --max-latency-ms 200 --fast \
        --min-seconds 0.3 --max-seconds 1 --warmup-seconds 0.2 --out "$out" --json > "$out/$m.summary.json"
    echo "rc $? ($(date -u +%T))"
done
