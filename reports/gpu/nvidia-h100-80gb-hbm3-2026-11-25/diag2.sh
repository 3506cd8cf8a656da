#!/usr/bin/env bash
# After the estimator fix: serve the plan without and with --prof-data, verify all services.
set -u
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib PYTHONUNBUFFERED=1
R="$PWD"; G="$R/.gpu"; W=/tmp/diag; rm -rf $W; mkdir -p $W/m $W/pipe $W/log
get() { python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())" "$1" 2>/dev/null; }
export PARVA_WORKER=$G/parva-worker
python3 scripts/export_models.py --out $W/m resnet50 mobilenetv2 bert >/dev/null 2>&1 || echo export failed
export CUDA_VISIBLE_DEVICES=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0)
export CUDA_MPS_PIPE_DIRECTORY=$W/pipe CUDA_MPS_LOG_DIRECTORY=$W/log
nvidia-cuda-mps-control -d
round() { # name extra-serve-args...
  local n=$1; shift
  $G/parva serve --map $G/plan.csv --backend torch --device cuda --models $W/m --services $G/services.csv --listen 127.0.0.1:29000 --run-dir $W/serve-$n "$@" > $W/serve-$n.log 2>&1 &
  local S=$!
  for i in $(seq 1 240); do get http://127.0.0.1:29000/v2/health/ready >/dev/null && break; sleep 0.5; done
  $G/parva verify --endpoint http://127.0.0.1:29000 --map $G/plan.csv --services $G/services.csv --prof-data prof_data/h100-80gb-mps --duration 20s --warmup 4s --json --out $W/v-$n > $W/v-$n.json 2>$W/v-$n.err
  python3 - $W/v-$n.json $n <<'PY'
import json,sys
r=json.load(open(sys.argv[1]))
for s in r["services"]:
    print(f"{sys.argv[2]:10} {s['service']:16} sent {s['sent_rate']:6.1f}/s ok {s['achieved_rate']:6.1f}/s p50 {s['p50_ms']} p99 {s['p99_ms']} pred {s.get('predicted_p99_ms')} att {s['attainment_pct']:.2f} fails {s['failed_by']}")
PY
  get http://127.0.0.1:29000/metrics > $W/metrics-$n.txt
  grep -E "(batch_size|exec_seconds|queue_seconds)_(sum|count)" $W/metrics-$n.txt
  kill $S; wait $S
}
round noprof
round prof --prof-data prof_data/h100-80gb-mps
echo quit | nvidia-cuda-mps-control
tar czf $OUT/diag2.tgz -C $W --exclude=m --exclude=pipe .
