// The CUDA kernel's per-agent workspace and how a launch places it. Free of CUDA and torch, so
// that the CPU build compiles it too and the tests check the plan without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>

#include "shared/params.h"

namespace cmfq {

constexpr int kThreads = 128;
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;

// Dynamic shared memory a kernel may take without opting in (cudaFuncSetAttribute).
constexpr size_t kDefaultSharedBytes = 48 * 1024;

// One agent's workspace, in shared memory or, for heads too wide for it, in global memory.
template <typename T>
struct Workspace {
  T* x;        // [A] the action vector being evaluated: mean, then causal mean
  T* proj;     // [H] its action projection
  T* block_a;  // [W] block scratch
  T* block_b;  // [W]
  T* layers;   // [H + tail widths] the reference's pre-activations, layer after layer
  T* probs;    // [A] the reference policy
  T* effect;   // [max(A, K)] effect per distinct action (one-hot) or per neighbour (distributions)
  T* effects;  // [K]
  T* weights;  // [K]
  T* warp;     // [kWarps * 2W] each warp's change and scratch vectors
  int* counts; // [A] how many valid neighbours took each action
};

// Lays the workspace out from `base` (pointers are set only when `ws` is given); returns its size
// in bytes, a multiple of 16 so that consecutive agents' workspaces stay aligned.
template <typename T>
CMFQ_HD size_t workspace_layout(const CausalWeightsParams<T>& p, unsigned char* base,
                                Workspace<T>* ws) {
  const size_t A = p.n_actions, K = p.slots, H = p.first_width(), W = p.max_width();
  size_t layers = H;
  for (int l = 0; l < p.n_tail; ++l) layers += p.tail[l].out;
  size_t bytes = 0;
  auto next = [&bytes](size_t count) {
    const size_t offset = bytes;
    bytes += count * sizeof(T);
    return offset;
  };
  const size_t x = next(A), proj = next(H), block_a = next(W), block_b = next(W);
  const size_t layer_values = next(layers), probs = next(A), effect = next(A > K ? A : K);
  const size_t effects = next(K), weights = next(K), warp = next(kWarps * 2 * W);
  const size_t counts = bytes;
  bytes += A * sizeof(int);
  if (ws) {
    auto at = [base](size_t offset) { return reinterpret_cast<T*>(base + offset); };
    *ws = Workspace<T>{at(x),       at(proj),   at(block_a), at(block_b), at(layer_values),
                       at(probs),   at(effect), at(effects), at(weights), at(warp),
                       reinterpret_cast<int*>(base + counts)};
  }
  return (bytes + 15) / 16 * 16;
}

// Where a launch keeps each block's workspace, and how many blocks it starts.
struct KernelPlan {
  size_t workspace_bytes = 0;  // per block
  bool in_shared = true;       // else in a global buffer of blocks * workspace_bytes
  bool opt_in = false;         // shared memory above the default: cudaFuncSetAttribute first
  unsigned blocks = 0;         // grid size; each block strides over the agents
};

// Blocks per SM when the workspaces live in global memory: enough to hide latency, few enough
// that the buffer stays a small multiple of one workspace per resident block.
constexpr int64_t kGlobalBlocksPerSm = 4;
constexpr int64_t kMaxBlocks = 1 << 20;

// The plan for `batch` agents, each needing `workspace_bytes`, on a device that lets a block opt
// in to `optin_shared_bytes` of shared memory and has `sm_count` SMs.
inline KernelPlan plan_kernel(int64_t batch, size_t workspace_bytes, size_t optin_shared_bytes,
                              int sm_count) {
  KernelPlan plan;
  plan.workspace_bytes = workspace_bytes;
  plan.in_shared = workspace_bytes <= optin_shared_bytes;
  plan.opt_in = plan.in_shared && workspace_bytes > kDefaultSharedBytes;
  const int64_t sms = sm_count > 0 ? sm_count : 1;
  const int64_t most = plan.in_shared ? kMaxBlocks : kGlobalBlocksPerSm * sms;
  plan.blocks = static_cast<unsigned>(batch < most ? batch : most);
  return plan;
}

}  // namespace cmfq
