#!/usr/bin/env bash
# Diagnose verify misses on a real GPU: each service alone, then all, with /metrics after each.
set -u
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib PYTHONUNBUFFERED=1
R="$PWD"; G="$R/.gpu"; W=/tmp/diag; get() { python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())" "$1"; }; rm -rf $W; mkdir -p $W/m $W/pipe $W/log
export PARVA_WORKER=$G/parva-worker
python3 scripts/export_models.py --out $W/m resnet50 mobilenetv2 bert >/dev/null 2>&1 || echo export failed
export CUDA_VISIBLE_DEVICES=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0)
export CUDA_MPS_PIPE_DIRECTORY=$W/pipe CUDA_MPS_LOG_DIRECTORY=$W/log
nvidia-cuda-mps-control -d
$G/parva serve --map $G/plan.csv --backend torch --device cuda --models $W/m --services $G/services.csv --listen 127.0.0.1:29000 --run-dir $W/serve > $OUT/serve.log 2>&1 &
S=$!
for i in $(seq 1 240); do get http://127.0.0.1:29000/v2/health/ready >/dev/null && break; sleep 0.5; done
v() { # name services-file extra...
  local n=$1 f=$2; shift 2
  $G/parva verify --endpoint http://127.0.0.1:29000 --map $G/plan.csv --services $f --prof-data prof_data/h100-80gb-mps --duration 14s --warmup 2s --json --out $W/v-$n "$@" > $W/v-$n.json 2>$W/v-$n.err
  python3 - $W/v-$n.json $n <<'PY'
import json,sys
r=json.load(open(sys.argv[1]))
for s in r["services"]:
    print(f"{sys.argv[2]:10} {s['service']:16} sent {s['sent_rate']:6.1f}/s ok {s['achieved_rate']:6.1f}/s p50 {s['p50_ms']} p99 {s['p99_ms']} pred {s.get('predicted_p99_ms')} att {s['attainment_pct']:.1f} fails {s['failed_by']}")
PY
  get http://127.0.0.1:29000/metrics > $W/metrics-$n.txt
}
for s in svc-resnet50 svc-mobilenetv2 svc-bert; do
  (head -1 $G/services.csv; grep "^$s," $G/services.csv) > $W/one-$s.csv
  v $s $W/one-$s.csv
done
v all $G/services.csv
v all-half $G/services.csv --rate-scale 0.5
v all-const $G/services.csv --distribution constant
nvidia-smi --query-compute-apps=pid,used_memory --format=csv
kill $S; wait $S
echo quit | nvidia-cuda-mps-control
cp $W/metrics-all.txt $W/metrics-svc-mobilenetv2.txt $OUT/ 2>/dev/null
ls $W/serve; tail -5 $W/serve/*.log 2>/dev/null | tail -40
tar czf $OUT/diag.tgz -C $W --exclude=m --exclude=pipe .
