// The cmfq operator library: the schema, and the Python module that loads it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include "cpu_kernel.h"
#include "prepare.h"

TORCH_LIBRARY(cmfq, m) {
  m.def(
      "causal_weights(Tensor state, Tensor neighbor_actions, Tensor neighbor_mask, "
      "Tensor[] encoder_weights, Tensor[] encoder_biases, Tensor[] trunk_weights, "
      "Tensor[] trunk_biases, float temperature, str weighting, float weight_temperature) "
      "-> (Tensor weights, Tensor effects, Tensor mean_action, Tensor causal_mean_action, "
      "Tensor q_causal)");
  // The gradient of causal_weights given its saved inputs and outputs (weights, effects,
  // causal_mean_action); mean_action takes no gradient.
  m.def(
      "causal_weights_backward(Tensor grad_weights, Tensor grad_effects, "
      "Tensor grad_causal_mean_action, Tensor grad_q_causal, Tensor state, "
      "Tensor neighbor_actions, Tensor neighbor_mask, Tensor[] encoder_weights, "
      "Tensor[] encoder_biases, Tensor[] trunk_weights, Tensor[] trunk_biases, "
      "float temperature, str weighting, float weight_temperature, Tensor weights, "
      "Tensor effects, Tensor causal_mean_action) -> (Tensor grad_state, "
      "Tensor[] grad_encoder_weights, Tensor[] grad_encoder_biases, Tensor[] grad_trunk_weights, "
      "Tensor[] grad_trunk_biases)");
}

#ifndef CMFQ_WITH_CUDA
namespace {

cmfq::Outputs cuda_not_built(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                             double, c10::string_view, double) {
  TORCH_CHECK(false,
              "cmfq was built without CUDA, so cmfq::causal_weights cannot take CUDA tensors. "
              "Rebuild it with a CUDA build of torch and nvcc on the PATH "
              "(CMFQ_FORCE_CUDA=1 pip install --no-build-isolation .), or move the inputs to "
              "the CPU.");
}

}  // namespace

TORCH_LIBRARY_IMPL(cmfq, CUDA, m) { m.impl("causal_weights", &cuda_not_built); }
#endif

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
  module.def("cpu_capability", &cmfq::cpu_capability,
             "The CPU kernel variant that runs now: the widest this CPU supports (default, "
             "avx2, avx512), unless the environment variable CMFQ_CPU_CAPABILITY names another.");
  module.def("cpu_capabilities", &cmfq::cpu_capabilities,
             "The CPU kernel variants that this build has and this CPU runs, narrowest first.");
}
