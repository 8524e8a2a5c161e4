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

#include "shared/agent_math.h"
#include "cuda/causal_weights_cuda.h"
#include "cuda/kernel_plan.h"
#include "shared/stacked_steps.h"
#include "cuda/warp_math.h"

namespace cmfq {
namespace {

__device__ __forceinline__ void store(__half* out, float x) { *out = __float2half(x); }
__device__ __forceinline__ void store(__nv_bfloat16* out, float x) { *out = __float2bfloat16(x); }
__device__ __forceinline__ void store(float* out, float x) { *out = x; }
__device__ __forceinline__ void store(double* out, double x) { *out = x; }

// Row-wise kernels: a block is an agent's rows (blocks stride over the agents), a warp per row,
// lanes along the row (coalesced). By agent, so that no row's agent takes a 64-bit division.
constexpr int kRowWarps = 4;

template <typename T, typename R>
__global__ void __launch_bounds__(kWarpSize* kRowWarps)
    row_change_kernel(const RowChangeParams<T, R> p) {
  for (int64_t agent = blockIdx.x; agent < p.batch; agent += gridDim.x) {
    const T* reference = p.reference + agent * p.width;
    for (int m = threadIdx.y; m < p.rows_per_agent; m += kRowWarps) {
      const int64_t row = agent * p.rows_per_agent + m;
      const R* change = p.change ? p.change + row * p.width : nullptr;
      const T* table = nullptr;
      const T* reference_proj = nullptr;
      if (!change) {
        table = p.action_table + (p.actions ? p.actions[row] : m) * p.width;
        reference_proj = p.reference_proj + agent * p.width;
      }
      R* out = p.out + row * p.width;
      for (int j = threadIdx.x; j < p.width; j += kWarpSize) {
        const T dz = change ? T(widen(change[j])) : table[j] - reference_proj[j];
        store(out + j, p.relu ? relu_change(reference[j], dz) : dz);
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarpSize* kRowWarps)
    stacked_first_kernel(const StackedFirstParams<T> p) {
  for (int64_t b = blockIdx.x; b < p.batch; b += gridDim.x) {
    for (int m = threadIdx.y; m < p.rows_per_agent + 2; m += kRowWarps) {
      stacked_first(p, b, m, threadIdx.x, kWarpSize);
    }
  }
}

// Per-agent kernels: a warp per agent, its lanes over the agent's slots, rows or entries, and
// the first lane on what the agent has once; a block is kAgentsPerBlock agents. At least one
// block per multiprocessor, so that ptxas may keep more registers: with its default budget, the
// registers live across the IEEE division's slow path (a call) spill.
constexpr int kAgentsPerBlock = 4;

template <typename T>
__global__ void __launch_bounds__(kWarpSize* kAgentsPerBlock, 1)
    stacked_rows_kernel(const StackedRowsParams<T> p) {
  const int lane = threadIdx.x;
  for (int64_t b = blockIdx.x * int64_t{kAgentsPerBlock} + threadIdx.y; b < p.batch;
       b += int64_t{gridDim.x} * kAgentsPerBlock) {
    bool bad = false;
    for (int k = lane; k < p.slots; k += kWarpSize) bad = stacked_slot(p, b, k) || bad;
    bad = __any_sync(0xffffffffu, bad);
    __syncwarp();  // the slots' rows, written by other lanes, make the mean action
    const int valid = count_valid(p.mask + b * p.slots, p.slots);
    for (int a = lane; a < p.n_actions; a += kWarpSize) {
      p.mean_action[b * p.n_actions + a] = mean_entry(p, b, a, valid);
    }
    if (p.one_hot && lane == 0) p.bad[b] = bad;
  }
}

// The weights step keeps each agent's reference values and policy, rows' KLs and slots' effects,
// weights and mask in shared memory: the first lane's passes over them (the softmax, the effects
// and weights) are chains of dependent reads, each a round trip to global memory otherwise.
template <typename T>
struct AgentScratch {
  T* values;   // [A]
  T* probs;    // [A]
  T* kls;      // [M]
  T* effects;  // [K]
  T* weights;  // [K]
  bool* mask;  // [K]
};

template <typename T>
__host__ __device__ size_t agent_scratch_bytes(const StackedWeightsParams<T>& p) {
  const size_t bytes = sizeof(T) * (2 * p.n_actions + p.rows_per_agent + 2 * p.slots) + p.slots;
  return (bytes + 15) / 16 * 16;
}

template <typename T>
__device__ AgentScratch<T> agent_scratch(unsigned char* base, const StackedWeightsParams<T>& p) {
  AgentScratch<T> s;
  s.values = reinterpret_cast<T*>(base);
  s.probs = s.values + p.n_actions;
  s.kls = s.probs + p.n_actions;
  s.effects = s.kls + p.rows_per_agent;
  s.weights = s.effects + p.slots;
  s.mask = reinterpret_cast<bool*>(s.weights + p.slots);
  return s;
}

// The weights step's lanes no longer loop over the slots alone (warp_math.h), and at 8 blocks a
// multiprocessor it fits 64 registers without spilling: 50% occupancy against 31% at its former
// 96 registers, for a step that waits on memory.
constexpr int kWeightsBlocksPerSm = 8;

template <typename T, typename R>
__global__ void __launch_bounds__(kWarpSize* kAgentsPerBlock, kWeightsBlocksPerSm)
    stacked_weights_kernel(const StackedWeightsParams<T> p) {
  extern __shared__ __align__(16) unsigned char shared[];
  const AgentScratch<T> s = agent_scratch(shared + threadIdx.y * agent_scratch_bytes(p), p);
  const int lane = threadIdx.x, K = p.slots, A = p.n_actions;
  for (int64_t b = blockIdx.x * int64_t{kAgentsPerBlock} + threadIdx.y; b < p.batch;
       b += int64_t{gridDim.x} * kAgentsPerBlock) {
    for (int a = lane; a < A; a += kWarpSize) s.values[a] = p.reference_values[b * A + a];
    for (int k = lane; k < K; k += kWarpSize) s.mask[k] = p.mask[b * K + k];
    __syncwarp();
    if (lane == 0) boltzmann(s.values, A, p.inv_tau, s.probs);
    __syncwarp();
    for (int m = lane; m < p.rows_per_agent; m += kWarpSize) {
      s.kls[m] = row_kl(s.probs, q_change_row<T, R>(p, b, m), A, p.inv_tau);
    }
    __syncwarp();
    // agent_weights, a slot a lane.
    for (int k = lane; k < K; k += kWarpSize) s.effects[k] = slot_effect(p, b, s.kls, s.mask, k);
    warp_combine_weights(s.effects, s.mask, K, p.weighting, p.weight_temperature, s.weights, lane);
    __syncwarp();
    // As stacked_weights: an agent with a valid neighbour's action outside [0, A) gets NaN, and
    // one whose weights are NaN a NaN causal mean action in every entry.
    const bool bad = agent_is_bad(p, b);
    const bool nan_weights = weights_are_nan(s.weights, s.mask, K);
    for (int k = lane; k < K; k += kWarpSize) {
      p.effects[b * K + k] = bad ? T(NAN) : s.effects[k];
      p.weights[b * K + k] = bad ? T(NAN) : s.weights[k];
    }
    for (int a = lane; a < A; a += kWarpSize) {
      p.causal_mean_action[b * A + a] =
          bad || nan_weights ? T(NAN) : causal_entry(p, b, s.weights, a);
      if (bad) p.mean_action[b * A + a] = T(NAN);
    }
    __syncwarp();  // the scratch is the next agent's
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

const dim3 kRowBlock(kWarpSize, kRowWarps);
const dim3 kAgentBlock(kWarpSize, kAgentsPerBlock);

}  // namespace

template <typename T, typename R>
cudaError_t launch_row_change(const RowChangeParams<T, R>& params, cudaStream_t stream) {
  if (params.batch * params.rows_per_agent == 0 || params.width == 0) return cudaSuccess;
  row_change_kernel<T, R><<<grid_for(params.batch, 1), kRowBlock, 0, stream>>>(params);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_stacked_rows(const StackedRowsParams<T>& params, cudaStream_t stream) {
  if (params.batch == 0) return cudaSuccess;
  stacked_rows_kernel<T>
      <<<grid_for(params.batch, kAgentsPerBlock), kAgentBlock, 0, stream>>>(params);
  return cudaGetLastError();
}

template <typename T, typename R>
cudaError_t launch_stacked_weights(const StackedWeightsParams<T>& params, cudaStream_t stream) {
  if (params.batch == 0) return cudaSuccess;
  const size_t bytes = kAgentsPerBlock * agent_scratch_bytes(params);
  if (bytes > kDefaultSharedBytes) {
    // Beyond the default, up to the device's limit (heads with thousands of actions or slots).
    const cudaError_t status = cudaFuncSetAttribute(
        stacked_weights_kernel<T, R>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(bytes));
    if (status != cudaSuccess) return status;
  }
  stacked_weights_kernel<T, R>
      <<<grid_for(params.batch, kAgentsPerBlock), kAgentBlock, bytes, stream>>>(params);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_stacked_first(const StackedFirstParams<T>& params, cudaStream_t stream) {
  if (params.batch == 0 || params.width == 0) return cudaSuccess;
  stacked_first_kernel<T><<<grid_for(params.batch, 1), kRowBlock, 0, stream>>>(params);
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
