/* kernels_avx2.c: the CPU kernels compiled for AVX2 + FMA (x86-64 only). */
#if defined(__x86_64__)
#define KVF_VL 8
#define KVF_KERNELS_NAME kvf_cpu_kernels_avx2
#define KVF_KERNELS_ISA "avx2"
#include "engine/cpu/kernels_impl.h"
#else
typedef int kvf_kernels_avx2_unused;
#endif
