#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (about 5 minutes on one H200):
#   1. every LM stage through the real CLI on tiny budgets with --set load.device=cuda
#      (sft, label, train-verifier PQV and ORM, search, rl);
#   2. bench/label_bench.py on the GPU at batch 256 and 2048 (pav vs naive generate vs bare decode);
#   3. bench/search_bench.py on the GPU (batched beam search vs a per-problem loop).
# Usage: bench/gpu_check.sh POLICY VERIFIER [LOGDIR]   (POLICY: a `pav sft` run; VERIFIER: a PQV run)
# Runs with `python3` as it is (pav from ./src when not installed). Each step prints its exit code
# and wall time; the full output of all steps goes to LOGDIR/gpu_check.log.
set -u
policy=$1 verifier=$2 logs=${3:-.}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
log=$logs/gpu_check.log
runs=$(mktemp -d)
export PAV_RUNS_ROOT=$runs
cuda="--set load.device=cuda"

step() {  # step NAME LIMIT_S COMMAND...: run it, keep its output, print rc, seconds and its last lines
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "=== $name: $*" >>"$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  echo "--- $name: rc=$rc, $((SECONDS - start)) s"
  tail -n 4 "$log" | sed 's/^/    /'
}

python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name())" | tee "$log"
pav="python3 -m pav.cli"
step sft 120 $pav sft --quick --quiet $cuda --out "$runs/sft"
step label 120 $pav label --quick --quiet $cuda --set policy="$runs/sft" --out "$runs/labels"
step pqv 120 $pav train-verifier --quick --quiet $cuda --set labels="$runs/labels" --set backbone="$runs/sft" --out "$runs/pqv"
step orm 120 $pav train-verifier --quick --quiet $cuda --set labels="$runs/labels" --set backbone="$runs/sft" --set view=orm --out "$runs/orm"
step search 180 $pav search --quick --quiet $cuda --set policy="$runs/sft" --set verifier="$runs/pqv" --set orm="$runs/orm" --out "$runs/search"
step rl 180 $pav rl --quick --quiet $cuda --set policy="$runs/sft" --set verifier="$runs/pqv" --out "$runs/rl"
step label_bench_256 240 python3 bench/label_bench.py --policy "$policy" --device cuda --batch-size 256
step label_bench_2048 240 python3 bench/label_bench.py --policy "$policy" --device cuda --batch-size 2048 --naive-prefixes 30
step search_bench 300 python3 bench/search_bench.py --policy "$policy" --verifier "$verifier" --device cuda
rm -rf "$runs"
