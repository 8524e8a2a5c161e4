#include "glue/formulation.h"

#include <c10/util/Exception.h>

#include <cstdlib>

namespace cmfq {
namespace {

// A 0-or-1 switch of the environment: -1 where it is unset or empty.
int switch_value(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || std::string(value).empty()) return -1;
  TORCH_CHECK_VALUE(std::string(value) == "0" || std::string(value) == "1", name,
                    " must be 0 or 1, got ", value);
  return std::string(value) == "1" ? 1 : 0;
}

struct Overrides {
  int stacked = switch_value("CMFQ_STACKED");
  int fused_trunk = switch_value("CMFQ_FUSED_TRUNK");
  int trunk_mma = switch_value("CMFQ_TRUNK_MMA");
};

// Read once: a formulation does not change under a running program (a backward follows its
// forward, a captured CUDA graph stays what it was).
const Overrides& overrides() {
  static const Overrides read;
  return read;
}

}  // namespace

Formulation resolve_formulation(const std::string& name, bool cuda, int64_t batch) {
  if (name == "auto") {
    const Overrides& env = overrides();
    const bool stacked =
        env.stacked == -1 ? cuda && batch > kPerAgentMaxBatchCuda : env.stacked == 1;
    if (!stacked) return Formulation::kPerAgent;
    return cuda && env.fused_trunk != 0 ? Formulation::kFusedTrunk : Formulation::kStacked;
  }
  int found = 0;
  while (found < kFormulationCount && name != kFormulationNames[found]) ++found;
  TORCH_CHECK_VALUE(found < kFormulationCount, "formulation must be 'auto' or one of ('",
                    kFormulationNames[0], "', '", kFormulationNames[1], "', '",
                    kFormulationNames[2], "'), got '", name, "'");
  const auto formulation = static_cast<Formulation>(found);
  TORCH_CHECK_VALUE(cuda || formulation != Formulation::kFusedTrunk,
                    "formulation 'fused_trunk' runs on CUDA only; on the CPU take 'stacked'");
  return formulation;
}

bool trunk_tensor_cores() { return overrides().trunk_mma == 1; }

}  // namespace cmfq
