// CPU kernel of cmfq::causal_weights. Agents are split into chunks, in parallel over threads; a
// chunk's interventions are stacked as rows so that every layer is one small GEMM (BLAS):
//   1. the reference: each agent's mean action through the encoder, its first-layer
//      pre-activation (state half precomputed) and the rest of the trunk, keeping every layer;
//   2. the interventions: one row per distinct valid action of an agent (or per valid neighbour
//      for distributions), carrying the *change* of each layer's pre-activation relative to the
//      reference, so that the effect is computed from the change itself, not from a difference of
//      two nearly equal evaluations;
//   3. per agent: the KL of every row, the neighbours' effects and weights, the causal mean action;
//   4. the causal mean action through the head for q_causal.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "agent_math.h"
#include "prepare.h"

namespace cmfq {
namespace {

// Agents per chunk: enough rows for BLAS to pay off, few enough for the rows to stay in cache.
constexpr int64_t kChunk = 64;

// y[rows, out] = x[rows, in] W^T, W^T stored as [in, out]: one BLAS call through ATen (the
// cpublas entry points are not exported by every torch build).
template <typename T>
void matmul(const DenseLayer<T>& layer, const T* x, int64_t rows, T* y) {
  if (rows == 0) return;
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto out = at::from_blob(y, {rows, layer.out}, options);
  at::mm_out(out, at::from_blob(const_cast<T*>(x), {rows, layer.in}, options),
             at::from_blob(const_cast<T*>(layer.weight_t), {layer.in, layer.out}, options));
}

template <typename T>
void add_bias(const DenseLayer<T>& layer, int64_t rows, T* y, bool relu) {
  for (int64_t r = 0; r < rows; ++r) {
    T* row = y + r * layer.out;
    for (int o = 0; o < layer.out; ++o) {
      row[o] = relu ? cmfq::relu(row[o] + layer.bias[o]) : row[o] + layer.bias[o];
    }
  }
}

template <typename T>
class ChunkRunner {
 public:
  explicit ChunkRunner(const CausalWeightsParams<T>& p) : p_(p) {
    const int64_t actions = p.n_actions;
    const int64_t per_agent_rows =
        p.one_hot ? std::min<int64_t>(p.slots, actions) : static_cast<int64_t>(p.slots);
    const int64_t rows = std::max<int64_t>(kChunk * per_agent_rows, kChunk);
    const int64_t width = p.max_width();
    int64_t layer_widths = p.first_width();
    for (int l = 0; l < p.n_tail; ++l) layer_widths += p.tail[l].out;
    x_.resize(kChunk * actions);
    proj_.resize(kChunk * p.first_width());
    layers_.resize(kChunk * layer_widths);
    probs_.resize(kChunk * actions);
    scratch_a_.resize(rows * width);
    scratch_b_.resize(rows * width);
    change_.resize(rows * width);
    row_agent_.resize(rows);
    row_effect_.resize(rows);
    slot_row_.resize(kChunk * std::max<int64_t>(p.one_hot ? actions : p.slots, 1));
    if (!p.one_hot) row_dists_.resize(rows * actions);
  }

  void run(int64_t first, int64_t count) {
    first_ = first;
    count_ = count;
    mean_actions();
    first_layer(x_.data(), count_, proj_.data(), layers_.data());
    const T* q_ref = trunk(layers_.data(), count_);
    for (int64_t i = 0; i < count_; ++i) {
      boltzmann(q_ref + i * p_.n_actions, p_.n_actions, T(1) / p_.temperature,
                probs_.data() + i * p_.n_actions);
    }
    const int64_t rows = p_.one_hot ? action_rows() : distribution_rows();
    const T* q_change = propagate_change(rows);
    for (int64_t r = 0; r < rows; ++r) {
      row_effect_[r] = kl_from_value_change(probs_.data() + row_agent_[r] * p_.n_actions,
                                            q_change + r * p_.n_actions, p_.n_actions,
                                            T(1) / p_.temperature);
    }
    weights_and_causal_mean();
    std::copy(x_.begin(), x_.begin() + count_ * p_.n_actions,
              p_.causal_mean_action + first_ * p_.n_actions);
    first_layer(x_.data(), count_, proj_.data(), layers_.data());
    const T* q_causal = trunk(layers_.data(), count_);
    std::copy(q_causal, q_causal + count_ * p_.n_actions, p_.q_causal + first_ * p_.n_actions);
  }

 private:
  const bool* mask(int64_t i) const { return p_.mask + (first_ + i) * p_.slots; }
  const int64_t* actions(int64_t i) const { return p_.actions + (first_ + i) * p_.slots; }
  const T* dists(int64_t i) const {
    return p_.action_dists + (first_ + i) * p_.slots * p_.n_actions;
  }

  // x_ = each agent's mean action; also written to the output.
  void mean_actions() {
    const int A = p_.n_actions;
    std::fill(x_.begin(), x_.begin() + count_ * A, T(0));
    for (int64_t i = 0; i < count_; ++i) {
      const int valid = count_valid(mask(i), p_.slots);
      T* x = x_.data() + i * A;
      for (int k = 0; k < p_.slots; ++k) {
        if (!mask(i)[k]) continue;
        if (p_.one_hot) {
          x[actions(i)[k]] += T(1);
        } else {
          for (int a = 0; a < A; ++a) x[a] += dists(i)[k * A + a];
        }
      }
      for (int a = 0; a < A; ++a) x[a] = valid > 0 ? x[a] / T(valid) : T(0);
    }
    std::copy(x_.begin(), x_.begin() + count_ * A, p_.mean_action + first_ * A);
  }

  // proj = action_proj(encoder(x)) for `rows` action vectors.
  void encode(const T* x, int64_t rows, T* proj) {
    const T* in = x;
    T* buffers[2] = {scratch_a_.data(), scratch_b_.data()};
    for (int l = 0; l < p_.n_encoder; ++l) {
      T* out = buffers[l % 2];
      matmul(p_.encoder[l], in, rows, out);
      add_bias(p_.encoder[l], rows, out, /*relu=*/true);
      in = out;
    }
    matmul(p_.action_proj, in, rows, proj);
  }

  // The first trunk layer's pre-activation for the chunk's agents under action vectors x.
  void first_layer(const T* x, int64_t rows, T* proj, T* z) {
    encode(x, rows, proj);
    const int H = p_.first_width();
    const T* state_proj = p_.state_proj + first_ * H;
    for (int64_t j = 0; j < rows * H; ++j) z[j] = state_proj[j] + proj[j];
  }

  // Runs the trunk from the first layer's pre-activations in `layers`, writing each following
  // layer's pre-activation after it; returns the action values (the last one).
  T* trunk(T* layers, int64_t rows) {
    T* z = layers;
    int width = p_.first_width();
    for (int l = 0; l < p_.n_tail; ++l) {
      T* next = z + rows * width;
      for (int64_t j = 0; j < rows * width; ++j) scratch_a_[j] = relu(z[j]);
      matmul(p_.tail[l], scratch_a_.data(), rows, next);
      add_bias(p_.tail[l], rows, next, /*relu=*/false);
      z = next;
      width = p_.tail[l].out;
    }
    return z;
  }

  // One row per distinct valid action of each agent: the first layer's change is that action's
  // row of the table minus the agent's reference projection.
  int64_t action_rows() {
    const int A = p_.n_actions;
    const int H = p_.first_width();
    std::fill(slot_row_.begin(), slot_row_.begin() + count_ * A, -1);
    int64_t rows = 0;
    for (int64_t i = 0; i < count_; ++i) {
      for (int k = 0; k < p_.slots; ++k) {
        if (!mask(i)[k]) continue;
        const int64_t a = actions(i)[k];
        int64_t& row = slot_row_[i * A + a];
        if (row >= 0) continue;
        row = rows++;
        row_agent_[row] = i;
        const T* table = p_.action_table + a * H;
        const T* proj = proj_.data() + i * H;
        T* change = change_.data() + row * H;
        for (int j = 0; j < H; ++j) change[j] = table[j] - proj[j];
      }
    }
    return rows;
  }

  // One row per valid neighbour: its distribution through the encoder, minus the reference.
  int64_t distribution_rows() {
    const int A = p_.n_actions;
    const int H = p_.first_width();
    int64_t rows = 0;
    for (int64_t i = 0; i < count_; ++i) {
      for (int k = 0; k < p_.slots; ++k) {
        slot_row_[i * p_.slots + k] = mask(i)[k] ? rows : -1;
        if (!mask(i)[k]) continue;
        row_agent_[rows] = i;
        std::copy(dists(i) + k * A, dists(i) + (k + 1) * A, row_dists_.data() + rows * A);
        ++rows;
      }
    }
    encode(row_dists_.data(), rows, change_.data());
    for (int64_t r = 0; r < rows; ++r) {
      const T* proj = proj_.data() + row_agent_[r] * H;
      for (int j = 0; j < H; ++j) change_[r * H + j] -= proj[j];
    }
    return rows;
  }

  // Carries the first layer's change through the trunk; returns the change of the action values.
  const T* propagate_change(int64_t rows) {
    T* change = change_.data();
    T* next = scratch_b_.data();
    const T* reference = layers_.data();
    int width = p_.first_width();
    for (int l = 0; l < p_.n_tail; ++l) {
      for (int64_t r = 0; r < rows; ++r) {
        const T* __restrict z = reference + row_agent_[r] * width;
        const T* __restrict c = change + r * width;
        T* __restrict a = scratch_a_.data() + r * width;
        for (int j = 0; j < width; ++j) a[j] = relu_change(z[j], c[j]);
      }
      matmul(p_.tail[l], scratch_a_.data(), rows, next);
      std::swap(change, next);
      reference += count_ * width;
      width = p_.tail[l].out;
    }
    return change;
  }

  // Effects and weights of each neighbour; x_ becomes the causal mean action.
  void weights_and_causal_mean() {
    const int A = p_.n_actions;
    const int K = p_.slots;
    std::fill(x_.begin(), x_.begin() + count_ * A, T(0));
    for (int64_t i = 0; i < count_; ++i) {
      T* effects = p_.effects + (first_ + i) * K;
      T* weights = p_.weights + (first_ + i) * K;
      for (int k = 0; k < K; ++k) {
        const int64_t key = p_.one_hot ? i * A + (mask(i)[k] ? actions(i)[k] : 0) : i * K + k;
        effects[k] = mask(i)[k] ? row_effect_[slot_row_[key]] : T(0);
      }
      combine_weights(effects, mask(i), K, p_.weighting, p_.weight_temperature, weights);
      T* x = x_.data() + i * A;
      for (int k = 0; k < K; ++k) {
        if (!mask(i)[k]) continue;
        if (p_.one_hot) {
          x[actions(i)[k]] += weights[k];
        } else {
          for (int a = 0; a < A; ++a) x[a] += weights[k] * dists(i)[k * A + a];
        }
      }
    }
  }

  const CausalWeightsParams<T>& p_;
  int64_t first_ = 0;
  int64_t count_ = 0;
  std::vector<T> x_, proj_, layers_, probs_, scratch_a_, scratch_b_, change_, row_effect_;
  std::vector<T> row_dists_;
  std::vector<int64_t> row_agent_, slot_row_;
};

template <typename T>
void run_cpu(const CausalWeightsParams<T>& p) {
  at::parallel_for(0, p.batch, kChunk, [&](int64_t begin, int64_t end) {
    ChunkRunner<T> runner(p);
    for (int64_t first = begin; first < end; first += kChunk) {
      runner.run(first, std::min(kChunk, end - first));
    }
  });
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
                             [&] { run_cpu(call.params<scalar_t>()); });
  return call.outputs();
}

}  // namespace

TORCH_LIBRARY_IMPL(cmfq, CPU, m) { m.impl("causal_weights", &causal_weights_cpu); }

}  // namespace cmfq
