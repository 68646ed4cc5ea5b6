/*
 * kernels.h: the CPU backend's inner loops, one table per instruction set
 * (engine-private).
 *
 * The same portable C (kernels_impl.h, GCC/Clang vector extensions, no
 * intrinsics) is compiled three times with different -m flags
 * (kernels_generic.c, kernels_avx2.c, kernels_avx512.c) and the table is
 * picked at run time from what the CPU reports, so one binary runs
 * everywhere and uses AVX-512 where present. KVF_CPU_ISA=generic|avx2|avx512
 * forces a flavour (tests, comparisons).
 *
 * Every output of gemm() is computed with the same sequence of operations
 * whatever the batch size or its position in a tile, so results do not
 * depend on how a batch is composed (the engine's batch-invariance tests
 * rely on it).
 */
#ifndef KVF_ENGINE_CPU_KERNELS_H
#define KVF_ENGINE_CPU_KERNELS_H

#include <stddef.h>

#include "engine/kvf_engine.h"

typedef struct kvf_cpu_kernels {
	const char *isa;
	/* dst[0..n) = src[0..n) widened to float32 */
	void (*to_f32)(float *dst, const void *src, kvf_dtype dt, size_t n);
	/* y[t*ldy + r] = dot(x[t*ldx ..], w[r*k ..], k) for t < n, r < rows;
	 * w float32 (a widened tile), or bf16 / f16 widened in registers */
	void (*gemm)(float *y, size_t ldy, const float *x, size_t ldx, int n, const void *w,
		     int rows, int k);
	void (*gemm_bf16)(float *y, size_t ldy, const float *x, size_t ldx, int n, const void *w,
			  int rows, int k);
	void (*gemm_f16)(float *y, size_t ldy, const float *x, size_t ldx, int n, const void *w,
			 int rows, int k);
	float (*dot)(const float *a, const float *b, int n);
	/* y[0..n) += a * x[0..n) */
	void (*axpy)(float *y, float a, const float *x, int n);
	/* attention over one block: sc[h*stride + j] = dot(q[h], k[j]) * scale */
	void (*qk)(const float *q /* [G][hd] */, const float *k /* [nb][hd] */, int G, int nb,
		   int hd, float scale, float *sc, size_t stride);
	/* out[h] += sum_j p[h*stride + j] * v[j] */
	void (*pv)(float *out /* [G][hd] */, const float *p, size_t stride,
		   const float *v /* [nb][hd] */, int G, int nb, int hd);
} kvf_cpu_kernels;

extern const kvf_cpu_kernels kvf_cpu_kernels_generic;
#if defined(__x86_64__)
extern const kvf_cpu_kernels kvf_cpu_kernels_avx2;
extern const kvf_cpu_kernels kvf_cpu_kernels_avx512;
#endif

/* The best table this CPU runs, or the one named by KVF_CPU_ISA. */
const kvf_cpu_kernels *kvf_cpu_kernels_select(void);

#endif
