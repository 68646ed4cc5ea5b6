/* kernels_avx512.c: the CPU kernels compiled for AVX-512 (F/BW/VL) (x86-64 only). */
#if defined(__x86_64__)
#define KVF_VL 16
#define KVF_KERNELS_NAME kvf_cpu_kernels_avx512
#define KVF_KERNELS_ISA "avx512"
#include "engine/cpu/kernels_impl.h"
#else
typedef int kvf_kernels_avx512_unused;
#endif
