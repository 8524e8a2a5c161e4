#!/usr/bin/env bash
# The GPU check: builds cmfq with its CUDA kernels, then runs the CUDA tests, compute-sanitizer
# (memcheck, racecheck) on small cases, the CUDA op benchmarks (per-agent kernel, stacked rows,
# the fused trunk, factored, compiled and generic in one run) and one Nsight Compute profile;
# then builds the stacked formulation as it was before its kernels last changed
# (STACKED_BASELINE: a commit that this checkout's git history has, or a folder holding that
# commit's source tree) and times it and counts its launches in the same run. The fused trunk on
# the tensor cores (CMFQ_TRUNK_MMA=1, opt-in) has its own tests, sanitizer runs and forward
# benchmark in the same call. All is written flat to OUTDIR (14 files). Each step has a time limit and a failed step does not
# stop the others; summary.txt lists every step's exit status and time. The whole check stops
# after GPU_CHECK_SECONDS (default 540): about 9 minutes on an H100 with 16 cores.
#
# Usage: benchmarks/gpu_check.sh OUTDIR
# Needs: a CUDA build of torch, nvcc of the same major CUDA version, and cmfq's dependencies and
# test extra installed (pip install --no-deps is used for cmfq itself).
set -uo pipefail
source "$(dirname "$0")/gpu_steps.sh"
begin_check "${1:?usage: benchmarks/gpu_check.sh OUTDIR}" 540 "cmfq GPU check"
build_cuda

# The CUDA tests, with compute-sanitizer's small cases alongside (both are correctness checks).
step cuda-tests 150 tests.log python -m pytest -p no:cacheprovider -q -rfEs --durations=8 -k cuda \
  tests/test_causal_weights.py tests/test_op_registration.py tests/test_bad_input.py \
  tests/test_half_precision.py tests/test_kernel_plan.py &
tests=$!
# The fused trunk on the tensor cores (CMFQ_TRUNK_MMA=1, opt-in until this check passes it) against
# float64, each dtype in an interpreter of its own.
step trunk-mma-tests 150 tests-trunk-mma.log python -m pytest -p no:cacheprovider -q -rfEs \
  --durations=4 tests/test_trunk_mma.py &
trunk_tests=$!
# Without the caching allocator, memcheck sees each tensor's own bounds.
# K = 8 < A: a stacked row per neighbour slot; K = 32: a row per action.
step memcheck 60 sanitizer.log env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
  compute-sanitizer --tool memcheck --error-exitcode 1 \
  python benchmarks/gpu_case.py --batch 64 --slots 8 --distributions --backward
step memcheck-by-action 40 sanitizer.log env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
  compute-sanitizer --tool memcheck --error-exitcode 1 \
  python benchmarks/gpu_case.py --batch 64 --slots 32 --formulations stacked,trunk --backward
step racecheck 45 sanitizer.log compute-sanitizer --tool racecheck --error-exitcode 1 \
  python benchmarks/gpu_case.py --batch 16 --slots 8 --dtypes float32
# The tensor-core trunk: its tiles' shared memory, in both of its operand types.
step memcheck-trunk-mma 40 sanitizer.log env CMFQ_TRUNK_MMA=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
  compute-sanitizer --tool memcheck --error-exitcode 1 \
  python benchmarks/gpu_case.py --batch 37 --slots 32 --formulations trunk --dtypes float32,bfloat16
step racecheck-trunk-mma 40 sanitizer.log env CMFQ_TRUNK_MMA=1 \
  compute-sanitizer --tool racecheck --error-exitcode 1 \
  python benchmarks/gpu_case.py --batch 16 --slots 32 --formulations trunk --dtypes float32,bfloat16
wait "$tests" "$trunk_tests"

# The benchmarks, one JSON per mode (training: forward+backward), so that a timeout loses at most
# one. torch.compile is timed in float32 at B=16384 only: its compilations would take most of the
# time budget. B=1024 (the size of training's calls) only for the formulations of the fused op.
shapes="((B16384-K32 or B131072-K32) and not naive and not (compiled and (bfloat16 or B131072)))"
shapes="$shapes or (B1024-K32 and (fused or stacked or trunk))"
for mode in forward training; do
  selected="forward-"
  [[ $mode == training ]] && selected="forward+backward-"
  step "bench-$mode" 110 bench.log python -m pytest -p no:cacheprovider -q \
    benchmarks/test_causal_weights.py --benchmark-only --device cuda --bench-seconds 0.2 \
    --benchmark-json "$out/bench-$mode.json" \
    -k "$selected and ($shapes)"
done

# The fused trunk's forward on the tensor cores (3xTF32 for float32, bfloat16 rows for bfloat16),
# to set beside the CUDA-core trunk's rows of bench-forward.json.
step bench-trunk-mma 90 bench.log env CMFQ_TRUNK_MMA=1 python -m pytest -p no:cacheprovider -q \
  benchmarks/test_causal_weights.py --benchmark-only --device cuda --bench-seconds 0.2 \
  --benchmark-json "$out/bench-trunk-mma-forward.json" \
  -k "forward- and trunk and (B16384-K32 or B131072-K32)"

# Training's sizes (64 agents act, 1024 rows learn), where each formulation's launches weigh most:
# the median call, host included.
for batch in 64 1024; do
  step "time-B$batch" 40 profile.txt python benchmarks/gpu_case.py --batch $batch --slots 32 \
    --dtypes float32 --time
  step "time-B$batch-backward" 40 profile.txt python benchmarks/gpu_case.py --batch $batch \
    --slots 32 --dtypes float32 --time --backward
done

# The weights step line by line (built with -lineinfo): one launch profiled, then its stall
# reasons and its source view with the counters a line.
if command -v ncu >/dev/null; then
  step ncu-weights 60 profile.txt ncu --clock-control none --kernel-name regex:stacked_weights \
    --launch-count 1 \
    --import-source yes --section SourceCounters --section WarpStateStats --section LaunchStats \
    --section Occupancy --section SchedulerStats -f -o "$out/weights" \
    python benchmarks/gpu_case.py --batch 16384 --slots 32 --formulations stacked --dtypes float32
  step ncu-weights-details 20 profile.txt ncu --import "$out/weights.ncu-rep" --page details
  step ncu-weights-source 20 weights-source.csv ncu --import "$out/weights.ncu-rep" \
    --page source --print-source cuda,sass --csv
fi

# Where the stacked formulation's time goes (forward, then forward and backward), then Nsight
# Compute on one launch of each kernel.
step profile 45 profile.txt python benchmarks/gpu_case.py --batch 16384 --slots 32 \
  --dtypes float32,bfloat16 --profile --accuracy
step profile-backward 30 profile.txt python benchmarks/gpu_case.py --batch 16384 --slots 32 \
  --formulations stacked --dtypes float32 --profile --backward
if command -v ncu >/dev/null; then
  step ncu 60 profile.txt ncu \
    --kernel-name regex:'causal_weights_kernel|row_change|stacked_|fused_trunk' --launch-count 7 \
    --section SpeedOfLight --section LaunchStats --section Occupancy \
    python benchmarks/gpu_case.py --batch 16384 --slots 32 --dtypes float32
else
  echo "ncu                      skipped: not on the PATH" >>"$summary"
fi

# Whether TF32 GEMMs would do for float32 (the default is IEEE float32): speed and accuracy.
step profile-tf32 30 profile.txt python benchmarks/gpu_case.py --batch 16384 --slots 32 \
  --formulations stacked --dtypes float32 --profile --accuracy --tf32

# The stacked formulation before its kernels last changed, built beside this one and timed on
# the same machine: its forward and forward+backward at the benchmark's shapes, and its launches
# per call.
baseline=${STACKED_BASELINE:-e7a8022}
base_dir=""
if [[ -d $baseline ]]; then
  base_dir=$(mktemp -d)
  cp -r "$baseline"/. "$base_dir"
elif git cat-file -e "$baseline^{commit}" 2>/dev/null; then
  base_dir=$(mktemp -d)
  git archive "$baseline" | tar -x -C "$base_dir"
fi
if [[ -n $base_dir ]]; then
  step baseline-build 120 build.log bash -c "cd '$base_dir' && TORCH_CUDA_ARCH_LIST=9.0 \
    MAX_JOBS=16 python setup.py build_ext --inplace"
  for mode in forward training; do
    selected="forward-"
    [[ $mode == training ]] && selected="forward+backward-"
    step "baseline-bench-$mode" 60 bench.log env PYTHONPATH="$base_dir/src:${PYTHONPATH:-}" \
      python -m pytest \
      -p no:cacheprovider -q benchmarks/test_causal_weights.py --benchmark-only --device cuda \
      --bench-seconds 0.2 --benchmark-json "$out/bench-baseline-$mode.json" \
      -k "$selected and stacked and (B16384-K32 or B131072-K32)"
  done
  for backward in "" --backward; do
    step "baseline-profile${backward:+-backward}" 30 profile.txt \
      env PYTHONPATH="$base_dir/src:${PYTHONPATH:-}" \
      python benchmarks/gpu_case.py --batch 16384 --slots 32 --formulations stacked \
      --dtypes float32 --profile ${backward:+"$backward"}
  done
else
  printf '%-24s skipped: %s is neither a folder nor a commit of this checkout\n' baseline \
    "$baseline" >>"$summary"
fi

echo >>"$summary"
grep -hE "^(FAILED|ERROR)|[0-9]+ (passed|failed)|ERROR SUMMARY|RACECHECK SUMMARY" \
  "$out/tests.log" "$out/tests-trunk-mma.log" "$out/sanitizer.log" >>"$summary" 2>/dev/null
cat "$summary"
