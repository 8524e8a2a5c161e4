// Per-agent maths shared by the CPU and the CUDA kernels: the well-conditioned KL of two Boltzmann
// policies, the effect-to-weight rules and the mean action. See src/cmfq/divergence.py for the
// derivation; the two must compute the same formula.
#pragma once

#include <cmath>
#include <cstdint>

#include "shared/params.h"

namespace cmfq {

// The C names, overloaded, so that one template serves float and double on host and device.
CMFQ_HD float abs_(float x) { return fabsf(x); }
CMFQ_HD double abs_(double x) { return fabs(x); }
CMFQ_HD float exp_(float x) { return expf(x); }
CMFQ_HD double exp_(double x) { return exp(x); }
CMFQ_HD float expm1_(float x) { return expm1f(x); }
CMFQ_HD double expm1_(double x) { return expm1(x); }
CMFQ_HD float log_(float x) { return logf(x); }
CMFQ_HD double log_(double x) { return log(x); }
CMFQ_HD float log1p_(float x) { return log1pf(x); }
CMFQ_HD double log1p_(double x) { return log1p(x); }

// Bound of |d| below which phi uses its Taylor series.
constexpr double kPhiSeriesBound = 0.5;

// e^d - 1 - d by its Taylor series, accurate to rounding for |d| < 0.5 with terms up to
// d^17/17! for double and d^11/11! for float. Horner's rule, multiplications and no branch, so
// that a loop over it vectorises.
template <typename T>
CMFQ_HD T phi_series(T d) {
  T series = T(1);
  if (sizeof(T) > sizeof(float)) {
    series = T(1) + d * series * T(1.0 / 17);
    series = T(1) + d * series * T(1.0 / 16);
    series = T(1) + d * series * T(1.0 / 15);
    series = T(1) + d * series * T(1.0 / 14);
    series = T(1) + d * series * T(1.0 / 13);
    series = T(1) + d * series * T(1.0 / 12);
  }
  series = T(1) + d * series * T(1.0 / 11);
  series = T(1) + d * series * T(1.0 / 10);
  series = T(1) + d * series * T(1.0 / 9);
  series = T(1) + d * series * T(1.0 / 8);
  series = T(1) + d * series * T(1.0 / 7);
  series = T(1) + d * series * T(1.0 / 6);
  series = T(1) + d * series * T(1.0 / 5);
  series = T(1) + d * series * T(1.0 / 4);
  series = T(1) + d * series * T(1.0 / 3);
  return d * d * series * T(0.5);
}

// e^d - 1 - d: the series near 0, expm1 elsewhere (and for NaN).
template <typename T>
CMFQ_HD T phi(T d) {
  return abs_(d) < T(kPhiSeriesBound) ? phi_series(d) : expm1_(d) - d;
}

// m - log1p(m) without cancellation near 0: m^2/2 - m^3/3 + ... - m^9/9 for |m| < 0.01.
template <typename T>
CMFQ_HD T psi(T m) {
  if (!(abs_(m) < T(0.01))) return m - log1p_(m);
  T series = T(1.0 / 9);
  series = T(1.0 / 8) - m * series;
  series = T(1.0 / 7) - m * series;
  series = T(1.0 / 6) - m * series;
  series = T(1.0 / 5) - m * series;
  series = T(1.0 / 4) - m * series;
  series = T(1.0 / 3) - m * series;
  series = T(0.5) - m * series;
  return m * m * series;
}

// max(v, 0) that lets NaN through, as torch.relu does.
template <typename T>
CMFQ_HD T relu(T v) {
  return v > T(0) || v != v ? v : T(0);
}

// p = softmax(values * inv_tau) over n entries.
template <typename T>
CMFQ_HD void boltzmann(const T* values, int n, T inv_tau, T* p) {
  T top = values[0] * inv_tau;
  for (int a = 1; a < n; ++a) top = values[a] * inv_tau > top ? values[a] * inv_tau : top;
  T total = T(0);
  for (int a = 0; a < n; ++a) {
    p[a] = exp_(values[a] * inv_tau - top);
    total += p[a];
  }
  for (int a = 0; a < n; ++a) p[a] /= total;
}

// KL(p || softmax(log p + delta_q * inv_tau)) from two sums over the actions, F = sum p phi(d)
// and r = sum p d, where d = delta_q * inv_tau centred under p. delta_q is the change of the action
// values under the intervention, computed directly rather than as a difference of two
// evaluations, so small effects keep their digits. Clamped at 0; NaN passes through, as in torch.
template <typename T>
CMFQ_HD T kl_from_sums(T f, T r) {
  const T kl = f - psi(f + r);
  return kl < T(0) ? T(0) : kl;
}

// relu(z + dz) - relu(z), exact where both sides are positive. Selects rather than branches:
// the signs are data, and the CPU loops over it vectorise.
template <typename T>
CMFQ_HD T relu_change(T z, T dz) {
  const T shifted = z + dz;
  const T difference = (shifted > T(0) ? shifted : T(0)) - (z > T(0) ? z : T(0));
  return (z > T(0)) & (shifted > T(0)) ? dz : difference;
}

// What the weights of one agent's neighbour slots need from all of them: the valid slots' count,
// summed effect and largest logit (effect / weight temperature). Gathered a slot at a time
// (add_slot) and, where a CUDA warp takes a slot a lane, merged across the lanes (merge_totals).
template <typename T>
struct WeightTotals {
  int count = 0;
  T total = T(0);
  T top = T(0);  // meaningless while count == 0
};

template <typename T>
CMFQ_HD WeightTotals<T> add_slot(WeightTotals<T> totals, T effect, bool valid,
                                 T weight_temperature) {
  if (!valid) return totals;
  const T logit = effect / weight_temperature;
  totals.top = (totals.count == 0 || logit > totals.top) ? logit : totals.top;
  ++totals.count;
  totals.total += effect;
  return totals;
}

template <typename T>
CMFQ_HD WeightTotals<T> merge_totals(WeightTotals<T> a, const WeightTotals<T>& b) {
  if (b.count == 0) return a;
  a.top = (a.count == 0 || b.top > a.top) ? b.top : a.top;
  a.count += b.count;
  a.total += b.total;
  return a;
}

// A valid slot's unnormalised softmax weight; the softmax weighting's normaliser is their sum.
template <typename T>
CMFQ_HD T softmax_term(T effect, bool valid, const WeightTotals<T>& totals,
                       T weight_temperature) {
  return valid ? exp_(effect / weight_temperature - totals.top) : T(0);
}

// A slot's weight: proportional, w = c / sum c (uniform over the valid slots where the summed
// effect is at most kEffectThreshold); softmax, its term over the normaliser. An agent whose
// effects hold a NaN or an infinity (from a NaN or Inf in its state, its neighbours' actions or
// the head) gets NaN weights on its valid slots, as the softmax gives on its own: never a
// uniform fallback that looks valid.
template <typename T>
CMFQ_HD T slot_weight(T effect, bool valid, const WeightTotals<T>& totals, T normaliser,
                      Weighting weighting, T weight_temperature) {
  if (!valid) return T(0);
  if (weighting == Weighting::kSoftmax) {
    return softmax_term(effect, valid, totals, weight_temperature) / normaliser;
  }
  const bool finite = totals.total - totals.total == T(0);  // false for NaN and for an infinity
  const bool measurable = totals.total > T(kEffectThreshold);
  return !finite ? totals.total - totals.total
         : measurable ? effect / totals.total
                      : T(1) / T(totals.count);
}

// Weights of one agent's K neighbour slots from their effects (0 where masked).
template <typename T>
CMFQ_HD void combine_weights(const T* effects, const bool* mask, int slots, Weighting weighting,
                             T weight_temperature, T* weights) {
  WeightTotals<T> totals;
  for (int k = 0; k < slots; ++k) {
    totals = add_slot(totals, effects[k], mask[k], weight_temperature);
  }
  T normaliser = T(0);
  if (weighting == Weighting::kSoftmax) {
    for (int k = 0; k < slots; ++k) {
      normaliser += softmax_term(effects[k], mask[k], totals, weight_temperature);
    }
  }
  for (int k = 0; k < slots; ++k) {
    weights[k] =
        slot_weight(effects[k], mask[k], totals, normaliser, weighting, weight_temperature);
  }
}

// Whether an agent's weights are NaN (combine_weights's mark of an agent whose effects were not
// finite). Its causal mean action is then NaN in every entry, as sum_k w_k e(a_k) is in IEEE
// arithmetic (NaN times a one-hot vector's zeros is NaN), not only in its neighbours' actions'.
template <typename T>
CMFQ_HD bool weights_are_nan(const T* weights, const bool* mask, int slots) {
  bool nan = false;
  for (int k = 0; k < slots; ++k) nan = nan || (mask[k] && weights[k] != weights[k]);
  return nan;
}

// Number of valid neighbour slots of an agent.
CMFQ_HD int count_valid(const bool* mask, int slots) {
  int count = 0;
  for (int k = 0; k < slots; ++k) count += mask[k] ? 1 : 0;
  return count;
}

}  // namespace cmfq
