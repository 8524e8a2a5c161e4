// CPU glue of cmfq::causal_weights and its backward: argument checks and preparation
// (prepare.h), then the kernel variant for this CPU (cpu_kernel.h), or the stacked formulation
// where the call asks for it (formulation.h, stacked.h).
#include <torch/library.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cpu/cpu_kernel.h"
#include "glue/formulation.h"
#include "glue/prepare.h"
#include "stacked/stacked.h"

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

// Whether a CPU call with `formulation` for `state`'s agents runs the stacked formulation (else
// the per-agent kernel); its forward and backward ask alike.
bool runs_stacked(c10::string_view formulation, const at::Tensor& state) {
  return resolve_formulation(std::string(formulation), /*cuda=*/false, state.size(0)) ==
         Formulation::kStacked;
}

Outputs causal_weights_cpu(const at::Tensor& state, const at::Tensor& neighbor_actions,
                           const at::Tensor& neighbor_mask, at::TensorList encoder_weights,
                           at::TensorList encoder_biases, at::TensorList trunk_weights,
                           at::TensorList trunk_biases, double temperature,
                           c10::string_view weighting, double weight_temperature,
                           c10::string_view formulation) {
  const bool stacked = runs_stacked(formulation, state);
  auto call = prepare_call(state, neighbor_actions, neighbor_mask, encoder_weights,
                           encoder_biases, trunk_weights, trunk_biases, temperature,
                           std::string(weighting), weight_temperature, !stacked);
  if (stacked) return stacked_forward(call, /*fused_trunk=*/false);
  AT_DISPATCH_FLOATING_TYPES(call.compute_dtype, "cmfq_causal_weights_cpu",
                             [&] { run_kernel(call.params<scalar_t>()); });
  return call.outputs();
}

// The backward kernel's gradients for a prepared call.
KernelGrads kernel_backward(const PreparedCall& call, const IncomingGrads& incoming) {
  auto empty_like_all = [](const std::vector<at::Tensor>& tensors) {
    std::vector<at::Tensor> out;
    for (const auto& t : tensors) out.push_back(at::empty_like(t));
    return out;
  };
  KernelGrads grads{at::empty_like(call.state_proj),    empty_like_all(call.encoder_wt),
                    empty_like_all(call.encoder_b),     at::empty_like(call.action_proj_wt),
                    empty_like_all(call.tail_wt),       empty_like_all(call.tail_b)};
  AT_DISPATCH_FLOATING_TYPES(call.compute_dtype, "cmfq_causal_weights_backward_cpu", [&] {
    CausalWeightsGradParams<scalar_t> g{};
    g.forward = call.params<scalar_t>();
    g.grad_weights = incoming.weights.data_ptr<scalar_t>();
    g.grad_effects = incoming.effects.data_ptr<scalar_t>();
    g.grad_causal_mean_action = incoming.causal_mean_action.data_ptr<scalar_t>();
    g.grad_q_causal = incoming.q_causal.data_ptr<scalar_t>();
    g.grad_state_proj = grads.state_proj.data_ptr<scalar_t>();
    for (size_t l = 0; l < grads.encoder_wt.size(); ++l) {
      g.grad_encoder_wt[l] = grads.encoder_wt[l].data_ptr<scalar_t>();
      g.grad_encoder_b[l] = grads.encoder_b[l].data_ptr<scalar_t>();
    }
    g.grad_action_proj_wt = grads.action_proj_wt.data_ptr<scalar_t>();
    for (size_t l = 0; l < grads.tail_wt.size(); ++l) {
      g.grad_tail_wt[l] = grads.tail_wt[l].data_ptr<scalar_t>();
      g.grad_tail_b[l] = grads.tail_b[l].data_ptr<scalar_t>();
    }
    run_kernel(g);
  });
  return grads;
}

GradOutputs causal_weights_backward_cpu(
    const at::Tensor& grad_weights, const at::Tensor& grad_effects,
    const at::Tensor& grad_causal_mean_action, const at::Tensor& grad_q_causal,
    const at::Tensor& state, const at::Tensor& neighbor_actions, const at::Tensor& neighbor_mask,
    at::TensorList encoder_weights, at::TensorList encoder_biases, at::TensorList trunk_weights,
    at::TensorList trunk_biases, double temperature, c10::string_view weighting,
    double weight_temperature, const at::Tensor& weights, const at::Tensor& effects,
    const at::Tensor& causal_mean_action, c10::string_view formulation) {
  const bool stacked = runs_stacked(formulation, state);
  auto call = prepare_call(state, neighbor_actions, neighbor_mask, encoder_weights,
                           encoder_biases, trunk_weights, trunk_biases, temperature,
                           std::string(weighting), weight_temperature, !stacked);
  const auto incoming = prepare_backward(call, grad_weights, grad_effects, grad_causal_mean_action,
                                         grad_q_causal, weights, effects, causal_mean_action);
  const auto grads = stacked ? stacked_backward(call, incoming) : kernel_backward(call, incoming);
  return finish_backward(grads, state, encoder_weights, encoder_biases, trunk_weights,
                         trunk_biases);
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
