#include "stacked/stacked.h"

#include <ATen/Parallel.h>

#include <limits>
#include <string>
#include <vector>

#include "shared/stacked_steps.h"

namespace cmfq {

namespace {

// step(i) for i in [0, n), in parallel: a step of stacked_steps.h on the CPU.
template <typename Step>
void for_each_on_cpu(int64_t n, const Step& step) {
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) step(i);
  });
}

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// The neighbours' actions as the rows evaluated for them (stacked_rows).
struct Rows {
  int64_t per_agent = 0;   // M
  bool by_action = false;  // one-hot with K >= A: row m of an agent is action m
  at::Tensor index;        // one-hot: [B, K] actions clamped into [0, A), 0 where masked
  at::Tensor bad;          // one-hot: [B] whether a valid neighbour's action is outside [0, A)
  at::Tensor vectors;      // distributions: [B, K, A], 0 where masked
  at::Tensor mean_action;  // [B, A]
};

// The rows of a call, with the mean action written into `mean_action` ([B, A], contiguous).
Rows make_rows(const PreparedCall& c, const at::Tensor& mean_action) {
  Rows rows;
  const auto options = c.state_proj.options();
  const bool one_hot = c.actions.defined();
  rows.by_action = one_hot && c.slots >= c.n_actions;
  rows.per_agent = rows.by_action ? c.n_actions : c.slots;
  rows.mean_action = mean_action;
  if (one_hot) {
    rows.index = at::empty({c.batch, c.slots}, options.dtype(at::kLong));
    rows.bad = at::empty({c.batch}, options.dtype(at::kBool));
  } else {
    rows.vectors = at::empty({c.batch, c.slots, c.n_actions}, options);
  }
  AT_DISPATCH_FLOATING_TYPES(c.compute_dtype, "cmfq_stacked_rows", [&] {
    StackedRowsParams<scalar_t> p{};
    p.batch = c.batch;
    p.slots = c.slots;
    p.n_actions = c.n_actions;
    p.one_hot = one_hot;
    p.actions = data_or_null<int64_t>(c.actions);
    p.action_dists = data_or_null<scalar_t>(c.action_dists);
    p.mask = c.mask.data_ptr<bool>();
    p.mean_action = rows.mean_action.data_ptr<scalar_t>();
    p.index = data_or_null<int64_t>(rows.index);
    p.bad = data_or_null<bool>(rows.bad);
    p.vectors = data_or_null<scalar_t>(rows.vectors);
#ifdef CMFQ_WITH_CUDA
    if (c.state_proj.is_cuda()) return stacked_rows_cuda(p);
#endif
    for_each_on_cpu(c.batch, [&](int64_t b) { stacked_rows(p, b); });
  });
  return rows;
}

// action_proj(enc(x)) for the rows of x; `activations`, if given, receives x and each encoder
// layer's output (each ReLU's, the next layer's input).
at::Tensor project_actions(const PreparedCall& c, const at::Tensor& x,
                           std::vector<at::Tensor>* activations = nullptr) {
  at::Tensor h = x;
  if (activations) activations->push_back(h);
  for (size_t l = 0; l < c.encoder_wt.size(); ++l) {
    h = at::_addmm_activation(c.encoder_b[l], h, c.encoder_wt[l]);  // relu(addmm), one GEMM
    if (activations) activations->push_back(h);
  }
  return at::mm(h, c.action_proj_wt);
}

// Every trunk layer's pre-activation from the first one's, the action values last.
std::vector<at::Tensor> pre_activations(const PreparedCall& c, const at::Tensor& first) {
  std::vector<at::Tensor> layers{first};
  for (size_t l = 0; l < c.tail_wt.size(); ++l) {
    layers.push_back(at::addmm(c.tail_b[l], at::relu(layers.back()), c.tail_wt[l]));
  }
  return layers;
}

// The action values from the first trunk layer's pre-activation; `inputs`, if given, receives
// each later layer's input (a ReLU's output).
at::Tensor trunk_values(const PreparedCall& c, const at::Tensor& first,
                        std::vector<at::Tensor>* inputs = nullptr) {
  const size_t tail = c.tail_wt.size();
  if (tail == 0) return first;
  at::Tensor h = at::relu(first);
  for (size_t l = 0; l < tail; ++l) {
    if (inputs) inputs->push_back(h);
    h = l + 1 < tail ? at::_addmm_activation(c.tail_b[l], h, c.tail_wt[l])
                     : at::addmm(c.tail_b[l], h, c.tail_wt[l]);
  }
  return h;
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

}  // namespace

Outputs stacked_forward(PreparedCall& c, bool fused_trunk) {
  const auto rows = make_rows(c, c.mean_action);
  const int64_t batch = c.batch, M = rows.per_agent;
  const bool half = c.out_dtype == at::kHalf || c.out_dtype == at::kBFloat16;
  // Half-precision inputs keep the rows, and the GEMMs over them, in their dtype (tensor cores,
  // float32 accumulation); the reference and everything per agent stay in float32.
  const auto row_dtype = half ? c.out_dtype : c.compute_dtype;

  const auto reference_proj = project_actions(c, rows.mean_action);
  const auto reference = pre_activations(c, c.state_proj + reference_proj);

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
  at::Tensor change;
#ifdef CMFQ_WITH_CUDA
  if (fused_trunk && c.state_proj.is_cuda() && c.tail_wt.size() == 2) {
    change = fused_trunk_cuda(step, c.tail_wt[0], reference[1], c.tail_wt[1]);
  }
#endif
  if (!change.defined()) {
    change = row_change(step);
    for (size_t l = 0; l < c.tail_wt.size(); ++l) {
      change = at::mm(change, c.tail_wt[l].to(row_dtype));
      if (l + 1 < c.tail_wt.size()) {
        step.reference = reference[l + 1];
        step.change = change;
        change = row_change(step);
      }
    }
  }

  // Each row's KL, each neighbour's effect and weight, the causal mean action: one step.
  const bool cuda = c.state_proj.is_cuda();
  const auto options = c.state_proj.options();
  const auto probs = cuda ? at::Tensor() : at::empty({batch, c.n_actions}, options);
  const auto row_kl = cuda ? at::Tensor() : at::empty({batch * M}, options);
  // The CPU loop reads its rows in the compute dtype; a CUDA thread widens them as it reads.
  const auto q_change = cuda ? change : change.to(c.compute_dtype);
  AT_DISPATCH_FLOATING_TYPES(c.compute_dtype, "cmfq_stacked_weights", [&] {
    StackedWeightsParams<scalar_t> p{};
    p.batch = batch;
    p.slots = c.slots;
    p.n_actions = c.n_actions;
    p.rows_per_agent = static_cast<int>(M);
    p.by_action = rows.by_action;
    p.reference_values = reference.back().data_ptr<scalar_t>();
    p.q_change = q_change.data_ptr();
    p.index = data_or_null<int64_t>(rows.index);
    p.vectors = data_or_null<scalar_t>(rows.vectors);
    p.mask = c.mask.data_ptr<bool>();
    p.bad = data_or_null<bool>(rows.bad);
    p.inv_tau = static_cast<scalar_t>(1.0 / c.temperature);
    p.weighting = c.weighting;
    p.weight_temperature = static_cast<scalar_t>(c.weight_temperature);
    p.probs = data_or_null<scalar_t>(probs);
    p.row_kl = data_or_null<scalar_t>(row_kl);
    p.effects = c.effects.data_ptr<scalar_t>();
    p.weights = c.weights.data_ptr<scalar_t>();
    p.causal_mean_action = c.causal_mean_action.data_ptr<scalar_t>();
    p.mean_action = c.mean_action.data_ptr<scalar_t>();
#ifdef CMFQ_WITH_CUDA
    if (cuda) return stacked_weights_cuda(p, q_change.scalar_type());
#endif
    for_each_on_cpu(batch, [&](int64_t b) { stacked_weights<scalar_t, scalar_t>(p, b); });
  });

  c.q_causal = trunk_values(c, c.state_proj + project_actions(c, c.causal_mean_action));
  if (rows.bad.defined()) {
    // CUDA inputs are not range-checked on the host (prepare.cpp): as the per-agent kernel does,
    // an agent with a valid neighbour whose action is outside [0, A) gets NaN in all outputs
    // (the other four from the weights step).
    c.q_causal.masked_fill_(rows.bad.unsqueeze(1), std::numeric_limits<double>::quiet_NaN());
  }
  return c.outputs();
}

namespace {

// x^T grad in the kernels' [in, out] layout, as a view of the contiguous [out, in] product: the
// layer's own layout, which finish_backward (prepare.h) then returns without a copy.
at::Tensor weight_gradient(const at::Tensor& x, const at::Tensor& grad) {
  return grad.t().mm(x).t();
}

}  // namespace

KernelGrads stacked_backward(const PreparedCall& c, const IncomingGrads& incoming) {
  const auto options = c.state_proj.options();
  const auto rows = make_rows(c, at::empty({c.batch, c.n_actions}, options));
  const int64_t batch = c.batch, A = c.n_actions, M = rows.per_agent, per_agent = M + 2;
  const int64_t width = c.state_proj.size(1);
  const int64_t n_encoder = static_cast<int64_t>(c.encoder_wt.size());
  const int64_t n_tail = static_cast<int64_t>(c.tail_wt.size());
  const bool one_hot = rows.index.defined();
  KernelGrads grads;
  grads.encoder_wt.resize(n_encoder);
  grads.encoder_b.resize(n_encoder);
  grads.tail_wt.resize(n_tail);
  grads.tail_b.resize(n_tail);

  // The forward again, keeping every layer (the rows' own values here, not their change: the
  // chain rule needs each ReLU's side). The action vectors go through the encoder at once: the
  // rows' (the A one-hot actions, or each neighbour's distribution), then every agent's mean and
  // causal mean action.
  const auto inputs = one_hot ? at::eye(A, options) : rows.vectors.view({batch * c.slots, A});
  const int64_t n_inputs = inputs.size(0);
  std::vector<at::Tensor> encoded;
  const auto projected =
      project_actions(c, at::cat({inputs, rows.mean_action, c.causal_mean_action}), &encoded);
  // Each agent's rows, reference first and causal last, through the trunk.
  const auto first = at::empty({batch, per_agent, width}, options);
  AT_DISPATCH_FLOATING_TYPES(c.compute_dtype, "cmfq_stacked_first", [&] {
    StackedFirstParams<scalar_t> p{};
    p.batch = batch;
    p.slots = c.slots;
    p.rows_per_agent = static_cast<int>(M);
    p.width = static_cast<int>(width);
    p.by_action = rows.by_action;
    p.one_hot = one_hot;
    p.state_proj = c.state_proj.data_ptr<scalar_t>();
    p.input_proj = projected.data_ptr<scalar_t>();
    p.mean_proj = p.input_proj + n_inputs * width;
    p.causal_proj = p.mean_proj + batch * width;
    p.index = data_or_null<int64_t>(rows.index);
    p.first = first.data_ptr<scalar_t>();
#ifdef CMFQ_WITH_CUDA
    if (c.state_proj.is_cuda()) return stacked_first_cuda(p);
#endif
    for_each_on_cpu(batch, [&](int64_t b) {
      for (int m = 0; m < per_agent; ++m) stacked_first(p, b, m, 0, 1);
    });
  });
  std::vector<at::Tensor> trunk_inputs;
  const auto values = trunk_values(c, first.view({batch * per_agent, width}), &trunk_inputs);

  // q_causal's gradient back to the causal mean action. The parameters' share of the causal rows
  // comes below, with every other row's.
  const auto causal_rows = [&](const at::Tensor& t) {
    return t.view({batch, per_agent, t.size(1)}).select(1, per_agent - 1);
  };
  at::Tensor grad = incoming.q_causal;
  for (int64_t l = n_tail - 1; l >= 0; --l) {
    grad = at::threshold_backward(grad.mm(c.tail_wt[l].t()), causal_rows(trunk_inputs[l]), 0);
  }
  grad = grad.mm(c.action_proj_wt.t());
  for (int64_t l = n_encoder - 1; l >= 0; --l) {
    grad = at::threshold_backward(grad, encoded[l + 1].narrow(0, n_inputs + batch, batch), 0);
    grad = grad.mm(c.encoder_wt[l].t());
  }
  const auto grad_causal_head = grad.contiguous();

  // From there through the weights and the KLs to every row's values: one step.
  const auto grad_values = at::empty({batch, per_agent, A}, options);
  const auto scratch = at::empty({batch, 1 + 3 * M}, options);
  AT_DISPATCH_FLOATING_TYPES(c.compute_dtype, "cmfq_stacked_kl_grad", [&] {
    StackedKlGradParams<scalar_t> p{};
    p.batch = batch;
    p.slots = c.slots;
    p.n_actions = c.n_actions;
    p.rows_per_agent = static_cast<int>(M);
    p.by_action = rows.by_action;
    p.values = values.data_ptr<scalar_t>();
    p.grad_causal_head = grad_causal_head.data_ptr<scalar_t>();
    p.grad_causal_mean_action = incoming.causal_mean_action.data_ptr<scalar_t>();
    p.grad_weights = incoming.weights.data_ptr<scalar_t>();
    p.grad_effects = incoming.effects.data_ptr<scalar_t>();
    p.grad_q_causal = incoming.q_causal.data_ptr<scalar_t>();
    p.weights = c.weights.data_ptr<scalar_t>();
    p.effects = c.effects.data_ptr<scalar_t>();
    p.index = data_or_null<int64_t>(rows.index);
    p.vectors = data_or_null<scalar_t>(rows.vectors);
    p.mask = c.mask.data_ptr<bool>();
    p.inv_tau = static_cast<scalar_t>(1.0 / c.temperature);
    p.weighting = c.weighting;
    p.weight_temperature = static_cast<scalar_t>(c.weight_temperature);
    p.scratch = scratch.data_ptr<scalar_t>();
    p.grad_values = grad_values.data_ptr<scalar_t>();
#ifdef CMFQ_WITH_CUDA
    if (c.state_proj.is_cuda()) return stacked_kl_grad_cuda(p);
#endif
    for_each_on_cpu(batch, [&](int64_t b) { stacked_kl_grad(p, b); });
  });

  // Every row back through the trunk: the trunk's parameter gradients, and the first layer's.
  grad = grad_values.view({batch * per_agent, A});
  for (int64_t l = n_tail - 1; l >= 0; --l) {
    grads.tail_wt[l] = weight_gradient(trunk_inputs[l], grad);
    grads.tail_b[l] = grad.sum(0);
    grad = at::threshold_backward(grad.mm(c.tail_wt[l].t()), trunk_inputs[l], 0);
  }
  const auto grad_first = grad.view({batch, per_agent, width});
  grads.state_proj = grad_first.sum(1);

  // And the action vectors' projections back through the encoder.
  const auto grad_rows = grad_first.narrow(1, 1, M);
  at::Tensor grad_inputs;
  if (rows.by_action) {
    grad_inputs = grad_rows.sum(0);
  } else if (one_hot) {
    grad_inputs = at::zeros({A, width}, options)
                      .index_add_(0, rows.index.flatten(), grad_rows.reshape({batch * M, width}));
  } else {
    grad_inputs = grad_rows.reshape({batch * M, width});
  }
  grad = at::cat({grad_inputs, grad_first.select(1, 0), grad_first.select(1, per_agent - 1)});
  grads.action_proj_wt = weight_gradient(encoded.back(), grad);
  if (n_encoder > 0) grad = grad.mm(c.action_proj_wt.t());
  for (int64_t l = n_encoder - 1; l >= 0; --l) {
    grad = at::threshold_backward(grad, encoded[l + 1], 0);
    grads.encoder_wt[l] = weight_gradient(encoded[l], grad);
    grads.encoder_b[l] = grad.sum(0);
    if (l > 0) grad = grad.mm(c.encoder_wt[l].t());
  }
  return grads;
}

}  // namespace cmfq
