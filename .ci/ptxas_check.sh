#!/usr/bin/env bash
# Compiles every CUDA kernel for sm_80 and sm_90 as warnings-as-errors, prints ptxas's resource
# report (registers, stack, spills per kernel) and fails if any kernel spills registers.
set -euo pipefail
cd "$(dirname "$0")/.."

report=$(mktemp)
trap 'rm -f "$report"' EXIT
for kernel in $(find csrc -name '*.cu'); do
  for arch in 80 90; do
    nvcc -c -std=c++17 -O3 -Werror all-warnings -Icsrc/cmfq -Xptxas -v \
      -gencode "arch=compute_${arch},code=sm_${arch}" "$kernel" -o /dev/null 2>"$report"
    echo "== $kernel, sm_${arch}"
    # Per kernel: its name, then its stack/spill and register lines.
    grep -E "Compiling entry function|spill|Used [0-9]+ registers" "$report" \
      | sed -E "s/.*Compiling entry function '([^']+)'.*/\1/" | c++filt
    if grep -Eq "[1-9][0-9]* bytes spill (stores|loads)" "$report"; then
      echo "ptxas_check: $kernel spills registers on sm_${arch} (see above)" >&2
      exit 1
    fi
  done
done
