#!/usr/bin/env bash
# The torch games on a GPU, measured and checked in at most eight minutes:
#
#     benchmarks/gpu_env_check.sh OUTDIR
#
# Installs what the games need (WHEELS: a folder of wheels for the machine's Python, magent2 and
# its dependencies, made beforehand with `pip download magent2 --only-binary=:all:
# --python-version 3.12 -d WHEELS`, since the GPU machine reaches no index), builds cmfq with CUDA
# (skipped with GPU_ENV_BUILD=0, after benchmarks/gpu_check.sh built it in the same call), then:
#   - the CUDA tests of the torch games: the twin test (the torch games on the GPU stepped beside
#     magent2 from the same state, field by field) and its long form over 1,000 random steps a case,
#     acting on tensors on the GPU (Policy.act against the numpy path), and the games' draws on
#     the GPU against SplitMix64 in Python ints, bit for bit;
#   - env steps/s of battle at map 40, 64 a side (benchmarks/env_speed.py): the pretrained CMFQ
#     model acting for both sides on the GPU at 512 and 4,096 games; random actions at 4,096;
#   - training env steps/s of one cmfq run on the torch backend on the GPU, the published update
#     schedule, map 40, 1 and 8 games a round; and magent2's for comparison (8 games);
#   - 8 cmfq runs trained side by side in one process (benchmarks/train_together.py) against the
#     same runs one after another.
# All is written flat to OUTDIR: summary.txt (each step's status and the env steps/s lines),
# tests.log, speed.log, build.log. The whole check stops after GPU_CHECK_SECONDS (default 480),
# the most wanted figures first.
set -uo pipefail
source "$(dirname "$0")/gpu_steps.sh"
begin_check "${1:?usage: benchmarks/gpu_env_check.sh OUTDIR}" 480 "cmfq torch games on the GPU"
if [[ -n ${WHEELS:-} ]]; then
  step wheels 60 build.log python -m pip install --no-index --find-links "$WHEELS" magent2
fi
[[ ${GPU_ENV_BUILD:-1} == 1 ]] && build_cuda

# The figures first, most wanted first; the checks of equality after them, then the comparisons.
speed() {  # speed NAME SECONDS ARGS...: one env_speed.py run on map 40
  step "$1" "$2" speed.log python benchmarks/env_speed.py --map-size 40 --threads 2 "${@:3}"
}
for games in 512 4096; do
  speed "cmfq-acting-$games" 45 --backend torch --device cuda --games $games --steps 50 \
    --warmup 5 --policy pretrained:cmfq-battle
done
for games in 1 8; do
  speed "train-cmfq-torch-$games" 60 --backend torch --device cuda --games $games \
    --train cmfq --rounds 3 --steps 100
done
# Runs side by side in one process (train_together) against one after another, map 40.
step together-8 120 speed.log python benchmarks/train_together.py --runs 8 --algo cmfq \
  --backend torch --map-size 40 --max-steps 100 --rounds 2 --device cuda

step cuda-tests 60 tests.log python -m pytest -p no:cacheprovider -q -rfEs -k cuda \
  tests/test_torch_envs.py tests/test_lockstep.py tests/test_counter_rng.py
step twin-long 60 tests.log python tests/magent2_twin.py --steps 1000 --device cuda

speed random-4096 30 --backend torch --device cuda --games 4096 --steps 100 --warmup 10
speed train-cmfq-magent2-8 60 --backend magent2 --device cuda --games 8 --train cmfq --rounds 3 \
  --steps 100

echo >>"$summary"
grep -hE "^(FAILED|ERROR)|[0-9]+ (passed|failed)|mismatches" "$out/tests.log" >>"$summary"
grep -hE "^(== |backend |env steps/s|one after|side by side|ratio)" "$out/speed.log" >>"$summary"
cat "$summary"
