// CUDA kernels of the stacked formulation's two elementwise steps (stacked.h, params.h): the
// change of a layer's pre-activation through its ReLU, row by row (the first layer's change
// gathered from the one-hot action table on the way), and each row's KL. Both are memory-bound
// passes between cuBLAS GEMMs; the per-element maths is agent_math.h's, shared with the CPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "agent_math.h"
#include "causal_weights_cuda.h"
#include "kernel_plan.h"

namespace cmfq {
namespace {

// Rows' storage to compute type and back. Explicit calls: torch's extension builds switch off
// the half types' implicit conversions.
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ double widen(double x) { return x; }
__device__ __forceinline__ void store(__half* out, float x) { *out = __float2half(x); }
__device__ __forceinline__ void store(__nv_bfloat16* out, float x) { *out = __float2bfloat16(x); }
__device__ __forceinline__ void store(float* out, float x) { *out = x; }
__device__ __forceinline__ void store(double* out, double x) { *out = x; }

// Row change: a block is kRowsPerBlock rows, a warp per row, lanes along the row (coalesced).
constexpr int kRowsPerBlock = 8;
constexpr int64_t kMaxRowBlocks = 1 << 20;  // then each block strides over the rows

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

// Row effects: a thread per row; the A values of a row are contiguous, so a warp's 32 rows
// are one contiguous stretch that L1 serves across the loop.
constexpr int kEffectThreads = 256;

template <typename T, typename R>
__global__ void __launch_bounds__(kEffectThreads) row_effects_kernel(const RowEffectsParams<T, R> p) {
  const int64_t rows = p.batch * p.rows_per_agent;
  for (int64_t row = blockIdx.x * int64_t{kEffectThreads} + threadIdx.x; row < rows;
       row += int64_t{gridDim.x} * kEffectThreads) {
    const T* probs = p.probs + (row / p.rows_per_agent) * p.n_actions;
    const R* q_change = p.q_change + row * p.n_actions;
    T shift = T(0);
    for (int a = 0; a < p.n_actions; ++a) shift += probs[a] * T(widen(q_change[a])) * p.inv_tau;
    T f = T(0);
    T r = T(0);
    for (int a = 0; a < p.n_actions; ++a) {
      const T d = T(widen(q_change[a])) * p.inv_tau - shift;
      f += probs[a] * phi(d);
      r += probs[a] * d;
    }
    p.effects[row] = kl_from_sums(f, r);
  }
}

unsigned grid_for(int64_t rows, int64_t rows_per_block) {
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  return static_cast<unsigned>(blocks < kMaxRowBlocks ? blocks : kMaxRowBlocks);
}

}  // namespace

template <typename T, typename R>
cudaError_t launch_row_change(const RowChangeParams<T, R>& params, cudaStream_t stream) {
  const int64_t rows = params.batch * params.rows_per_agent;
  if (rows == 0 || params.width == 0) return cudaSuccess;
  row_change_kernel<T, R><<<grid_for(rows, kRowsPerBlock), dim3(kWarpSize, kRowsPerBlock), 0,
                            stream>>>(params);
  return cudaGetLastError();
}

template <typename T, typename R>
cudaError_t launch_row_effects(const RowEffectsParams<T, R>& params, cudaStream_t stream) {
  const int64_t rows = params.batch * params.rows_per_agent;
  if (rows == 0) return cudaSuccess;
  row_effects_kernel<T, R><<<grid_for(rows, kEffectThreads), kEffectThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

#define CMFQ_INSTANTIATE(T, R)                                                          \
  template cudaError_t launch_row_change<T, R>(const RowChangeParams<T, R>&, cudaStream_t); \
  template cudaError_t launch_row_effects<T, R>(const RowEffectsParams<T, R>&, cudaStream_t);
CMFQ_INSTANTIATE(float, float)
CMFQ_INSTANTIATE(double, double)
CMFQ_INSTANTIATE(float, __half)
CMFQ_INSTANTIATE(float, __nv_bfloat16)
#undef CMFQ_INSTANTIATE

}  // namespace cmfq
