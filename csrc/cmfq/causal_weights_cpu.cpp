// CPU glue of cmfq::causal_weights and its backward: argument checks and preparation
// (prepare.h), then the kernel variant for this CPU (cpu_kernel.h).
#include <torch/library.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cpu_kernel.h"
#include "prepare.h"

namespace cmfq {
namespace {

enum class CpuVariant { kDefault, kAvx2, kAvx512 };

struct VariantInfo {
  CpuVariant variant;
  const char* name;
};

// Every variant this build has, narrowest first.
constexpr VariantInfo kVariants[] = {
    {CpuVariant::kDefault, "default"},
#ifdef CMFQ_CPU_X86
    {CpuVariant::kAvx2, "avx2"},
    {CpuVariant::kAvx512, "avx512"},
#endif
};

bool cpu_runs(CpuVariant variant) {
#ifdef CMFQ_CPU_X86
  // libgcc's CPU model also checks that the OS saves the wider registers (XGETBV).
  switch (variant) {
    case CpuVariant::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuVariant::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuVariant::kDefault:
      break;
  }
#endif
  return variant == CpuVariant::kDefault;
}

constexpr const char* kOverride = "CMFQ_CPU_CAPABILITY";

// The widest variant this CPU runs, or the one CMFQ_CPU_CAPABILITY names (read at every call,
// so that tests can switch).
VariantInfo chosen_variant() {
  const char* wanted = std::getenv(kOverride);
  if (wanted && *wanted) {
    for (const auto& info : kVariants) {
      if (info.name == std::string(wanted) && cpu_runs(info.variant)) return info;
    }
    std::string names;
    for (const auto& name : cpu_capabilities()) names += (names.empty() ? "" : ", ") + name;
    TORCH_CHECK_VALUE(false, kOverride, "=", wanted,
                      " is not a CPU kernel variant that this build has and this CPU runs; "
                      "choose one of: ",
                      names);
  }
  VariantInfo best = kVariants[0];
  for (const auto& info : kVariants) {
    if (cpu_runs(info.variant)) best = info;
  }
  return best;
}

// The chosen variant's forward or backward, by the type of the params.
template <typename Params>
void run_kernel(const Params& p) {
  switch (chosen_variant().variant) {
#ifdef CMFQ_CPU_X86
    case CpuVariant::kAvx512:
      return cpu_avx512::run(p);
    case CpuVariant::kAvx2:
      return cpu_avx2::run(p);
#endif
    default:
      return cpu_default::run(p);
  }
}

Outputs causal_weights_cpu(const at::Tensor& state, const at::Tensor& neighbor_actions,
                           const at::Tensor& neighbor_mask, at::TensorList encoder_weights,
                           at::TensorList encoder_biases, at::TensorList trunk_weights,
                           at::TensorList trunk_biases, double temperature,
                           c10::string_view weighting, double weight_temperature) {
  const auto call = prepare_call(state, neighbor_actions, neighbor_mask, encoder_weights,
                                 encoder_biases, trunk_weights, trunk_biases, temperature,
                                 std::string(weighting), weight_temperature,
                                 /*allow_half=*/false);
  AT_DISPATCH_FLOATING_TYPES(call.compute_dtype, "cmfq_causal_weights_cpu",
                             [&] { run_kernel(call.params<scalar_t>()); });
  return call.outputs();
}

// `tensor` in the compute dtype, contiguous, after checking its shape.
at::Tensor saved(const at::Tensor& tensor, const char* name, at::IntArrayRef shape,
                 at::ScalarType dtype) {
  TORCH_CHECK_VALUE(tensor.sizes() == shape, name, " must have shape ", shape, ", got ",
                    tensor.sizes());
  TORCH_CHECK_VALUE(tensor.device().is_cpu(), name, " must be on the CPU, got ",
                    tensor.device());
  return tensor.to(dtype).contiguous();
}

// The kernel's gradients, [in, out] for weights, in the layout and dtype of the parameters.
std::vector<at::Tensor> transposed_like(const std::vector<at::Tensor>& grads,
                                        at::TensorList like) {
  std::vector<at::Tensor> out;
  for (size_t l = 0; l < grads.size(); ++l) {
    const auto grad = grads[l].dim() == 2 ? grads[l].t() : grads[l];
    out.push_back(grad.to(like[l].scalar_type()).contiguous());
  }
  return out;
}

GradOutputs causal_weights_backward_cpu(
    const at::Tensor& grad_weights, const at::Tensor& grad_effects,
    const at::Tensor& grad_causal_mean_action, const at::Tensor& grad_q_causal,
    const at::Tensor& state, const at::Tensor& neighbor_actions, const at::Tensor& neighbor_mask,
    at::TensorList encoder_weights, at::TensorList encoder_biases, at::TensorList trunk_weights,
    at::TensorList trunk_biases, double temperature, c10::string_view weighting,
    double weight_temperature, const at::Tensor& weights, const at::Tensor& effects,
    const at::Tensor& causal_mean_action) {
  auto call = prepare_call(state, neighbor_actions, neighbor_mask, encoder_weights,
                           encoder_biases, trunk_weights, trunk_biases, temperature,
                           std::string(weighting), weight_temperature, /*allow_half=*/false);
  const auto dtype = call.compute_dtype;
  const int64_t B = call.batch, K = call.slots, A = call.n_actions;
  call.weights = saved(weights, "weights", {B, K}, dtype);
  call.effects = saved(effects, "effects", {B, K}, dtype);
  call.causal_mean_action = saved(causal_mean_action, "causal_mean_action", {B, A}, dtype);
  const auto d_weights = saved(grad_weights, "grad_weights", {B, K}, dtype);
  const auto d_effects = saved(grad_effects, "grad_effects", {B, K}, dtype);
  const auto d_causal = saved(grad_causal_mean_action, "grad_causal_mean_action", {B, A}, dtype);
  const auto d_q = saved(grad_q_causal, "grad_q_causal", {B, A}, dtype);

  auto empty_like_all = [](const std::vector<at::Tensor>& tensors) {
    std::vector<at::Tensor> out;
    for (const auto& t : tensors) out.push_back(at::empty_like(t));
    return out;
  };
  auto grad_state_proj = at::empty_like(call.state_proj);
  auto grad_encoder_wt = empty_like_all(call.encoder_wt);
  auto grad_encoder_b = empty_like_all(call.encoder_b);
  auto grad_action_proj_wt = at::empty_like(call.action_proj_wt);
  auto grad_tail_wt = empty_like_all(call.tail_wt);
  auto grad_tail_b = empty_like_all(call.tail_b);
  AT_DISPATCH_FLOATING_TYPES(dtype, "cmfq_causal_weights_backward_cpu", [&] {
    CausalWeightsGradParams<scalar_t> g{};
    g.forward = call.params<scalar_t>();
    g.grad_weights = d_weights.data_ptr<scalar_t>();
    g.grad_effects = d_effects.data_ptr<scalar_t>();
    g.grad_causal_mean_action = d_causal.data_ptr<scalar_t>();
    g.grad_q_causal = d_q.data_ptr<scalar_t>();
    g.grad_state_proj = grad_state_proj.data_ptr<scalar_t>();
    for (size_t l = 0; l < grad_encoder_wt.size(); ++l) {
      g.grad_encoder_wt[l] = grad_encoder_wt[l].data_ptr<scalar_t>();
      g.grad_encoder_b[l] = grad_encoder_b[l].data_ptr<scalar_t>();
    }
    g.grad_action_proj_wt = grad_action_proj_wt.data_ptr<scalar_t>();
    for (size_t l = 0; l < grad_tail_wt.size(); ++l) {
      g.grad_tail_wt[l] = grad_tail_wt[l].data_ptr<scalar_t>();
      g.grad_tail_b[l] = grad_tail_b[l].data_ptr<scalar_t>();
    }
    run_kernel(g);
  });

  // The state half of the first trunk layer, for all agents at once.
  const int64_t state_dim = state.size(1);
  const auto first = trunk_weights[0].to(dtype);
  const auto grad_state = grad_state_proj.mm(first.narrow(1, 0, state_dim));
  const auto grad_first = at::cat({grad_state_proj.t().mm(state.to(dtype)), grad_action_proj_wt.t()}, 1);
  std::vector<at::Tensor> grad_trunk_w{grad_first.t()}, grad_trunk_b{grad_state_proj.sum(0)};
  grad_trunk_w.insert(grad_trunk_w.end(), grad_tail_wt.begin(), grad_tail_wt.end());
  grad_trunk_b.insert(grad_trunk_b.end(), grad_tail_b.begin(), grad_tail_b.end());
  return {grad_state.to(state.scalar_type()), transposed_like(grad_encoder_wt, encoder_weights),
          transposed_like(grad_encoder_b, encoder_biases),
          transposed_like(grad_trunk_w, trunk_weights),
          transposed_like(grad_trunk_b, trunk_biases)};
}

}  // namespace

std::vector<std::string> cpu_capabilities() {
  std::vector<std::string> names;
  for (const auto& info : kVariants) {
    if (cpu_runs(info.variant)) names.emplace_back(info.name);
  }
  return names;
}

std::string cpu_capability() { return chosen_variant().name; }

TORCH_LIBRARY_IMPL(cmfq, CPU, m) {
  m.impl("causal_weights", &causal_weights_cpu);
  m.impl("causal_weights_backward", &causal_weights_backward_cpu);
}

}  // namespace cmfq
