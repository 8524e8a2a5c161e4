// The CUDA kernel's entry point: a params struct and a stream, no torch types.
#pragma once

#include <cuda_runtime.h>

#include "params.h"

namespace cmfq {

// Runs cmfq::causal_weights for every agent of `params` in one kernel launch on `stream`.
template <typename T>
cudaError_t launch_causal_weights(const CausalWeightsParams<T>& params, cudaStream_t stream);

}  // namespace cmfq
