// CUDA kernels of the stacked formulation's steps between its cuBLAS GEMMs (stacked.h, params.h):
// the change of a layer's pre-activation through its ReLU, row by row (the first layer's change
// gathered from the one-hot action table on the way); and the steps of stacked_steps.h, which the
// CPU runs in loops: before the rows (mean action, the rows' actions), after them (KLs, effects,
// weights, causal mean action), and the backward's first-layer rows and its step through the
// weights and the KLs. Each replaces a chain of small torch ops, a launch each.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "agent_math.h"
#include "causal_weights_cuda.h"
#include "kernel_plan.h"
#include "stacked_steps.h"

namespace cmfq {
namespace {

__device__ __forceinline__ void store(__half* out, float x) { *out = __float2half(x); }
__device__ __forceinline__ void store(__nv_bfloat16* out, float x) { *out = __float2bfloat16(x); }
__device__ __forceinline__ void store(float* out, float x) { *out = x; }
__device__ __forceinline__ void store(double* out, double x) { *out = x; }

// Row-wise kernels: a block is kRowsPerBlock rows, a warp per row, lanes along the row
// (coalesced).
constexpr int kRowsPerBlock = 8;
constexpr int64_t kMaxBlocks = 1 << 20;  // then each block strides over the rows or agents

template <typename T, typename R>
__global__ void __launch_bounds__(kWarpSize* kRowsPerBlock)
    row_change_kernel(const RowChangeParams<T, R> p) {
  const int64_t rows = p.batch * p.rows_per_agent;
  for (int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.y; row < rows;
       row += int64_t{gridDim.x} * kRowsPerBlock) {
    const int64_t agent = row / p.rows_per_agent;
    const T* reference = p.reference + agent * p.width;
    const R* change = p.change ? p.change + row * p.width : nullptr;
    const T* table = nullptr;
    const T* reference_proj = nullptr;
    if (!change) {
      const int64_t action = p.actions ? p.actions[row] : row - agent * p.rows_per_agent;
      table = p.action_table + action * p.width;
      reference_proj = p.reference_proj + agent * p.width;
    }
    R* out = p.out + row * p.width;
    for (int j = threadIdx.x; j < p.width; j += kWarpSize) {
      const T dz = change ? T(widen(change[j])) : table[j] - reference_proj[j];
      store(out + j, p.relu ? relu_change(reference[j], dz) : dz);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarpSize* kRowsPerBlock)
    stacked_first_kernel(const StackedFirstParams<T> p) {
  const int64_t rows = p.batch * (p.rows_per_agent + 2);
  for (int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.y; row < rows;
       row += int64_t{gridDim.x} * kRowsPerBlock) {
    stacked_first(p, row, threadIdx.x, kWarpSize);
  }
}

// The rows' actions and mean action: a thread per agent. At least one block per multiprocessor,
// so that ptxas may keep more registers: with its default budget, the registers live across the
// IEEE division's slow path (a call) spilled.
constexpr int kAgentThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kAgentThreads, 1)
    stacked_rows_kernel(const StackedRowsParams<T> p) {
  for (int64_t b = blockIdx.x * int64_t{kAgentThreads} + threadIdx.x; b < p.batch;
       b += int64_t{gridDim.x} * kAgentThreads) {
    stacked_rows(p, b);
  }
}

// The weights and the backward's KL step: a warp per agent, its lanes over the agent's rows (and
// actions), its first lane on what the agent has once; a block is kAgentsPerBlock agents.
constexpr int kAgentsPerBlock = 4;

template <typename T, typename R>
__global__ void __launch_bounds__(kWarpSize* kAgentsPerBlock, 1)
    stacked_weights_kernel(const StackedWeightsParams<T> p) {
  for (int64_t b = blockIdx.x * int64_t{kAgentsPerBlock} + threadIdx.y; b < p.batch;
       b += int64_t{gridDim.x} * kAgentsPerBlock) {
    if (threadIdx.x == 0) stacked_probs(p, b);
    __syncwarp();
    for (int m = threadIdx.x; m < p.rows_per_agent; m += kWarpSize) stacked_row_kl<T, R>(p, b, m);
    __syncwarp();
    if (threadIdx.x == 0) stacked_agent_weights(p, b);
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarpSize* kAgentsPerBlock, 1)
    stacked_kl_grad_kernel(const StackedKlGradParams<T> p) {
  for (int64_t b = blockIdx.x * int64_t{kAgentsPerBlock} + threadIdx.y; b < p.batch;
       b += int64_t{gridDim.x} * kAgentsPerBlock) {
    for (int m = threadIdx.x; m < p.rows_per_agent; m += kWarpSize) stacked_kl_grad_row(p, b, m);
    __syncwarp();
    for (int a = threadIdx.x; a < p.n_actions; a += kWarpSize) stacked_kl_grad_reference(p, b, a);
  }
}

unsigned grid_for(int64_t items, int64_t per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

const dim3 kRowBlock(kWarpSize, kRowsPerBlock);
const dim3 kAgentBlock(kWarpSize, kAgentsPerBlock);

}  // namespace

template <typename T, typename R>
cudaError_t launch_row_change(const RowChangeParams<T, R>& params, cudaStream_t stream) {
  const int64_t rows = params.batch * params.rows_per_agent;
  if (rows == 0 || params.width == 0) return cudaSuccess;
  row_change_kernel<T, R><<<grid_for(rows, kRowsPerBlock), kRowBlock, 0, stream>>>(params);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_stacked_rows(const StackedRowsParams<T>& params, cudaStream_t stream) {
  if (params.batch == 0) return cudaSuccess;
  stacked_rows_kernel<T><<<grid_for(params.batch, kAgentThreads), kAgentThreads, 0, stream>>>(
      params);
  return cudaGetLastError();
}

template <typename T, typename R>
cudaError_t launch_stacked_weights(const StackedWeightsParams<T>& params, cudaStream_t stream) {
  if (params.batch == 0) return cudaSuccess;
  stacked_weights_kernel<T, R>
      <<<grid_for(params.batch, kAgentsPerBlock), kAgentBlock, 0, stream>>>(params);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_stacked_first(const StackedFirstParams<T>& params, cudaStream_t stream) {
  const int64_t rows = params.batch * (params.rows_per_agent + 2);
  if (rows == 0 || params.width == 0) return cudaSuccess;
  stacked_first_kernel<T><<<grid_for(rows, kRowsPerBlock), kRowBlock, 0, stream>>>(params);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_stacked_kl_grad(const StackedKlGradParams<T>& params, cudaStream_t stream) {
  if (params.batch == 0) return cudaSuccess;
  stacked_kl_grad_kernel<T>
      <<<grid_for(params.batch, kAgentsPerBlock), kAgentBlock, 0, stream>>>(params);
  return cudaGetLastError();
}

#define CMFQ_INSTANTIATE_ROWS(T, R)                                                          \
  template cudaError_t launch_row_change<T, R>(const RowChangeParams<T, R>&, cudaStream_t); \
  template cudaError_t launch_stacked_weights<T, R>(const StackedWeightsParams<T>&, cudaStream_t);
CMFQ_INSTANTIATE_ROWS(float, float)
CMFQ_INSTANTIATE_ROWS(double, double)
CMFQ_INSTANTIATE_ROWS(float, __half)
CMFQ_INSTANTIATE_ROWS(float, __nv_bfloat16)
#undef CMFQ_INSTANTIATE_ROWS

#define CMFQ_INSTANTIATE(T)                                                                 \
  template cudaError_t launch_stacked_rows<T>(const StackedRowsParams<T>&, cudaStream_t);   \
  template cudaError_t launch_stacked_first<T>(const StackedFirstParams<T>&, cudaStream_t); \
  template cudaError_t launch_stacked_kl_grad<T>(const StackedKlGradParams<T>&, cudaStream_t);
CMFQ_INSTANTIATE(float)
CMFQ_INSTANTIATE(double)
#undef CMFQ_INSTANTIATE

}  // namespace cmfq
