/*
 * blockkey_compat.h: the kvf_blockkey type for builds where common/ does not
 * (yet) ship kvf_blockkey.h. kvf_engine.h includes the common header whenever
 * it exists (__has_include), so this file is only a bridge: the engine needs
 * nothing but the 16-byte key type, since callers compute the keys.
 */
#ifndef KVF_BLOCKKEY_H
#define KVF_BLOCKKEY_H

#include <stdint.h>

typedef struct kvf_blockkey {
	uint64_t lo, hi;
} kvf_blockkey;

static inline int kvf_blockkey_eq(kvf_blockkey a, kvf_blockkey b)
{
	return a.lo == b.lo && a.hi == b.hi;
}

#endif
