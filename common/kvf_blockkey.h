/*
 * kvf_blockkey.h: block keys, the names under which KV blocks are cached,
 * looked up and transferred across the cluster.
 *
 * A prompt's tokens are cut into blocks of block_size tokens; only full blocks
 * are keyed. Key of block 0 chains from a root derived from (model id, tenant
 * salt); key of block i chains from the key of block i-1. Every key is a
 * 128-bit XXH3 hash keyed with a secret derived from the cluster secret, so a
 * key names the whole prefix up to and including its block, and two tenants
 * (different salts) never share a key. The exact byte-level definition, the
 * limits and the published test vectors are in docs/block-keys.md; gateway and
 * workers must all use this one implementation (or one matching the vectors).
 *
 * Functions here never allocate except kvf_blockkey_ctx_new(), and are safe to
 * call from any number of threads on one shared ctx.
 */
#ifndef KVF_BLOCKKEY_H
#define KVF_BLOCKKEY_H

#include <stddef.h>
#include <stdint.h>

/* A block key; lo/hi are XXH128_hash_t's low64/high64. */
typedef struct kvf_blockkey {
	uint64_t lo, hi;
} kvf_blockkey;

/* Opaque: the 192-byte XXH3 secret derived from the cluster secret. */
typedef struct kvf_blockkey_ctx kvf_blockkey_ctx;

/* Length of a key in canonical hex, without the terminating NUL. */
#define KVF_BLOCKKEY_HEX_LEN 32

/*
 * Block sizes up to this many tokens hash from a stack buffer in one shot;
 * larger blocks take XXH3's streaming path (same result, somewhat slower).
 */
#define KVF_BLOCKKEY_FAST_MAX_TOKENS 1024

/*
 * Derives the hashing secret from cluster_secret (len bytes; len 0 means "no
 * cluster secret": XXH3's default secret is used, see docs/block-keys.md).
 * Returns 0 and *out (free with kvf_blockkey_ctx_free), KVF_E_INVAL when
 * cluster_secret is NULL with len > 0, KVF_E_NOMEM.
 */
int kvf_blockkey_ctx_new(const void *cluster_secret, size_t len, kvf_blockkey_ctx **out);

/* Frees a ctx; NULL is a no-op. */
void kvf_blockkey_ctx_free(kvf_blockkey_ctx *ctx);

/*
 * The root key of a (model, tenant): model_id is a NUL-terminated string
 * (NULL counts as ""), tenant_salt salt_len bytes (NULL allowed when 0).
 */
kvf_blockkey kvf_blockkey_root(const kvf_blockkey_ctx *ctx, const char *model_id,
			       const void *tenant_salt, size_t salt_len);

/* The key of the block tokens[0..n_tokens) whose predecessor's key is parent. */
kvf_blockkey kvf_blockkey_next(const kvf_blockkey_ctx *ctx, kvf_blockkey parent,
			       const uint32_t *tokens, size_t n_tokens);

/*
 * Keys of the full blocks of tokens[0..n_tokens) chained from root: out[i] is
 * the key of tokens[i*block_size .. (i+1)*block_size). A trailing partial block
 * is not keyed. Returns the number of keys written: min(n_tokens / block_size,
 * max_out), 0 when block_size is 0.
 */
size_t kvf_blockkey_chain(const kvf_blockkey_ctx *ctx, kvf_blockkey root, const uint32_t *tokens,
			  size_t n_tokens, size_t block_size, kvf_blockkey *out, size_t max_out);

/* Canonical text form: 32 lowercase hex digits, hi then lo, big-endian. */
void kvf_blockkey_to_hex(kvf_blockkey key, char out[KVF_BLOCKKEY_HEX_LEN + 1]);

/*
 * Parses exactly 32 hex digits (either case) followed by the string's end.
 * Returns 0 and *out, or KVF_E_PARSE (out untouched).
 */
int kvf_blockkey_from_hex(const char *hex, kvf_blockkey *out);

static inline int kvf_blockkey_eq(kvf_blockkey a, kvf_blockkey b)
{
	return a.lo == b.lo && a.hi == b.hi;
}

#endif
