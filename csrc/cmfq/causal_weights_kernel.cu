// CUDA kernel of cmfq::causal_weights: one thread block per agent (grid-stride), which
//   1. forms the mean action and runs it through the head, keeping each layer (all threads);
//   2. evaluates the interventions, one warp each: the change of the first layer's
//      pre-activation carried through the trunk, and its KL against the reference policy;
//   3. turns the effects into weights and the causal mean action, and evaluates q_causal.
// The state half of the first trunk layer and the one-hot action table come precomputed
// (params.h); the per-agent maths is shared with the CPU kernel (agent_math.h).
#include <cuda_runtime.h>

#include <cstdint>

#include "agent_math.h"
#include "causal_weights_cuda.h"

namespace cmfq {
namespace {

constexpr int kThreads = 128;
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;

// One agent's shared memory.
template <typename T>
struct Workspace {
  T* x;        // [A] the action vector being evaluated: mean, then causal mean
  T* proj;     // [H] its action projection
  T* block_a;  // [W] block scratch
  T* block_b;  // [W]
  T* layers;   // [H + tail widths] the reference's pre-activations, layer after layer
  T* probs;    // [A] the reference policy
  T* effect;   // [max(A, K)] effect per distinct action (indices) or per neighbour (distributions)
  T* effects;  // [K]
  T* weights;  // [K]
  T* warp;     // [kWarps * 2W] each warp's change and scratch vectors
  int* counts; // [A] how many valid neighbours took each action
};

// Lays the workspace out from `base` (pointers are set only when `ws` is given); returns its size.
template <typename T>
__host__ __device__ size_t workspace_layout(const CausalWeightsParams<T>& p, unsigned char* base,
                                            Workspace<T>* ws) {
  const size_t A = p.n_actions, K = p.slots, H = p.first_width(), W = p.max_width();
  size_t layers = H;
  for (int l = 0; l < p.n_tail; ++l) layers += p.tail[l].out;
  const size_t sizes[] = {A, H, W, W, layers, A, A > K ? A : K, K, K, kWarps * 2 * W};
  size_t offset = 0;
  T** slots[] = {nullptr, nullptr, nullptr, nullptr, nullptr,
                 nullptr, nullptr, nullptr, nullptr, nullptr};
  if (ws) {
    T** named[] = {&ws->x,      &ws->proj,   &ws->block_a, &ws->block_b, &ws->layers,
                   &ws->probs,  &ws->effect, &ws->effects, &ws->weights, &ws->warp};
    for (int i = 0; i < 10; ++i) slots[i] = named[i];
  }
  for (int i = 0; i < 10; ++i) {
    if (ws) *slots[i] = reinterpret_cast<T*>(base + offset);
    offset += sizes[i] * sizeof(T);
  }
  if (ws) ws->counts = reinterpret_cast<int*>(base + offset);
  return offset + A * sizeof(int);
}

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
  T* buffers[2] = {ws.block_a, ws.block_b};
  for (int l = 0; l < p.n_encoder; ++l) {
    dense(p.encoder[l], in, buffers[l % 2], threadIdx.x, kThreads, true, true);
    __syncthreads();
    in = buffers[l % 2];
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

template <typename T>
__global__ void __launch_bounds__(kThreads)
    causal_weights_kernel(const CausalWeightsParams<T> p) {
  extern __shared__ __align__(16) unsigned char shared[];
  Workspace<T> ws;
  workspace_layout(p, shared, &ws);
  const int tid = threadIdx.x;
  const int lane = tid % kWarpSize;
  const int warp = tid / kWarpSize;
  const int A = p.n_actions;
  const int K = p.slots;
  const int H = p.first_width();
  const int W = p.max_width();
  const T inv_tau = T(1) / p.temperature;
  T* change = ws.warp + warp * 2 * W;
  T* scratch = change + W;

  for (int64_t b = blockIdx.x; b < p.batch; b += gridDim.x) {
    const bool* mask = p.mask + b * K;
    const int64_t* actions = p.actions ? p.actions + b * K : nullptr;
    const T* dists = p.action_dists ? p.action_dists + b * K * A : nullptr;
    const int valid = count_valid(mask, K);

    for (int a = tid; a < A; a += kThreads) {
      T sum = T(0);
      int count = 0;
      for (int k = 0; k < K; ++k) {
        if (!mask[k]) continue;
        if (actions) {
          count += actions[k] == a ? 1 : 0;
        } else {
          sum += dists[k * A + a];
        }
      }
      if (actions) {
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

    const int interventions = actions ? A : K;
    for (int i = warp; i < interventions; i += kWarps) {
      if (actions ? ws.counts[i] == 0 : !mask[i]) continue;
      if (actions) {
        for (int j = lane; j < H; j += kWarpSize) {
          change[j] = p.action_table[static_cast<int64_t>(i) * H + j] - ws.proj[j];
        }
      } else {
        // The neighbour's distribution through the encoder, ping-ponging change and scratch.
        const T* in = dists + static_cast<int64_t>(i) * A;
        T* buffers[2] = {change, scratch};
        for (int l = 0; l < p.n_encoder; ++l) {
          dense(p.encoder[l], in, buffers[l % 2], lane, kWarpSize, true, true);
          __syncwarp();
          in = buffers[l % 2];
        }
        T* proj = buffers[p.n_encoder % 2];
        dense(p.action_proj, in, proj, lane, kWarpSize, false, false);
        __syncwarp();
        for (int j = lane; j < H; j += kWarpSize) change[j] = proj[j] - ws.proj[j];
      }
      __syncwarp();
      const T* q_change = propagate_change(p, ws.layers, change, scratch, lane);
      if (lane == 0) ws.effect[i] = kl_from_value_change(ws.probs, q_change, A, inv_tau);
      __syncwarp();
    }
    __syncthreads();

    if (tid == 0) {
      for (int k = 0; k < K; ++k) {
        ws.effects[k] = mask[k] ? ws.effect[actions ? static_cast<int>(actions[k]) : k] : T(0);
      }
      combine_weights(ws.effects, mask, K, p.weighting, p.weight_temperature, ws.weights);
    }
    __syncthreads();
    for (int k = tid; k < K; k += kThreads) {
      p.effects[b * K + k] = ws.effects[k];
      p.weights[b * K + k] = ws.weights[k];
    }
    for (int a = tid; a < A; a += kThreads) {
      T sum = T(0);
      for (int k = 0; k < K; ++k) {
        if (!mask[k]) continue;
        sum += actions ? (actions[k] == a ? ws.weights[k] : T(0)) : ws.weights[k] * dists[k * A + a];
      }
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
cudaError_t launch_causal_weights(const CausalWeightsParams<T>& params, cudaStream_t stream) {
  if (params.batch == 0) return cudaSuccess;
  const size_t bytes = workspace_layout<T>(params, nullptr, nullptr);
  constexpr size_t kDefaultSharedBytes = 48 * 1024;
  if (bytes > kDefaultSharedBytes) {
    const cudaError_t error = cudaFuncSetAttribute(
        causal_weights_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(bytes));
    if (error != cudaSuccess) return error;
  }
  constexpr int64_t kMaxBlocks = 1 << 20;
  const unsigned blocks =
      static_cast<unsigned>(params.batch < kMaxBlocks ? params.batch : kMaxBlocks);
  causal_weights_kernel<T><<<blocks, kThreads, bytes, stream>>>(params);
  return cudaGetLastError();
}

template cudaError_t launch_causal_weights<float>(const CausalWeightsParams<float>&, cudaStream_t);
template cudaError_t launch_causal_weights<double>(const CausalWeightsParams<double>&,
                                                   cudaStream_t);

}  // namespace cmfq
