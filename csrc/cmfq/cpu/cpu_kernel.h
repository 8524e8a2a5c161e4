// The CPU kernels' entry points, one set per instruction-set variant. The body
// (cpu_kernel_impl.h) is compiled once per variant, by cpu_kernel_<variant>.cpp, each under its
// own `#pragma GCC target`; causal_weights_cpu.cpp picks one at run time.
//
// Everything a variant file includes comes through this header, *before* its target pragma, so
// that the inline functions of the standard library, ATen and agent_math.h keep the baseline
// target: one copy of each is linked into the library, and it must run on every CPU. Only the
// variant's own code, in its own namespace, is compiled for the wider instruction set.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "shared/agent_math.h"
#include "shared/params.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CMFQ_CPU_X86 1
#endif

namespace cmfq {

// The CPU kernel variants that this build has and this CPU runs, narrowest first ("default",
// then "avx2" and "avx512" on x86-64), and the one that runs now: the widest, unless the
// environment variable CMFQ_CPU_CAPABILITY names another.
std::vector<std::string> cpu_capabilities();
std::string cpu_capability();

// What the backward reads and writes on top of the forward's description: `forward` points at
// the saved inputs, and its weights, effects and causal_mean_action at the forward's outputs.
template <typename T>
struct CausalWeightsGradParams {
  CausalWeightsParams<T> forward;
  const T* grad_weights;             // [B, K]
  const T* grad_effects;             // [B, K]
  const T* grad_causal_mean_action;  // [B, A]
  const T* grad_q_causal;            // [B, A]

  // Outputs, zero-initialised by the caller. Layer gradients are in the kernel's [in, out]
  // layout (the transpose of torch's weight).
  T* grad_state_proj;  // [B, H1]: gradient of s W1s^T + b1
  T* grad_encoder_wt[kMaxLayers];
  T* grad_encoder_b[kMaxLayers];
  T* grad_action_proj_wt;
  T* grad_tail_wt[kMaxLayers];
  T* grad_tail_b[kMaxLayers];
};

// run(forward params) computes the op, run(gradient params) its backward.
#define CMFQ_DECLARE_CPU_VARIANT(variant)               \
  namespace variant {                                   \
  void run(const CausalWeightsParams<float>& p);        \
  void run(const CausalWeightsParams<double>& p);       \
  void run(const CausalWeightsGradParams<float>& g);    \
  void run(const CausalWeightsGradParams<double>& g);   \
  }

CMFQ_DECLARE_CPU_VARIANT(cpu_default)
#ifdef CMFQ_CPU_X86
CMFQ_DECLARE_CPU_VARIANT(cpu_avx2)
CMFQ_DECLARE_CPU_VARIANT(cpu_avx512)
#endif

#undef CMFQ_DECLARE_CPU_VARIANT

}  // namespace cmfq
