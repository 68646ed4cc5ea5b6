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

/* Fixed pairwise order (halves added, repeatedly), the same in every
 * kernel; done with shuffles so it stays in registers. */
typedef float vf2 __attribute__((vector_size(8)));
typedef float vf4 __attribute__((vector_size(16)));
#if KVF_VL >= 8
typedef float vf8 __attribute__((vector_size(32)));
#endif

static inline float hsum(vf v)
{
#if KVF_VL == 16
	vf8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
		__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
#elif KVF_VL == 8
	vf8 a = v;
#endif
#if KVF_VL >= 8
	vf4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
#else
	vf4 b = v;
#endif
	vf2 c = __builtin_shufflevector(b, b, 0, 1) + __builtin_shufflevector(b, b, 2, 3);
	return c[0] + c[1];
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

/* Vector loads of weights, widened in registers (exact). */
typedef uint16_t vh __attribute__((vector_size(KVF_VL * 2)));
typedef uint32_t vu __attribute__((vector_size(KVF_VL * 4)));

static inline vf wload_f32(const float *p)
{
	return vload(p);
}

static inline vf wload_bf16(const uint16_t *p)
{
	vh h;
	memcpy(&h, p, sizeof h);
	vu u = __builtin_convertvector(h, vu) << 16;
	vf f;
	memcpy(&f, &u, sizeof f);
	return f;
}

/* kvf_f16_to_f32 on a vector, selects written as masks */
static inline vf wload_f16(const uint16_t *p)
{
	vh h;
	memcpy(&h, p, sizeof h);
	vu w = __builtin_convertvector(h, vu) << 16;
	vu sign = w & 0x80000000u;
	vu two_w = w + w;
	vu nb = (two_w >> 4) + (0xE0u << 23);
	vf norm;
	memcpy(&norm, &nb, sizeof norm);
	norm = norm * 0x1.0p-112f;
	vu db = (two_w >> 17) | (126u << 23);
	vf den;
	memcpy(&den, &db, sizeof den);
	den = den - 0.5f;
	vu nu, du;
	memcpy(&nu, &norm, sizeof nu);
	memcpy(&du, &den, sizeof du);
	vu m = (vu)(two_w < (1u << 27)); /* all ones where denormal */
	vu r = sign | (du & m) | (nu & ~m);
	vf f;
	memcpy(&f, &r, sizeof f);
	return f;
}

static inline float sload_f32(const float *p)
{
	return *p;
}

static inline float sload_bf16(const uint16_t *p)
{
	return kvf_bf16_to_f32(*p);
}

static inline float sload_f16(const uint16_t *p)
{
	return kvf_f16_to_f32(*p);
}

/*
 * Register-blocked kernels, one set per weight type (f32 tiles, and bf16 /
 * f16 read straight from the mapped weights for small batches). Every
 * output is acc[lane] += x * w over j in steps of KVF_VL, then hsum, then a
 * scalar tail: the same operations in every kernel and every weight type
 * (widening is exact), hence results independent of batch shape.
 */
#define ACC(t, r) a##t##r
#define FIN(SUF, t, r)                                                                     \
	y[(t) * ldy + (r)] = hsum(ACC(t, r)) + tail##SUF(x + (t) * ldx, w + (r) * (size_t)k, kv, k)

#define KVF_DEFINE_KERNELS(SUF, WT)                                                        \
	static inline float tail##SUF(const float *x, const WT *w, int j, int k)           \
	{                                                                                  \
		float s = 0;                                                               \
		for (; j < k; j++)                                                         \
			s += x[j] * sload##SUF(w + j);                                     \
		return s;                                                                  \
	}                                                                                  \
	static void mk4x4##SUF(float *y, size_t ldy, const float *x, size_t ldx, const WT *w, \
			       int k)                                                      \
	{                                                                                  \
		vf a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0};       \
		vf a12 = {0}, a13 = {0}, a20 = {0}, a21 = {0}, a22 = {0}, a23 = {0};       \
		vf a30 = {0}, a31 = {0}, a32 = {0}, a33 = {0};                             \
		int kv = k - k % KVF_VL;                                                   \
		const WT *w0 = w, *w1 = w + k, *w2 = w + 2 * (size_t)k, *w3 = w + 3 * (size_t)k; \
		for (int j = 0; j < kv; j += KVF_VL) {                                     \
			vf x0 = vload(x + j), x1 = vload(x + ldx + j);                     \
			vf x2 = vload(x + 2 * ldx + j), x3 = vload(x + 3 * ldx + j);       \
			vf v0 = wload##SUF(w0 + j), v1 = wload##SUF(w1 + j);               \
			vf v2 = wload##SUF(w2 + j), v3 = wload##SUF(w3 + j);               \
			a00 += x0 * v0; a01 += x0 * v1; a02 += x0 * v2; a03 += x0 * v3;   \
			a10 += x1 * v0; a11 += x1 * v1; a12 += x1 * v2; a13 += x1 * v3;   \
			a20 += x2 * v0; a21 += x2 * v1; a22 += x2 * v2; a23 += x2 * v3;   \
			a30 += x3 * v0; a31 += x3 * v1; a32 += x3 * v2; a33 += x3 * v3;   \
		}                                                                          \
		FIN(SUF, 0, 0); FIN(SUF, 0, 1); FIN(SUF, 0, 2); FIN(SUF, 0, 3);            \
		FIN(SUF, 1, 0); FIN(SUF, 1, 1); FIN(SUF, 1, 2); FIN(SUF, 1, 3);            \
		FIN(SUF, 2, 0); FIN(SUF, 2, 1); FIN(SUF, 2, 2); FIN(SUF, 2, 3);            \
		FIN(SUF, 3, 0); FIN(SUF, 3, 1); FIN(SUF, 3, 2); FIN(SUF, 3, 3);            \
	}                                                                                  \
	static void mk1x4##SUF(float *y, size_t ldy, const float *x, size_t ldx, const WT *w, \
			       int k)                                                      \
	{                                                                                  \
		vf a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0};                             \
		int kv = k - k % KVF_VL;                                                   \
		const WT *w0 = w, *w1 = w + k, *w2 = w + 2 * (size_t)k, *w3 = w + 3 * (size_t)k; \
		for (int j = 0; j < kv; j += KVF_VL) {                                     \
			vf x0 = vload(x + j);                                              \
			a00 += x0 * wload##SUF(w0 + j);                                    \
			a01 += x0 * wload##SUF(w1 + j);                                    \
			a02 += x0 * wload##SUF(w2 + j);                                    \
			a03 += x0 * wload##SUF(w3 + j);                                    \
		}                                                                          \
		(void)ldx;                                                                 \
		FIN(SUF, 0, 0); FIN(SUF, 0, 1); FIN(SUF, 0, 2); FIN(SUF, 0, 3);            \
	}                                                                                  \
	static void mk4x1##SUF(float *y, size_t ldy, const float *x, size_t ldx, const WT *w, \
			       int k)                                                      \
	{                                                                                  \
		vf a00 = {0}, a10 = {0}, a20 = {0}, a30 = {0};                             \
		int kv = k - k % KVF_VL;                                                   \
		for (int j = 0; j < kv; j += KVF_VL) {                                     \
			vf v0 = wload##SUF(w + j);                                         \
			a00 += vload(x + j) * v0;                                          \
			a10 += vload(x + ldx + j) * v0;                                    \
			a20 += vload(x + 2 * ldx + j) * v0;                                \
			a30 += vload(x + 3 * ldx + j) * v0;                                \
		}                                                                          \
		FIN(SUF, 0, 0); FIN(SUF, 1, 0); FIN(SUF, 2, 0); FIN(SUF, 3, 0);            \
	}                                                                                  \
	static void mk1x1##SUF(float *y, size_t ldy, const float *x, size_t ldx, const WT *w, \
			       int k)                                                      \
	{                                                                                  \
		vf a00 = {0};                                                              \
		int kv = k - k % KVF_VL;                                                   \
		for (int j = 0; j < kv; j += KVF_VL)                                       \
			a00 += vload(x + j) * wload##SUF(w + j);                           \
		(void)ldx;                                                                 \
		FIN(SUF, 0, 0);                                                            \
	}                                                                                  \
	static void gemm##SUF(float *y, size_t ldy, const float *x, size_t ldx, int n,     \
			      const void *wv, int rows, int k)                             \
	{                                                                                  \
		const WT *w = wv;                                                          \
		int t = 0;                                                                 \
		for (; t + 4 <= n; t += 4) {                                               \
			const float *xt = x + (size_t)t * ldx;                             \
			float *yt = y + (size_t)t * ldy;                                   \
			int r = 0;                                                         \
			for (; r + 4 <= rows; r += 4)                                      \
				mk4x4##SUF(yt + r, ldy, xt, ldx, w + (size_t)r * k, k);    \
			for (; r < rows; r++)                                              \
				mk4x1##SUF(yt + r, ldy, xt, ldx, w + (size_t)r * k, k);    \
		}                                                                          \
		for (; t < n; t++) {                                                       \
			const float *xt = x + (size_t)t * ldx;                             \
			float *yt = y + (size_t)t * ldy;                                   \
			int r = 0;                                                         \
			for (; r + 4 <= rows; r += 4)                                      \
				mk1x4##SUF(yt + r, ldy, xt, ldx, w + (size_t)r * k, k);    \
			for (; r < rows; r++)                                              \
				mk1x1##SUF(yt + r, ldy, xt, ldx, w + (size_t)r * k, k);    \
		}                                                                          \
	}

KVF_DEFINE_KERNELS(_f32, float)
KVF_DEFINE_KERNELS(_bf16, uint16_t)
KVF_DEFINE_KERNELS(_f16, uint16_t)

static float dot(const float *a, const float *b, int n)
{
	float y;
	mk1x1_f32(&y, 1, a, 0, b, n);
	return y;
}

static void axpy(float *y, float a, const float *x, int n)
{
	for (int i = 0; i < n; i++)
		y[i] += a * x[i];
}

static void qk(const float *q, const float *k, int G, int nb, int hd, float scale, float *sc,
	       size_t stride)
{
	for (int h = 0; h < G; h++)
		for (int j = 0; j < nb; j++) {
			float y;
			mk1x1_f32(&y, 1, q + (size_t)h * hd, 0, k + (size_t)j * hd, hd);
			sc[(size_t)h * stride + j] = y * scale;
		}
}

static void pv(float *out, const float *p, size_t stride, const float *v, int G, int nb, int hd)
{
	for (int h = 0; h < G; h++) {
		float *o = out + (size_t)h * hd;
		const float *ph = p + (size_t)h * stride;
		for (int j = 0; j < nb; j++) {
			const float *vj = v + (size_t)j * hd;
			float a = ph[j];
			for (int i = 0; i < hd; i++)
				o[i] += a * vj[i];
		}
	}
}

const kvf_cpu_kernels KVF_KERNELS_NAME = {
	.isa = KVF_KERNELS_ISA,
	.to_f32 = to_f32,
	.gemm = gemm_f32,
	.gemm_bf16 = gemm_bf16,
	.gemm_f16 = gemm_f16,
	.dot = dot,
	.axpy = axpy,
	.qk = qk,
	.pv = pv,
};
