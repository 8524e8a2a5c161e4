// The cmfq operator library: the schema, and the Python module that loads it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu/cpu_kernel.h"
#include "cuda/kernel_plan.h"
#include "glue/formulation.h"
#include "glue/prepare.h"
#include "stacked/stacked.h"

TORCH_LIBRARY(cmfq, m) {
  m.def(
      "causal_weights(Tensor state, Tensor neighbor_actions, Tensor neighbor_mask, "
      "Tensor[] encoder_weights, Tensor[] encoder_biases, Tensor[] trunk_weights, "
      "Tensor[] trunk_biases, float temperature, str weighting, float weight_temperature, "
      "str formulation=\"auto\") -> (Tensor weights, Tensor effects, Tensor mean_action, Tensor causal_mean_action, "
      "Tensor q_causal)");
  // The gradient of causal_weights given its saved inputs and outputs (weights, effects,
  // causal_mean_action); mean_action takes no gradient. On the CPU, formulation chooses between
  // the per-agent kernel's backward and the stacked formulation's (CUDA's is always the latter).
  m.def(
      "causal_weights_backward(Tensor grad_weights, Tensor grad_effects, "
      "Tensor grad_causal_mean_action, Tensor grad_q_causal, Tensor state, "
      "Tensor neighbor_actions, Tensor neighbor_mask, Tensor[] encoder_weights, "
      "Tensor[] encoder_biases, Tensor[] trunk_weights, Tensor[] trunk_biases, "
      "float temperature, str weighting, float weight_temperature, Tensor weights, "
      "Tensor effects, Tensor causal_mean_action, str formulation=\"auto\") -> (Tensor grad_state, "
      "Tensor[] grad_encoder_weights, Tensor[] grad_encoder_biases, Tensor[] grad_trunk_weights, "
      "Tensor[] grad_trunk_biases)");
}

#ifndef CMFQ_WITH_CUDA
namespace {

cmfq::Outputs cuda_not_built(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                             double, c10::string_view, double, c10::string_view) {
  // cmfq.causal_weights sends CUDA tensors to the generic path on such a build; this is for
  // direct calls of the op.
  TORCH_CHECK(false,
              "cmfq was built without CUDA, so cmfq::causal_weights cannot take CUDA tensors "
              "(cmfq.causal_weights takes its generic path for them). Reinstall cmfq with a CUDA "
              "build of torch and a matching nvcc on the PATH (pip install --no-build-isolation "
              ".), or move the inputs to the CPU.");
}

}  // namespace

TORCH_LIBRARY_IMPL(cmfq, CUDA, m) { m.impl("causal_weights", &cuda_not_built); }
#endif

namespace {

// The CUDA kernel's launch plan for a head of the given widths (kernel_plan.h), so that tests
// check it on any build: (workspace bytes per block, in shared memory, opted in, blocks).
pybind11::tuple cuda_kernel_plan(int64_t batch, int slots, int n_actions,
                                 const std::vector<int>& encoder_widths, int first_width,
                                 const std::vector<int>& tail_widths, int element_size,
                                 int64_t optin_shared_bytes, int sm_count) {
  TORCH_CHECK_VALUE(encoder_widths.size() <= cmfq::kMaxLayers &&
                        tail_widths.size() <= cmfq::kMaxLayers,
                    "at most ", cmfq::kMaxLayers, " encoder and tail layers");
  auto plan = [&](auto element) {
    using T = decltype(element);
    cmfq::CausalWeightsParams<T> p{};
    p.batch = batch;
    p.slots = slots;
    p.n_actions = n_actions;
    p.n_encoder = static_cast<int>(encoder_widths.size());
    for (int l = 0; l < p.n_encoder; ++l) p.encoder[l].out = encoder_widths[l];
    p.action_proj.out = first_width;
    p.n_tail = static_cast<int>(tail_widths.size());
    for (int l = 0; l < p.n_tail; ++l) p.tail[l].out = tail_widths[l];
    return cmfq::plan_kernel(batch, cmfq::workspace_layout<T>(p, nullptr, nullptr),
                             static_cast<size_t>(optin_shared_bytes), sm_count);
  };
  TORCH_CHECK_VALUE(element_size == 4 || element_size == 8, "element_size must be 4 or 8");
  const cmfq::KernelPlan result = element_size == 4 ? plan(float{}) : plan(double{});
  return pybind11::make_tuple(result.workspace_bytes, result.in_shared, result.opt_in,
                              result.blocks);
}

}  // namespace

PYBIND11_MODULE(_C, module) {
  module.doc() = "The compiled cmfq operators (torch.ops.cmfq).";
  module.def(
      "cuda_built",
      [] {
#ifdef CMFQ_WITH_CUDA
        return true;
#else
        return false;
#endif
      },
      "Whether this build of cmfq has the CUDA kernel.");
  module.attr("EFFECT_THRESHOLD") = cmfq::kEffectThreshold;
  pybind11::tuple weightings(cmfq::kWeightingCount);
  for (int w = 0; w < cmfq::kWeightingCount; ++w) weightings[w] = cmfq::kWeightingNames[w];
  module.attr("WEIGHTINGS") = weightings;
  module.def(
      "check_scalars",
      [](double temperature, const std::string& weighting, double weight_temperature) {
        cmfq::check_scalars(temperature, weighting, weight_temperature);
      },
      pybind11::arg("temperature"), pybind11::arg("weighting"),
      pybind11::arg("weight_temperature"),
      "Raises ValueError unless both temperatures are finite and > 0 and weighting is one of "
      "WEIGHTINGS: the op's one check of its scalars.");
  module.def("_cuda_kernel_plan", &cuda_kernel_plan,
             "The CUDA kernel's launch plan for a head's widths on a device (for tests).");
  pybind11::tuple formulations(cmfq::kFormulationCount);
  for (int f = 0; f < cmfq::kFormulationCount; ++f) formulations[f] = cmfq::kFormulationNames[f];
  module.attr("FORMULATIONS") = formulations;
  module.def(
      "resolve_formulation",
      [](const std::string& name, bool cuda, int64_t batch) {
        const auto chosen = cmfq::resolve_formulation(name, cuda, batch);
        return std::string(cmfq::kFormulationNames[static_cast<int>(chosen)]);
      },
      pybind11::arg("name"), pybind11::arg("cuda"), pybind11::arg("batch"),
      "The formulation (one of FORMULATIONS) that a call of batch agents with formulation=name "
      "runs on CUDA (cuda=True) or the CPU: 'auto' is the device's default (per_agent on the "
      "CPU; on CUDA per_agent up to PER_AGENT_MAX_BATCH_CUDA agents, fused_trunk above) unless "
      "the environment variables CMFQ_STACKED=0/1 or CMFQ_FUSED_TRUNK=0/1 override it (read "
      "once, at the first call).");
  module.attr("PER_AGENT_MAX_BATCH_CUDA") = cmfq::kPerAgentMaxBatchCuda;
  module.def("cpu_capability", &cmfq::cpu_capability,
             "The CPU kernel variant that runs now: the widest this CPU supports (default, "
             "avx2, avx512), unless the environment variable CMFQ_CPU_CAPABILITY names another.");
  module.def("cpu_capabilities", &cmfq::cpu_capabilities,
             "The CPU kernel variants that this build has and this CPU runs, narrowest first.");
}
