// The CPU kernels of cmfq::causal_weights and of its backward, compiled once per instruction-set
// variant: each cpu_kernel_<variant>.cpp includes cpu_kernel.h, sets its target pragma, defines
// CMFQ_CPU_VARIANT and includes this file (so there is no include guard).
//
// Agents are split into chunks, in parallel over threads; a chunk's interventions are stacked as
// rows so that every layer is one small GEMM (BLAS), and the loops between the GEMMs are written
// to vectorise for the variant's instruction set.
//
// Forward, per chunk:
//   1. the reference: each agent's mean action through the encoder, its first-layer
//      pre-activation (state half precomputed) and the rest of the trunk, keeping every layer;
//   2. the interventions: one row per distinct valid action of an agent (or per valid neighbour
//      for distributions), carrying the *change* of each layer's pre-activation relative to the
//      reference, so that the effect is computed from the change itself, not from a difference of
//      two nearly equal evaluations;
//   3. per agent: the KL of every row, the neighbours' effects and weights, the causal mean action;
//   4. the causal mean action through the head for q_causal.
//
// Backward, per chunk (the maths of src/cmfq/gradient.py): the causal, reference and intervention
// rows are evaluated again as one stack (the saved weights, effects and causal mean action spare
// the KL and the weights); q_causal's gradient goes back through the causal rows to the causal
// mean action, from there through the weights to the effects, through the KLs to the values of
// the reference and intervention rows, and back through the trunk and the encoder. Each chunk's
// parameter gradients are a sum of their own; a thread adds its chunks' sums pairwise, then the
// threads' totals are added in a fixed order.
#ifndef CMFQ_CPU_VARIANT
#error "define CMFQ_CPU_VARIANT before including cpu_kernel_impl.h"
#endif

namespace cmfq {
namespace CMFQ_CPU_VARIANT {
namespace {

// Agents per chunk: enough rows for BLAS to pay off, few enough for the rows to stay in cache.
constexpr int64_t kChunk = 64;

// ---------------------------------------------------------------------------- vector maths
template <typename To, typename From>
inline To bit_cast(From from) {
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

// e^x without a libm call, so that loops over it vectorise: x = n ln2 + r with |r| <= ln2 / 2,
// e^r by its Taylor series (to r^7 for float, r^13 for double: below half an ulp), 2^n built in
// the exponent bits. Adding 1.5 * 2^mantissa rounds x / ln2 to an integer and leaves it in the
// low bits. Within 2 ulp of expf / exp; 0 below e^-86 (float) or e^-706 (double), inf above the
// largest finite result; NaN passes through.
inline float vexp(float x) {
  constexpr float kLo = -86.0f, kHi = 88.7228394f;
  const float clamped = x < kLo ? kLo : x > kHi ? kHi : x;
  const float shifted = clamped * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const float r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
  float series = 1.0f;
  series = 1.0f + r * series * (1.0f / 7);
  series = 1.0f + r * series * (1.0f / 6);
  series = 1.0f + r * series * (1.0f / 5);
  series = 1.0f + r * series * (1.0f / 4);
  series = 1.0f + r * series * (1.0f / 3);
  series = 1.0f + r * series * (1.0f / 2);
  series = 1.0f + r * series;
  // 2^(n - 1), times 2 below: 2^n itself would overflow the exponent at n = 128.
  const float half_scale = bit_cast<float>((bit_cast<uint32_t>(shifted) + 126u) << 23);
  const float y = series * half_scale * 2.0f;
  return x < kLo ? 0.0f : x > kHi ? INFINITY : y;
}

inline double vexp(double x) {
  constexpr double kLo = -706.0, kHi = 709.782712893384;
  const double clamped = x < kLo ? kLo : x > kHi ? kHi : x;
  const double shifted = clamped * 1.4426950408889634074 + 6755399441055744.0;
  const double n = shifted - 6755399441055744.0;
  const double r = (clamped - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6;
  double series = 1.0;
  series = 1.0 + r * series * (1.0 / 13);
  series = 1.0 + r * series * (1.0 / 12);
  series = 1.0 + r * series * (1.0 / 11);
  series = 1.0 + r * series * (1.0 / 10);
  series = 1.0 + r * series * (1.0 / 9);
  series = 1.0 + r * series * (1.0 / 8);
  series = 1.0 + r * series * (1.0 / 7);
  series = 1.0 + r * series * (1.0 / 6);
  series = 1.0 + r * series * (1.0 / 5);
  series = 1.0 + r * series * (1.0 / 4);
  series = 1.0 + r * series * (1.0 / 3);
  series = 1.0 + r * series * (1.0 / 2);
  series = 1.0 + r * series;
  const double half_scale = bit_cast<double>((bit_cast<uint64_t>(shifted) + 1022u) << 52);
  const double y = series * half_scale * 2.0;
  return x < kLo ? 0.0 : x > kHi ? HUGE_VAL : y;
}

// e^d - 1 - d: the series near 0, e^d - 1 - d elsewhere (|d| >= 0.5: no cancellation). Both
// sides are computed and one selected, so that a loop over it vectorises.
template <typename T>
inline T phi(T d) {
  const T series = phi_series(d);
  const T direct = vexp(d) - T(1) - d;
  return abs_(d) < T(kPhiSeriesBound) ? series : direct;
}

// The sum of a[i] * b[i]: a vectorised reduction.
template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int n) {
  T sum = T(0);
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// Applies f to n contiguous values: one vectorised loop over many short rows, with a single
// scalar remainder instead of one per row (A = 21 actions leave 5 of every row otherwise).
template <typename T, typename F>
inline void map_all(const T* __restrict in, int64_t n, T* __restrict out, F f) {
  for (int64_t j = 0; j < n; ++j) out[j] = f(in[j]);
}

// log softmax(values * inv_tau) over n entries.
template <typename T>
inline void log_softmax(const T* __restrict values, int n, T inv_tau, T* __restrict out) {
  T top = values[0] * inv_tau;
#pragma omp simd reduction(max : top)
  for (int a = 1; a < n; ++a) top = values[a] * inv_tau > top ? values[a] * inv_tau : top;
  T total = T(0);
#pragma omp simd reduction(+ : total)
  for (int a = 0; a < n; ++a) total += vexp(values[a] * inv_tau - top);
  const T log_total = top + std::log(total);
  for (int a = 0; a < n; ++a) out[a] = values[a] * inv_tau - log_total;
}

// ---------------------------------------------------------------------------- dense layers
template <typename T>
at::Tensor view(const T* data, int64_t rows, int64_t cols) {
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  return at::from_blob(const_cast<T*>(data), {rows, cols}, options);
}

// y[rows, out] = x[rows, in] W^T, W^T stored as [in, out]: one BLAS call through ATen (the
// cpublas entry points are not exported by every torch build).
template <typename T>
void matmul(const DenseLayer<T>& layer, const T* x, int64_t rows, T* y) {
  if (rows == 0) return;
  auto out = view(y, rows, layer.out);
  at::mm_out(out, view(x, rows, layer.in), view(layer.weight_t, layer.in, layer.out));
}

// dx[rows, in] = dy[rows, out] W.
template <typename T>
void matmul_backward_input(const DenseLayer<T>& layer, const T* dy, int64_t rows, T* dx) {
  if (rows == 0) return;
  auto out = view(dx, rows, layer.in);
  at::mm_out(out, view(dy, rows, layer.out), view(layer.weight_t, layer.in, layer.out).t());
}

// grad_wt[in, out] += x^T dy, grad_b[out] += sum over rows of dy (grad_b may be nullptr).
template <typename T>
void accumulate_layer_grad(const DenseLayer<T>& layer, const T* x, const T* dy, int64_t rows,
                           T* grad_wt, T* grad_b) {
  if (rows == 0) return;
  view(grad_wt, layer.in, layer.out).addmm_(view(x, rows, layer.in).t(), view(dy, rows, layer.out));
  if (!grad_b) return;
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict g = dy + r * layer.out;
    for (int o = 0; o < layer.out; ++o) grad_b[o] += g[o];
  }
}

// y += bias, in place, then relu if asked.
template <typename T>
void add_bias(const DenseLayer<T>& layer, int64_t rows, T* __restrict y, bool relu_after) {
  const T* __restrict bias = layer.bias;
  for (int64_t r = 0; r < rows; ++r) {
    T* __restrict row = y + r * layer.out;
    if (relu_after) {
      for (int o = 0; o < layer.out; ++o) row[o] = relu(row[o] + bias[o]);
    } else {
      for (int o = 0; o < layer.out; ++o) row[o] += bias[o];
    }
  }
}

// y += bias, in place, and relu(y) into `activation` in the same pass: the next layer's input.
template <typename T>
void add_bias_and_activate(const DenseLayer<T>& layer, int64_t rows, T* __restrict y,
                           T* __restrict activation) {
  const T* __restrict bias = layer.bias;
  for (int64_t r = 0; r < rows; ++r) {
    T* __restrict row = y + r * layer.out;
    T* __restrict act = activation + r * layer.out;
    for (int o = 0; o < layer.out; ++o) {
      row[o] += bias[o];
      act[o] = relu(row[o]);
    }
  }
}

// dy *= (activation > 0): the gradient through a ReLU given its output, as torch's
// threshold_backward.
template <typename T>
void relu_backward(const T* __restrict activation, int64_t n, T* __restrict dy) {
  for (int64_t j = 0; j < n; ++j) dy[j] = activation[j] > T(0) ? dy[j] : T(0);
}

// ---------------------------------------------------------------------------- per agent
template <typename T>
const bool* agent_mask(const CausalWeightsParams<T>& p, int64_t agent) {
  return p.mask + agent * p.slots;
}

// x[A] = the plain mean action of an agent's valid neighbours (0 without any).
template <typename T>
void mean_action(const CausalWeightsParams<T>& p, int64_t agent, T* __restrict x) {
  const int A = p.n_actions;
  const bool* mask = agent_mask(p, agent);
  std::fill(x, x + A, T(0));
  const int valid = count_valid(mask, p.slots);
  for (int k = 0; k < p.slots; ++k) {
    if (!mask[k]) continue;
    if (p.one_hot) {
      x[p.actions[agent * p.slots + k]] += T(1);
    } else {
      const T* dist = p.action_dists + (agent * p.slots + k) * A;
      for (int a = 0; a < A; ++a) x[a] += dist[a];
    }
  }
  for (int a = 0; a < A; ++a) x[a] = valid > 0 ? x[a] / T(valid) : T(0);
}

// Rows of one intervention per distinct valid action of each agent (one-hot actions) or per
// valid neighbour (distributions). slot_row maps (agent, action) or (agent, slot) to its row.
struct InterventionRows {
  std::vector<int64_t> agent;   // [rows] the chunk-local agent of each row
  std::vector<int64_t> source;  // [rows] the action (one-hot) or the slot (distributions)
  std::vector<int> slot;        // [rows] the first neighbour slot of the row
  std::vector<int64_t> slot_row;
  int64_t count = 0;

  template <typename T>
  void resize(const CausalWeightsParams<T>& p, int64_t max_rows) {
    agent.resize(max_rows);
    source.resize(max_rows);
    slot.resize(max_rows);
    slot_row.resize(kChunk * std::max<int64_t>(p.one_hot ? p.n_actions : p.slots, 1));
  }

  // The row of neighbour k of chunk-local agent i, which must be valid.
  template <typename T>
  int64_t of_slot(const CausalWeightsParams<T>& p, int64_t first, int64_t i, int k) const {
    return p.one_hot ? slot_row[i * p.n_actions + p.actions[(first + i) * p.slots + k]]
                     : slot_row[i * p.slots + k];
  }

  template <typename T>
  void build(const CausalWeightsParams<T>& p, int64_t first, int64_t agents) {
    const int64_t keys = p.one_hot ? p.n_actions : p.slots;
    std::fill(slot_row.begin(), slot_row.begin() + agents * keys, -1);
    count = 0;
    for (int64_t i = 0; i < agents; ++i) {
      const bool* mask = agent_mask(p, first + i);
      for (int k = 0; k < p.slots; ++k) {
        if (!mask[k]) continue;
        const int64_t key = p.one_hot ? p.actions[(first + i) * p.slots + k] : k;
        int64_t& row = slot_row[i * keys + key];
        if (row >= 0) continue;
        row = count++;
        agent[row] = i;
        source[row] = key;
        slot[row] = k;
      }
    }
  }
};

template <typename T>
int64_t max_rows_per_chunk(const CausalWeightsParams<T>& p) {
  const int64_t per_agent = p.one_hot ? std::min<int64_t>(p.slots, p.n_actions) : p.slots;
  return kChunk * std::max<int64_t>(per_agent, 1);
}

// ---------------------------------------------------------------------------- forward
template <typename T>
class ForwardRunner {
 public:
  // Binds the runner to a call and sizes its buffers. Each thread keeps its runner between
  // calls, so that the buffers' pages are not faulted in again every time.
  void prepare(const CausalWeightsParams<T>& p) {
    p_ = p;
    const int64_t actions = p.n_actions;
    const int64_t rows = std::max(max_rows_per_chunk(p), kChunk);
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
    row_effect_.resize(rows);
    rows_.resize(p, rows);
    if (!p.one_hot) row_dists_.resize(rows * actions);
    centred_.resize(rows * actions);
    phi_.resize(rows * actions);
  }

  void run(int64_t first, int64_t count) {
    first_ = first;
    count_ = count;
    const int A = p_.n_actions;
    const T inv_tau = T(1) / p_.temperature;
    for (int64_t i = 0; i < count_; ++i) mean_action(p_, first_ + i, x_.data() + i * A);
    std::copy(x_.begin(), x_.begin() + count_ * A, p_.mean_action + first_ * A);
    first_layer(x_.data(), count_, proj_.data(), layers_.data());
    const T* q_ref = trunk(layers_.data(), count_);
    for (int64_t i = 0; i < count_; ++i) {
      T* probs = probs_.data() + i * A;
      log_softmax(q_ref + i * A, A, inv_tau, probs);
      for (int a = 0; a < A; ++a) probs[a] = vexp(probs[a]);
    }
    rows_.build(p_, first_, count_);
    if (!p_.one_hot) {
      distribution_changes();
    } else if (p_.n_tail == 0) {
      action_changes();
    }
    row_effects(propagate_change(rows_.count));
    weights_and_causal_mean();
    std::copy(x_.begin(), x_.begin() + count_ * A, p_.causal_mean_action + first_ * A);
    first_layer(x_.data(), count_, proj_.data(), layers_.data());
    const T* q_causal = trunk(layers_.data(), count_);
    std::copy(q_causal, q_causal + count_ * A, p_.q_causal + first_ * A);
  }

 private:
  const bool* mask(int64_t i) const { return agent_mask(p_, first_ + i); }
  const int64_t* actions(int64_t i) const { return p_.actions + (first_ + i) * p_.slots; }
  const T* dists(int64_t i) const {
    return p_.action_dists + (first_ + i) * p_.slots * p_.n_actions;
  }

  // proj = action_proj(encoder(x)) for `rows` action vectors.
  void encode(const T* x, int64_t rows, T* proj) {
    const T* in = x;
    T* buffers[2] = {scratch_a_.data(), scratch_b_.data()};
    for (int l = 0; l < p_.n_encoder; ++l) {
      T* out = buffers[l % 2];
      matmul(p_.encoder[l], in, rows, out);
      add_bias(p_.encoder[l], rows, out, /*relu_after=*/true);
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
    for (int64_t j = 0; j < rows * width; ++j) scratch_a_[j] = relu(z[j]);
    for (int l = 0; l < p_.n_tail; ++l) {
      T* next = z + rows * width;
      matmul(p_.tail[l], scratch_a_.data(), rows, next);
      if (l + 1 < p_.n_tail) {
        add_bias_and_activate(p_.tail[l], rows, next, scratch_a_.data());
      } else {
        add_bias(p_.tail[l], rows, next, /*relu_after=*/false);
      }
      z = next;
      width = p_.tail[l].out;
    }
    return z;
  }

  // The first layer's change of each row: that action's row of the table minus the agent's
  // reference projection (needed as such only when the first layer is the last).
  void action_changes() {
    const int H = p_.first_width();
    for (int64_t r = 0; r < rows_.count; ++r) {
      const T* __restrict table = p_.action_table + rows_.source[r] * H;
      const T* __restrict proj = proj_.data() + rows_.agent[r] * H;
      T* __restrict change = change_.data() + r * H;
      for (int j = 0; j < H; ++j) change[j] = table[j] - proj[j];
    }
  }

  // Each valid neighbour's distribution through the encoder, minus the reference.
  void distribution_changes() {
    const int A = p_.n_actions;
    const int H = p_.first_width();
    for (int64_t r = 0; r < rows_.count; ++r) {
      const T* dist = dists(rows_.agent[r]) + rows_.source[r] * A;
      std::copy(dist, dist + A, row_dists_.data() + r * A);
    }
    encode(row_dists_.data(), rows_.count, change_.data());
    for (int64_t r = 0; r < rows_.count; ++r) {
      const T* __restrict proj = proj_.data() + rows_.agent[r] * H;
      T* __restrict change = change_.data() + r * H;
      for (int j = 0; j < H; ++j) change[j] -= proj[j];
    }
  }

  // Carries the first layer's change through the trunk; returns the change of the action values.
  // For one-hot actions the first layer's change, that action's row of the table minus the
  // agent's reference projection, is formed in the first pass.
  const T* propagate_change(int64_t rows) {
    T* change = change_.data();
    T* next = scratch_b_.data();
    const T* reference = layers_.data();
    int width = p_.first_width();
    for (int l = 0; l < p_.n_tail; ++l) {
      for (int64_t r = 0; r < rows; ++r) {
        const T* __restrict z = reference + rows_.agent[r] * width;
        T* __restrict a = scratch_a_.data() + r * width;
        if (l == 0 && p_.one_hot) {
          const T* __restrict table = p_.action_table + rows_.source[r] * width;
          const T* __restrict proj = proj_.data() + rows_.agent[r] * width;
          for (int j = 0; j < width; ++j) a[j] = relu_change(z[j], table[j] - proj[j]);
          continue;
        }
        const T* __restrict c = change + r * width;
        for (int j = 0; j < width; ++j) a[j] = relu_change(z[j], c[j]);
      }
      matmul(p_.tail[l], scratch_a_.data(), rows, next);
      std::swap(change, next);
      reference += count_ * width;
      width = p_.tail[l].out;
    }
    return change;
  }

  // Each row's effect KL(p || softmax(log p + change * inv_tau)) by agent_math.h's kl_from_sums:
  // the changes centred under p row by row, phi of all rows in one pass, then each row's sums.
  void row_effects(const T* q_change) {
    const int A = p_.n_actions;
    const T inv_tau = T(1) / p_.temperature;
    T* d = centred_.data();
    for (int64_t r = 0; r < rows_.count; ++r) {
      const T* __restrict p = probs_.data() + rows_.agent[r] * A;
      const T* __restrict change = q_change + r * A;
      const T shift = dot(p, change, A) * inv_tau;
      T* __restrict row = d + r * A;
      for (int a = 0; a < A; ++a) row[a] = change[a] * inv_tau - shift;
    }
    map_all(d, rows_.count * A, phi_.data(), [](T x) { return phi(x); });
    for (int64_t r = 0; r < rows_.count; ++r) {
      const T* p = probs_.data() + rows_.agent[r] * A;
      row_effect_[r] = kl_from_sums(dot(p, phi_.data() + r * A, A), dot(p, d + r * A, A));
    }
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
        effects[k] = mask(i)[k] ? row_effect_[rows_.of_slot(p_, first_, i, k)] : T(0);
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
      if (weights_are_nan(weights, mask(i), K)) std::fill(x, x + A, T(NAN));
    }
  }

  CausalWeightsParams<T> p_{};
  int64_t first_ = 0;
  int64_t count_ = 0;
  std::vector<T> x_, proj_, layers_, probs_, scratch_a_, scratch_b_, change_, row_effect_;
  std::vector<T> row_dists_, centred_, phi_;
  InterventionRows rows_;
};

template <typename T>
void run_forward(const CausalWeightsParams<T>& p) {
  at::parallel_for(0, p.batch, kChunk, [&](int64_t begin, int64_t end) {
    static thread_local ForwardRunner<T> runner;
    runner.prepare(p);
    for (int64_t first = begin; first < end; first += kChunk) {
      runner.run(first, std::min(kChunk, end - first));
    }
  });
}

// ---------------------------------------------------------------------------- backward
// Offsets of each parameter's gradient in one flat buffer (a thread's partial sums), then the
// one-hot action table's gradient [A, H1].
template <typename T>
struct GradLayout {
  int64_t encoder_wt[kMaxLayers], encoder_b[kMaxLayers], action_proj_wt;
  int64_t tail_wt[kMaxLayers], tail_b[kMaxLayers], table, size;

  GradLayout() = default;
  explicit GradLayout(const CausalWeightsParams<T>& p) {
    int64_t at = 0;
    auto take = [&](int64_t n) { return (at += n) - n; };
    for (int l = 0; l < p.n_encoder; ++l) {
      encoder_wt[l] = take(int64_t{p.encoder[l].in} * p.encoder[l].out);
      encoder_b[l] = take(p.encoder[l].out);
    }
    action_proj_wt = take(int64_t{p.action_proj.in} * p.action_proj.out);
    for (int l = 0; l < p.n_tail; ++l) {
      tail_wt[l] = take(int64_t{p.tail[l].in} * p.tail[l].out);
      tail_b[l] = take(p.tail[l].out);
    }
    table = take(p.one_hot ? int64_t{p.n_actions} * p.first_width() : 0);
    size = at;
  }
};

// The sum of a stream of equal-length vectors (a thread's chunk gradients), added pairwise as a
// binary counter does: level l holds the sum of 2^l of them. A float32 running sum of the
// chunks of 131072 agents would carry an error growing like the number of chunks; pairwise, it
// grows like its logarithm.
template <typename T>
class PairwiseSum {
 public:
  void reset(int64_t size) {
    size_ = size;
    filled_.clear();
  }

  // Adds `term` (size() values); `term` is left as scratch.
  void add(std::vector<T>& term) {
    for (size_t level = 0;; ++level) {
      if (level == filled_.size()) {
        filled_.push_back(false);
        if (levels_.size() <= level) levels_.emplace_back();
      }
      if (!filled_[level]) {
        std::swap(levels_[level], term);
        filled_[level] = true;
        return;
      }
      const T* __restrict held = levels_[level].data();
      T* __restrict sum = term.data();
      for (int64_t j = 0; j < size_; ++j) sum[j] += held[j];
      filled_[level] = false;
    }
  }

  // total += the sum of every term added since reset(), lowest levels first.
  void add_to(T* __restrict total) const {
    for (size_t level = 0; level < filled_.size(); ++level) {
      if (!filled_[level]) continue;
      const T* __restrict held = levels_[level].data();
      for (int64_t j = 0; j < size_; ++j) total[j] += held[j];
    }
  }

 private:
  int64_t size_ = 0;
  std::vector<std::vector<T>> levels_;  // kept between calls, as the runners' buffers
  std::vector<bool> filled_;
};

// One stack of rows per chunk: the agents' causal rows, then their reference rows, then the
// intervention rows. The action vectors that go through the encoder (causal and mean action,
// and for distributions each neighbour's) come first, in the same order.
template <typename T>
class BackwardRunner {
 public:
  BackwardRunner() : p_(g_.forward) {}

  // Binds the runner to a call and sizes its buffers (kept between calls, as the forward's).
  void prepare(const CausalWeightsGradParams<T>& g) {
    g_ = g;
    layout_ = GradLayout<T>(g.forward);
    const int64_t rows = 2 * kChunk + max_rows_per_chunk(p_);
    const int64_t stack = std::max<int64_t>(rows, p_.n_actions);
    const int64_t width = p_.max_width();
    inputs_.resize(stack * p_.n_actions);
    for (int l = 0; l < p_.n_encoder; ++l) encoded_[l].resize(stack * p_.encoder[l].out);
    pre_first_.resize(stack * p_.first_width());
    for (int l = 0; l < p_.n_tail; ++l) {
      activation_[l].resize(stack * p_.tail[l].in);
      out_[l].resize(stack * p_.tail[l].out);
    }
    grad_a_.resize(stack * width);
    grad_b_.resize(stack * width);
    grad_mean_.resize(kChunk * p_.n_actions);
    grad_weight_.resize(p_.slots);
    log_p_.resize(kChunk * p_.n_actions);
    probs_.resize(kChunk * p_.n_actions);
    shifted_.resize(rows * p_.n_actions);
    exps_.resize(rows * p_.n_actions);
    row_grad_.resize(rows);
    row_effect_.resize(rows);
    rows_.resize(p_, rows);
  }

  // Agents [first, first + count); adds their parameter gradients to `grads` (layout_).
  void run(int64_t first, int64_t count, T* grads) {
    grads_ = grads;
    first_ = first;
    count_ = count;
    const int A = p_.n_actions;
    const int H = p_.first_width();
    rows_.build(p_, first, count);
    const int64_t n_rows = 2 * count + rows_.count;
    std::copy(p_.causal_mean_action + first * A, p_.causal_mean_action + (first + count) * A,
              inputs_.data());
    for (int64_t i = 0; i < count; ++i) mean_action(p_, first + i, inputs_.data() + (count + i) * A);
    for (int64_t r = 0; r < rows_.count; ++r) {
      const int64_t slot = (first + rows_.agent[r]) * p_.slots + rows_.slot[r];
      row_effect_[r] = p_.effects[slot];
      if (!p_.one_hot) {
        const T* dist = p_.action_dists + slot * A;
        std::copy(dist, dist + A, inputs_.data() + (2 * count + r) * A);
      }
    }
    const int64_t n_encoded = p_.one_hot ? 2 * count : n_rows;
    evaluate(n_encoded, n_rows);

    // q_causal back through the causal rows, to the causal mean action.
    std::copy(g_.grad_q_causal + first * A, g_.grad_q_causal + (first + count) * A, grad_a_.data());
    const T* grad_first = trunk_backward(0, count);
    T* grad_state_proj = g_.grad_state_proj + first * H;
    std::copy(grad_first, grad_first + count * H, grad_state_proj);
    const T* grad_causal = encoder_backward(0, count, grad_first, /*input_grad=*/true);
    for (int64_t j = 0; j < count * A; ++j) {
      grad_mean_[j] = g_.grad_causal_mean_action[first * A + j] + grad_causal[j];
    }

    // Through the weights to each row's effect, and through its KL to the values.
    effects_backward();
    kl_backward();
    grad_first = trunk_backward(count, n_rows - count);
    for (int64_t j = 0; j < count * H; ++j) grad_state_proj[j] += grad_first[j];
    for (int64_t r = 0; r < rows_.count; ++r) {
      const T* __restrict g = grad_first + (count + r) * H;
      T* __restrict s = grad_state_proj + rows_.agent[r] * H;
      for (int j = 0; j < H; ++j) s[j] += g[j];
      if (!p_.one_hot) continue;
      T* __restrict table = grads_ + layout_.table + rows_.source[r] * H;
      for (int j = 0; j < H; ++j) table[j] += g[j];
    }
    encoder_backward(count, n_encoded - count, grad_first, /*input_grad=*/false);
  }

  // The action table's rows (the one-hot actions) back through the encoder, from the table's
  // gradient summed over all agents (in `grads`, at layout_.table); adds to `grads`.
  void table_backward(T* grads) {
    grads_ = grads;
    const T* grad_table = grads + layout_.table;
    const int A = p_.n_actions;
    std::fill(inputs_.begin(), inputs_.begin() + int64_t{A} * A, T(0));
    for (int a = 0; a < A; ++a) inputs_[a * A + a] = T(1);
    encode(A);
    encoder_backward(0, A, grad_table, /*input_grad=*/false);
  }

 private:
  int64_t agent_of(int64_t row) const {
    return row < 2 * count_ ? row % count_ : rows_.agent[row - 2 * count_];
  }

  // The encoder on the first `rows` inputs, keeping every layer's output; action_proj into
  // pre_first_.
  void encode(int64_t rows) {
    const T* in = inputs_.data();
    for (int l = 0; l < p_.n_encoder; ++l) {
      T* out = encoded_[l].data();
      matmul(p_.encoder[l], in, rows, out);
      add_bias(p_.encoder[l], rows, out, /*relu_after=*/true);
      in = out;
    }
    matmul(p_.action_proj, in, rows, pre_first_.data());
  }

  // Every row's first-layer pre-activation and the trunk after it, keeping each layer's input.
  void evaluate(int64_t n_encoded, int64_t n_rows) {
    const int H = p_.first_width();
    encode(n_encoded);
    for (int64_t r = n_encoded; r < n_rows; ++r) {
      const T* table = p_.action_table + rows_.source[r - 2 * count_] * H;
      std::copy(table, table + H, pre_first_.data() + r * H);
    }
    // The first layer's output: the values if it is the last layer, else its ReLU.
    T* first_out = p_.n_tail ? activation_[0].data() : pre_first_.data();
    for (int64_t r = 0; r < n_rows; ++r) {
      const T* __restrict s = p_.state_proj + (first_ + agent_of(r)) * H;
      const T* __restrict z = pre_first_.data() + r * H;
      T* __restrict out = first_out + r * H;
      if (p_.n_tail) {
        for (int j = 0; j < H; ++j) out[j] = relu(z[j] + s[j]);
      } else {
        for (int j = 0; j < H; ++j) out[j] = z[j] + s[j];
      }
    }
    for (int l = 0; l < p_.n_tail; ++l) {
      matmul(p_.tail[l], activation_[l].data(), n_rows, out_[l].data());
      if (l + 1 < p_.n_tail) {
        add_bias_and_activate(p_.tail[l], n_rows, out_[l].data(), activation_[l + 1].data());
      } else {
        add_bias(p_.tail[l], n_rows, out_[l].data(), /*relu_after=*/false);
      }
    }
  }

  const T* values(int64_t row) const {
    const T* q = p_.n_tail ? out_[p_.n_tail - 1].data() : pre_first_.data();
    return q + row * p_.n_actions;
  }

  // The gradient of the values of rows [start, start + n), in grad_a_, back to their first-layer
  // pre-activations (returned, [n, H1]); accumulates the trunk's parameter gradients.
  const T* trunk_backward(int64_t start, int64_t n) {
    T* grad = grad_a_.data();
    T* other = grad_b_.data();
    for (int l = p_.n_tail - 1; l >= 0; --l) {
      const DenseLayer<T>& layer = p_.tail[l];
      const T* act = activation_[l].data() + start * layer.in;
      accumulate_layer_grad(layer, act, grad, n, grads_ + layout_.tail_wt[l],
                            grads_ + layout_.tail_b[l]);
      matmul_backward_input(layer, grad, n, other);
      relu_backward(act, n * layer.in, other);
      std::swap(grad, other);
    }
    return grad;
  }

  // The gradient of rows [start, start + n)'s action projections (grad, [n, H1]) back through
  // action_proj and the encoder; accumulates their parameter gradients. With input_grad, returns
  // the gradient of the action vectors ([n, A]). Overwrites grad if it is one of the runner's
  // gradient buffers.
  const T* encoder_backward(int64_t start, int64_t n, const T* grad, bool input_grad) {
    const int L = p_.n_encoder;
    const T* in = L ? encoded_[L - 1].data() + start * p_.action_proj.in
                    : inputs_.data() + start * p_.n_actions;
    accumulate_layer_grad(p_.action_proj, in, grad, n, grads_ + layout_.action_proj_wt,
                          static_cast<T*>(nullptr));
    if (L == 0 && !input_grad) return nullptr;
    T* buffers[2] = {grad == grad_a_.data() ? grad_b_.data() : grad_a_.data(), nullptr};
    buffers[1] = buffers[0] == grad_a_.data() ? grad_b_.data() : grad_a_.data();
    T* dy = buffers[0];
    matmul_backward_input(p_.action_proj, grad, n, dy);
    for (int l = L - 1; l >= 0; --l) {
      const DenseLayer<T>& layer = p_.encoder[l];
      relu_backward(encoded_[l].data() + start * layer.out, n * layer.out, dy);
      const T* x = l ? encoded_[l - 1].data() + start * layer.in
                     : inputs_.data() + start * p_.n_actions;
      accumulate_layer_grad(layer, x, dy, n, grads_ + layout_.encoder_wt[l],
                            grads_ + layout_.encoder_b[l]);
      if (l == 0 && !input_grad) return nullptr;
      T* dx = dy == buffers[0] ? buffers[1] : buffers[0];
      matmul_backward_input(layer, dy, n, dx);
      dy = dx;
    }
    return dy;
  }

  // d loss / d effect of each row, through the weights and the causal mean action.
  void effects_backward() {
    const int A = p_.n_actions;
    const int K = p_.slots;
    std::fill(row_grad_.begin(), row_grad_.begin() + rows_.count, T(0));
    for (int64_t i = 0; i < count_; ++i) {
      const int64_t agent = first_ + i;
      const bool* mask = agent_mask(p_, agent);
      const T* weights = p_.weights + agent * K;
      const T* effects = p_.effects + agent * K;
      const T* grad_mean = grad_mean_.data() + i * A;
      T* grad_weight = grad_weight_.data();
      T centre = T(0);
      T total = T(0);
      for (int k = 0; k < K; ++k) {
        T through_mean = T(0);
        if (mask[k] && p_.one_hot) {
          through_mean = grad_mean[p_.actions[agent * K + k]];
        } else if (mask[k]) {
          const T* dist = p_.action_dists + (agent * K + k) * A;
          for (int a = 0; a < A; ++a) through_mean += grad_mean[a] * dist[a];
        }
        grad_weight[k] = g_.grad_weights[agent * K + k] + through_mean;
        centre += weights[k] * grad_weight[k];
        total += effects[k];
      }
      const bool proportional = p_.weighting == Weighting::kProportional;
      const bool measurable = total > T(kEffectThreshold);
      for (int k = 0; k < K; ++k) {
        if (!mask[k]) continue;
        const T centred = grad_weight[k] - centre;
        const T through_weights = proportional ? (measurable ? centred / total : T(0))
                                               : weights[k] * centred / p_.weight_temperature;
        row_grad_[rows_.of_slot(p_, first_, i, k)] +=
            g_.grad_effects[agent * K + k] + through_weights;
      }
    }
  }

  // The gradient of the reference and intervention rows' values (from stack row count_, in
  // grad_a_): with u = Q / tau, dc/du_row = q - p and dc/du_ref = p (log p - log q - c).
  void kl_backward() {
    const int A = p_.n_actions;
    const T inv_tau = T(1) / p_.temperature;
    T* grad_ref = grad_a_.data();
    T* grad_rows = grad_a_.data() + count_ * A;
    std::fill(grad_ref, grad_ref + count_ * A, T(0));
    for (int64_t i = 0; i < count_; ++i) {
      T* log_p = log_p_.data() + i * A;
      T* p = probs_.data() + i * A;
      log_softmax(values(count_ + i), A, inv_tau, log_p);
      for (int a = 0; a < A; ++a) p[a] = vexp(log_p[a]);
    }
    // The rows' logits less their maximum, then their exps in one pass over all rows.
    T* shifted = shifted_.data();
    for (int64_t r = 0; r < rows_.count; ++r) {
      const T* __restrict q = values(2 * count_ + r);
      T top = q[0];
#pragma omp simd reduction(max : top)
      for (int a = 1; a < A; ++a) top = q[a] > top ? q[a] : top;
      T* __restrict row = shifted + r * A;
      for (int a = 0; a < A; ++a) row[a] = (q[a] - top) * inv_tau;
    }
    map_all(shifted, rows_.count * A, exps_.data(), [](T x) { return vexp(x); });
    for (int64_t r = 0; r < rows_.count; ++r) {
      const int64_t i = rows_.agent[r];
      const T* __restrict e = exps_.data() + r * A;
      const T* __restrict u = shifted + r * A;
      T total = T(0);
#pragma omp simd reduction(+ : total)
      for (int a = 0; a < A; ++a) total += e[a];
      const T log_total = std::log(total);
      const T inv_total = T(1) / total;
      const T scale = row_grad_[r] * inv_tau;
      const T effect = row_effect_[r];
      const T* __restrict lp = log_p_.data() + i * A;
      const T* __restrict p = probs_.data() + i * A;
      T* __restrict g_ref = grad_ref + i * A;
      T* __restrict g_row = grad_rows + r * A;
      for (int a = 0; a < A; ++a) {
        g_row[a] = scale * (e[a] * inv_total - p[a]);
        g_ref[a] += scale * p[a] * (lp[a] - (u[a] - log_total) - effect);
      }
    }
  }

  CausalWeightsGradParams<T> g_{};
  const CausalWeightsParams<T>& p_;  // g_.forward
  GradLayout<T> layout_;
  T* grads_ = nullptr;
  int64_t first_ = 0;
  int64_t count_ = 0;
  std::vector<T> inputs_, encoded_[kMaxLayers], pre_first_, activation_[kMaxLayers],
      out_[kMaxLayers];
  std::vector<T> grad_a_, grad_b_, grad_mean_, grad_weight_, log_p_, probs_, row_grad_;
  std::vector<T> row_effect_, shifted_, exps_;
  InterventionRows rows_;
};

template <typename T>
void run_backward(const CausalWeightsGradParams<T>& g) {
  const CausalWeightsParams<T>& p = g.forward;
  const GradLayout<T> layout(p);
  std::vector<const PairwiseSum<T>*> partial(at::get_num_threads(), nullptr);
  at::parallel_for(0, p.batch, kChunk, [&](int64_t begin, int64_t end) {
    static thread_local PairwiseSum<T> sum;
    static thread_local std::vector<T> chunk;
    static thread_local BackwardRunner<T> runner;
    const PairwiseSum<T>*& mine = partial[at::get_thread_num()];
    if (mine != &sum) {  // this thread's first range of the call
      sum.reset(layout.size);
      mine = &sum;
    }
    runner.prepare(g);
    for (int64_t first = begin; first < end; first += kChunk) {
      chunk.assign(layout.size, T(0));  // the sum may have swapped its storage with the chunk's
      runner.run(first, std::min(kChunk, end - first), chunk.data());
      sum.add(chunk);
    }
  });
  // Threads' totals in thread order, so that the result does not depend on timing.
  std::vector<T> total(layout.size, T(0));
  for (const auto* sum : partial) {
    if (sum) sum->add_to(total.data());
  }
  if (p.one_hot) {
    BackwardRunner<T> runner;
    runner.prepare(g);
    runner.table_backward(total.data());
  }
  auto copy = [&](int64_t offset, int64_t n, T* out) {
    std::copy(total.begin() + offset, total.begin() + offset + n, out);
  };
  for (int l = 0; l < p.n_encoder; ++l) {
    copy(layout.encoder_wt[l], int64_t{p.encoder[l].in} * p.encoder[l].out, g.grad_encoder_wt[l]);
    copy(layout.encoder_b[l], p.encoder[l].out, g.grad_encoder_b[l]);
  }
  copy(layout.action_proj_wt, int64_t{p.action_proj.in} * p.action_proj.out,
       g.grad_action_proj_wt);
  for (int l = 0; l < p.n_tail; ++l) {
    copy(layout.tail_wt[l], int64_t{p.tail[l].in} * p.tail[l].out, g.grad_tail_wt[l]);
    copy(layout.tail_b[l], p.tail[l].out, g.grad_tail_b[l]);
  }
}

}  // namespace

void run(const CausalWeightsParams<float>& p) { run_forward(p); }
void run(const CausalWeightsParams<double>& p) { run_forward(p); }
void run(const CausalWeightsGradParams<float>& g) { run_backward(g); }
void run(const CausalWeightsGradParams<double>& g) { run_backward(g); }

}  // namespace CMFQ_CPU_VARIANT
}  // namespace cmfq
