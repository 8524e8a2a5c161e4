// The stacked formulation's steps between its GEMMs (stacked.h), one function per agent, per row
// of an agent or per entry, so that the CPU runs them in loops and each CUDA thread one
// (stacked_kernels.cu): one definition of the maths for both. Formulas from agent_math.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "shared/agent_math.h"
#include "shared/params.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace cmfq {

// Rows' storage to compute type. Explicit calls: torch's extension builds switch off the half
// types' implicit conversions.
CMFQ_HD float widen(float x) { return x; }
CMFQ_HD double widen(double x) { return x; }
#if defined(__CUDACC__)
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
#endif

// Agent b's mean action, and what its rows are made of: its neighbours' actions clamped into
// [0, A) (0 where masked) and whether a valid one was outside, or their masked distributions.
// stacked_slot does slot k, then mean_entry entry a of the mean action; stacked_rows runs them in
// turn (the CUDA kernel: a lane for each slot, then for each entry).
template <typename T>
CMFQ_HD bool stacked_slot(const StackedRowsParams<T>& p, int64_t b, int k) {
  const int K = p.slots, A = p.n_actions;
  const bool valid = p.mask[b * K + k];
  if (!p.one_hot) {
    const T* dist = p.action_dists + (b * K + k) * A;
    T* vector = p.vectors + (b * K + k) * A;
    for (int a = 0; a < A; ++a) vector[a] = valid ? dist[a] : T(0);
    return false;
  }
  const int64_t action = p.actions[b * K + k];
  const int64_t clamped = action < 0 ? 0 : action >= A ? A - 1 : action;
  p.index[b * K + k] = valid ? clamped : 0;
  return valid && (action < 0 || action >= A);
}

// Entry a of agent b's mean action over its `valid` slots, in slot order.
template <typename T>
CMFQ_HD T mean_entry(const StackedRowsParams<T>& p, int64_t b, int a, int valid) {
  const int K = p.slots;
  T sum = T(0);
  for (int k = 0; k < K; ++k) {
    if (!p.one_hot) {
      sum += p.vectors[(b * K + k) * p.n_actions + a];
    } else if (p.mask[b * K + k] && p.index[b * K + k] == a) {
      sum += T(1);
    }
  }
  return sum / T(valid > 0 ? valid : 1);
}

template <typename T>
CMFQ_HD void stacked_rows(const StackedRowsParams<T>& p, int64_t b) {
  bool bad = false;
  for (int k = 0; k < p.slots; ++k) bad = stacked_slot(p, b, k) || bad;
  const int valid = count_valid(p.mask + b * p.slots, p.slots);
  for (int a = 0; a < p.n_actions; ++a) {
    p.mean_action[b * p.n_actions + a] = mean_entry(p, b, a, valid);
  }
  if (p.one_hot) p.bad[b] = bad;
}

// The row of agent b that neighbour slot k's action is (one-hot rows by action, else by slot).
template <typename Params>
CMFQ_HD int row_of_slot(const Params& p, int64_t b, int k) {
  return p.by_action ? static_cast<int>(p.index[b * p.slots + k]) : k;
}

// After the rows' last GEMM, for agent b: its reference policy (boltzmann) and each row's KL
// (row_kl), then its neighbours' effects and weights (agent_weights) and its causal mean action,
// entry by entry (causal_entry); stacked_weights runs them in turn. The CUDA kernel runs the same
// functions on an agent's copy in shared memory, its rows and entries a lane each.

// KL(p || softmax(log p + change / tau)) of one row from its change of Q (kl_from_sums).
template <typename T, typename R>
CMFQ_HD T row_kl(const T* probs, const R* change, int n_actions, T inv_tau) {
  T shift = T(0);
  for (int a = 0; a < n_actions; ++a) shift += probs[a] * (T(widen(change[a])) * inv_tau);
  T f = T(0);
  T r = T(0);
  for (int a = 0; a < n_actions; ++a) {
    const T d = T(widen(change[a])) * inv_tau - shift;
    f += probs[a] * phi(d);
    r += probs[a] * d;
  }
  return kl_from_sums(f, r);
}

// Row m's change of Q: [A] in the rows' type R.
template <typename T, typename R>
CMFQ_HD const R* q_change_row(const StackedWeightsParams<T>& p, int64_t b, int m) {
  return static_cast<const R*>(p.q_change) + (b * p.rows_per_agent + m) * p.n_actions;
}

// Neighbour slot k's effect on agent b: its row's KL (from row_kl [M]), 0 where masked.
template <typename T>
CMFQ_HD T slot_effect(const StackedWeightsParams<T>& p, int64_t b, const T* row_kl,
                      const bool* mask, int k) {
  return mask[k] ? row_kl[row_of_slot(p, b, k)] : T(0);
}

// Agent b's effects (its rows' KLs, row_kl [M]) and weights [K] of its neighbour slots.
template <typename T>
CMFQ_HD void agent_weights(const StackedWeightsParams<T>& p, int64_t b, const T* row_kl,
                           const bool* mask, T* effects, T* weights) {
  for (int k = 0; k < p.slots; ++k) effects[k] = slot_effect(p, b, row_kl, mask, k);
  combine_weights(effects, mask, p.slots, p.weighting, p.weight_temperature, weights);
}

// Entry a of agent b's causal mean action, sum_k w_k e(a_k)_a in slot order, from its weights
// [K] (masked slots have weight 0 and index 0).
template <typename T>
CMFQ_HD T causal_entry(const StackedWeightsParams<T>& p, int64_t b, const T* weights, int a) {
  const int K = p.slots;
  T sum = T(0);
  for (int k = 0; k < K; ++k) {
    if (p.index) {
      if (p.index[b * K + k] == a) sum += weights[k];
    } else {
      sum += weights[k] * p.vectors[(b * K + k) * p.n_actions + a];
    }
  }
  return sum;
}

template <typename T>
CMFQ_HD bool agent_is_bad(const StackedWeightsParams<T>& p, int64_t b) {
  return p.bad && p.bad[b];
}

template <typename T, typename R>
CMFQ_HD void stacked_weights(const StackedWeightsParams<T>& p, int64_t b) {
  const int K = p.slots, A = p.n_actions;
  T* probs = p.probs + b * A;
  boltzmann(p.reference_values + b * A, A, p.inv_tau, probs);
  T* kls = p.row_kl + b * p.rows_per_agent;
  for (int m = 0; m < p.rows_per_agent; ++m) {
    kls[m] = row_kl(probs, q_change_row<T, R>(p, b, m), A, p.inv_tau);
  }
  T* effects = p.effects + b * K;
  T* weights = p.weights + b * K;
  agent_weights(p, b, kls, p.mask + b * K, effects, weights);
  T* causal = p.causal_mean_action + b * A;
  for (int a = 0; a < A; ++a) causal[a] = causal_entry(p, b, weights, a);
  if (weights_are_nan(weights, p.mask + b * K, K)) {
    for (int a = 0; a < A; ++a) causal[a] = T(NAN);
  }
  if (agent_is_bad(p, b)) {
    // As the per-agent kernel: an agent with a valid neighbour's action outside [0, A) gets NaN.
    for (int k = 0; k < K; ++k) effects[k] = weights[k] = T(NAN);
    for (int a = 0; a < A; ++a) causal[a] = p.mean_action[b * A + a] = T(NAN);
  }
}

// Row m of agent b's M + 2 rows in the backward, entries lane, lane + lanes, ...: its first-layer
// pre-activation, state_proj of the agent plus the projection of the row's action vector (the
// reference row first, the causal row last).
template <typename T>
CMFQ_HD void stacked_first(const StackedFirstParams<T>& p, int64_t b, int m, int lane, int lanes) {
  const int per_agent = p.rows_per_agent + 2, H = p.width;
  const T* source;
  if (m == 0) {
    source = p.mean_proj + b * H;
  } else if (m == per_agent - 1) {
    source = p.causal_proj + b * H;
  } else if (!p.one_hot) {
    source = p.input_proj + (b * p.slots + m - 1) * H;
  } else {
    const int64_t action = p.by_action ? m - 1 : p.index[b * p.slots + m - 1];
    source = p.input_proj + action * H;
  }
  const T* state = p.state_proj + b * H;
  T* out = p.first + (b * per_agent + m) * H;
  for (int j = lane; j < H; j += lanes) out[j] = state[j] + source[j];
}

// log sum_a exp(values_a * inv_tau): the normaliser of a Boltzmann policy's logits.
template <typename T>
CMFQ_HD T log_normaliser(const T* values, int n, T inv_tau) {
  T top = values[0] * inv_tau;
  for (int a = 1; a < n; ++a) top = values[a] * inv_tau > top ? values[a] * inv_tau : top;
  T total = T(0);
  for (int a = 0; a < n; ++a) total += exp_(values[a] * inv_tau - top);
  return top + log_(total);
}

// Agent b's gradient of its rows' values, from that of its causal mean action: through the
// weights to the effects (no gradient where the proportional weights are uniform), then through
// the KLs, dc/du_row = q - p and dc/du_ref = p (log p - log q - c) for u = Q / tau, where a row's
// effect is that of every valid neighbour whose action it is. stacked_kl_grad_row does row m
// (and leaves its sums in the scratch), then stacked_kl_grad_reference entry a of the reference
// and causal rows; stacked_kl_grad runs them in turn.
template <typename T>
CMFQ_HD void stacked_kl_grad_row(const StackedKlGradParams<T>& p, int64_t b, int m) {
  const int K = p.slots, A = p.n_actions, M = p.rows_per_agent;
  const bool* mask = p.mask + b * K;
  const T* weights = p.weights + b * K;
  const T* effects = p.effects + b * K;
  const T* grad_causal = p.grad_causal_head + b * A;
  const T* grad_causal_in = p.grad_causal_mean_action + b * A;
  // d loss / d w_k: the incoming gradient plus that through the causal mean action.
  auto grad_weight = [&](int k) {
    T through_mean = T(0);
    if (p.index && mask[k]) {
      const int64_t a = p.index[b * K + k];
      through_mean = grad_causal[a] + grad_causal_in[a];
    } else if (!p.index) {
      const T* vector = p.vectors + (b * K + k) * A;
      for (int a = 0; a < A; ++a) through_mean += vector[a] * (grad_causal[a] + grad_causal_in[a]);
    }
    return p.grad_weights[b * K + k] + through_mean;
  };
  T centre = T(0);
  T total = T(0);
  for (int k = 0; k < K; ++k) {
    centre += weights[k] * grad_weight(k);
    total += effects[k];
  }
  const bool proportional = p.weighting == Weighting::kProportional;
  const bool measurable = total > T(kEffectThreshold);
  T grad_row = T(0);
  T row_effect = T(0);  // rows that no valid neighbour took get no gradient
  for (int k = 0; k < K; ++k) {
    if (!mask[k] || row_of_slot(p, b, k) != m) continue;
    const T centred = grad_weight(k) - centre;
    grad_row += p.grad_effects[b * K + k] +
                (proportional ? (measurable ? centred / total : T(0))
                              : weights[k] * centred / p.weight_temperature);
    row_effect = effects[k] > row_effect ? effects[k] : row_effect;
  }

  const int per_agent = M + 2;
  const T* reference = p.values + b * per_agent * A;
  const T* values = reference + (m + 1) * A;
  const T log_p_total = log_normaliser(reference, A, p.inv_tau);
  const T log_q_total = log_normaliser(values, A, p.inv_tau);
  T* grad = p.grad_values + (b * per_agent + m + 1) * A;
  for (int a = 0; a < A; ++a) {
    const T prob = exp_(reference[a] * p.inv_tau - log_p_total);
    grad[a] = grad_row * (exp_(values[a] * p.inv_tau - log_q_total) - prob) * p.inv_tau;
  }
  T* scratch = p.scratch + b * (1 + 3 * M);
  if (m == 0) scratch[0] = log_p_total;
  scratch[1 + 3 * m] = grad_row;
  scratch[2 + 3 * m] = row_effect;
  scratch[3 + 3 * m] = log_q_total;
}

template <typename T>
CMFQ_HD void stacked_kl_grad_reference(const StackedKlGradParams<T>& p, int64_t b, int a) {
  const int A = p.n_actions, M = p.rows_per_agent, per_agent = M + 2;
  const T* reference = p.values + b * per_agent * A;
  const T* scratch = p.scratch + b * (1 + 3 * M);
  T sum = T(0);
  if (M > 0) {
    const T log_p = reference[a] * p.inv_tau - scratch[0];
    const T prob = exp_(log_p);
    for (int m = 0; m < M; ++m) {
      const T log_q = reference[(m + 1) * A + a] * p.inv_tau - scratch[3 + 3 * m];
      sum += scratch[1 + 3 * m] * prob * (log_p - log_q - scratch[2 + 3 * m]);
    }
  }
  p.grad_values[b * per_agent * A + a] = sum * p.inv_tau;
  p.grad_values[(b * per_agent + M + 1) * A + a] = p.grad_q_causal[b * A + a];
}

template <typename T>
CMFQ_HD void stacked_kl_grad(const StackedKlGradParams<T>& p, int64_t b) {
  for (int m = 0; m < p.rows_per_agent; ++m) stacked_kl_grad_row(p, b, m);
  for (int a = 0; a < p.n_actions; ++a) stacked_kl_grad_reference(p, b, a);
}

}  // namespace cmfq
