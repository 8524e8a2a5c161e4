// The device-independent half of the glue: argument checks, contiguous compute-dtype copies of the
// inputs, the two products that do not depend on the interventions (the state half of the first
// trunk layer for every agent, and the action half for every one-hot action), the outputs, and
// the params struct that points into all of them.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>
#include <vector>

#include "shared/params.h"

namespace cmfq {

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// The backward's outputs: the gradient of state and of each of the four layer lists.
using GradOutputs = std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>,
                               std::vector<at::Tensor>, std::vector<at::Tensor>>;

struct PreparedCall {
  at::ScalarType out_dtype;      // that of state
  at::ScalarType compute_dtype;  // float, or double for double inputs
  int64_t batch = 0;
  int slots = 0;
  int n_actions = 0;
  at::Tensor actions;       // int64 [B, K], or undefined
  at::Tensor action_dists;  // [B, K, A], or undefined
  at::Tensor mask;
  at::Tensor state_proj;
  at::Tensor action_table;  // undefined for distributions
  std::vector<at::Tensor> encoder_wt, encoder_b, tail_wt, tail_b;
  at::Tensor action_proj_wt;
  double temperature = 0;
  Weighting weighting = Weighting::kProportional;
  double weight_temperature = 0;
  at::Tensor weights, effects, mean_action, causal_mean_action, q_causal;

  // The outputs in the dtype of state.
  Outputs outputs() const;

  template <typename T>
  CausalWeightsParams<T> params() const;
};

// Checks the op's scalar arguments (the one check of them: cmfq.causal_weights's generic path
// calls it too, through _C.check_scalars) and returns the weighting rule.
Weighting check_scalars(double temperature, const std::string& weighting,
                        double weight_temperature);

// Checks the op's arguments (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE, which Python sees as
// ValueError / TypeError) and prepares the call. float16 and bfloat16 inputs are computed in float32.
// kernel_layout: the transposed weights ([in, out]) as contiguous copies, which the per-agent
// kernels read (params()); otherwise as views, which the stacked formulation's GEMMs take as they
// are.
PreparedCall prepare_call(const at::Tensor& state, const at::Tensor& neighbor_actions,
                          const at::Tensor& neighbor_mask, at::TensorList encoder_weights,
                          at::TensorList encoder_biases, at::TensorList trunk_weights,
                          at::TensorList trunk_biases, double temperature,
                          const std::string& weighting, double weight_temperature,
                          bool kernel_layout);

// The backward's incoming gradients, checked, contiguous and in the compute dtype.
struct IncomingGrads {
  at::Tensor weights, effects, causal_mean_action, q_causal;
};

// Checks the forward's saved outputs and the incoming gradients of a backward call, and puts the
// former into `call` (its weights, effects and causal_mean_action) in the compute dtype.
IncomingGrads prepare_backward(PreparedCall& call, const at::Tensor& grad_weights,
                               const at::Tensor& grad_effects,
                               const at::Tensor& grad_causal_mean_action,
                               const at::Tensor& grad_q_causal, const at::Tensor& weights,
                               const at::Tensor& effects, const at::Tensor& causal_mean_action);

// A backward's gradients in the kernels' layout ([in, out] weights) and compute dtype.
struct KernelGrads {
  at::Tensor state_proj;  // [B, H1]: gradient of s W1s^T + b1
  std::vector<at::Tensor> encoder_wt, encoder_b;
  at::Tensor action_proj_wt;
  std::vector<at::Tensor> tail_wt, tail_b;
};

// The gradients of the op's inputs from the kernels' ones: through the state half of the first
// trunk layer for all agents at once, in the layout and dtype of each input.
GradOutputs finish_backward(const KernelGrads& grads, const at::Tensor& state,
                            at::TensorList encoder_weights, at::TensorList encoder_biases,
                            at::TensorList trunk_weights, at::TensorList trunk_biases);

template <typename T>
CausalWeightsParams<T> PreparedCall::params() const {
  auto layer = [](const at::Tensor& weight_t, const at::Tensor& bias) {
    return DenseLayer<T>{weight_t.data_ptr<T>(), bias.defined() ? bias.data_ptr<T>() : nullptr,
                         static_cast<int>(weight_t.size(0)), static_cast<int>(weight_t.size(1))};
  };
  CausalWeightsParams<T> p{};
  p.batch = batch;
  p.slots = slots;
  p.n_actions = n_actions;
  p.one_hot = actions.defined();
  p.actions = actions.defined() ? actions.data_ptr<int64_t>() : nullptr;
  p.action_dists = action_dists.defined() ? action_dists.data_ptr<T>() : nullptr;
  p.mask = mask.data_ptr<bool>();
  p.state_proj = state_proj.data_ptr<T>();
  p.action_table = action_table.defined() ? action_table.data_ptr<T>() : nullptr;
  p.n_encoder = static_cast<int>(encoder_wt.size());
  for (int l = 0; l < p.n_encoder; ++l) p.encoder[l] = layer(encoder_wt[l], encoder_b[l]);
  p.action_proj = layer(action_proj_wt, at::Tensor());
  p.n_tail = static_cast<int>(tail_wt.size());
  for (int l = 0; l < p.n_tail; ++l) p.tail[l] = layer(tail_wt[l], tail_b[l]);
  p.temperature = static_cast<T>(temperature);
  p.weighting = weighting;
  p.weight_temperature = static_cast<T>(weight_temperature);
  p.weights = weights.data_ptr<T>();
  p.effects = effects.data_ptr<T>();
  p.mean_action = mean_action.data_ptr<T>();
  p.causal_mean_action = causal_mean_action.data_ptr<T>();
  p.q_causal = q_causal.data_ptr<T>();
  return p;
}

}  // namespace cmfq
