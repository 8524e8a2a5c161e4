// The CUDA kernels' entry points: a params struct and a stream, no torch types.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/kernel_plan.h"
#include "shared/params.h"

namespace cmfq {

// How `params` runs on `device`: its shared-memory limit decides where the workspace lives.
template <typename T>
cudaError_t plan_causal_weights(const CausalWeightsParams<T>& params, int device,
                                KernelPlan* plan);

// Runs cmfq::causal_weights for every agent of `params` in one kernel launch on `stream`.
// `global_workspace` holds plan.blocks * plan.workspace_bytes bytes when !plan.in_shared.
template <typename T>
cudaError_t launch_causal_weights(const CausalWeightsParams<T>& params, const KernelPlan& plan,
                                  unsigned char* global_workspace, cudaStream_t stream);

// The stacked formulation's steps (stacked_kernels.cu). Rows of type R: (T, R) = (float, float),
// (double, double), (float, __half) and (float, __nv_bfloat16); the others for float and double.
template <typename T, typename R>
cudaError_t launch_row_change(const RowChangeParams<T, R>& params, cudaStream_t stream);

template <typename T, typename R>
cudaError_t launch_stacked_weights(const StackedWeightsParams<T>& params, cudaStream_t stream);

template <typename T>
cudaError_t launch_stacked_rows(const StackedRowsParams<T>& params, cudaStream_t stream);

template <typename T>
cudaError_t launch_stacked_first(const StackedFirstParams<T>& params, cudaStream_t stream);

template <typename T>
cudaError_t launch_stacked_kl_grad(const StackedKlGradParams<T>& params, cudaStream_t stream);

// The stacked formulation's trunk in one launch (trunk_kernel.cu), for heads that
// fused_trunk_fits: H1 <= 128, H2 <= 64, A <= 32. Its products as params.math says; the
// tensor-core ones (all but TrunkMath::kFma) on sm_80 and later only.
bool fused_trunk_fits(int width1, int width2, int n_actions);
cudaError_t launch_fused_trunk(const FusedTrunkParams<float>& params, cudaStream_t stream);

}  // namespace cmfq
