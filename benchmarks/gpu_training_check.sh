#!/usr/bin/env bash
# Training on a GPU, checked and measured in about four minutes:
#
#     benchmarks/gpu_training_check.sh OUTDIR
#
# Run from the repository root, with cmfq already built with CUDA and installed (the kernel's
# check builds it). Each step has its own time limit; a step that fails or times out is logged and
# the next one runs. OUTDIR receives four files:
#   log.txt              everything printed, with each step's exit status
#   throughput.json      pytest-benchmark record of benchmarks/test_training_throughput.py
#                        (map 40, 64 a side, the default update schedule, mfq and cmfq, --games 1
#                        eager and graph step, --games 8 graph step; the second round's env steps/s)
#   throughput-stacked.json  the same for cmfq with the op's stacked formulation at every size
#                        (CMFQ_STACKED=1) instead of "auto", which takes the per-agent kernel for
#                        training's small calls (up to 1024 agents): whether that rule still holds
#   shared_runs.json     N = 1, 4, 8 `cmfq train` processes sharing the GPU (map 20, the study's
#                        battle): their aggregate env steps/s (benchmarks/shared_gpu_runs.py)
set -u
if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$(realpath -m "$1")
mkdir -p "$out"
cd "$(dirname "$0")/.."
log=$out/log.txt
: > "$log"
summary=$log  # each step's status goes into the log, after its output
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-300}))
source benchmarks/gpu_steps.sh

step "machine" 20 log.txt bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
    nproc; python -c "import sys, torch, cmfq; print(sys.version); print(torch.__version__,
    torch.version.cuda, torch.cuda.get_device_name()); print(\"cmfq cuda built:\", cmfq.cuda_built())"'
step "capture tests" 45 log.txt python -m pytest tests/test_learner.py -q -rs -p no:cacheprovider
step "throughput" 90 log.txt python -m pytest benchmarks/test_training_throughput.py -k device_step \
    --device cuda --benchmark-only --benchmark-json "$out/throughput.json" -s -q \
    -p no:cacheprovider
step "throughput, stacked formulation" 60 log.txt env CMFQ_STACKED=1 python -m pytest \
    benchmarks/test_training_throughput.py -k "device_step and cmfq" --device cuda --benchmark-only \
    --benchmark-json "$out/throughput-stacked.json" -s -q -p no:cacheprovider
step "shared runs" 80 log.txt python benchmarks/shared_gpu_runs.py "$out/shared_runs.json" \
    --runs 1 4 8 --rounds 2 --max-steps 200 --timeout 25
grep -E "env steps/s|passed|failed|error|== " "$log" | tail -n 40
