/*
 * dtype.h: scalar conversions between float32 and the 16-bit formats the
 * engine stores (bf16 weights/KV, IEEE fp16 weights/KV).
 *
 * Widening (to f32) is exact and written as branch-free bit arithmetic so the
 * compiler vectorizes tile conversions in the CPU kernels. Narrowing rounds
 * to nearest-even; it relies on exact float rounding, so it must not be
 * compiled with floating-point contraction or fast-math (the kernel files
 * that use -ffp-contract=fast only widen).
 */
#ifndef KVF_ENGINE_DTYPE_H
#define KVF_ENGINE_DTYPE_H

#include <stdint.h>
#include <string.h>

static inline uint32_t kvf_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

static inline float kvf_bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

static inline float kvf_bf16_to_f32(uint16_t h)
{
	return kvf_bits_f32((uint32_t)h << 16);
}

static inline uint16_t kvf_f32_to_bf16(float f)
{
	uint32_t u = kvf_f32_bits(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

/* IEEE half to float (after Maratyszcza's FP16): exact, subnormals included. */
static inline float kvf_f16_to_f32(uint16_t h)
{
	uint32_t w = (uint32_t)h << 16;
	uint32_t sign = w & 0x80000000u;
	uint32_t two_w = w + w;
	float normalized = kvf_bits_f32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
	float denormalized = kvf_bits_f32((two_w >> 17) | (126u << 23)) - 0.5f;
	uint32_t r = sign | (two_w < (1u << 27) ? kvf_f32_bits(denormalized)
						: kvf_f32_bits(normalized));
	return kvf_bits_f32(r);
}

/* Float to IEEE half, round to nearest-even, overflow to inf, NaN kept. */
static inline uint16_t kvf_f32_to_f16(float f)
{
	float absf = kvf_bits_f32(kvf_f32_bits(f) & 0x7fffffffu);
	float base = (absf * 0x1.0p+112f) * 0x1.0p-110f;
	uint32_t w = kvf_f32_bits(f);
	uint32_t shl1_w = w + w;
	uint32_t sign = w & 0x80000000u;
	uint32_t bias = shl1_w & 0xFF000000u;
	if (bias < 0x71000000u)
		bias = 0x71000000u;
	base = kvf_bits_f32((bias >> 1) + 0x07800000u) + base;
	uint32_t bits = kvf_f32_bits(base);
	uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
	uint32_t mantissa_bits = bits & 0x00000FFFu;
	uint32_t nonsign = exp_bits + mantissa_bits;
	return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

#endif
