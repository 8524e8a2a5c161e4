// The op in the stacked-rows formulation: the intervention rows of all agents stacked into one
// matrix, so that each trunk layer after the first is one GEMM over every row (BLAS on the CPU,
// cuBLAS on CUDA, where half-precision rows use the tensor cores). As in the per-agent kernels, a
// row carries the *change* of each layer's pre-activation relative to its agent's reference (the
// mean action), so that small effects keep their digits.
//
// Rows: an agent has M = min(K, A) of them for one-hot actions (all A actions when K >= A, else
// one per neighbour slot) and M = K for distributions, masked or repeated ones included: a fixed
// count, so that nothing waits for the GPU to size a buffer (and CUDA graphs can capture it).
//
// Written once with ATen ops for every device. Between the GEMMs, each step is one function per
// agent or row (stacked_steps.h): a parallel loop on the CPU, one CUDA kernel launch on CUDA
// (stacked_kernels.cu), in place of a chain of small ATen ops (a launch each).
// CUDA's default above 1024 agents a call, with its fused trunk, where it is faster than the
// per-agent kernel; below, and on the CPU, the per-agent kernel is (benchmarks/results/notes.md).
// The op's `formulation` argument chooses on either device (glue/formulation.h).
#pragma once

#include <ATen/ATen.h>

#include "shared/params.h"
#include "glue/prepare.h"

namespace cmfq {

// The op's outputs for a prepared call (prepare_call with kernel_layout = false). fused_trunk: a
// trunk of two layers after the first runs in one CUDA launch (trunk_kernel.cu) where the head
// fits it (CUDA's default above kPerAgentMaxBatchCuda agents, glue/formulation.h).
Outputs stacked_forward(PreparedCall& call, bool fused_trunk);

// The backward's gradients for a prepared call whose weights, effects and causal_mean_action are
// the forward's (prepare_backward): the chain rule of src/cmfq/gradient.py on stacked rows.
KernelGrads stacked_backward(const PreparedCall& call, const IncomingGrads& incoming);

// One step between two GEMMs: each row's change of a layer's pre-activation, through its ReLU.
struct RowChange {
  at::Tensor reference;  // [B, H] the layer's pre-activation under each agent's mean action
  // [B * M, H] the rows' change; undefined for the first layer with one-hot actions, whose change
  // is action_table[a] - reference_proj[b] for row m of agent b, a = actions[b, m], or a = m where
  // `actions` is undefined.
  at::Tensor change;
  at::Tensor action_table;    // [A, H]
  at::Tensor reference_proj;  // [B, H] the mean action's projection
  at::Tensor actions;         // [B, M] int64 in [0, A)
  int64_t rows_per_agent = 0;
  bool relu = true;  // false: the change itself (the only trunk layer is the output layer)
  at::ScalarType row_dtype = at::kFloat;
};

#ifdef CMFQ_WITH_CUDA
// The CUDA launches of the steps (causal_weights_cuda.cpp), on the current stream: the change
// through a ReLU, and the steps of stacked_steps.h; the weights step's rows are of `row_dtype`.
at::Tensor row_change_cuda(const RowChange& step);
template <typename T>
void stacked_rows_cuda(const StackedRowsParams<T>& params);
template <typename T>
void stacked_weights_cuda(const StackedWeightsParams<T>& params, at::ScalarType row_dtype);
template <typename T>
void stacked_first_cuda(const StackedFirstParams<T>& params);
template <typename T>
void stacked_kl_grad_cuda(const StackedKlGradParams<T>& params);
// Each row's change of Q from the first layer's step through a two-layer trunk after it (second
// layer weight2 [H1, H2] with its reference pre-activation [B, H2], output layer weight3
// [H2, A]) in one launch, in float32; an undefined tensor where the fused trunk does not take the
// head (H1 <= 128, H2 <= 64, A <= 32, float32 rows, or half rows on the tensor cores:
// trunk_tensor_cores, glue/formulation.h).
at::Tensor fused_trunk_cuda(const RowChange& first, const at::Tensor& weight2,
                            const at::Tensor& reference2, const at::Tensor& weight3);
#endif

}  // namespace cmfq
