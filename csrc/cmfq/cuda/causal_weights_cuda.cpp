// CUDA glue of cmfq::causal_weights and its backward: checks and preparation (prepare.cpp) on the
// current device, then on the current stream the stacked formulation (stacked.h), whose steps
// between its GEMMs are launched from here too, or the per-agent kernel (its launch plan in
// kernel_plan.h), as the call's formulation says (formulation.h). The backward is the stacked
// formulation's.
// Nothing here waits for the GPU: out-of-range actions are handled on the device.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "cuda/causal_weights_cuda.h"
#include "glue/formulation.h"
#include "glue/prepare.h"
#include "stacked/stacked.h"

namespace cmfq {
namespace {

Outputs causal_weights_cuda(const at::Tensor& state, const at::Tensor& neighbor_actions,
                            const at::Tensor& neighbor_mask, at::TensorList encoder_weights,
                            at::TensorList encoder_biases, at::TensorList trunk_weights,
                            at::TensorList trunk_biases, double temperature,
                            c10::string_view weighting, double weight_temperature,
                            c10::string_view formulation) {
  const c10::cuda::OptionalCUDAGuard guard(state.device());
  const Formulation chosen =
      resolve_formulation(std::string(formulation), /*cuda=*/true, state.size(0));
  const bool stacked = chosen != Formulation::kPerAgent;
  auto call = prepare_call(state, neighbor_actions, neighbor_mask, encoder_weights,
                           encoder_biases, trunk_weights, trunk_biases, temperature,
                           std::string(weighting), weight_temperature, !stacked);
  if (stacked) return stacked_forward(call, chosen == Formulation::kFusedTrunk);
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

GradOutputs causal_weights_backward_cuda(
    const at::Tensor& grad_weights, const at::Tensor& grad_effects,
    const at::Tensor& grad_causal_mean_action, const at::Tensor& grad_q_causal,
    const at::Tensor& state, const at::Tensor& neighbor_actions, const at::Tensor& neighbor_mask,
    at::TensorList encoder_weights, at::TensorList encoder_biases, at::TensorList trunk_weights,
    at::TensorList trunk_biases, double temperature, c10::string_view weighting,
    double weight_temperature, const at::Tensor& weights, const at::Tensor& effects,
    const at::Tensor& causal_mean_action, c10::string_view /*formulation*/) {
  // The backward is the stacked formulation's whichever formulation the forward ran.
  const c10::cuda::OptionalCUDAGuard guard(state.device());
  auto call = prepare_call(state, neighbor_actions, neighbor_mask, encoder_weights,
                           encoder_biases, trunk_weights, trunk_biases, temperature,
                           std::string(weighting), weight_temperature, /*kernel_layout=*/false);
  const auto incoming = prepare_backward(call, grad_weights, grad_effects, grad_causal_mean_action,
                                         grad_q_causal, weights, effects, causal_mean_action);
  return finish_backward(stacked_backward(call, incoming), state, encoder_weights,
                         encoder_biases, trunk_weights, trunk_biases);
}

// Calls f with a value of the C++ type that holds the rows: that of T, or a CUDA half type.
template <typename T, typename F>
void with_row_type(at::ScalarType row_dtype, F&& f) {
  if constexpr (std::is_same_v<T, float>) {
    if (row_dtype == at::kHalf) return f(__half{});
    if (row_dtype == at::kBFloat16) return f(__nv_bfloat16{});
  }
  TORCH_CHECK(row_dtype == c10::CppTypeToScalarType<T>::value, "rows of dtype ", row_dtype,
              " with a ", c10::CppTypeToScalarType<T>::value, " reference are not supported");
  f(T{});
}

template <typename R>
const R* rows_of(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const R*>(t.data_ptr()) : nullptr;
}

}  // namespace

at::Tensor row_change_cuda(const RowChange& step) {
  const auto reference = step.reference.contiguous();
  // In the rows' dtype: a distribution's first change comes in the compute dtype.
  const auto change =
      step.change.defined() ? step.change.to(step.row_dtype).contiguous() : at::Tensor();
  // The first layer's change of one-hot actions is gathered from these instead.
  const auto contiguous = [](const at::Tensor& t) { return t.defined() ? t.contiguous() : t; };
  const auto table = contiguous(step.action_table);
  const auto reference_proj = contiguous(step.reference_proj);
  const auto actions = contiguous(step.actions);
  const int64_t batch = reference.size(0), width = reference.size(1);
  auto out = at::empty({batch * step.rows_per_agent, width},
                       reference.options().dtype(step.row_dtype));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(reference.scalar_type(), "cmfq_row_change", [&] {
    with_row_type<scalar_t>(step.row_dtype, [&](auto row) {
      using R = decltype(row);
      RowChangeParams<scalar_t, R> p{};
      p.batch = batch;
      p.rows_per_agent = static_cast<int>(step.rows_per_agent);
      p.width = static_cast<int>(width);
      p.reference = reference.data_ptr<scalar_t>();
      p.change = rows_of<R>(change);
      if (!change.defined()) {
        p.action_table = table.data_ptr<scalar_t>();
        p.reference_proj = reference_proj.data_ptr<scalar_t>();
        p.actions = actions.defined() ? actions.data_ptr<int64_t>() : nullptr;
      }
      p.relu = step.relu;
      p.out = reinterpret_cast<R*>(out.data_ptr());
      C10_CUDA_CHECK(launch_row_change(p, stream));
    });
  });
  return out;
}

at::Tensor fused_trunk_cuda(const RowChange& first, const at::Tensor& weight2,
                            const at::Tensor& reference2, const at::Tensor& weight3) {
  const int64_t batch = first.reference.size(0);
  const auto width1 = static_cast<int>(first.reference.size(1));
  const auto width2 = static_cast<int>(weight2.size(1));
  const auto n_actions = static_cast<int>(weight3.size(1));
  if (first.reference.scalar_type() != at::kFloat || !first.relu ||
      !fused_trunk_fits(width1, width2, n_actions)) {
    return {};
  }
  // The tiles' products (TrunkMath): float32 rows on the CUDA cores, or, where CMFQ_TRUNK_MMA asks
  // for the tensor cores and the device has them (sm_80 on), in the rows' dtype; half rows are
  // left to the stacked steps otherwise.
  const bool tensor_cores =
      trunk_tensor_cores() && at::cuda::getCurrentDeviceProperties()->major >= 8;
  TrunkMath math = TrunkMath::kFma;
  if (first.row_dtype == at::kFloat) {
    if (tensor_cores) math = TrunkMath::kTf32x3;
  } else if (tensor_cores && first.row_dtype == at::kHalf) {
    math = TrunkMath::kFloat16;
  } else if (tensor_cores && first.row_dtype == at::kBFloat16) {
    math = TrunkMath::kBFloat16;
  } else {
    return {};
  }
  const auto contiguous = [](const at::Tensor& t) { return t.defined() ? t.contiguous() : t; };
  const auto reference1 = first.reference.contiguous();
  const auto change1 = contiguous(first.change);
  const auto table = contiguous(first.action_table);
  const auto reference_proj = contiguous(first.reference_proj);
  const auto actions = contiguous(first.actions);
  const auto w2 = weight2.contiguous(), r2 = reference2.contiguous(), w3 = weight3.contiguous();
  // float32 whatever the rows' dtype: the weights step reads either.
  auto q_change = at::empty({batch * first.rows_per_agent, n_actions}, reference1.options());
  FusedTrunkParams<float> p{};
  p.math = math;
  p.batch = batch;
  p.rows_per_agent = static_cast<int>(first.rows_per_agent);
  p.width1 = width1;
  p.width2 = width2;
  p.n_actions = n_actions;
  p.reference1 = reference1.data_ptr<float>();
  p.change1 = change1.defined() ? change1.data_ptr<float>() : nullptr;
  if (!change1.defined()) {
    p.action_table = table.data_ptr<float>();
    p.reference_proj = reference_proj.data_ptr<float>();
    p.actions = actions.defined() ? actions.data_ptr<int64_t>() : nullptr;
  }
  p.weight2 = w2.data_ptr<float>();
  p.reference2 = r2.data_ptr<float>();
  p.weight3 = w3.data_ptr<float>();
  p.q_change = q_change.data_ptr<float>();
  C10_CUDA_CHECK(launch_fused_trunk(p, at::cuda::getCurrentCUDAStream()));
  return q_change;
}

template <typename T>
void stacked_rows_cuda(const StackedRowsParams<T>& params) {
  C10_CUDA_CHECK(launch_stacked_rows(params, at::cuda::getCurrentCUDAStream()));
}

template <typename T>
void stacked_weights_cuda(const StackedWeightsParams<T>& params, at::ScalarType row_dtype) {
  with_row_type<T>(row_dtype, [&](auto row) {
    using R = decltype(row);
    const auto status = launch_stacked_weights<T, R>(params, at::cuda::getCurrentCUDAStream());
    C10_CUDA_CHECK(status);
  });
}

template <typename T>
void stacked_first_cuda(const StackedFirstParams<T>& params) {
  C10_CUDA_CHECK(launch_stacked_first(params, at::cuda::getCurrentCUDAStream()));
}

template <typename T>
void stacked_kl_grad_cuda(const StackedKlGradParams<T>& params) {
  C10_CUDA_CHECK(launch_stacked_kl_grad(params, at::cuda::getCurrentCUDAStream()));
}

#define CMFQ_INSTANTIATE(T)                                                                 \
  template void stacked_rows_cuda<T>(const StackedRowsParams<T>&);                          \
  template void stacked_weights_cuda<T>(const StackedWeightsParams<T>&, at::ScalarType);    \
  template void stacked_first_cuda<T>(const StackedFirstParams<T>&);                        \
  template void stacked_kl_grad_cuda<T>(const StackedKlGradParams<T>&);
CMFQ_INSTANTIATE(float)
CMFQ_INSTANTIATE(double)
#undef CMFQ_INSTANTIATE

TORCH_LIBRARY_IMPL(cmfq, CUDA, m) {
  m.impl("causal_weights", &causal_weights_cuda);
  m.impl("causal_weights_backward", &causal_weights_backward_cuda);
}

}  // namespace cmfq
