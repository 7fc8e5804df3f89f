#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (about 5 minutes on one H200):
#   1. bench/label_bench.py at batch 256 (one cohort and, for comparison, 4: continuous batching) and
#      bench/search_bench.py (batched beam search vs a per-problem loop, GPU-sized batches);
#   2. every LM stage through the real CLI on tiny budgets with --set load.device=cuda
#      (sft, label, train-verifier PQV and ORM, search, rl; STAGES=0 skips them);
#   3. bench/label_bench.py at batch 512.
# Usage: bench/gpu_check.sh POLICY VERIFIER [LOGDIR]   (POLICY: a `pav sft` run; VERIFIER: a PQV run;
# DEVICE=cpu to try the script itself without a GPU)
# Runs with `python3` as it is (pav from ./src when not installed). Each step prints its exit code
# and wall time; the full output of all steps goes to LOGDIR/gpu_check.log.
set -u
policy=$1 verifier=$2 logs=${3:-.}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
log=$logs/gpu_check.log
runs=$(mktemp -d)
device=${DEVICE:-cuda}
cuda="--set load.device=$device"

step() {  # step NAME LIMIT_S COMMAND...: run it, keep its output, print rc, seconds and its last lines
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "=== $name: $*" >>"$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  echo "--- $name: rc=$rc, $((SECONDS - start)) s"
  tail -n 4 "$log" | sed 's/^/    /'
}

python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$log"
pav="python3 -m pav.cli"
step label_bench_256 150 python3 bench/label_bench.py --policy "$policy" --device "$device" --batch-size 256
step label_bench_256_4cohorts 120 python3 bench/label_bench.py --policy "$policy" --device "$device" --batch-size 256 --cohorts 4 --naive-prefixes 30
step search_bench 180 python3 bench/search_bench.py --policy "$policy" --verifier "$verifier" --device "$device" --batch-size 4096 --verifier-batch 1024
if [ "${STAGES:-1}" = 1 ]; then
step sft 60 $pav sft --quick --quiet $cuda --out "$runs/sft"
step label 60 $pav label --quick --quiet $cuda --set policy="$runs/sft" --out "$runs/labels"
step pqv 60 $pav train-verifier --quick --quiet $cuda --set labels="$runs/labels" --set backbone="$runs/sft" --out "$runs/pqv"
step orm 60 $pav train-verifier --quick --quiet $cuda --set labels="$runs/labels" --set backbone="$runs/sft" --set view=orm --out "$runs/orm"
step search 90 $pav search --quick --quiet $cuda --set policy="$runs/sft" --set verifier="$runs/pqv" --set orm="$runs/orm" --out "$runs/search"
step rl 90 $pav rl --quick --quiet $cuda --set policy="$runs/sft" --set verifier="$runs/pqv" --out "$runs/rl"
fi
step label_bench_512 120 python3 bench/label_bench.py --policy "$policy" --device "$device" --batch-size 512 --naive-prefixes 30
rm -rf "$runs"
