#include "glue/prepare.h"

#include <cmath>

namespace cmfq {
namespace {

void check_positive(const char* name, double value) {
  TORCH_CHECK_VALUE(std::isfinite(value) && value > 0, name, " must be finite and > 0, got ",
                    value);
}

void check_device(const at::Tensor& t, const std::string& name, const at::Tensor& state) {
  TORCH_CHECK_VALUE(t.device() == state.device(), name, " is on ", t.device(),
                    " but state is on ", state.device());
}

// Checks the Linear layers' shapes: each weight [out, in] takes the previous layer's output.
// Returns the width of the last output.
int64_t check_layers(at::TensorList weights, at::TensorList biases, int64_t in_features,
                     const std::string& name, const at::Tensor& state) {
  TORCH_CHECK_VALUE(weights.size() == biases.size(), name, ": got ", weights.size(),
                    " weights but ", biases.size(), " biases");
  for (size_t l = 0; l < weights.size(); ++l) {
    const auto label = name + "[" + std::to_string(l) + "]";
    TORCH_CHECK_TYPE(weights[l].is_floating_point() && biases[l].is_floating_point(), label,
                     " must be floating point, got ", weights[l].scalar_type());
    TORCH_CHECK_VALUE(weights[l].dim() == 2 && weights[l].size(1) == in_features, label,
                      " weight must have shape [out, ", in_features, "], got ",
                      weights[l].sizes());
    TORCH_CHECK_VALUE(biases[l].dim() == 1 && biases[l].size(0) == weights[l].size(0), label,
                      " bias must have shape [", weights[l].size(0), "], got ", biases[l].sizes());
    check_device(weights[l], label + " weight", state);
    check_device(biases[l], label + " bias", state);
    in_features = weights[l].size(0);
  }
  return in_features;
}

void check_action_range(const at::Tensor& actions, const at::Tensor& mask, int64_t n_actions) {
  const auto bad = mask & ((actions < 0) | (actions >= n_actions));
  if (!bad.any().item<bool>()) return;
  const auto value = actions.masked_select(bad)[0].item<int64_t>();
  TORCH_CHECK_VALUE(false, "neighbor_actions holds ", value,
                    " where neighbor_mask is true; valid actions are 0..", n_actions - 1);
}

}  // namespace

Weighting check_scalars(double temperature, const std::string& weighting,
                        double weight_temperature) {
  check_positive("temperature", temperature);
  check_positive("weight_temperature", weight_temperature);
  int found = 0;
  while (found < kWeightingCount && weighting != kWeightingNames[found]) ++found;
  TORCH_CHECK_VALUE(found < kWeightingCount, "weighting must be one of ('", kWeightingNames[0],
                    "', '", kWeightingNames[1], "'), got '", weighting, "'");
  return static_cast<Weighting>(found);
}

PreparedCall prepare_call(const at::Tensor& state, const at::Tensor& neighbor_actions,
                          const at::Tensor& neighbor_mask, at::TensorList encoder_weights,
                          at::TensorList encoder_biases, at::TensorList trunk_weights,
                          at::TensorList trunk_biases, double temperature,
                          const std::string& weighting, double weight_temperature,
                          bool kernel_layout) {
  const auto dtype = state.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                       dtype == at::kBFloat16,
                   "state must be float16, bfloat16, float32 or float64, got ", dtype);
  TORCH_CHECK_VALUE(state.dim() == 2, "state must have shape [B, S], got ", state.sizes());
  TORCH_CHECK_VALUE(trunk_weights.size() >= 1 && trunk_weights.size() <= kMaxLayers + 1,
                    "the trunk must have 1 to ", kMaxLayers + 1, " Linear layers, got ",
                    trunk_weights.size());
  TORCH_CHECK_VALUE(encoder_weights.size() <= kMaxLayers, "the action encoder may have at most ",
                    kMaxLayers, " Linear layers, got ", encoder_weights.size());
  const int64_t n_actions = trunk_weights.back().size(0);
  const int64_t encoded =
      check_layers(encoder_weights, encoder_biases, n_actions, "encoder_weights", state);
  const int64_t state_dim = state.size(1);
  TORCH_CHECK_VALUE(trunk_weights[0].dim() == 2 && trunk_weights[0].size(1) == state_dim + encoded,
                    "trunk_weights[0] must have shape [H1, S + E] = [H1, ", state_dim + encoded,
                    "] for S = ", state_dim, " and encoder width E = ", encoded, ", got ",
                    trunk_weights[0].sizes());
  TORCH_CHECK_VALUE(check_layers(trunk_weights, trunk_biases, state_dim + encoded,
                                 "trunk_weights", state) == n_actions,
                    "the trunk's last layer must output n_actions values");

  const int64_t batch = state.size(0);
  if (neighbor_actions.is_floating_point()) {
    TORCH_CHECK_VALUE(neighbor_actions.dim() == 3 && neighbor_actions.size(2) == n_actions,
                      "float neighbor_actions must have shape [B, K, A] with A = ", n_actions,
                      ", got ", neighbor_actions.sizes());
  } else {
    TORCH_CHECK_TYPE(at::isIntegralType(neighbor_actions.scalar_type(), /*includeBool=*/false),
                     "neighbor_actions must be integer indices or float distributions, got ",
                     neighbor_actions.scalar_type());
    TORCH_CHECK_VALUE(neighbor_actions.dim() == 2,
                      "integer neighbor_actions must have shape [B, K], got ",
                      neighbor_actions.sizes());
  }
  TORCH_CHECK_VALUE(neighbor_actions.size(0) == batch, "neighbor_actions has batch size ",
                    neighbor_actions.size(0), " but state has ", batch);
  check_device(neighbor_actions, "neighbor_actions", state);
  TORCH_CHECK_TYPE(neighbor_mask.scalar_type() == at::kBool,
                   "neighbor_mask must be a bool tensor, got ", neighbor_mask.scalar_type());
  TORCH_CHECK_VALUE(neighbor_mask.dim() == 2 && neighbor_mask.size(0) == batch &&
                        neighbor_mask.size(1) == neighbor_actions.size(1),
                    "neighbor_mask must have shape [", batch, ", ", neighbor_actions.size(1),
                    "], got ", neighbor_mask.sizes());
  check_device(neighbor_mask, "neighbor_mask", state);
  const Weighting weighting_rule = check_scalars(temperature, weighting, weight_temperature);

  PreparedCall call;
  call.out_dtype = dtype;
  call.compute_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  call.batch = batch;
  call.slots = static_cast<int>(neighbor_actions.size(1));
  call.n_actions = static_cast<int>(n_actions);
  call.mask = neighbor_mask.contiguous();
  const auto compute = state.options().dtype(call.compute_dtype);
  if (neighbor_actions.is_floating_point()) {
    call.action_dists = neighbor_actions.to(compute).contiguous();
  } else {
    call.actions = neighbor_actions.to(at::kLong).contiguous();
    // On a GPU the check would wait for the device on every call (and break CUDA-graph
    // capture); the CUDA kernel gives an agent with such an action NaN outputs instead.
    if (state.is_cpu()) check_action_range(call.actions, call.mask, n_actions);
  }
  call.temperature = temperature;
  call.weighting = weighting_rule;
  call.weight_temperature = weight_temperature;

  auto cast = [&](const at::Tensor& t) { return t.to(compute); };
  auto transposed = [&](const at::Tensor& t) {
    return kernel_layout ? t.t().contiguous() : t.t();
  };
  for (size_t l = 0; l < encoder_weights.size(); ++l) {
    call.encoder_wt.push_back(transposed(cast(encoder_weights[l])));
    call.encoder_b.push_back(cast(encoder_biases[l]).contiguous());
  }
  const auto first = cast(trunk_weights[0]);
  call.state_proj = at::addmm(cast(trunk_biases[0]), cast(state), first.narrow(1, 0, state_dim).t());
  call.action_proj_wt = transposed(first.narrow(1, state_dim, encoded));
  for (size_t l = 1; l < trunk_weights.size(); ++l) {
    call.tail_wt.push_back(transposed(cast(trunk_weights[l])));
    call.tail_b.push_back(cast(trunk_biases[l]).contiguous());
  }
  if (call.actions.defined()) {
    // action_proj(enc(e_a)) for every action a: the rows of the identity through the encoder.
    auto encoded_actions = at::eye(n_actions, compute);
    for (size_t l = 0; l < call.encoder_wt.size(); ++l) {
      encoded_actions = at::relu(at::addmm(call.encoder_b[l], encoded_actions, call.encoder_wt[l]));
    }
    call.action_table = at::mm(encoded_actions, call.action_proj_wt).contiguous();
  }

  call.weights = at::empty({batch, call.slots}, compute);
  call.effects = at::empty({batch, call.slots}, compute);
  call.mean_action = at::empty({batch, n_actions}, compute);
  call.causal_mean_action = at::empty({batch, n_actions}, compute);
  call.q_causal = at::empty({batch, n_actions}, compute);
  return call;
}

namespace {

// `tensor` in the compute dtype, contiguous, after checking its shape and device.
at::Tensor saved(const at::Tensor& tensor, const char* name, at::IntArrayRef shape,
                 at::ScalarType dtype, const at::Tensor& state) {
  TORCH_CHECK_VALUE(tensor.sizes() == shape, name, " must have shape ", shape, ", got ",
                    tensor.sizes());
  check_device(tensor, name, state);
  return tensor.to(dtype).contiguous();
}

// The kernels' gradients, [in, out] for weights, in the layout and dtype of the parameters.
std::vector<at::Tensor> transposed_like(const std::vector<at::Tensor>& grads,
                                        at::TensorList like) {
  std::vector<at::Tensor> out;
  for (size_t l = 0; l < grads.size(); ++l) {
    const auto grad = grads[l].dim() == 2 ? grads[l].t() : grads[l];
    out.push_back(grad.to(like[l].scalar_type()).contiguous());
  }
  return out;
}

}  // namespace

IncomingGrads prepare_backward(PreparedCall& call, const at::Tensor& grad_weights,
                               const at::Tensor& grad_effects,
                               const at::Tensor& grad_causal_mean_action,
                               const at::Tensor& grad_q_causal, const at::Tensor& weights,
                               const at::Tensor& effects, const at::Tensor& causal_mean_action) {
  const auto dtype = call.compute_dtype;
  const auto& state = call.state_proj;  // on the device of the op's state
  const int64_t B = call.batch, K = call.slots, A = call.n_actions;
  call.weights = saved(weights, "weights", {B, K}, dtype, state);
  call.effects = saved(effects, "effects", {B, K}, dtype, state);
  call.causal_mean_action =
      saved(causal_mean_action, "causal_mean_action", {B, A}, dtype, state);
  return {saved(grad_weights, "grad_weights", {B, K}, dtype, state),
          saved(grad_effects, "grad_effects", {B, K}, dtype, state),
          saved(grad_causal_mean_action, "grad_causal_mean_action", {B, A}, dtype, state),
          saved(grad_q_causal, "grad_q_causal", {B, A}, dtype, state)};
}

GradOutputs finish_backward(const KernelGrads& grads, const at::Tensor& state,
                            at::TensorList encoder_weights, at::TensorList encoder_biases,
                            at::TensorList trunk_weights, at::TensorList trunk_biases) {
  const auto dtype = grads.state_proj.scalar_type();
  const int64_t state_dim = state.size(1);
  const auto first = trunk_weights[0].to(dtype);
  const auto grad_state = grads.state_proj.mm(first.narrow(1, 0, state_dim));
  const auto grad_first =
      at::cat({grads.state_proj.t().mm(state.to(dtype)), grads.action_proj_wt.t()}, 1);
  std::vector<at::Tensor> grad_trunk_w{grad_first.t()}, grad_trunk_b{grads.state_proj.sum(0)};
  grad_trunk_w.insert(grad_trunk_w.end(), grads.tail_wt.begin(), grads.tail_wt.end());
  grad_trunk_b.insert(grad_trunk_b.end(), grads.tail_b.begin(), grads.tail_b.end());
  return {grad_state.to(state.scalar_type()), transposed_like(grads.encoder_wt, encoder_weights),
          transposed_like(grads.encoder_b, encoder_biases),
          transposed_like(grad_trunk_w, trunk_weights),
          transposed_like(grad_trunk_b, trunk_biases)};
}

Outputs PreparedCall::outputs() const {
  return {weights.to(out_dtype), effects.to(out_dtype), mean_action.to(out_dtype),
          causal_mean_action.to(out_dtype), q_causal.to(out_dtype)};
}

}  // namespace cmfq
