/*
 * kernels.c: picks the kernel table at run time (__builtin_cpu_supports), or
 * the one KVF_CPU_ISA names when this CPU can run it.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/cpu/kernels.h"

const kvf_cpu_kernels *kvf_cpu_kernels_select(void)
{
	const char *force = getenv("KVF_CPU_ISA");
#if defined(__x86_64__)
	__builtin_cpu_init();
	int has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		     __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
	int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	if (force && !strcmp(force, "generic"))
		return &kvf_cpu_kernels_generic;
	if (force && !strcmp(force, "avx2") && has2)
		return &kvf_cpu_kernels_avx2;
	if (has512 && !(force && !strcmp(force, "avx2")))
		return &kvf_cpu_kernels_avx512;
	if (has2)
		return &kvf_cpu_kernels_avx2;
#else
	(void)force;
#endif
	return &kvf_cpu_kernels_generic;
}
