// Warp-wide steps shared by the CUDA kernels: sums across the lanes, and the weights of one
// agent's neighbour slots a slot a lane. The weights are agent_math.h's combine_weights, with the
// slots' totals merged across the lanes, so that no lane loops over all K slots alone (the serial
// pass of one lane was most of the stacked weights step's time: Nsight Compute's source view,
// benchmarks/results/cuda-h200-weights-step-ncu-2026-12-04.txt).
#pragma once

#include <cuda_runtime.h>

#include "shared/agent_math.h"
#include "cuda/kernel_plan.h"

namespace cmfq {

template <typename T>
__device__ T warp_sum(T value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Every lane's totals merged; every lane gets the same result (merge_totals is symmetric).
template <typename T>
__device__ WeightTotals<T> warp_totals(WeightTotals<T> totals) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    WeightTotals<T> other;
    other.count = __shfl_xor_sync(0xffffffffu, totals.count, offset);
    other.total = __shfl_xor_sync(0xffffffffu, totals.total, offset);
    other.top = __shfl_xor_sync(0xffffffffu, totals.top, offset);
    totals = merge_totals(totals, other);
  }
  return totals;
}

// combine_weights by one warp: lane l takes slots l, l + 32, ...; every lane of the warp calls it.
template <typename T>
__device__ void warp_combine_weights(const T* effects, const bool* mask, int slots,
                                     Weighting weighting, T weight_temperature, T* weights,
                                     int lane) {
  WeightTotals<T> totals;
  for (int k = lane; k < slots; k += kWarpSize) {
    totals = add_slot(totals, effects[k], mask[k], weight_temperature);
  }
  totals = warp_totals(totals);
  T normaliser = T(0);
  if (weighting == Weighting::kSoftmax) {
    for (int k = lane; k < slots; k += kWarpSize) {
      normaliser += softmax_term(effects[k], mask[k], totals, weight_temperature);
    }
    normaliser = warp_sum(normaliser);
  }
  for (int k = lane; k < slots; k += kWarpSize) {
    weights[k] =
        slot_weight(effects[k], mask[k], totals, normaliser, weighting, weight_temperature);
  }
}

}  // namespace cmfq
