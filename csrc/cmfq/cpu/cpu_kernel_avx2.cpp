// The CPU kernels for x86-64 with AVX2 and FMA; picked at run time where the CPU has them.
#include "cpu/cpu_kernel.h"

#ifdef CMFQ_CPU_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

#define CMFQ_CPU_VARIANT cpu_avx2
#include "cpu/cpu_kernel_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
