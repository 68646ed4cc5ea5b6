/*
 * blockkey.c: chained, tenant-salted 128-bit block keys (XXH3-128 keyed with a
 * secret derived from the cluster secret).
 *
 * xxhash is compiled in header-only (XXH_INLINE_ALL) so every binary hashes
 * with exactly the Debian 0.8.1 code it was built against: no link dependency
 * and no version skew between a gateway and a worker. The byte strings hashed
 * are fixed little-endian layouts (docs/block-keys.md) assembled explicitly,
 * so big-endian hosts produce the same keys. The hot call, one key per block,
 * builds its message in a stack buffer and hashes it in one shot: no
 * allocation, no locks, the ctx is read-only after creation.
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/kvf_blockkey.h"

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

#include <string.h>

#define SECRET_LEN 192 /* == XXH_SECRET_DEFAULT_SIZE */

_Static_assert(SECRET_LEN >= XXH3_SECRET_SIZE_MIN, "XXH3 secret too short");
_Static_assert(sizeof(uint32_t) == 4, "token ids are u32");

/* The secret sits on a 64-byte boundary inside the allocation (kvf_malloc
 * only promises 16): XXH3 reads it for every key, and an aligned secret
 * measured ~10% faster per 16-token key than one at a 16-byte offset. */
struct kvf_blockkey_ctx {
	unsigned char *secret; /* -> into raw, 64-byte aligned */
	unsigned char raw[SECRET_LEN + 63];
};

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_LE 1
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_LE 0
#else
#error "cannot tell the host byte order"
#endif

static void put_u32le(unsigned char *p, uint32_t v)
{
#if !HOST_LE
	v = __builtin_bswap32(v);
#endif
	memcpy(p, &v, 4);
}

static void put_u64le(unsigned char *p, uint64_t v)
{
#if !HOST_LE
	v = __builtin_bswap64(v);
#endif
	memcpy(p, &v, 8);
}

/*
 * Writes n token ids as little-endian u32 (a plain copy on LE hosts). GCC
 * would turn this loop into `rep movsq` or a memcpy call, whose start-up cost
 * more than doubled the time per 16-token key (measured: ~22 ns vs ~10 ns), so
 * loop-pattern distribution is off here.
 */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void put_tokens_le(unsigned char *p, const uint32_t *tokens, size_t n)
{
#if HOST_LE
	size_t i = 0;
	for (; i + 4 <= n; i += 4)
		memcpy(p + 4 * i, tokens + i, 16);
	for (; i < n; i++)
		memcpy(p + 4 * i, tokens + i, 4);
#else
	for (size_t i = 0; i < n; i++)
		put_u32le(p + 4 * i, tokens[i]);
#endif
}

static kvf_blockkey from_xxh(XXH128_hash_t h)
{
	kvf_blockkey k = { .lo = h.low64, .hi = h.high64 };
	return k;
}

int kvf_blockkey_ctx_new(const void *cluster_secret, size_t len, kvf_blockkey_ctx **out)
{
	*out = NULL;
	if (len > 0 && !cluster_secret)
		return kvf_errf(KVF_E_INVAL, "blockkey: cluster secret is NULL with length %zu", len);
	kvf_blockkey_ctx *ctx = kvf_malloc(sizeof(*ctx));
	if (!ctx)
		return kvf_errf(KVF_E_NOMEM, "blockkey: cannot allocate the hashing context");
	ctx->secret = (unsigned char *)(((uintptr_t)ctx->raw + 63) & ~(uintptr_t)63);
	if (len == 0) {
		/* No cluster secret: XXH3's own default secret, so keys equal plain
		 * XXH3-128 of the messages (checkable with `xxhsum -H2`). Note that
		 * XXH3_generateSecret(.., NULL, 0) would NOT give this: it scrambles
		 * kSecret. */
		memcpy(ctx->secret, XXH3_kSecret, SECRET_LEN);
	} else if (XXH3_generateSecret(ctx->secret, SECRET_LEN, cluster_secret, len) != XXH_OK) {
		kvf_free(ctx);
		return kvf_errf(KVF_E_INTERNAL, "blockkey: XXH3_generateSecret failed");
	}
	*out = ctx;
	return 0;
}

void kvf_blockkey_ctx_free(kvf_blockkey_ctx *ctx)
{
	if (!ctx)
		return;
	/* The secret is key material: do not leave it in freed memory. */
	memset(ctx->raw, 0, sizeof(ctx->raw));
	__asm__ __volatile__("" : : "r"(ctx->raw) : "memory");
	kvf_free(ctx);
}

kvf_blockkey kvf_blockkey_root(const kvf_blockkey_ctx *ctx, const char *model_id,
			       const void *tenant_salt, size_t salt_len)
{
	/* Once per request, inputs of any length: the streaming API (whose digest
	 * equals the one-shot hash of the concatenation) with its state on the
	 * stack. */
	XXH3_state_t st;
	unsigned char len4[4];
	size_t model_len = model_id ? strlen(model_id) : 0;

	XXH3_INITSTATE(&st);
	XXH3_128bits_reset_withSecret(&st, ctx->secret, SECRET_LEN);
	put_u32le(len4, (uint32_t)model_len);
	XXH3_128bits_update(&st, len4, 4);
	if (model_len)
		XXH3_128bits_update(&st, model_id, model_len);
	put_u32le(len4, (uint32_t)salt_len);
	XXH3_128bits_update(&st, len4, 4);
	if (salt_len)
		XXH3_128bits_update(&st, tenant_salt, salt_len);
	return from_xxh(XXH3_128bits_digest(&st));
}

/* Blocks larger than the stack buffer: stream parent then the tokens. Kept
 * out of line so the fast path's frame stays small. */
__attribute__((noinline)) static kvf_blockkey next_streaming(const kvf_blockkey_ctx *ctx, const unsigned char parent16[16],
				   const uint32_t *tokens, size_t n_tokens)
{
	XXH3_state_t st;
	XXH3_INITSTATE(&st);
	XXH3_128bits_reset_withSecret(&st, ctx->secret, SECRET_LEN);
	XXH3_128bits_update(&st, parent16, 16);
#if HOST_LE
	XXH3_128bits_update(&st, tokens, n_tokens * 4);
#else
	unsigned char chunk[4 * 256];
	while (n_tokens) {
		size_t n = n_tokens < 256 ? n_tokens : 256;
		put_tokens_le(chunk, tokens, n);
		XXH3_128bits_update(&st, chunk, n * 4);
		tokens += n;
		n_tokens -= n;
	}
#endif
	return from_xxh(XXH3_128bits_digest(&st));
}

kvf_blockkey kvf_blockkey_next(const kvf_blockkey_ctx *ctx, kvf_blockkey parent,
			       const uint32_t *tokens, size_t n_tokens)
{
	unsigned char msg[16 + 4 * KVF_BLOCKKEY_FAST_MAX_TOKENS];

	put_u64le(msg, parent.lo);
	put_u64le(msg + 8, parent.hi);
	if (n_tokens > KVF_BLOCKKEY_FAST_MAX_TOKENS)
		return next_streaming(ctx, msg, tokens, n_tokens);
	if (n_tokens)
		put_tokens_le(msg + 16, tokens, n_tokens);
	return from_xxh(XXH3_128bits_withSecret(msg, 16 + 4 * n_tokens, ctx->secret, SECRET_LEN));
}

size_t kvf_blockkey_chain(const kvf_blockkey_ctx *ctx, kvf_blockkey root, const uint32_t *tokens,
			  size_t n_tokens, size_t block_size, kvf_blockkey *out, size_t max_out)
{
	if (block_size == 0)
		return 0;
	size_t n = n_tokens / block_size;
	if (n > max_out)
		n = max_out;
	kvf_blockkey k = root;
	for (size_t i = 0; i < n; i++) {
		k = kvf_blockkey_next(ctx, k, tokens + i * block_size, block_size);
		out[i] = k;
	}
	return n;
}

static const char hexdig[] = "0123456789abcdef";

void kvf_blockkey_to_hex(kvf_blockkey key, char out[KVF_BLOCKKEY_HEX_LEN + 1])
{
	for (int i = 0; i < 16; i++) {
		out[i] = hexdig[(key.hi >> (60 - 4 * i)) & 0xf];
		out[16 + i] = hexdig[(key.lo >> (60 - 4 * i)) & 0xf];
	}
	out[KVF_BLOCKKEY_HEX_LEN] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int kvf_blockkey_from_hex(const char *hex, kvf_blockkey *out)
{
	if (!hex)
		return kvf_errf(KVF_E_PARSE, "block key: NULL string");
	uint64_t w[2] = { 0, 0 };
	for (int i = 0; i < KVF_BLOCKKEY_HEX_LEN; i++) {
		int v = hexval(hex[i]);
		if (v < 0) {
			if (hex[i] == '\0')
				return kvf_errf(KVF_E_PARSE, "block key '%s': %d hex digits, want %d",
						hex, i, KVF_BLOCKKEY_HEX_LEN);
			return kvf_errf(KVF_E_PARSE, "block key '%.40s': character %d is not a hex digit",
					hex, i);
		}
		w[i / 16] = (w[i / 16] << 4) | (uint64_t)v;
	}
	if (hex[KVF_BLOCKKEY_HEX_LEN] != '\0')
		return kvf_errf(KVF_E_PARSE, "block key '%.40s...': longer than %d hex digits", hex,
				KVF_BLOCKKEY_HEX_LEN);
	out->hi = w[0];
	out->lo = w[1];
	return 0;
}
