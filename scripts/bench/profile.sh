#!/usr/bin/env bash
# Benchmark of `parva profile`'s sweep: points measured per minute, and what pruning saves over
# the full grid. Results go to scripts/bench/profile-results-<part>.md (rewritten).
#
# 1. Emulated replay of ParvaGPU's published A100 tables (../shared/reference/parvagpu-a100, or
#    PARVA_REFERENCE_DIR) on a fake a100-80gb with --partition mig: the sweep's own cost with the
#    real models' A100 batch latencies and out-of-memory points, over the issue's grid (sizes
#    1,2,3,4,7 x procs 1,2,3 x batches 1..128), full vs --max-latency-ms vs --max-latency-ms --fast.
#    Skipped with a message when the reference data is absent.
# 2. The torch worker on this machine's CPU (--partition none) with an exported model
#    (models/mobilenetv2.pt; scripts/export_models.py), default measuring settings.
#
# Usage: scripts/bench/profile.sh [all|emulated|cpu|quick]   (quick: part 1 on resnet50 only)
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(scripts/bootstrap --torch)" >/dev/null
cargo build --release --locked -q -p parva -p parva-worker
PARVA=target/release/parva
REF=${PARVA_REFERENCE_DIR:-../shared/reference/parvagpu-a100}
WORK=$(mktemp -d /tmp/parva-bench-profile.XXXXXX)
PART=${1:-all}
case "$PART" in all|emulated|cpu|quick) ;; *) echo "usage: $0 [all|emulated|cpu|quick]" >&2; exit 2;; esac
LIMIT_MS=100
SETTINGS=(--min-seconds 0.5 --warmup-seconds 0.1 --max-seconds 5 --target-ci 0.02)

RUNS=0
row() { # name label args...
  local name=$1 label=$2; shift 2
  local dir t0 t1 json
  dir="$WORK/$((++RUNS))-$name"
  t0=$(date +%s.%N)
  json=$("$PARVA" profile --out "$dir" --run-dir "$dir.run" --json "$@" || true)
  t1=$(date +%s.%N)
  python3 - "$name" "$label" "$t0" "$t1" <<PY "$json"
import json, sys
name, label, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
r = json.loads(sys.argv[5] if len(sys.argv) > 5 else sys.stdin.read())
c = r["summary"]["counts"]; wall = t1 - t0
total = sum(c[k] for k in ("measured", "resumed", "oom", "pruned", "failed"))
print(f"| {name} | {label} | {total} | {c['measured']} | {c['oom']} | {c['pruned']} | {c['failed']} | {wall:.0f} | {c['measured'] / (wall / 60):.1f} |")
PY
}

header() {
  echo "# parva profile: sweep benchmark ($1)"
  echo
  echo "Produced by \`scripts/bench/profile.sh $PART\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%Y-%m-%d)."
  echo
  echo "Columns: grid points, points measured, out of memory, pruned, failed, wall seconds, measured points per minute."
  echo
}

emulated() {
header "emulated replay"
if [ -d "$REF/prof_data" ]; then
  echo "## 1. Emulated replay of ParvaGPU's A100 tables on a fake a100-80gb (--partition mig)"
  echo
  echo "Settings: \`${SETTINGS[*]}\`; pruning: \`--max-latency-ms $LIMIT_MS\` (and \`--fast\`)."
  echo
  echo "| model | pruning | points | measured | oom | pruned | failed | wall s | points/min |"
  echo "|---|---|---|---|---|---|---|---|---|"
  models=(resnet50 mobilenetv2 bert)
  [ "$PART" = "quick" ] && models=(resnet50)
  for m in "${models[@]}"; do
    meta=models/$m.json
    common=(--model "$meta" --backend emulated --emulate-from "$REF/prof_data" --fake-gpus a100-80gb:1 --partition mig --procs 1,2,3 "${SETTINGS[@]}")
    row "$m" "none (full grid)" "${common[@]}"
    row "$m" "latency" "${common[@]}" --max-latency-ms $LIMIT_MS
    row "$m" "latency + fast" "${common[@]}" --max-latency-ms $LIMIT_MS --fast
  done
  echo
else
  echo "(Skipped: ParvaGPU reference data not found at $REF.)"
  echo
fi
}

cpu() {
header "torch on the CPU"
if [ -f models/mobilenetv2.pt ]; then
  echo "## 2. torch worker on this CPU (--partition none), default measuring settings"
  echo
  echo "| model | pruning | points | measured | oom | pruned | failed | wall s | points/min |"
  echo "|---|---|---|---|---|---|---|---|---|"
  common=(--model models/mobilenetv2.pt --partition none --device cpu --batches 1,2,4,8,16,32 --procs 1,2)
  row mobilenetv2 "none (full grid)" "${common[@]}"
  row mobilenetv2 "latency (50 ms)" "${common[@]}" --max-latency-ms 50
else
  echo "(Skipped: models/mobilenetv2.pt not exported; see scripts/export_models.py.)"
fi
}

case "$PART" in
  all) emulated | tee scripts/bench/profile-results-emulated.md; cpu | tee scripts/bench/profile-results-cpu.md ;;
  emulated|quick) emulated | tee "scripts/bench/profile-results-$PART.md" ;;
  cpu) cpu | tee scripts/bench/profile-results-cpu.md ;;
esac
rm -rf "$WORK"
