// The CPU kernels for x86-64 with AVX-512 (F, BW, DQ, VL: ATen's AVX512 level); picked at run
// time where the CPU has them.
#include "cpu/cpu_kernel.h"

#ifdef CMFQ_CPU_X86
#if defined(__clang__)
#pragma clang attribute push( \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
#endif

#define CMFQ_CPU_VARIANT cpu_avx512
#include "cpu/cpu_kernel_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
