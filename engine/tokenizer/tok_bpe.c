/*
 * tok_bpe.c: the BPE model: one pre-token in, its ids out.
 *
 * Follows tokenizers/src/models/bpe (model.rs merge_word, word.rs
 * merge_all) step for step, because ids must be identical:
 *  - ignore_merges: a pre-token that is itself in the vocabulary is one id;
 *  - each character (with continuing_subword_prefix / end_of_word_suffix)
 *    becomes its vocabulary id, else its <0xXX> byte tokens (byte_fallback),
 *    else unk (fused when fuse_unk), else it is dropped;
 *  - merges are applied lowest rank first, leftmost first among equal ranks,
 *    from a binary heap of (rank, position) with stale entries skipped the
 *    way HF skips them (same pair -> same merged id).
 * Results are kept in the calling thread's cache (word -> ids), a flat
 * open-addressing table cleared when full, so repeated words cost one hash.
 */
#include "engine/tokenizer/tok_internal.h"

#include "common/kvf_err.h"

static inline bool heap_less(const struct tok_heap_ent *a, const struct tok_heap_ent *b)
{
	return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct tok_heap_ent *h, size_t *n, struct tok_heap_ent e)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!heap_less(&e, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = e;
}

static struct tok_heap_ent heap_pop(struct tok_heap_ent *h, size_t *n)
{
	struct tok_heap_ent top = h[0];
	struct tok_heap_ent last = h[--(*n)];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1;
		if (l >= *n)
			break;
		size_t m = l;
		if (l + 1 < *n && heap_less(&h[l + 1], &h[l]))
			m = l + 1;
		if (!heap_less(&h[m], &last))
			break;
		h[i] = h[m];
		i = m;
	}
	if (*n)
		h[i] = last;
	return top;
}

static int add_sym(struct tok_ctx *ctx, size_t *n, uint32_t id, uint32_t len)
{
	if (tok_raw_grow((void **)&ctx->syms, &ctx->syms_cap, *n + 1, sizeof(*ctx->syms)) != 0)
		return KVF_E_NOMEM;
	struct tok_sym *s = &ctx->syms[*n];
	s->id = id;
	s->len = len;
	s->prev = (int32_t)*n - 1;
	s->next = -1;
	if (*n)
		ctx->syms[*n - 1].next = (int32_t)*n;
	(*n)++;
	return 0;
}

/* Vocabulary id of one character of the word, with prefix/suffix. */
static bool char_lookup(const kvf_tokenizer *tok, struct tok_ctx *ctx, const char *c, size_t l,
			uint32_t cp, bool first, bool last, const char **full, size_t *full_len,
			uint32_t *id)
{
	bool pre = !first && tok->cont_prefix_len;
	bool suf = last && tok->eow_suffix_len;
	*full = c;
	*full_len = l;
	if (!pre && !suf) {
		if (tok->char_id && cp < 0x10000) {
			int32_t v = tok->char_id[cp];
			if (v < 0)
				return false;
			*id = (uint32_t)v;
			return true;
		}
		return tok_strmap_get(&tok->vocab, c, l, id);
	}
	size_t need = tok->cont_prefix_len + l + tok->eow_suffix_len;
	if (tok_raw_grow((void **)&ctx->tmp, &ctx->tmp_cap, need, 1) != 0)
		return false; /* out of memory: handled as an unknown character */
	size_t o = 0;
	if (pre) {
		memcpy(ctx->tmp, tok->cont_prefix, tok->cont_prefix_len);
		o = tok->cont_prefix_len;
	}
	memcpy(ctx->tmp + o, c, l);
	o += l;
	if (suf) {
		memcpy(ctx->tmp + o, tok->eow_suffix, tok->eow_suffix_len);
		o += tok->eow_suffix_len;
	}
	*full = ctx->tmp;
	*full_len = o;
	return tok_strmap_get(&tok->vocab, ctx->tmp, o, id);
}

static int merge_word(const kvf_tokenizer *tok, struct tok_ctx *ctx, const char *s, size_t len)
{
	size_t n = 0;
	bool unk = false;
	uint32_t unk_len = 0;
	size_t i = 0;
	while (i < len) {
		uint32_t cp;
		size_t l = tok_utf8_dec((const unsigned char *)s + i, len - i, &cp);
		if (l == 0)
			return kvf_errf(KVF_E_INVAL, "tokenizer: invalid UTF-8 inside a pre-token");
		const char *full;
		size_t full_len;
		uint32_t id;
		bool first = i == 0, last = i + l == len;
		if (char_lookup(tok, ctx, s + i, l, cp, first, last, &full, &full_len, &id)) {
			if (unk) {
				if (add_sym(ctx, &n, tok->unk_id, unk_len) != 0)
					return KVF_E_NOMEM;
				unk = false;
			}
			if (add_sym(ctx, &n, id, (uint32_t)l) != 0)
				return KVF_E_NOMEM;
			i += l;
			continue;
		}
		if (tok->byte_fallback) {
			bool all = true;
			for (size_t k = 0; k < full_len && all; k++)
				all = tok->byte_tok[(unsigned char)full[k]] >= 0;
			if (all) {
				for (size_t k = 0; k < full_len; k++)
					if (add_sym(ctx, &n, (uint32_t)tok->byte_tok[(unsigned char)full[k]], 1) != 0)
						return KVF_E_NOMEM;
				i += l;
				continue;
			}
		}
		if (tok->has_unk) {
			if (tok->unk_id == UINT32_MAX)
				return kvf_errf(KVF_E_MODEL, "tokenizer.json: model.unk_token is not in model.vocab");
			if (unk && tok->fuse_unk) {
				unk_len += (uint32_t)l;
			} else {
				if (unk && add_sym(ctx, &n, tok->unk_id, unk_len) != 0)
					return KVF_E_NOMEM;
				unk = true;
				unk_len = (uint32_t)l;
			}
		}
		i += l;
	}
	if (unk && add_sym(ctx, &n, tok->unk_id, unk_len) != 0)
		return KVF_E_NOMEM;

	/* merge_all */
	if (n > 1) {
		if (tok_raw_grow((void **)&ctx->heap, &ctx->heap_cap, n * 2 + 8, sizeof(*ctx->heap)) != 0)
			return KVF_E_NOMEM;
		size_t hn = 0;
		struct tok_sym *sy = ctx->syms;
		for (size_t k = 0; k + 1 < n; k++) {
			const tok_pair_slot *m = tok_pairmap_get(&tok->merges, sy[k].id, sy[k + 1].id);
			if (m)
				heap_push(ctx->heap, &hn,
					  (struct tok_heap_ent){ m->rank, (uint32_t)k, m->id, sy[k].id, sy[k + 1].id });
		}
		while (hn) {
			struct tok_heap_ent top = heap_pop(ctx->heap, &hn);
			struct tok_sym *cur = &sy[top.pos];
			if (cur->len == 0 || cur->next == -1)
				continue;
			struct tok_sym right = sy[cur->next];
			if (cur->id != top.left || right.id != top.right) {
				/* the pair changed: HF still merges when the new pair has the same
				 * merged id (word.rs), so look it up rather than skip */
				const tok_pair_slot *m = tok_pairmap_get(&tok->merges, cur->id, right.id);
				if (!m || m->id != top.id)
					continue;
			}
			int32_t next_pos = cur->next;
			cur->id = top.id;
			cur->len += right.len;
			cur->next = right.next;
			sy[next_pos].len = 0;
			if (right.next > -1 && (size_t)right.next < n)
				sy[right.next].prev = (int32_t)top.pos;
			/* each merge adds at most two entries */
			if (tok_raw_grow((void **)&ctx->heap, &ctx->heap_cap, hn + 2, sizeof(*ctx->heap)) != 0)
				return KVF_E_NOMEM;
			if (cur->prev >= 0) {
				const tok_pair_slot *pm = tok_pairmap_get(&tok->merges, sy[cur->prev].id, cur->id);
				if (pm)
					heap_push(ctx->heap, &hn,
						  (struct tok_heap_ent){ pm->rank, (uint32_t)cur->prev, pm->id,
									 sy[cur->prev].id, cur->id });
			}
			if (cur->next >= 0 && (size_t)cur->next < n) {
				const tok_pair_slot *nm = tok_pairmap_get(&tok->merges, cur->id, sy[cur->next].id);
				if (nm)
					heap_push(ctx->heap, &hn, (struct tok_heap_ent){ nm->rank, top.pos, nm->id, cur->id,
											 sy[cur->next].id });
			}
		}
	}
	if (tok_raw_grow((void **)&ctx->wids, &ctx->wids_cap, n, sizeof(uint32_t)) != 0)
		return KVF_E_NOMEM;
	size_t o = 0;
	for (size_t k = 0; k < n; k++)
		if (ctx->syms[k].len)
			ctx->wids[o++] = ctx->syms[k].id;
	ctx->wids_n = o;
	return 0;
}

static void cache_clear(struct tok_ctx *ctx)
{
	memset(ctx->cache, 0, TOK_CACHE_SLOTS * sizeof(*ctx->cache));
	ctx->cache_count = 0;
	ctx->ckeys_len = 0;
	ctx->cids_len = 0;
}

static void cache_insert(struct tok_ctx *ctx, uint32_t h, size_t slot, const char *s, size_t len)
{
	if (ctx->cache_count >= TOK_CACHE_MAX_ENTRIES || ctx->ckeys_len + len > TOK_CACHE_KEY_BYTES ||
	    ctx->cids_len + ctx->wids_n > TOK_CACHE_IDS) {
		cache_clear(ctx);
		slot = h & (TOK_CACHE_SLOTS - 1);
	}
	struct tok_cache_slot *c = &ctx->cache[slot];
	memcpy(ctx->ckeys + ctx->ckeys_len, s, len);
	if (ctx->wids_n)
		memcpy(ctx->cids + ctx->cids_len, ctx->wids, ctx->wids_n * sizeof(uint32_t));
	c->hash = h;
	c->key_off = (uint32_t)ctx->ckeys_len;
	c->key_len = (uint32_t)len;
	c->ids_off = (uint32_t)ctx->cids_len;
	c->n_ids = (uint32_t)ctx->wids_n;
	ctx->ckeys_len += len;
	ctx->cids_len += ctx->wids_n;
	ctx->cache_count++;
}

int tok_bpe_word(const kvf_tokenizer *tok, struct tok_ctx *ctx, const char *s, size_t len)
{
	ctx->wids_n = 0;
	if (len == 0)
		return 0;
	uint32_t id;
	if (tok->ignore_merges && tok_strmap_get(&tok->vocab, s, len, &id)) {
		if (tok_raw_grow((void **)&ctx->wids, &ctx->wids_cap, 1, sizeof(uint32_t)) != 0)
			return KVF_E_NOMEM;
		ctx->wids[0] = id;
		ctx->wids_n = 1;
		return 0;
	}
	bool cacheable = ctx->cache && len < TOK_CACHE_MAX_KEY;
	uint32_t h = 0;
	size_t slot = 0;
	if (cacheable) {
		h = (uint32_t)tok_hash(s, len);
		slot = h & (TOK_CACHE_SLOTS - 1);
		for (;;) {
			struct tok_cache_slot *c = &ctx->cache[slot];
			if (c->key_len == 0)
				break;
			if (c->hash == h && c->key_len == len && memcmp(ctx->ckeys + c->key_off, s, len) == 0) {
				if (tok_raw_grow((void **)&ctx->wids, &ctx->wids_cap, c->n_ids,
						 sizeof(uint32_t)) != 0)
					return KVF_E_NOMEM;
				if (c->n_ids)
					memcpy(ctx->wids, ctx->cids + c->ids_off, c->n_ids * sizeof(uint32_t));
				ctx->wids_n = c->n_ids;
				return 0;
			}
			slot = (slot + 1) & (TOK_CACHE_SLOTS - 1);
		}
	}
	int rc = merge_word(tok, ctx, s, len);
	if (rc != 0)
		return rc;
	if (cacheable)
		cache_insert(ctx, h, slot, s, len);
	return 0;
}
