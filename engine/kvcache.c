/*
 * kvcache.c: the paged KV pool, its prefix cache, and sequences' block tables.
 *
 * The pool is ONE backend allocation of n_blocks fixed-size blocks; a block
 * holds block_size tokens of every layer, laid out
 * [layer][k|v][kv_head][token][head_dim], so one block is one contiguous
 * region the fabric moves with one descriptor. Per-block metadata lives
 * apart from the data (refcount, cache key, LRU links), so the data region
 * holds nothing but KV and can be registered and transferred as is.
 *
 * States of a block: free (on the free stack), used (ref > 0), cached-idle
 * (in the key table with ref 0, on the LRU list). Allocation takes the free
 * stack first, then evicts the least recently released idle block (callback
 * on_block_removed). The key table is open addressing with linear probing on
 * key.lo (keys are already uniform hashes) and backward-shift deletion, sized
 * at twice the block count so it never fills: no allocation after start-up.
 */
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/internal.h"

/* ------------------------------------------------------------------------ */
/* key table                                                                */

static uint32_t ht_slot(const kvf_kvpool *p, kvf_blockkey k)
{
	return (uint32_t)(k.lo ^ (k.lo >> 29) ^ k.hi) & p->ht_mask;
}

int32_t kvf_kvpool_find(const kvf_kvpool *p, kvf_blockkey key)
{
	for (uint32_t i = ht_slot(p, key);; i = (i + 1) & p->ht_mask) {
		int32_t b = p->ht[i];
		if (b < 0)
			return -1;
		if (kvf_blockkey_eq(p->meta[b].key, key))
			return b;
	}
}

static void ht_remove(kvf_kvpool *p, int32_t b)
{
	uint32_t i = ht_slot(p, p->meta[b].key);
	while (p->ht[i] != b)
		i = (i + 1) & p->ht_mask;
	/* backward-shift deletion keeps probe chains intact without tombstones */
	uint32_t j = i;
	for (;;) {
		j = (j + 1) & p->ht_mask;
		int32_t c = p->ht[j];
		if (c < 0)
			break;
		uint32_t home = ht_slot(p, p->meta[c].key);
		/* c may move to i if its home is not in (i, j] cyclically */
		bool between = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
		if (!between) {
			p->ht[i] = c;
			i = j;
		}
	}
	p->ht[i] = -1;
}

/* ------------------------------------------------------------------------ */
/* LRU of idle cached blocks                                                */

static void lru_unlink(kvf_kvpool *p, int32_t b)
{
	kvf_block_meta *m = &p->meta[b];
	if (!m->in_lru)
		return;
	if (m->prev >= 0)
		p->meta[m->prev].next = m->next;
	else
		p->lru_head = m->next;
	if (m->next >= 0)
		p->meta[m->next].prev = m->prev;
	else
		p->lru_tail = m->prev;
	m->prev = m->next = -1;
	m->in_lru = 0;
	p->n_idle--;
}

static void lru_push(kvf_kvpool *p, int32_t b)
{
	kvf_block_meta *m = &p->meta[b];
	m->prev = p->lru_tail;
	m->next = -1;
	if (p->lru_tail >= 0)
		p->meta[p->lru_tail].next = b;
	else
		p->lru_head = b;
	p->lru_tail = b;
	m->in_lru = 1;
	p->n_idle++;
}

/* ------------------------------------------------------------------------ */

int kvf_kvpool_init(kvf_engine *e, kvf_kvpool *p, const kvf_kv_layout *lay, int n_blocks)
{
	memset(p, 0, sizeof *p);
	p->lay = *lay;
	p->n_blocks = n_blocks;
	p->bytes = (size_t)n_blocks * lay->block_bytes;
	p->lru_head = p->lru_tail = -1;
	uint32_t cap = 16;
	while (cap < 2u * (uint32_t)n_blocks)
		cap <<= 1;
	p->ht_mask = cap - 1;
	p->meta = kvf_calloc((size_t)n_blocks, sizeof *p->meta);
	p->free_stack = kvf_malloc((size_t)n_blocks * sizeof *p->free_stack);
	p->ht = kvf_malloc((size_t)cap * sizeof *p->ht);
	if (!p->meta || !p->free_stack || !p->ht)
		goto err_nomem;
	p->base = e->be->iface->alloc(e->be, p->bytes);
	if (!p->base)
		goto err_nomem;
	memset(p->ht, 0xff, (size_t)cap * sizeof *p->ht);
	for (int i = 0; i < n_blocks; i++) {
		p->meta[i].prev = p->meta[i].next = -1;
		/* pop order 0, 1, 2, ...: early blocks first */
		p->free_stack[i] = n_blocks - 1 - i;
	}
	p->n_free = n_blocks;
	return 0;
err_nomem:
	kvf_free(p->meta);
	kvf_free(p->free_stack);
	kvf_free(p->ht);
	memset(p, 0, sizeof *p);
	return kvf_errf(KVF_E_NOMEM, "kv pool: cannot allocate %d blocks of %zu bytes", n_blocks,
			lay->block_bytes);
}

void kvf_kvpool_fini(kvf_engine *e, kvf_kvpool *p)
{
	if (p->base)
		e->be->iface->free(e->be, p->base, p->bytes);
	kvf_free(p->meta);
	kvf_free(p->free_stack);
	kvf_free(p->ht);
	memset(p, 0, sizeof *p);
}

int kvf_kvpool_free_blocks(const kvf_kvpool *p)
{
	return p->n_free + p->n_idle;
}

static void evict(kvf_engine *e, int32_t b)
{
	kvf_kvpool *p = &e->pool;
	kvf_block_meta *m = &p->meta[b];
	lru_unlink(p, b);
	ht_remove(p, b);
	m->cached = 0;
	p->n_cached--;
	p->stats.evicted++;
	if (e->opts.on_block_removed)
		e->opts.on_block_removed(e->opts.block_event_user, m->key, b);
	memset(&m->key, 0, sizeof m->key);
}

int kvf_kvpool_alloc(kvf_engine *e, int n, int32_t *out)
{
	kvf_kvpool *p = &e->pool;
	if (n < 0)
		return KVF_E_INVAL;
	if (n > p->n_free + p->n_idle)
		return kvf_errf(KVF_E_FULL, "kv pool: %d blocks wanted, %d free of %d", n,
				p->n_free + p->n_idle, p->n_blocks);
	for (int i = 0; i < n; i++) {
		int32_t b;
		if (p->n_free > 0) {
			b = p->free_stack[--p->n_free];
		} else {
			b = p->lru_head;
			evict(e, b);
		}
		p->meta[b].ref = 1;
		out[i] = b;
	}
	return 0;
}

void kvf_kvpool_ref(kvf_kvpool *p, int32_t b)
{
	kvf_block_meta *m = &p->meta[b];
	if (m->ref++ == 0 && m->in_lru)
		lru_unlink(p, b);
}

void kvf_kvpool_release(kvf_engine *e, int32_t b)
{
	kvf_kvpool *p = &e->pool;
	kvf_block_meta *m = &p->meta[b];
	if (m->ref <= 0)
		return; /* programmer error; ignore rather than corrupt the lists */
	if (--m->ref > 0)
		return;
	if (m->cached)
		lru_push(p, b);
	else
		p->free_stack[p->n_free++] = b;
}

int kvf_kvpool_insert(kvf_engine *e, int32_t b, kvf_blockkey key)
{
	kvf_kvpool *p = &e->pool;
	kvf_block_meta *m = &p->meta[b];
	if (m->cached)
		return kvf_blockkey_eq(m->key, key) ? 0 : KVF_E_EXISTS;
	if (kvf_kvpool_find(p, key) >= 0)
		return KVF_E_EXISTS;
	m->key = key;
	m->cached = 1;
	uint32_t i = ht_slot(p, key);
	while (p->ht[i] >= 0)
		i = (i + 1) & p->ht_mask;
	p->ht[i] = b;
	p->n_cached++;
	p->stats.stored++;
	if (e->be->iface->block_keyed)
		e->be->iface->block_keyed(e->be, e, b, key);
	if (e->opts.on_block_stored)
		e->opts.on_block_stored(e->opts.block_event_user, key, b);
	if (m->ref == 0)
		lru_push(p, b);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* public pool API                                                          */

void kvf_engine_kv_pool(const kvf_engine *e, void **base, size_t *len)
{
	*base = e->pool.base;
	*len = e->pool.bytes;
}

int kvf_engine_kv_block(const kvf_engine *e, int32_t block, void **ptr, size_t *len)
{
	if (block < 0 || block >= e->pool.n_blocks)
		return kvf_errf(KVF_E_RANGE, "kv block %d outside the pool (%d blocks)", block,
				e->pool.n_blocks);
	*ptr = e->pool.base + (size_t)block * e->pool.lay.block_bytes;
	*len = e->pool.lay.block_bytes;
	return 0;
}

void kvf_engine_kv_stats(const kvf_engine *e, kvf_kv_stats *out)
{
	const kvf_kvpool *p = &e->pool;
	*out = p->stats;
	out->total = p->n_blocks;
	out->empty = p->n_free;
	out->cached_idle = p->n_idle;
	out->used = p->n_blocks - p->n_free - p->n_idle;
	out->cached = p->n_cached;
}

int kvf_engine_kv_acquire(kvf_engine *e, const kvf_blockkey *keys, int n, int32_t *blocks)
{
	int i;
	for (i = 0; i < n; i++) {
		int32_t b = kvf_kvpool_find(&e->pool, keys[i]);
		if (b < 0) {
			e->pool.stats.misses++;
			break;
		}
		e->pool.stats.hits++;
		kvf_kvpool_ref(&e->pool, b);
		blocks[i] = b;
	}
	return i;
}

void kvf_engine_kv_foreach_cached(const kvf_engine *e, kvf_block_event_fn fn, void *user)
{
	for (int32_t b = 0; b < e->pool.n_blocks; b++)
		if (e->pool.meta[b].cached)
			fn(user, e->pool.meta[b].key, b);
}

int32_t kvf_engine_kv_lookup(const kvf_engine *e, kvf_blockkey key)
{
	return kvf_kvpool_find(&e->pool, key);
}

int kvf_engine_kv_ref(kvf_engine *e, int32_t block)
{
	if (block < 0 || block >= e->pool.n_blocks || e->pool.meta[block].ref <= 0)
		return kvf_errf(KVF_E_STATE, "kv block %d is not referenced", block);
	kvf_kvpool_ref(&e->pool, block);
	return 0;
}

void kvf_engine_kv_release(kvf_engine *e, int32_t block)
{
	if (block >= 0 && block < e->pool.n_blocks)
		kvf_kvpool_release(e, block);
}

int kvf_engine_kv_alloc(kvf_engine *e, int n, int32_t *blocks)
{
	return kvf_kvpool_alloc(e, n, blocks);
}

int kvf_engine_kv_commit(kvf_engine *e, int32_t block, kvf_blockkey key)
{
	if (block < 0 || block >= e->pool.n_blocks || e->pool.meta[block].ref <= 0)
		return kvf_errf(KVF_E_STATE, "kv block %d is not referenced", block);
	return kvf_kvpool_insert(e, block, key);
}

/* ------------------------------------------------------------------------ */
/* sequences                                                                */

void kvf_seq_init(kvf_seq *s, kvf_engine *e)
{
	memset(s, 0, sizeof *s);
	s->e = e;
}

void kvf_seq_reset(kvf_seq *s)
{
	for (int i = s->n_blocks - 1; i >= 0; i--)
		kvf_kvpool_release(s->e, s->blocks[i]);
	s->n_blocks = 0;
	s->len = 0;
	s->n_registered = 0;
}

void kvf_seq_fini(kvf_seq *s)
{
	if (!s->e)
		return;
	kvf_seq_reset(s);
	kvf_free(s->blocks);
	kvf_free(s->keys);
	memset(s, 0, sizeof *s);
}

int kvf_seq_create(kvf_engine *e, kvf_seq **out)
{
	kvf_seq *s = kvf_malloc(sizeof *s);
	if (!s)
		return KVF_E_NOMEM;
	kvf_seq_init(s, e);
	*out = s;
	return 0;
}

void kvf_seq_destroy(kvf_seq *s)
{
	if (!s)
		return;
	kvf_seq_fini(s);
	kvf_free(s);
}

int kvf_seq_len(const kvf_seq *s)
{
	return s->len;
}

void kvf_seq_blocks(const kvf_seq *s, const int32_t **blocks, int *n)
{
	*blocks = s->blocks;
	*n = s->n_blocks;
}

static int grow_blocks(kvf_seq *s, int need)
{
	size_t cap = (size_t)s->cap_blocks;
	void *arr = s->blocks;
	if (kvf_grow(&arr, &cap, (size_t)need, sizeof *s->blocks))
		return KVF_E_NOMEM;
	s->blocks = arr;
	s->cap_blocks = (int)cap;
	return 0;
}

int kvf_seq_push_key(kvf_seq *s, kvf_blockkey key)
{
	size_t cap = (size_t)s->cap_keys;
	void *arr = s->keys;
	if (kvf_grow(&arr, &cap, (size_t)s->n_keys + 1, sizeof *s->keys))
		return KVF_E_NOMEM;
	s->keys = arr;
	s->cap_keys = (int)cap;
	s->keys[s->n_keys++] = key;
	return 0;
}

int kvf_seq_set_keys(kvf_seq *s, const kvf_blockkey *keys, int n_keys)
{
	if (n_keys < 0)
		return KVF_E_INVAL;
	s->n_keys = 0;
	for (int i = 0; i < n_keys; i++)
		if (kvf_seq_push_key(s, keys[i]))
			return KVF_E_NOMEM;
	if (s->n_registered > n_keys)
		s->n_registered = n_keys;
	return 0;
}

int kvf_seq_attach(kvf_seq *s, const int32_t *blocks, int n_blocks, int n_tokens)
{
	int bs = s->e->block_size;
	if (s->len % bs || n_tokens < 0 || n_blocks != (n_tokens + bs - 1) / bs)
		return kvf_errf(KVF_E_INVAL,
				"kv attach: %d blocks for %d tokens onto a sequence of %d",
				n_blocks, n_tokens, s->len);
	if (s->len + n_tokens > s->e->max_model_len)
		return kvf_errf(KVF_E_RANGE, "kv attach: %d tokens exceed the context of %d",
				s->len + n_tokens, s->e->max_model_len);
	for (int i = 0; i < n_blocks; i++)
		if (blocks[i] < 0 || blocks[i] >= s->e->pool.n_blocks ||
		    s->e->pool.meta[blocks[i]].ref <= 0)
			return kvf_errf(KVF_E_STATE, "kv attach: block %d is not referenced",
					blocks[i]);
	if (grow_blocks(s, s->n_blocks + n_blocks))
		return KVF_E_NOMEM;
	memcpy(s->blocks + s->n_blocks, blocks, (size_t)n_blocks * sizeof *blocks);
	s->n_blocks += n_blocks;
	s->len += n_tokens;
	return 0;
}

int kvf_seq_match_prefix(kvf_seq *s, int max_tokens)
{
	int bs = s->e->block_size;
	if (s->len || s->n_blocks)
		return 0;
	int n = s->n_keys;
	if (n > max_tokens / bs)
		n = max_tokens / bs;
	if (n <= 0)
		return 0;
	if (grow_blocks(s, n))
		return 0;
	int got = kvf_engine_kv_acquire(s->e, s->keys, n, s->blocks);
	s->n_blocks = got;
	s->len = got * bs;
	s->n_registered = got;
	return s->len;
}

/* Replaces a shared or cached block at index i by a private copy. */
static int make_private(kvf_seq *s, int i)
{
	kvf_engine *e = s->e;
	int32_t old = s->blocks[i], nb;
	const kvf_block_meta *m = &e->pool.meta[old];
	if (m->ref == 1 && !m->cached)
		return 0;
	int rc = kvf_kvpool_alloc(e, 1, &nb);
	if (rc)
		return rc;
	e->be->iface->block_copy(e->be, &e->pool, nb, old);
	kvf_kvpool_release(e, old);
	s->blocks[i] = nb;
	if (s->n_registered > i)
		s->n_registered = i;
	return 0;
}

int kvf_seq_reserve(kvf_seq *s, int n)
{
	kvf_engine *e = s->e;
	int bs = e->block_size;
	if (n <= 0)
		return 0;
	if (s->len + n > e->max_model_len)
		return kvf_errf(KVF_E_RANGE, "sequence of %d tokens beyond the context of %d",
				s->len + n, e->max_model_len);
	int need = (s->len + n + bs - 1) / bs - s->n_blocks;
	bool partial = s->len % bs != 0;
	int32_t last = partial ? s->blocks[s->n_blocks - 1] : -1;
	bool cow = partial && (e->pool.meta[last].ref > 1 || e->pool.meta[last].cached);
	int total = need + (cow ? 1 : 0);
	if (total > kvf_kvpool_free_blocks(&e->pool))
		return kvf_errf(KVF_E_FULL, "kv pool: %d blocks wanted, %d free of %d", total,
				kvf_kvpool_free_blocks(&e->pool), e->pool.n_blocks);
	if (grow_blocks(s, s->n_blocks + need))
		return KVF_E_NOMEM;
	if (cow) {
		int rc = make_private(s, s->n_blocks - 1);
		if (rc)
			return rc;
	}
	int rc = kvf_kvpool_alloc(e, need, s->blocks + s->n_blocks);
	if (rc)
		return rc;
	s->n_blocks += need;
	return 0;
}

int kvf_seq_truncate(kvf_seq *s, int n)
{
	int bs = s->e->block_size;
	if (n < 0 || n > s->len)
		return KVF_E_RANGE;
	int keep = (n + bs - 1) / bs;
	for (int i = s->n_blocks - 1; i >= keep; i--)
		kvf_kvpool_release(s->e, s->blocks[i]);
	s->n_blocks = keep;
	s->len = n;
	if (s->n_registered > n / bs)
		s->n_registered = n / bs;
	/* the next write lands in a partial block: it must be ours alone */
	if (n % bs) {
		int rc = make_private(s, keep - 1);
		if (rc)
			return rc;
	}
	return 0;
}

void kvf_seq_register(kvf_seq *s)
{
	kvf_engine *e = s->e;
	int full = s->len / e->block_size;
	int lim = full < s->n_keys ? full : s->n_keys;
	for (int i = s->n_registered; i < lim; i++)
		(void)kvf_kvpool_insert(e, s->blocks[i], s->keys[i]);
	if (lim > s->n_registered)
		s->n_registered = lim;
}
