/*
 * dtype.c: names and sizes of the element types (kept apart from engine.c so
 * the model parsers build alone, e.g. in the fuzz target).
 */
#include <string.h>

#include "common/kvf_err.h"
#include "engine/kvf_engine.h"

const char *kvf_dtype_name(kvf_dtype dt)
{
	switch (dt) {
	case KVF_DTYPE_F32: return "f32";
	case KVF_DTYPE_BF16: return "bf16";
	case KVF_DTYPE_F16: return "f16";
	default: return "auto";
	}
}

int kvf_dtype_parse(const char *s, kvf_dtype *out)
{
	static const struct {
		const char *name;
		kvf_dtype dt;
	} names[] = {
		{"auto", KVF_DTYPE_AUTO}, {"f32", KVF_DTYPE_F32},      {"fp32", KVF_DTYPE_F32},
		{"float32", KVF_DTYPE_F32}, {"bf16", KVF_DTYPE_BF16}, {"bfloat16", KVF_DTYPE_BF16},
		{"f16", KVF_DTYPE_F16},   {"fp16", KVF_DTYPE_F16},    {"float16", KVF_DTYPE_F16},
	};
	for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++)
		if (!strcmp(s, names[i].name)) {
			*out = names[i].dt;
			return 0;
		}
	return kvf_errf(KVF_E_INVAL, "unknown dtype '%s' (f32, bf16, f16, auto)", s ? s : "");
}

size_t kvf_dtype_size(kvf_dtype dt)
{
	return dt == KVF_DTYPE_F32 ? 4 : dt == KVF_DTYPE_AUTO ? 0 : 2;
}
