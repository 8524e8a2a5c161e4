#!/usr/bin/env bash
# The torch games on a GPU, checked and measured in about six minutes:
#
#     benchmarks/gpu_env_check.sh OUTDIR
#
# Installs what the games need (WHEELS: a folder of wheels for the machine's Python, magent2 and
# its dependencies, made beforehand with `pip download magent2 --only-binary=:all:
# --python-version 3.12 -d WHEELS`, since the GPU machine reaches no index), builds cmfq with CUDA
# (skipped with GPU_ENV_BUILD=0, after benchmarks/gpu_check.sh built it in the same call), then:
#   - the CUDA tests of the torch games: the twin test (the torch games on the GPU stepped beside
#     magent2 from the same state, field by field) and its long form over 2,000 random steps a case;
#     the games' draws on the GPU against SplitMix64 in Python ints, bit for bit;
#   - env steps/s of battle at map 40, 64 a side (benchmarks/env_speed.py): random actions at 512
#     and 4,096 games; the pretrained CMFQ model acting for both sides on the GPU at 512 and 4,096;
#   - training env steps/s of one cmfq run on the torch backend on the GPU, the published update
#     schedule, map 40, 1 and 8 games a round; and magent2's for comparison (8 games).
# All is written flat to OUTDIR: summary.txt (each step's status and the env steps/s lines),
# tests.log, speed.log, build.log. The whole check stops after GPU_CHECK_SECONDS (default 420).
set -uo pipefail
source "$(dirname "$0")/gpu_steps.sh"
begin_check "${1:?usage: benchmarks/gpu_env_check.sh OUTDIR}" 420 "cmfq torch games on the GPU"
if [[ -n ${WHEELS:-} ]]; then
  step wheels 60 build.log python -m pip install --no-index --find-links "$WHEELS" magent2
fi
[[ ${GPU_ENV_BUILD:-1} == 1 ]] && build_cuda

step twin-tests 60 tests.log python -m pytest -p no:cacheprovider -q -rfEs -k cuda \
  tests/test_torch_envs.py tests/test_counter_rng.py
step twin-long 90 tests.log python tests/magent2_twin.py --steps 2000 --device cuda

speed() {  # speed NAME SECONDS ARGS...: one env_speed.py run on map 40
  step "$1" "$2" speed.log python benchmarks/env_speed.py --map-size 40 --threads 2 "${@:3}"
}
for games in 512 4096; do
  speed "random-$games" 40 --backend torch --device cuda --games $games --steps 100 --warmup 10
  speed "cmfq-acting-$games" 60 --backend torch --device cuda --games $games --steps 50 \
    --warmup 5 --policy pretrained:cmfq-battle
done
for games in 1 8; do
  speed "train-cmfq-torch-$games" 90 --backend torch --device cuda --games $games \
    --train cmfq --rounds 3 --steps 100
done
speed train-cmfq-magent2-8 90 --backend magent2 --device cuda --games 8 --train cmfq --rounds 3 \
  --steps 100

echo >>"$summary"
grep -hE "^(FAILED|ERROR)|[0-9]+ (passed|failed)|mismatches" "$out/tests.log" >>"$summary"
grep -hE "^(== |backend |env steps/s)" "$out/speed.log" >>"$summary"
cat "$summary"
