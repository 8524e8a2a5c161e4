#include "stacked.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "agent_math.h"

namespace cmfq {

bool stacked_selected() {
  const char* value = std::getenv("CMFQ_STACKED");
  if (value == nullptr || std::string(value).empty() || std::string(value) == "0") return false;
  TORCH_CHECK_VALUE(std::string(value) == "1", "CMFQ_STACKED must be 0 or 1, got ", value);
  return true;
}

namespace {

// The neighbours' actions as the rows evaluated for them.
struct Rows {
  int64_t per_agent = 0;  // M
  bool by_action = false;  // one-hot with K >= A: row m of an agent is action m
  at::Tensor index;        // one-hot: [B, K] actions clamped into [0, A), 0 where masked
  at::Tensor vectors;      // distributions: [B, K, A], 0 where masked
  at::Tensor mean_action;  // [B, A]
};

Rows make_rows(const PreparedCall& c) {
  Rows rows;
  const auto options = c.state_proj.options();
  const auto mask = c.mask.to(c.compute_dtype);
  const auto valid = mask.sum(1, /*keepdim=*/true).clamp_min(1);
  if (c.actions.defined()) {
    rows.index = c.actions.clamp(0, c.n_actions - 1).masked_fill(c.mask.logical_not(), 0);
    rows.by_action = c.slots >= c.n_actions;
    rows.per_agent = rows.by_action ? c.n_actions : c.slots;
    rows.mean_action =
        at::zeros({c.batch, c.n_actions}, options).scatter_add_(1, rows.index, mask) / valid;
  } else {
    rows.vectors = c.action_dists * mask.unsqueeze(-1);
    rows.per_agent = c.slots;
    rows.mean_action = rows.vectors.sum(1) / valid;
  }
  return rows;
}

// action_proj(enc(x)) for the rows of x; `inputs`, if given, receives each encoder layer's input
// and then the projection's.
at::Tensor project_actions(const PreparedCall& c, at::Tensor x,
                           std::vector<at::Tensor>* inputs = nullptr) {
  for (size_t l = 0; l < c.encoder_wt.size(); ++l) {
    if (inputs) inputs->push_back(x);
    x = at::relu(at::addmm(c.encoder_b[l], x, c.encoder_wt[l]));
  }
  if (inputs) inputs->push_back(x);
  return at::mm(x, c.action_proj_wt);
}

// The pre-activation of every trunk layer from the first one's, the action values last.
std::vector<at::Tensor> run_trunk(const PreparedCall& c, const at::Tensor& first) {
  std::vector<at::Tensor> layers{first};
  for (size_t l = 0; l < c.tail_wt.size(); ++l) {
    layers.push_back(at::addmm(c.tail_b[l], at::relu(layers.back()), c.tail_wt[l]));
  }
  return layers;
}

at::Tensor row_change(const RowChange& step) {
#ifdef CMFQ_WITH_CUDA
  if (step.reference.is_cuda()) return row_change_cuda(step);
#endif
  const int64_t batch = step.reference.size(0), width = step.reference.size(1);
  const int64_t rows = step.rows_per_agent;
  at::Tensor change;
  if (step.change.defined()) {
    change = step.change.to(step.reference.scalar_type()).view({batch, rows, width});
  } else {
    const auto table = step.actions.defined()
                           ? step.action_table.index_select(0, step.actions.flatten())
                                 .view({batch, rows, width})
                           : step.action_table.unsqueeze(0);
    change = table - step.reference_proj.unsqueeze(1);
  }
  if (step.relu) {
    // relu_change (agent_math.h): exactly the change where both sides are positive.
    const auto z = step.reference.unsqueeze(1);
    const auto shifted = z + change;
    change = at::where(z.gt(0).logical_and(shifted.gt(0)), change,
                       shifted.clamp_min(0) - z.clamp_min(0));
  }
  return change.reshape({batch * rows, width}).to(step.row_dtype);
}

// e^d - 1 - d and m - log1p(m) without cancellation near 0 (src/cmfq/divergence.py).
at::Tensor phi(const at::Tensor& d) {
  auto series = at::ones_like(d);
  for (int n = 17; n > 2; --n) series = series * d / n + 1;
  series = d * d * series / 2;
  return at::where(d.abs() < kPhiSeriesBound, series, at::expm1(d) - d);
}

at::Tensor psi(const at::Tensor& m) {
  auto series = at::zeros_like(m);
  for (int n = 9; n > 1; --n) series = 1.0 / n - m * series;
  return at::where(m.abs() < 0.01, m * m * series, m - at::log1p(m));
}

// KL(p_b || softmax(log p_b + q_change_r / tau)) of every row r of agent b: [B, M].
at::Tensor row_effects(const at::Tensor& probs, const at::Tensor& q_change,
                       int64_t rows_per_agent, double inv_tau) {
#ifdef CMFQ_WITH_CUDA
  if (probs.is_cuda()) return row_effects_cuda(probs, q_change, rows_per_agent, inv_tau);
#endif
  const auto p = probs.unsqueeze(1);
  const int64_t batch = probs.size(0), n_actions = probs.size(1);
  auto d = q_change.to(probs.scalar_type()).view({batch, rows_per_agent, n_actions}) * inv_tau;
  d = d - (p * d).sum(-1, /*keepdim=*/true);
  const auto f = (p * phi(d)).sum(-1);
  const auto r = (p * d).sum(-1);
  return (f - psi(f + r)).clamp_min(0);
}

// The weights from the effects (0 where masked), as src/cmfq/divergence.py's combine_weights.
at::Tensor combine_weights(const at::Tensor& effects, const at::Tensor& mask,
                           Weighting weighting, double weight_temperature) {
  const auto count = mask.sum(-1, /*keepdim=*/true);
  if (weighting == Weighting::kProportional) {
    const auto total = effects.sum(-1, /*keepdim=*/true);
    const auto uniform = mask.to(effects.scalar_type()) / count.clamp_min(1);
    return at::where(total > kEffectThreshold, effects / total.clamp_min(kEffectThreshold),
                     uniform);
  }
  const auto logits = (effects / weight_temperature)
                          .masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  // A row without a valid neighbour is all -inf: its softmax is NaN, docs/spec.md wants 0.
  return at::softmax(logits, -1).masked_fill(count.eq(0), 0);
}

// The causal mean action sum_k w_k e(a_k).
at::Tensor causal_mean(const PreparedCall& c, const Rows& rows, const at::Tensor& weights) {
  if (rows.index.defined()) {
    return at::zeros({c.batch, c.n_actions}, weights.options()).scatter_add_(1, rows.index, weights);
  }
  return (weights.unsqueeze(-1) * rows.vectors).sum(1);
}

}  // namespace

Outputs stacked_forward(PreparedCall& c) {
  const auto rows = make_rows(c);
  const int64_t batch = c.batch, M = rows.per_agent;
  const double inv_tau = 1.0 / c.temperature;
  const bool half = c.out_dtype == at::kHalf || c.out_dtype == at::kBFloat16;
  // Half-precision inputs keep the rows, and the GEMMs over them, in their dtype (tensor cores,
  // float32 accumulation); the reference and everything per agent stay in float32.
  const auto row_dtype = half ? c.out_dtype : c.compute_dtype;

  const auto reference_proj = project_actions(c, rows.mean_action);
  const auto reference = run_trunk(c, c.state_proj + reference_proj);
  const auto probs = at::softmax(reference.back() * inv_tau, -1);

  RowChange step;
  step.reference = reference[0];
  step.rows_per_agent = M;
  step.relu = !c.tail_wt.empty();
  step.row_dtype = row_dtype;
  if (rows.index.defined()) {
    step.action_table = c.action_table;
    step.reference_proj = reference_proj;
    if (!rows.by_action) step.actions = rows.index;
  } else {
    const auto projected = project_actions(c, rows.vectors.view({batch * M, c.n_actions}));
    const int64_t width = projected.size(1);
    step.change = (projected.view({batch, M, width}) - reference_proj.unsqueeze(1))
                      .view({batch * M, width});
  }
  auto change = row_change(step);
  for (size_t l = 0; l < c.tail_wt.size(); ++l) {
    change = at::mm(change, c.tail_wt[l].to(row_dtype));
    if (l + 1 < c.tail_wt.size()) {
      step.reference = reference[l + 1];
      step.change = change;
      change = row_change(step);
    }
  }
  const auto row_kl = row_effects(probs, change, M, inv_tau);

  const auto effects = (rows.by_action ? row_kl.gather(1, rows.index) : row_kl)
                           .masked_fill(c.mask.logical_not(), 0);
  const auto weights = combine_weights(effects, c.mask, c.weighting, c.weight_temperature);
  const auto causal = causal_mean(c, rows, weights);
  const auto q_causal = run_trunk(c, c.state_proj + project_actions(c, causal)).back();
  c.weights = weights;
  c.effects = effects;
  c.mean_action = rows.mean_action;
  c.causal_mean_action = causal;
  c.q_causal = q_causal;
  if (c.actions.defined()) {
    // CUDA inputs are not range-checked on the host (prepare.cpp): as the per-agent kernel does,
    // an agent with a valid neighbour whose action is outside [0, A) gets NaN in all outputs.
    const auto bad = c.mask.logical_and(c.actions.lt(0).logical_or(c.actions.ge(c.n_actions)))
                         .any(1, /*keepdim=*/true);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (auto* output : {&c.weights, &c.effects, &c.mean_action, &c.causal_mean_action,
                         &c.q_causal}) {
      *output = output->masked_fill(bad, nan);
    }
  }
  return c.outputs();
}

namespace {

void accumulate(at::Tensor& total, const at::Tensor& term) {
  total = total.defined() ? total + term : term;
}

// Back through the trunk after its first layer, given every layer's pre-activation (run_trunk):
// adds the later layers' gradients to `grads`; returns the gradient of the first pre-activation.
at::Tensor trunk_backward(const PreparedCall& c, const std::vector<at::Tensor>& layers,
                          at::Tensor grad, KernelGrads& grads) {
  for (int64_t l = static_cast<int64_t>(c.tail_wt.size()) - 1; l >= 0; --l) {
    const auto input = at::relu(layers[l]);
    accumulate(grads.tail_wt[l], input.t().mm(grad));
    accumulate(grads.tail_b[l], grad.sum(0));
    grad = at::threshold_backward(grad.mm(c.tail_wt[l].t()), input, 0);
  }
  return grad;
}

// Back through action_proj(enc(x)), given each layer's input (project_actions): adds the
// encoder's and the projection's gradients to `grads`; returns the gradient of x.
at::Tensor project_actions_backward(const PreparedCall& c, const std::vector<at::Tensor>& inputs,
                                    at::Tensor grad, KernelGrads& grads) {
  accumulate(grads.action_proj_wt, inputs.back().t().mm(grad));
  grad = grad.mm(c.action_proj_wt.t());
  for (int64_t l = static_cast<int64_t>(c.encoder_wt.size()) - 1; l >= 0; --l) {
    grad = at::threshold_backward(grad, inputs[l + 1], 0);
    accumulate(grads.encoder_wt[l], inputs[l].t().mm(grad));
    accumulate(grads.encoder_b[l], grad.sum(0));
    grad = grad.mm(c.encoder_wt[l].t());
  }
  return grad;
}

}  // namespace

KernelGrads stacked_backward(const PreparedCall& c, const IncomingGrads& incoming) {
  const auto rows = make_rows(c);
  const int64_t batch = c.batch, slots = c.slots, A = c.n_actions, M = rows.per_agent;
  const int64_t width = c.state_proj.size(1);
  const double inv_tau = 1.0 / c.temperature;
  const bool one_hot = rows.index.defined();
  const auto options = c.state_proj.options();
  const auto not_mask = c.mask.logical_not();
  KernelGrads grads;
  grads.encoder_wt.resize(c.encoder_wt.size());
  grads.encoder_b.resize(c.encoder_b.size());
  grads.tail_wt.resize(c.tail_wt.size());
  grads.tail_b.resize(c.tail_b.size());

  // The forward again, keeping every layer: each agent's reference row, then its M rows (the
  // rows' own values here, not their change: the chain rule needs each ReLU's side).
  std::vector<at::Tensor> input_layers, mean_layers, causal_layers;
  const auto inputs = one_hot ? at::eye(A, options) : rows.vectors.view({batch * slots, A});
  const auto input_proj = project_actions(c, inputs, &input_layers);
  const auto mean_proj = project_actions(c, rows.mean_action, &mean_layers);
  at::Tensor row_proj;
  if (rows.by_action) {
    row_proj = input_proj.unsqueeze(0);
  } else if (one_hot) {
    row_proj = input_proj.index_select(0, rows.index.flatten()).view({batch, M, width});
  } else {
    row_proj = input_proj.view({batch, M, width});
  }
  const auto first = at::cat(
      {(c.state_proj + mean_proj).unsqueeze(1), c.state_proj.unsqueeze(1) + row_proj}, 1);
  const auto row_layers = run_trunk(c, first.view({batch * (M + 1), width}));
  const auto logits = row_layers.back().view({batch, M + 1, A}) * inv_tau;
  // A row's effect is that of every valid neighbour that took its action (masked slots hold
  // 0 <= any effect); rows of actions no valid neighbour took get no gradient.
  const auto row_effect =
      rows.by_action
          ? at::zeros({batch, A}, options).scatter_reduce_(1, rows.index, c.effects, "amax")
          : c.effects;
  const auto causal_proj = project_actions(c, c.causal_mean_action, &causal_layers);
  const auto causal_trunk = run_trunk(c, c.state_proj + causal_proj);

  // Through q_causal = Q(s, ǎ), then ǎ = sum_k w_k e(a_k), to the weights and the effects.
  const auto grad_causal_first = trunk_backward(c, causal_trunk, incoming.q_causal, grads);
  auto grad_state_proj = grad_causal_first;
  const auto grad_causal = project_actions_backward(c, causal_layers, grad_causal_first, grads) +
                           incoming.causal_mean_action;
  const auto grad_through_causal =
      one_hot ? grad_causal.gather(1, rows.index).masked_fill(not_mask, 0)
              : (rows.vectors * grad_causal.unsqueeze(1)).sum(-1);
  const auto grad_w = incoming.weights + grad_through_causal;
  const auto centred = grad_w - (c.weights * grad_w).sum(-1, /*keepdim=*/true);
  at::Tensor through_weights;
  if (c.weighting == Weighting::kProportional) {
    const auto total = c.effects.sum(-1, /*keepdim=*/true);
    through_weights = at::where(total > kEffectThreshold,
                                centred / total.clamp_min(kEffectThreshold), 0);
  } else {
    through_weights = c.weights * centred / c.weight_temperature;
  }
  auto grad_effect = (incoming.effects + through_weights).masked_fill(not_mask, 0);
  if (rows.by_action) {
    grad_effect = at::zeros({batch, A}, options).scatter_add_(1, rows.index, grad_effect);
  }

  // Through the KLs to the values of every row, and back through the trunk:
  // dc/du_k = softmax(u_k) - p, dc/du_0 = p (log p - log softmax(u_k) - c).
  grad_effect = grad_effect.unsqueeze(-1);
  const auto log_p = at::log_softmax(logits.narrow(1, 0, 1), -1);
  const auto log_q = at::log_softmax(logits.narrow(1, 1, M), -1);
  const auto p = log_p.exp();
  const auto grad_reference =
      (grad_effect * p * (log_p - log_q - row_effect.unsqueeze(-1))).sum(1, /*keepdim=*/true);
  const auto grad_rows = grad_effect * (log_q.exp() - p);
  const auto grad_values = at::cat({grad_reference, grad_rows}, 1) * inv_tau;
  const auto grad_first =
      trunk_backward(c, row_layers, grad_values.view({batch * (M + 1), A}), grads)
          .view({batch, M + 1, width});
  grad_state_proj = grad_state_proj + grad_first.sum(1);
  auto grad_row_proj = grad_first.narrow(1, 1, M);
  if (rows.by_action) {
    grad_row_proj = grad_row_proj.sum(0);
  } else if (one_hot) {
    grad_row_proj = at::zeros({A, width}, options)
                        .index_add_(0, rows.index.flatten(),
                                    grad_row_proj.reshape({batch * M, width}));
  } else {
    grad_row_proj = grad_row_proj.reshape({batch * M, width});
  }
  project_actions_backward(c, input_layers, grad_row_proj, grads);
  project_actions_backward(c, mean_layers, grad_first.select(1, 0), grads);
  grads.state_proj = grad_state_proj;
  return grads;
}

}  // namespace cmfq
