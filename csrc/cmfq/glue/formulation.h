// Which formulation of the op a call runs: the `formulation` argument of cmfq::causal_weights,
// "auto" resolved by the device's default and the documented environment overrides.
#pragma once

#include <string>

namespace cmfq {

enum class Formulation : int {
  kPerAgent = 0,   // the per-agent kernels: one agent's interventions at a time (the CPU's default)
  kStacked = 1,    // every agent's intervention rows stacked into GEMMs (CUDA's default)
  kFusedTrunk = 2  // stacked, with a two-layer trunk in one CUDA launch where the head fits it
};
constexpr int kFormulationCount = 3;
// The names the op takes (and "auto"); Python reads them as cmfq._C.FORMULATIONS.
constexpr const char* kFormulationNames[kFormulationCount] = {"per_agent", "stacked",
                                                              "fused_trunk"};

// The formulation that `name` ("auto" or one of kFormulationNames) asks for on CUDA (cuda) or the
// CPU. "auto" is the device's default unless the environment overrides it: CMFQ_STACKED=0 or 1
// (the per-agent kernels or the stacked formulation, on either device) and CMFQ_FUSED_TRUNK=1 (the
// fused trunk where the stacked formulation runs on CUDA), read once, at the first call. Raises
// ValueError for another name, and for the fused trunk on the CPU.
Formulation resolve_formulation(const std::string& name, bool cuda);

}  // namespace cmfq
