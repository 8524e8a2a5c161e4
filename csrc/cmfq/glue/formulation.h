// Which formulation of the op a call runs: the `formulation` argument of cmfq::causal_weights,
// "auto" resolved by the device's default and the documented environment overrides.
#pragma once

#include <cstdint>
#include <string>

namespace cmfq {

enum class Formulation : int {
  kPerAgent = 0,   // the per-agent kernels: one agent's interventions at a time
  kStacked = 1,    // every agent's intervention rows stacked into GEMMs
  kFusedTrunk = 2  // stacked, with a two-layer trunk in one CUDA launch where the head fits it
};
constexpr int kFormulationCount = 3;
// The names the op takes (and "auto"); Python reads them as cmfq._C.FORMULATIONS.
constexpr const char* kFormulationNames[kFormulationCount] = {"per_agent", "stacked",
                                                              "fused_trunk"};

// On CUDA, "auto" takes the per-agent kernels for calls of at most this many agents, and the
// stacked formulation with its fused trunk above: an H200 measured the per-agent kernel ahead at
// the 64 to 1024 agents that training acts on (cmfq's training 1.55x faster at 64 agents a call)
// and the fused trunk ahead from 16384 (benchmarks/results/notes.md).
constexpr int64_t kPerAgentMaxBatchCuda = 1024;

// The formulation that `name` ("auto" or one of kFormulationNames) asks for on CUDA (cuda) or the
// CPU, for a call of `batch` agents. "auto" is the device's default: the per-agent kernels on the
// CPU; on CUDA the per-agent kernels up to kPerAgentMaxBatchCuda agents and the fused trunk above
// (which runs the stacked steps for heads it does not fit). The environment overrides it:
// CMFQ_STACKED=0 or 1 (the per-agent kernels, or the stacked formulation at every size, on either
// device) and CMFQ_FUSED_TRUNK=0 or 1 (whether the stacked formulation on CUDA takes the fused
// trunk), read once, at the first call. Raises ValueError for another name, and for the fused trunk
// on the CPU.
Formulation resolve_formulation(const std::string& name, bool cuda, int64_t batch);

// Whether the fused trunk multiplies its tiles on the tensor cores (trunk_kernel.cu's TrunkMath):
// 3xTF32 for float32 rows, and float16 or bfloat16 rows (half-precision inputs, which the
// CUDA-core tiles leave to the stacked steps) in their own type, on devices of compute capability
// 8.0 and later. Off unless the environment asks for it with CMFQ_TRUNK_MMA=1 (read once, with the
// other overrides): opt-in until a GPU has checked it (benchmarks/gpu_check.sh).
bool trunk_tensor_cores();

}  // namespace cmfq
