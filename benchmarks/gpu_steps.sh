# The GPU checks' step runner, sourced by benchmarks/gpu_*check.sh: `begin_check` (or the script
# itself) sets `out` (the output folder), `summary` (a file in it) and `deadline` (in $SECONDS).

# begin_check OUTDIR SECONDS TITLE: the output folder made, the repository root the working folder,
# the whole check's deadline GPU_CHECK_SECONDS (default SECONDS) from now, and the summary begun
# with the machine (machine_header).
begin_check() {
  out=$(realpath -m "$1")
  mkdir -p "$out"
  cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
  summary="$out/summary.txt"
  deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-$2}))
  machine_header "$3"
}
#
# step NAME SECONDS LOG COMMAND...: runs COMMAND with its output appended to OUTDIR/LOG, for at
# most SECONDS (less if the whole check's time runs out; skipped when under 10 s are left). An
# interrupt first (SIGINT), so that pytest still writes its reports, then a kill 15 s later.
step() {
  local name=$1 limit=$2 log="$out/$3"
  shift 3
  local left=$((deadline - SECONDS))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    printf '%-24s skipped: the check ran out of time\n' "$name" >>"$summary"
    return
  fi
  local start=$SECONDS
  echo "== $name ($(date -u +%T), limit ${limit}s): $*" >>"$log"
  timeout -s INT -k 15 "$limit" "$@" >>"$log" 2>&1
  local status=$?
  local note=""
  ((status == 124)) && note=", timed out"
  printf '%-24s exit %3d%s  %4d s  -> %s\n' "$name" "$status" "$note" $((SECONDS - start)) \
    "$(basename "$log")" >>"$summary"
}

# machine_header TITLE: the check's first lines in the summary: the commit, the GPU, the software.
machine_header() {
  {
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    echo "$1, $(date -u +%FT%TZ), commit $commit"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    python -c 'import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
    nvcc --version | tail -n 2
    echo "cpus $(nproc)"
    echo
  } >"$summary" 2>&1
}

# build_cuda: a full build of cmfq with its CUDA kernels, installed; object files left in build/
# by an earlier one are not trusted (ninja goes by file times, which can be off when a tree moves
# between machines). Then, from outside the repository (so that `import cmfq` finds the installed
# package, not src/), whether the kernels are in it.
build_cuda() {
  rm -rf build
  step build 180 build.log env TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=16 \
    python -m pip install --no-build-isolation --no-deps -v .
  step cuda-built 30 build.log bash -c 'cd / && python -c "
import cmfq, sys
print(cmfq.__file__, \"cuda_built:\", cmfq.cuda_built())
sys.exit(0 if cmfq.cuda_built() else 1)"'
}
