// CUDA glue of cmfq::causal_weights: checks and preparation (prepare.cpp) on the current device,
// the launch plan (kernel_plan.h), then the kernel on the current stream. Nothing here waits for
// the GPU: out-of-range actions are handled in the kernel.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "causal_weights_cuda.h"
#include "prepare.h"

namespace cmfq {
namespace {

Outputs causal_weights_cuda(const at::Tensor& state, const at::Tensor& neighbor_actions,
                            const at::Tensor& neighbor_mask, at::TensorList encoder_weights,
                            at::TensorList encoder_biases, at::TensorList trunk_weights,
                            at::TensorList trunk_biases, double temperature,
                            c10::string_view weighting, double weight_temperature) {
  const c10::cuda::OptionalCUDAGuard guard(state.device());
  const auto call = prepare_call(state, neighbor_actions, neighbor_mask, encoder_weights,
                                 encoder_biases, trunk_weights, trunk_biases, temperature,
                                 std::string(weighting), weight_temperature, /*allow_half=*/true);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(call.compute_dtype, "cmfq_causal_weights_cuda", [&] {
    const auto params = call.params<scalar_t>();
    KernelPlan plan;
    C10_CUDA_CHECK(plan_causal_weights(params, state.device().index(), &plan));
    // Heads too wide for shared memory: a workspace per block from the caching allocator, which
    // is stream-ordered and allowed under CUDA-graph capture (a cudaMalloc would be neither).
    at::Tensor workspace;
    if (!plan.in_shared) {
      workspace = at::empty({static_cast<int64_t>(plan.blocks * plan.workspace_bytes)},
                            state.options().dtype(at::kByte));
    }
    C10_CUDA_CHECK(launch_causal_weights(
        params, plan, workspace.defined() ? workspace.data_ptr<uint8_t>() : nullptr, stream));
  });
  return call.outputs();
}

}  // namespace

TORCH_LIBRARY_IMPL(cmfq, CUDA, m) { m.impl("causal_weights", &causal_weights_cuda); }

}  // namespace cmfq
