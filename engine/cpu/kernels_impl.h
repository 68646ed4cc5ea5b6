/*
 * kernels_impl.h: the CPU kernels, written once in portable C with vector
 * extensions and included by each kernels_<isa>.c with KVF_VL (floats per
 * vector) and KVF_KERNELS_NAME defined. Compiled with -O3 and
 * -ffp-contract=fast so multiply-adds become FMAs where the ISA has them;
 * these files only widen 16-bit values (exact), never narrow.
 */
#include <stdint.h>
#include <string.h>

#include "engine/cpu/kernels.h"
#include "engine/dtype.h"

#ifndef KVF_VL
#error "define KVF_VL"
#endif

typedef float vf __attribute__((vector_size(KVF_VL * 4)));

static inline vf vload(const float *p)
{
	vf v;
	memcpy(&v, p, sizeof v);
	return v;
}

/* Fixed pairwise order: every kernel reduces the same way. */
static inline float hsum(vf v)
{
	float s[KVF_VL];
	memcpy(s, &v, sizeof v);
	for (int w = KVF_VL / 2; w >= 1; w /= 2)
		for (int i = 0; i < w; i++)
			s[i] += s[i + w];
	return s[0];
}

static void to_f32(float *dst, const void *src, kvf_dtype dt, size_t n)
{
	if (dt == KVF_DTYPE_BF16) {
		const uint16_t *s = src;
		for (size_t i = 0; i < n; i++)
			dst[i] = kvf_bf16_to_f32(s[i]);
	} else if (dt == KVF_DTYPE_F16) {
		const uint16_t *s = src;
		for (size_t i = 0; i < n; i++)
			dst[i] = kvf_f16_to_f32(s[i]);
	} else {
		memcpy(dst, src, n * sizeof(float));
	}
}

static inline float tail(const float *x, const float *w, int j, int k)
{
	float s = 0;
	for (; j < k; j++)
		s += x[j] * w[j];
	return s;
}

#define ACC(t, r) a##t##r
#define FIN(t, r) y[(t) * ldy + (r)] = hsum(ACC(t, r)) + tail(x + (t) * ldx, w + (r) * (size_t)k, kv, k)

/* 4 tokens x 4 rows: 16 accumulators, each x and w vector loaded once. */
static void mk4x4(float *y, size_t ldy, const float *x, size_t ldx, const float *w, int k)
{
	vf a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0}, a12 = {0}, a13 = {0};
	vf a20 = {0}, a21 = {0}, a22 = {0}, a23 = {0}, a30 = {0}, a31 = {0}, a32 = {0}, a33 = {0};
	int kv = k - k % KVF_VL;
	const float *w0 = w, *w1 = w + k, *w2 = w + 2 * (size_t)k, *w3 = w + 3 * (size_t)k;
	for (int j = 0; j < kv; j += KVF_VL) {
		vf x0 = vload(x + j), x1 = vload(x + ldx + j);
		vf x2 = vload(x + 2 * ldx + j), x3 = vload(x + 3 * ldx + j);
		vf v0 = vload(w0 + j), v1 = vload(w1 + j), v2 = vload(w2 + j), v3 = vload(w3 + j);
		a00 += x0 * v0; a01 += x0 * v1; a02 += x0 * v2; a03 += x0 * v3;
		a10 += x1 * v0; a11 += x1 * v1; a12 += x1 * v2; a13 += x1 * v3;
		a20 += x2 * v0; a21 += x2 * v1; a22 += x2 * v2; a23 += x2 * v3;
		a30 += x3 * v0; a31 += x3 * v1; a32 += x3 * v2; a33 += x3 * v3;
	}
	FIN(0, 0); FIN(0, 1); FIN(0, 2); FIN(0, 3);
	FIN(1, 0); FIN(1, 1); FIN(1, 2); FIN(1, 3);
	FIN(2, 0); FIN(2, 1); FIN(2, 2); FIN(2, 3);
	FIN(3, 0); FIN(3, 1); FIN(3, 2); FIN(3, 3);
}

/* 1 token x 4 rows (decode). */
static void mk1x4(float *y, size_t ldy, const float *x, size_t ldx, const float *w, int k)
{
	vf a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0};
	int kv = k - k % KVF_VL;
	const float *w0 = w, *w1 = w + k, *w2 = w + 2 * (size_t)k, *w3 = w + 3 * (size_t)k;
	for (int j = 0; j < kv; j += KVF_VL) {
		vf x0 = vload(x + j);
		a00 += x0 * vload(w0 + j);
		a01 += x0 * vload(w1 + j);
		a02 += x0 * vload(w2 + j);
		a03 += x0 * vload(w3 + j);
	}
	(void)ldx;
	FIN(0, 0); FIN(0, 1); FIN(0, 2); FIN(0, 3);
}

/* 4 tokens x 1 row. */
static void mk4x1(float *y, size_t ldy, const float *x, size_t ldx, const float *w, int k)
{
	vf a00 = {0}, a10 = {0}, a20 = {0}, a30 = {0};
	int kv = k - k % KVF_VL;
	for (int j = 0; j < kv; j += KVF_VL) {
		vf v0 = vload(w + j);
		a00 += vload(x + j) * v0;
		a10 += vload(x + ldx + j) * v0;
		a20 += vload(x + 2 * ldx + j) * v0;
		a30 += vload(x + 3 * ldx + j) * v0;
	}
	FIN(0, 0); FIN(1, 0); FIN(2, 0); FIN(3, 0);
}

static void mk1x1(float *y, size_t ldy, const float *x, size_t ldx, const float *w, int k)
{
	vf a00 = {0};
	int kv = k - k % KVF_VL;
	for (int j = 0; j < kv; j += KVF_VL)
		a00 += vload(x + j) * vload(w + j);
	(void)ldx;
	FIN(0, 0);
}

static void gemm(float *y, size_t ldy, const float *x, size_t ldx, int n, const float *w,
		 int rows, int k)
{
	int t = 0;
	for (; t + 4 <= n; t += 4) {
		const float *xt = x + (size_t)t * ldx;
		float *yt = y + (size_t)t * ldy;
		int r = 0;
		for (; r + 4 <= rows; r += 4)
			mk4x4(yt + r, ldy, xt, ldx, w + (size_t)r * k, k);
		for (; r < rows; r++)
			mk4x1(yt + r, ldy, xt, ldx, w + (size_t)r * k, k);
	}
	for (; t < n; t++) {
		const float *xt = x + (size_t)t * ldx;
		float *yt = y + (size_t)t * ldy;
		int r = 0;
		for (; r + 4 <= rows; r += 4)
			mk1x4(yt + r, ldy, xt, ldx, w + (size_t)r * k, k);
		for (; r < rows; r++)
			mk1x1(yt + r, ldy, xt, ldx, w + (size_t)r * k, k);
	}
}

static float dot(const float *a, const float *b, int n)
{
	float y;
	mk1x1(&y, 1, a, 0, b, n);
	return y;
}

static void axpy(float *y, float a, const float *x, int n)
{
	for (int i = 0; i < n; i++)
		y[i] += a * x[i];
}

const kvf_cpu_kernels KVF_KERNELS_NAME = {
	.isa = KVF_KERNELS_ISA,
	.to_f32 = to_f32,
	.gemm = gemm,
	.dot = dot,
	.axpy = axpy,
};
