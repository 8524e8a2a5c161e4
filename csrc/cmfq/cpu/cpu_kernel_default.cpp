// The CPU kernels for any CPU: the baseline instruction set of the build (SSE2 on x86-64).
#include "cpu/cpu_kernel.h"

#define CMFQ_CPU_VARIANT cpu_default
#include "cpu/cpu_kernel_impl.h"
