/*
 * sim_backend.c: the `sim` backend: a large model's timing and KV footprint
 * without its weights or its arithmetic.
 *
 * It plugs into the same vtable as the CPU backend but fills the optional
 * `forward` slot: a step sleeps for the time the configured deployment would
 * take (prefill tokens / prefill rate + a decode step time that grows with
 * batch size and attended context), writes every new token's KV slots in the
 * real pool with a cheap per-token pattern, and returns logits that put all
 * the mass on a token derived from (previous token, position), so greedy
 * generation is deterministic. A block that enters the prefix cache is
 * rewritten with the pattern of its key (block_keyed), so whoever pulls it
 * over the fabric can check the bytes with kvf_sim_pattern_check.
 *
 * The figures of the presets are approximations of public vLLM numbers on
 * H100s (bf16 weights), good enough for scheduling and routing studies; set
 * the fields explicitly to model something else. time_scale shrinks every
 * modelled duration (tests run at 0.01-0.1).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/internal.h"

static const kvf_sim_options presets[] = {
	{.preset = "llama3-8b-h100", .n_layers = 32, .n_kv_heads = 8, .head_dim = 128,
	 .vocab_size = 128256, .max_model_len = 8192, .prefill_tok_s = 20000,
	 .decode_base_ms = 6.5, .decode_per_seq_ms = 0.03, .decode_per_kctx_ms = 0.04},
	{.preset = "llama3-70b-h100x4", .n_layers = 80, .n_kv_heads = 8, .head_dim = 128,
	 .vocab_size = 128256, .max_model_len = 8192, .prefill_tok_s = 8000,
	 .decode_base_ms = 14.0, .decode_per_seq_ms = 0.08, .decode_per_kctx_ms = 0.08},
	{.preset = "tiny", .n_layers = 2, .n_kv_heads = 2, .head_dim = 16, .vocab_size = 512,
	 .max_model_len = 2048, .prefill_tok_s = 50000, .decode_base_ms = 1.0,
	 .decode_per_seq_ms = 0.01, .decode_per_kctx_ms = 0.0},
};

typedef struct sim_backend {
	kvf_backend base;
	kvf_sim_options o;
} sim_backend;

/* ------------------------------------------------------------------------ */
/* patterns                                                                 */

static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Word i of the pattern of key: base + i * stride (stride odd): every word
 * of a block differs, and blocks of different keys differ everywhere. */
static void pattern_params(kvf_blockkey key, uint64_t *base, uint64_t *stride)
{
	*base = mix64(key.lo ^ mix64(key.hi));
	*stride = mix64(key.hi + 0x5851f42d4c957f2dull) | 1;
}

void kvf_sim_pattern_fill(void *dst, size_t len, kvf_blockkey key)
{
	uint64_t b, s;
	pattern_params(key, &b, &s);
	uint8_t *d = dst;
	size_t nw = len / 8;
	for (size_t i = 0; i < nw; i++) {
		uint64_t w = b + (uint64_t)i * s;
		memcpy(d + i * 8, &w, 8);
	}
	if (len % 8) {
		uint64_t w = b + (uint64_t)nw * s;
		memcpy(d + nw * 8, &w, len % 8);
	}
}

int kvf_sim_pattern_check(const void *src, size_t len, kvf_blockkey key)
{
	uint64_t b, s;
	pattern_params(key, &b, &s);
	const uint8_t *p = src;
	size_t nw = len / 8;
	for (size_t i = 0; i < nw; i++) {
		uint64_t w = b + (uint64_t)i * s, g;
		memcpy(&g, p + i * 8, 8);
		if (g != w)
			return kvf_errf(KVF_E_PROTO, "sim pattern: mismatch at byte %zu of %zu",
					i * 8, len);
	}
	if (len % 8) {
		uint64_t w = b + (uint64_t)nw * s;
		if (memcmp(p + nw * 8, &w, len % 8))
			return kvf_errf(KVF_E_PROTO, "sim pattern: mismatch at byte %zu of %zu",
					nw * 8, len);
	}
	return 0;
}

/* ------------------------------------------------------------------------ */

static sim_backend *sim(kvf_backend *be)
{
	return (sim_backend *)be;
}

static void *sim_alloc(kvf_backend *be, size_t bytes)
{
	void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void sim_free(kvf_backend *be, void *p, size_t bytes)
{
	if (p)
		munmap(p, bytes ? bytes : 1);
}

static void sim_destroy(kvf_backend *be)
{
	kvf_free(be);
}

static void sim_block_copy(kvf_backend *be, const kvf_kvpool *p, int32_t dst, int32_t src)
{
	memcpy(p->base + (size_t)dst * p->lay.block_bytes, p->base + (size_t)src * p->lay.block_bytes,
	       p->lay.block_bytes);
}

static void sim_block_keyed(kvf_backend *be, kvf_engine *e, int32_t b, kvf_blockkey key)
{
	kvf_sim_pattern_fill(e->pool.base + (size_t)b * e->pool.lay.block_bytes,
			     e->pool.lay.block_bytes, key);
}

static void fill_u64(uint8_t *d, size_t len, uint64_t v)
{
	size_t i = 0;
	for (; i + 8 <= len; i += 8)
		memcpy(d + i, &v, 8);
	if (i < len)
		memcpy(d + i, &v, len - i);
}

static void ts_add_ns(struct timespec *t, double ns)
{
	long long n = (long long)ns;
	t->tv_sec += n / 1000000000ll;
	t->tv_nsec += n % 1000000000ll;
	if (t->tv_nsec >= 1000000000l) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000l;
	}
}

static int sim_forward(kvf_backend *be, kvf_engine *e, const kvf_fwd *f)
{
	const kvf_sim_options *o = &sim(be)->o;
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);

	/* KV: one 64-bit pattern per token slot, all layers and heads */
	const kvf_kv_layout *l = &e->pool.lay;
	size_t row = (size_t)l->head_dim * l->esize;
	for (int t = 0; t < f->n_tokens; t++) {
		int32_t b = f->slot[t] / l->block_size, off = f->slot[t] % l->block_size;
		uint8_t *blk = e->pool.base + (size_t)b * l->block_bytes;
		uint64_t v = mix64(((uint64_t)f->pos[t] << 32) ^ f->tokens[t]);
		for (int layer = 0; layer < l->n_layers; layer++)
			for (int kv = 0; kv < 2; kv++)
				for (int h = 0; h < l->n_kv_heads; h++)
					fill_u64(blk + kvf_kv_off(l, layer, kv, h, off) * l->esize,
						 row, v + (uint64_t)((layer * 2 + kv) * 64 + h));
	}

	/* logits: all mass on mix(token, position) % vocab */
	size_t V = (size_t)e->cfg.vocab;
	for (int i = 0; i < f->n_out; i++) {
		int t = f->out_tok[i];
		float *lg = f->logits + (size_t)i * V;
		memset(lg, 0, V * sizeof *lg);
		uint64_t h = mix64(((uint64_t)f->pos[t] << 32) ^ f->tokens[t] ^ 0xabcdefull);
		lg[h % V] = 10.0f;
	}

	/* time: prefill chunks at the prefill rate, single-token sequences as
	 * one decode step */
	double ms = 0;
	int n_dec = 0;
	long long ctx = 0, n_pre = 0;
	int t = 0;
	for (int s = 0; s < f->n_seqs; s++) {
		int n = 0;
		while (t + n < f->n_tokens && f->tok_seq[t + n] == s)
			n++;
		if (n == 1) {
			n_dec++;
			ctx += f->pos[t] + 1;
		} else {
			n_pre += n;
		}
		t += n;
	}
	if (n_pre && o->prefill_tok_s > 0)
		ms += 1000.0 * (double)n_pre / o->prefill_tok_s;
	if (n_dec)
		ms += o->decode_base_ms + o->decode_per_seq_ms * n_dec +
		      o->decode_per_kctx_ms * (double)ctx / 1024.0;
	ms *= o->time_scale;
	struct timespec until = start;
	ts_add_ns(&until, ms * 1e6);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
		;
	return 0;
}

static const kvf_backend_iface sim_iface = {
	.name = "sim",
	.destroy = sim_destroy,
	.alloc = sim_alloc,
	.free = sim_free,
	.forward = sim_forward,
	.block_keyed = sim_block_keyed,
	.block_copy = sim_block_copy,
};

int kvf_backend_sim_create(kvf_engine *e, kvf_backend **out)
{
	const kvf_sim_options *req = &e->opts.sim;
	const char *name = req->preset && *req->preset ? req->preset : "llama3-8b-h100";
	const kvf_sim_options *pr = NULL;
	for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
		if (!strcmp(presets[i].preset, name))
			pr = &presets[i];
	if (!pr)
		return kvf_errf(KVF_E_CONFIG,
				"sim: unknown preset '%s' (llama3-8b-h100, llama3-70b-h100x4, tiny)",
				name);
	sim_backend *sb = kvf_calloc(1, sizeof *sb);
	if (!sb)
		return KVF_E_NOMEM;
	kvf_sim_options o = *pr;
#define TAKE(f)                  \
	if (req->f > 0)          \
		o.f = req->f
	TAKE(n_layers);
	TAKE(n_kv_heads);
	TAKE(head_dim);
	TAKE(vocab_size);
	TAKE(max_model_len);
	TAKE(prefill_tok_s);
	TAKE(decode_base_ms);
	TAKE(decode_per_seq_ms);
	TAKE(decode_per_kctx_ms);
#undef TAKE
	o.time_scale = req->time_scale > 0 ? req->time_scale : 1.0;
	o.preset = NULL;
	sb->o = o;
	sb->base.iface = &sim_iface;
	sb->base.isa = "none";
	sb->base.host_memory = true;
	sb->base.n_threads = 1;

	kvf_model_config *c = &e->cfg;
	memset(c, 0, sizeof *c);
	snprintf(c->arch_name, sizeof c->arch_name, "sim:%s", name);
	c->arch = KVF_ARCH_SIM;
	c->n_layers = o.n_layers;
	c->n_kv_heads = o.n_kv_heads;
	c->n_heads = o.n_kv_heads;
	c->head_dim = o.head_dim;
	c->hidden = o.n_kv_heads * o.head_dim;
	c->ffn = c->hidden;
	c->vocab = o.vocab_size;
	c->max_pos = o.max_model_len;
	c->rope_theta = 10000;
	c->norm_eps = 1e-5f;
	c->bos_id = KVF_TOKEN_NONE;
	c->n_eos = 0;
	*out = &sb->base;
	return 0;
}
