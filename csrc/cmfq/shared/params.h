// The plain description of one causal_weights call that the CPU and CUDA kernels read.
// No torch types here: the CUDA kernel is compiled without torch headers.
#pragma once

#include <cstdint>

// Host-and-device inline functions, so the CPU and CUDA kernels share one definition.
#if defined(__CUDACC__)
#define CMFQ_HD __host__ __device__ __forceinline__
#else
#define CMFQ_HD inline
#endif

namespace cmfq {

constexpr int kMaxLayers = 8;

// Below this total effect (nats) the proportional weights fall back to uniform (docs/spec.md,
// "Weights"). Python reads it as cmfq._C.EFFECT_THRESHOLD.
constexpr double kEffectThreshold = 1e-6;

// How effects become weights; Python reads the names as cmfq._C.WEIGHTINGS.
enum class Weighting : int { kProportional = 0, kSoftmax = 1 };
constexpr int kWeightingCount = 2;
constexpr const char* kWeightingNames[kWeightingCount] = {"proportional", "softmax"};

// y = x W^T + b with W^T stored row-major as [in, out], so that consecutive outputs are
// consecutive in memory (coalesced on the GPU, a plain GEMM operand on the CPU).
template <typename T>
struct DenseLayer {
  const T* weight_t;
  const T* bias;  // [out], or nullptr
  int in;
  int out;
};

template <typename T>
struct CausalWeightsParams {
  int64_t batch;
  int slots;      // K
  int n_actions;  // A
  // Which of the two the neighbours' actions are: indices [B, K] (int64), or distributions
  // [B, K, A]. Explicit, since an empty tensor's data pointer may be null either way.
  bool one_hot;
  const int64_t* actions;   // when one_hot
  const T* action_dists;    // otherwise
  const bool* mask;  // [B, K]

  // The first trunk layer split in two: W1 [s ; enc(x)] + b1 = state_proj + action_proj(enc(x)).
  const T* state_proj;    // [B, H1] = s W1s^T + b1, one GEMM for all agents before the kernel
  const T* action_table;  // [A, H1] = action_proj(enc(e_a)) for every one-hot action
  int n_encoder;
  DenseLayer<T> encoder[kMaxLayers];  // each followed by ReLU
  DenseLayer<T> action_proj;          // W1's action columns, no bias
  int n_tail;
  DenseLayer<T> tail[kMaxLayers];  // trunk layers after the first; ReLU between, none after last

  T temperature;
  Weighting weighting;
  T weight_temperature;

  T* weights;             // [B, K]
  T* effects;             // [B, K]
  T* mean_action;         // [B, A]
  T* causal_mean_action;  // [B, A]
  T* q_causal;            // [B, A]

  CMFQ_HD int first_width() const { return action_proj.out; }
  CMFQ_HD int max_width() const {
    int width = n_actions > action_proj.out ? n_actions : action_proj.out;
    for (int l = 0; l < n_encoder; ++l) width = encoder[l].out > width ? encoder[l].out : width;
    for (int l = 0; l < n_tail; ++l) width = tail[l].out > width ? tail[l].out : width;
    return width;
  }
};

// The stacked formulation's steps between its GEMMs (stacked.h, stacked_steps.h). Rows are
// agent-major, M per agent; R is the rows' storage type: T, or a half type for half-precision
// inputs (T is then float).

// Each row's change of one layer's pre-activation, through the layer's ReLU (relu_change).
template <typename T, typename R>
struct RowChangeParams {
  int64_t batch;
  int rows_per_agent;  // M
  int width;           // H
  const T* reference;  // [B, H] the pre-activation under each agent's mean action
  // [B * M, H] the rows' change; or null for the first layer with one-hot actions, whose change
  // is action_table[a] - reference_proj[b] for row m of agent b, a = actions[b * M + m], or m
  // where actions is null.
  const R* change;
  const T* action_table;    // [A, H]
  const T* reference_proj;  // [B, H]
  const int64_t* actions;   // [B, M] in [0, A), or null
  bool relu;                // false: the change itself
  R* out;                   // [B * M, H]
};

// How the fused trunk's tiles multiply (trunk_kernel.cu). Everything between the products (the
// ReLU changes, the references, the accumulators) is float32 in each.
enum class TrunkMath : int {
  kFma = 0,       // float32 FMAs on the CUDA cores
  kTf32x3 = 1,    // float32 operands on the tensor cores, each split into two TF32 parts (3xTF32)
  kFloat16 = 2,   // rows and weights rounded to float16 on the tensor cores (the rows' dtype)
  kBFloat16 = 3,  // the same in bfloat16
};

// The trunk fused (trunk_kernel.cu): for a head whose trunk after its first layer is two layers
// (H1 -> H2 -> A), each row's change of Q from its first layer's change, in one launch: the rows'
// activations stay on chip. Layouts as RowChangeParams; the weights are [in, out], contiguous.
template <typename T>
struct FusedTrunkParams {
  TrunkMath math;
  int64_t batch;
  int rows_per_agent;  // M
  int width1;          // H1
  int width2;          // H2
  int n_actions;       // A
  const T* reference1;  // [B, H1] the first layer's pre-activation under the mean action
  // [B * M, H1] the rows' first change; or null for one-hot actions, whose change is
  // action_table[a] - reference_proj[b] (as RowChangeParams).
  const T* change1;
  const T* action_table;    // [A, H1]
  const T* reference_proj;  // [B, H1]
  const int64_t* actions;   // [B, M] in [0, A), or null: row m is action m
  const T* weight2;         // [H1, H2]
  const T* reference2;      // [B, H2] the second layer's pre-activation under the mean action
  const T* weight3;         // [H2, A]
  T* q_change;              // [B * M, A]
};

// Before the rows: each agent's mean action and what its rows are made of.
template <typename T>
struct StackedRowsParams {
  int64_t batch;
  int slots;      // K
  int n_actions;  // A
  bool one_hot;
  const int64_t* actions;  // [B, K] when one_hot
  const T* action_dists;   // [B, K, A] otherwise
  const bool* mask;        // [B, K]
  T* mean_action;          // [B, A]
  int64_t* index;          // one-hot: [B, K] the action clamped into [0, A), 0 where masked
  bool* bad;               // one-hot: [B] whether a valid neighbour's action is outside [0, A)
  T* vectors;              // distributions: [B, K, A], 0 where masked
};

// After the rows' last GEMM: each row's KL, each neighbour's effect and weight, the causal mean
// action. Agents marked bad get NaN in all four outputs (and in mean_action).
template <typename T>
struct StackedWeightsParams {
  int64_t batch;
  int slots;           // K
  int n_actions;       // A
  int rows_per_agent;  // M
  bool by_action;      // one-hot with K >= A: row m of an agent is action m, else neighbour m
  const T* reference_values;  // [B, A] Q under each agent's mean action
  const void* q_change;       // [B * M, A] each row's change of Q, in the rows' type R
  const int64_t* index;       // one-hot: [B, K]
  const T* vectors;           // distributions: [B, K, A]
  const bool* mask;           // [B, K]
  const bool* bad;            // [B], or null
  T inv_tau;
  Weighting weighting;
  T weight_temperature;
  // The CPU's scratch (the CUDA kernel keeps an agent's in shared memory), or null.
  T* probs;   // [B, A] each agent's reference policy
  T* row_kl;  // [B * M] each row's KL
  T* effects;             // [B, K]
  T* weights;             // [B, K]
  T* causal_mean_action;  // [B, A]
  T* mean_action;         // [B, A], written only for bad agents
};

// The backward's rows: each agent's reference row, its M rows and its causal row (M + 2), whose
// first-layer pre-activation is state_proj + the projection of its action vector.
template <typename T>
struct StackedFirstParams {
  int64_t batch;
  int slots;           // K
  int rows_per_agent;  // M
  int width;           // H
  bool by_action;
  bool one_hot;
  const T* state_proj;   // [B, H]
  const T* input_proj;   // [A, H] the one-hot actions' projections, or [B * K, H] distributions'
  const T* mean_proj;    // [B, H]
  const T* causal_proj;  // [B, H]
  const int64_t* index;  // one-hot: [B, K]
  T* first;              // [B, M + 2, H]
};

// The backward from the gradient of the causal mean action to the values of each agent's rows
// (the chain rule of src/cmfq/gradient.py): through the weights to the effects, through the KLs
// to the reference and intervention rows; the causal row takes grad_q_causal.
template <typename T>
struct StackedKlGradParams {
  int64_t batch;
  int slots;           // K
  int n_actions;       // A
  int rows_per_agent;  // M
  bool by_action;
  const T* values;               // [B, M + 2, A] the rows' action values
  const T* grad_causal_head;     // [B, A] of the causal mean action, back through the head
  const T* grad_causal_mean_action;  // [B, A] incoming
  const T* grad_weights;         // [B, K] incoming
  const T* grad_effects;         // [B, K] incoming
  const T* grad_q_causal;        // [B, A] incoming
  const T* weights;              // [B, K] the forward's
  const T* effects;              // [B, K] the forward's
  const int64_t* index;          // one-hot: [B, K]
  const T* vectors;              // distributions: [B, K, A]
  const bool* mask;              // [B, K]
  T inv_tau;
  Weighting weighting;
  T weight_temperature;
  // [B, 1 + 3 M] per agent: its reference row's log-normaliser, then each row's gradient of its
  // effect, its effect and its log-normaliser (stacked_kl_grad_row's, for the reference row's).
  T* scratch;
  T* grad_values;  // [B, M + 2, A]
};

}  // namespace cmfq
