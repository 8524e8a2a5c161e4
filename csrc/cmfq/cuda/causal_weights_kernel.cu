// CUDA kernel of cmfq::causal_weights: one thread block per agent (grid-stride), which
//   1. forms the mean action and runs it through the head, keeping each layer (all threads);
//   2. evaluates the interventions, one warp each: the change of the first layer's
//      pre-activation carried through the trunk, and its KL against the reference policy;
//   3. turns the effects into weights and the causal mean action, and evaluates q_causal.
// The state half of the first trunk layer and the one-hot action table come precomputed
// (params.h); the per-agent maths is shared with the CPU kernel (agent_math.h). Each block's
// workspace is in shared memory, or in global memory for heads too wide for it (kernel_plan.h).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "shared/agent_math.h"
#include "cuda/causal_weights_cuda.h"
#include "cuda/kernel_plan.h"
#include "cuda/warp_math.h"

namespace cmfq {
namespace {

// y[o] = (bias[o]) + sum_j x[j] W^T[j, o] for o = lane, lane + lanes, ...: consecutive lanes read
// consecutive weights.
template <typename T>
__device__ void dense(const DenseLayer<T>& layer, const T* x, T* y, int lane, int lanes,
                      bool with_bias, bool with_relu) {
  for (int o = lane; o < layer.out; o += lanes) {
    T acc = with_bias && layer.bias ? layer.bias[o] : T(0);
    for (int j = 0; j < layer.in; ++j) acc += x[j] * layer.weight_t[j * layer.out + o];
    y[o] = with_relu ? relu(acc) : acc;
  }
}

// ws.layers[0:H] = the first trunk layer's pre-activation for agent b under the action ws.x.
template <typename T>
__device__ void first_layer(const CausalWeightsParams<T>& p, Workspace<T>& ws, int64_t b) {
  const T* in = ws.x;
  for (int l = 0; l < p.n_encoder; ++l) {
    T* out = l % 2 ? ws.block_b : ws.block_a;
    dense(p.encoder[l], in, out, threadIdx.x, kThreads, true, true);
    __syncthreads();
    in = out;
  }
  dense(p.action_proj, in, ws.proj, threadIdx.x, kThreads, false, false);
  __syncthreads();
  const int H = p.first_width();
  for (int j = threadIdx.x; j < H; j += kThreads) ws.layers[j] = p.state_proj[b * H + j] + ws.proj[j];
  __syncthreads();
}

// The rest of the trunk from ws.layers[0:H], each layer stored after the previous one; returns
// the action values.
template <typename T>
__device__ const T* trunk(const CausalWeightsParams<T>& p, Workspace<T>& ws) {
  T* z = ws.layers;
  int width = p.first_width();
  for (int l = 0; l < p.n_tail; ++l) {
    for (int j = threadIdx.x; j < width; j += kThreads) ws.block_a[j] = relu(z[j]);
    __syncthreads();
    dense(p.tail[l], ws.block_a, z + width, threadIdx.x, kThreads, true, false);
    __syncthreads();
    z += width;
    width = p.tail[l].out;
  }
  return z;
}

// One warp: carries the first layer's change (in `change`) through the trunk, relative to the
// reference layers; returns the change of the action values (in `change`).
template <typename T>
__device__ const T* propagate_change(const CausalWeightsParams<T>& p, const T* layers, T* change,
                                     T* scratch, int lane) {
  int width = p.first_width();
  for (int l = 0; l < p.n_tail; ++l) {
    for (int j = lane; j < width; j += kWarpSize) scratch[j] = relu_change(layers[j], change[j]);
    __syncwarp();
    dense(p.tail[l], scratch, change, lane, kWarpSize, false, false);
    __syncwarp();
    layers += width;
    width = p.tail[l].out;
  }
  return change;
}

// One warp: the KL of the reference policy p against the intervened one (agent_math.h's
// kl_from_sums), each lane taking every 32nd action; every lane gets the result.
template <typename T>
__device__ T warp_kl(const T* p, const T* delta_q, int n, T inv_tau, int lane) {
  T shift = T(0);
  for (int a = lane; a < n; a += kWarpSize) shift += p[a] * delta_q[a] * inv_tau;
  shift = warp_sum(shift);
  T f = T(0);
  T r = T(0);
  for (int a = lane; a < n; a += kWarpSize) {
    const T d = delta_q[a] * inv_tau - shift;
    f += p[a] * phi(d);
    r += p[a] * d;
  }
  return kl_from_sums(warp_sum(f), warp_sum(r));
}

// Whether a valid neighbour of the agent has an action outside [0, A); the same answer in every
// thread of the block (a barrier).
__device__ bool has_bad_action(const int64_t* actions, const bool* mask, int slots,
                               int n_actions) {
  bool bad = false;
  for (int k = threadIdx.x; k < slots; k += kThreads) {
    bad |= mask[k] && (actions[k] < 0 || actions[k] >= n_actions);
  }
  return __syncthreads_or(bad) != 0;
}

// An agent whose actions cannot be evaluated: NaN in all its outputs.
template <typename T>
__device__ void write_nan(const CausalWeightsParams<T>& p, int64_t b) {
  const T nan = T(NAN);
  for (int k = threadIdx.x; k < p.slots; k += kThreads) {
    p.weights[b * p.slots + k] = nan;
    p.effects[b * p.slots + k] = nan;
  }
  for (int a = threadIdx.x; a < p.n_actions; a += kThreads) {
    p.mean_action[b * p.n_actions + a] = nan;
    p.causal_mean_action[b * p.n_actions + a] = nan;
    p.q_causal[b * p.n_actions + a] = nan;
  }
}

// Resident blocks per SM that ptxas must allow (it caps the registers at 64K / (128 * n)):
// the most for which neither sm_80 nor sm_90 spills (.ci/ptxas_check.sh fails CI on a spill).
template <typename T>
constexpr int kMinBlocksPerSm = sizeof(T) == sizeof(float) ? 6 : 4;

// kInShared: each block's workspace is its dynamic shared memory; otherwise its slice of
// `global_workspace` (KernelPlan, kernel_plan.h).
template <typename T, bool kInShared>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<T>)
    causal_weights_kernel(const CausalWeightsParams<T> p, unsigned char* global_workspace,
                          size_t workspace_bytes) {
  extern __shared__ __align__(16) unsigned char shared[];
  Workspace<T> ws;
  workspace_layout(p, kInShared ? shared : global_workspace + blockIdx.x * workspace_bytes, &ws);
  const int tid = threadIdx.x;
  const int lane = tid % kWarpSize;
  const int warp = tid / kWarpSize;
  const bool one_hot = p.one_hot;
  const int A = p.n_actions;
  const int K = p.slots;
  const int H = p.first_width();
  const int W = p.max_width();
  const T inv_tau = T(1) / p.temperature;
  T* change = ws.warp + warp * 2 * W;
  T* scratch = change + W;

  for (int64_t b = blockIdx.x; b < p.batch; b += gridDim.x) {
    const bool* mask = p.mask + b * K;
    const int64_t* actions = one_hot ? p.actions + b * K : nullptr;
    const T* dists = one_hot ? nullptr : p.action_dists + b * K * A;
    // Checking the range on the host would block on the GPU every call (prepare.cpp checks CPU
    // inputs only), so the kernel refuses such an agent here, before any index is used.
    if (one_hot && has_bad_action(actions, mask, K, A)) {
      write_nan(p, b);
      continue;
    }
    const int valid = count_valid(mask, K);

    for (int a = tid; a < A; a += kThreads) {
      T sum = T(0);
      int count = 0;
      for (int k = 0; k < K; ++k) {
        if (!mask[k]) continue;
        if (one_hot) {
          count += actions[k] == a ? 1 : 0;
        } else {
          sum += dists[k * A + a];
        }
      }
      if (one_hot) {
        ws.counts[a] = count;
        sum = T(count);
      }
      ws.x[a] = valid > 0 ? sum / T(valid) : T(0);
      p.mean_action[b * A + a] = ws.x[a];
    }
    __syncthreads();
    first_layer(p, ws, b);
    const T* q_ref = trunk(p, ws);
    if (tid == 0) boltzmann(q_ref, A, inv_tau, ws.probs);
    __syncthreads();

    const int interventions = one_hot ? A : K;
    for (int i = warp; i < interventions; i += kWarps) {
      if (one_hot ? ws.counts[i] == 0 : !mask[i]) continue;
      if (one_hot) {
        for (int j = lane; j < H; j += kWarpSize) {
          change[j] = p.action_table[static_cast<int64_t>(i) * H + j] - ws.proj[j];
        }
      } else {
        // The neighbour's distribution through the encoder, ping-ponging change and scratch.
        const T* in = dists + static_cast<int64_t>(i) * A;
        for (int l = 0; l < p.n_encoder; ++l) {
          T* out = l % 2 ? scratch : change;
          dense(p.encoder[l], in, out, lane, kWarpSize, true, true);
          __syncwarp();
          in = out;
        }
        T* proj = p.n_encoder % 2 ? scratch : change;
        dense(p.action_proj, in, proj, lane, kWarpSize, false, false);
        __syncwarp();
        for (int j = lane; j < H; j += kWarpSize) change[j] = proj[j] - ws.proj[j];
      }
      __syncwarp();
      const T* q_change = propagate_change(p, ws.layers, change, scratch, lane);
      const T effect = warp_kl(ws.probs, q_change, A, inv_tau, lane);
      if (lane == 0) ws.effect[i] = effect;
      __syncwarp();
    }
    __syncthreads();

    if (warp == 0) {
      for (int k = lane; k < K; k += kWarpSize) {
        ws.effects[k] = mask[k] ? ws.effect[one_hot ? static_cast<int>(actions[k]) : k] : T(0);
      }
      warp_combine_weights(ws.effects, mask, K, p.weighting, p.weight_temperature, ws.weights,
                           lane);
    }
    __syncthreads();
    for (int k = tid; k < K; k += kThreads) {
      p.effects[b * K + k] = ws.effects[k];
      p.weights[b * K + k] = ws.weights[k];
    }
    const bool nan_weights = weights_are_nan(ws.weights, mask, K);
    for (int a = tid; a < A; a += kThreads) {
      T sum = T(0);
      for (int k = 0; k < K; ++k) {
        if (!mask[k]) continue;
        sum += one_hot ? (actions[k] == a ? ws.weights[k] : T(0)) : ws.weights[k] * dists[k * A + a];
      }
      sum = nan_weights ? T(NAN) : sum;
      ws.x[a] = sum;
      p.causal_mean_action[b * A + a] = sum;
    }
    __syncthreads();
    first_layer(p, ws, b);
    const T* q_causal = trunk(p, ws);
    for (int a = tid; a < A; a += kThreads) p.q_causal[b * A + a] = q_causal[a];
    __syncthreads();
  }
}

}  // namespace

template <typename T>
cudaError_t plan_causal_weights(const CausalWeightsParams<T>& params, int device,
                                KernelPlan* plan) {
  int optin_shared_bytes = 0;
  int sm_count = 0;
  cudaError_t error = cudaDeviceGetAttribute(&optin_shared_bytes,
                                             cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (error == cudaSuccess) {
    error = cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device);
  }
  if (error != cudaSuccess) return error;
  *plan = plan_kernel(params.batch, workspace_layout<T>(params, nullptr, nullptr),
                      static_cast<size_t>(optin_shared_bytes), sm_count);
  return cudaSuccess;
}

template <typename T>
cudaError_t launch_causal_weights(const CausalWeightsParams<T>& params, const KernelPlan& plan,
                                  unsigned char* global_workspace, cudaStream_t stream) {
  if (plan.blocks == 0) return cudaSuccess;
  if (!plan.in_shared) {
    causal_weights_kernel<T, false><<<plan.blocks, kThreads, 0, stream>>>(
        params, global_workspace, plan.workspace_bytes);
    return cudaGetLastError();
  }
  if (plan.opt_in) {
    const cudaError_t error = cudaFuncSetAttribute(
        causal_weights_kernel<T, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(plan.workspace_bytes));
    if (error != cudaSuccess) return error;
  }
  causal_weights_kernel<T, true><<<plan.blocks, kThreads, plan.workspace_bytes, stream>>>(
      params, nullptr, plan.workspace_bytes);
  return cudaGetLastError();
}

#define CMFQ_INSTANTIATE(T)                                                                  \
  template cudaError_t plan_causal_weights<T>(const CausalWeightsParams<T>&, int,          \
                                              KernelPlan*);                                \
  template cudaError_t launch_causal_weights<T>(const CausalWeightsParams<T>&,             \
                                                const KernelPlan&, unsigned char*,         \
                                                cudaStream_t);
CMFQ_INSTANTIATE(float)
CMFQ_INSTANTIATE(double)
#undef CMFQ_INSTANTIATE

}  // namespace cmfq
