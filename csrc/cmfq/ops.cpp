// The cmfq operator library: the schema, and the Python module that loads it.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "prepare.h"

TORCH_LIBRARY(cmfq, m) {
  m.def(
      "causal_weights(Tensor state, Tensor neighbor_actions, Tensor neighbor_mask, "
      "Tensor[] encoder_weights, Tensor[] encoder_biases, Tensor[] trunk_weights, "
      "Tensor[] trunk_biases, float temperature, str weighting, float weight_temperature) "
      "-> (Tensor weights, Tensor effects, Tensor mean_action, Tensor causal_mean_action, "
      "Tensor q_causal)");
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
}
