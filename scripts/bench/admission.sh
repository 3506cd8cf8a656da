#!/usr/bin/env bash
# Admission benchmark (issue 11): ParvaGPU's reference scenario 4 (11 services, ~13,000 req/s) on
# its planned node, `parva serve --backend emulated` with tiny tensor shapes, loaded open-loop by
# `parva verify` on this machine (loopback only). Prints per service the offered and achieved
# rate, p99 vs SLO, 429 and other failures, the generator's lag, and the acceptance check: no 429
# for a service whose measured p99 is under half its SLO, no 5xx. Results: admission-results.md.
#
#   scripts/bench/admission.sh [RATE_SCALE=1.0] [DURATION=30s] [OUT=reports/admission-<scale>]
#   PARVA=path/to/parva  the binary to test (default target/release/parva; build it first:
#                        cargo build --release --locked)
#   PARVA_REFERENCE_DIR  the reference data (default ../shared/reference/parvagpu-a100)
#   SERVE_ARGS           extra `parva serve` arguments (e.g. "--max-queue-batches 4")
#   SCENARIO             the reference scenario (default 4; 3 is ParvaGPU's other dense one)
#   PLAN_ARGS            extra `parva plan` arguments (e.g. "--margin 0")
#
# Bounded in time: DURATION of load plus the workers' start (a few seconds).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
scale="${1:-1.0}"
duration="${2:-30s}"
scenario="${SCENARIO:-4}"
out="$(realpath -m "${3:-$root/reports/admission-s$scenario-$scale}")"
parva="$(realpath "${PARVA:-$root/target/release/parva}")"
ref="$(realpath "${PARVA_REFERENCE_DIR:-$root/../shared/reference/parvagpu-a100}")"
port="${PORT:-18480}"
[[ -x "$parva" ]] || { echo "no parva binary at $parva (cargo build --release --locked, or set PARVA)" >&2; exit 1; }
[[ -d "$ref/prof_data" && -d "$ref/SLO" ]] || { echo "no reference data at $ref (set PARVA_REFERENCE_DIR)" >&2; exit 1; }
rm -rf "$out"; mkdir -p "$out/models"
# shellcheck disable=SC2086
"$parva" plan --prof-data "$ref/prof_data" --slo-dir "$ref/SLO" --slo "$scenario" --gpu-type a100-80gb --out "$out/plan.csv" ${PLAN_ARGS:-} > "$out/plan.txt"
python3 - "$root/models" "$out/models" <<'PY'
import json, pathlib, sys
for f in pathlib.Path(sys.argv[1]).glob("*.json"):
    m = json.loads(f.read_text())
    for t in m["inputs"] + m["outputs"]:
        t["shape"] = [-1, 2]
    (pathlib.Path(sys.argv[2]) / f.name).write_text(json.dumps(m))
PY
workers=$(awk -F, 'NR > 1 && $1 == 0 { n += $8 } END { print n }' "$out/plan.csv")
# shellcheck disable=SC2086
"$parva" serve --map "$out/plan.csv" --node 0 --backend emulated --prof-data "$ref/prof_data" --models "$out/models" \
    --listen "127.0.0.1:$port" --run-dir "$out/run" ${SERVE_ARGS:-} > "$out/serve.out" 2> "$out/serve.err" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    grep -q "ready: $workers/$workers" "$out/serve.err" 2>/dev/null && break
    kill -0 $server 2>/dev/null || { cat "$out/serve.err" >&2; exit 1; }
    sleep 0.2
done
set +e
/usr/bin/time -f "verify: %U s user, %S s system, %e s wall" "$parva" verify --endpoint "http://127.0.0.1:$port" --map "$out/plan.csv" \
    --prof-data "$ref/prof_data" --duration "$duration" --warmup 5s --rate-scale "$scale" --json --out "$out/verify" \
    > "$out/verify.json" 2> "$out/verify.err"
set -e
server_cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' /proc/$server/stat)
python3 - "$out/verify.json" "$scale" "$workers" "$server_cpu" "$scenario" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"scenario {sys.argv[5]} x {sys.argv[2]}, {sys.argv[3]} emulated workers; parva serve used {sys.argv[4]} s of CPU; "
      f"generator lag p99 {r['generator_lag_p99_ms']} ms")
print(f"{'service':12} {'SLO ms':>7} {'offered/s':>9} {'achieved/s':>10} {'p99 ms':>8} {'429':>6} {'other':>10} {'drop':>5} {'lag99 ms':>8}  rule")
tot = {"offered": 0.0, "achieved": 0.0, "429": 0}
broken = []
for s in r["services"]:
    failed = s["failed_by"]
    n429 = failed.get("429", 0)
    other = {k: v for k, v in failed.items() if k != "429"}
    p99 = s["p99_ms"] if s["p99_ms"] is not None else float("inf")
    ok = not any(k.startswith("5") for k in other) and not (p99 < s["slo_ms"] / 2 and n429 > 0)
    if not ok:
        broken.append(s["service"])
    tot["offered"] += s["offered_rate"]; tot["achieved"] += s["achieved_rate"]; tot["429"] += n429
    print(f"{s['service']:12} {s['slo_ms']:7.0f} {s['offered_rate']:9.1f} {s['achieved_rate']:10.1f} {p99:8.1f} {n429:6d} "
          f"{json.dumps(other) if other else '-':>10} {s['dropped']:5d} {s['lag_p99_ms']:8.1f}  {'ok' if ok else 'BROKEN'}")
print(f"total: offered {tot['offered']:.0f}/s, achieved {tot['achieved']:.0f}/s, 429 x {tot['429']}")
sent = sum(s["sent"] for s in r["services"]) if all("sent" in s for s in r["services"]) else None
if sent:
    print(f"parva serve CPU per request sent (warm-up and start included): {float(sys.argv[4]) / sent * 1e6:.1f} us")
print("acceptance (no 429 while p99 < SLO/2, no 5xx):", "pass" if not broken else f"FAIL ({', '.join(broken)})")
PY
tail -1 "$out/verify.err"
