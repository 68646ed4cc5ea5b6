/* kernels_generic.c: the CPU kernels for any target (portable build). */
#define KVF_VL 4 /* 16-byte vectors: baseline on x86-64 (SSE2) and arm64 (NEON) */
#define KVF_KERNELS_NAME kvf_cpu_kernels_generic
#define KVF_KERNELS_ISA "generic"
#include "engine/cpu/kernels_impl.h"
