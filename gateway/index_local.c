/*
 * index_local.c: KV indexes that live inside the gateway.
 *
 * "local" estimates where blocks are cached from the gateway's own routing:
 * when a request with key chain K goes to worker W, W will soon hold K (its
 * prefix cache keeps what it computed). This is llm-d's approximate prefix
 * scorer: no directory needed, exact for a single gateway until workers
 * evict. It does not see evictions, other gateways or tiers (every block
 * counts as gpu); with a cachedir configured the gateway uses the directory
 * instead (index_cachedir.c), whose answers come from the workers.
 *
 * Storage is preallocated: max_blocks entries, each a key and up to
 * GW_LOCAL_HOLDERS worker indices, in a chained hash table with an LRU list;
 * the least recently used key is recycled when full. No allocation per
 * request.
 *
 * "none" answers that nobody holds anything (routing by load only).
 */
#include "gateway/gw.h"

#include <stdio.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

#define GW_LOCAL_HOLDERS 4
#define NIL UINT32_MAX

struct lentry {
	kvf_blockkey key;
	int32_t w[GW_LOCAL_HOLDERS]; /* -1: empty; most recent first */
	uint32_t hnext;              /* hash chain */
	uint32_t prev, next;         /* LRU: head = most recent */
	int used;
};

struct local_ix {
	struct lentry *e;
	uint32_t cap, n;
	uint32_t *bucket;
	uint32_t mask;
	uint32_t head, tail, free_head;
	uint64_t lookups, hits_blocks, routed_blocks, evictions;
	gw_holder tmp[GW_LOCAL_HOLDERS * 4];
};

static uint32_t bidx(const struct local_ix *x, kvf_blockkey k)
{
	return (uint32_t)(k.lo ^ (k.hi >> 17)) & x->mask;
}

static void lru_unlink(struct local_ix *x, uint32_t i)
{
	struct lentry *e = &x->e[i];
	if (e->prev != NIL)
		x->e[e->prev].next = e->next;
	else
		x->head = e->next;
	if (e->next != NIL)
		x->e[e->next].prev = e->prev;
	else
		x->tail = e->prev;
	e->prev = e->next = NIL;
}

static void lru_push(struct local_ix *x, uint32_t i)
{
	struct lentry *e = &x->e[i];
	e->prev = NIL;
	e->next = x->head;
	if (x->head != NIL)
		x->e[x->head].prev = i;
	x->head = i;
	if (x->tail == NIL)
		x->tail = i;
}

static uint32_t find(const struct local_ix *x, kvf_blockkey k)
{
	for (uint32_t i = x->bucket[bidx(x, k)]; i != NIL; i = x->e[i].hnext)
		if (kvf_blockkey_eq(x->e[i].key, k))
			return i;
	return NIL;
}

static void hash_unlink(struct local_ix *x, uint32_t i)
{
	uint32_t *pp = &x->bucket[bidx(x, x->e[i].key)];
	while (*pp != NIL && *pp != i)
		pp = &x->e[*pp].hnext;
	if (*pp == i)
		*pp = x->e[i].hnext;
}

static uint32_t alloc_entry(struct local_ix *x)
{
	uint32_t i;
	if (x->free_head != NIL) {
		i = x->free_head;
		x->free_head = x->e[i].hnext;
		x->n++;
	} else {
		i = x->tail; /* recycle the least recently used key */
		hash_unlink(x, i);
		lru_unlink(x, i);
		x->evictions++;
	}
	return i;
}

static void local_routed(void *ix, int widx, const kvf_blockkey *keys, size_t n)
{
	struct local_ix *x = ix;
	for (size_t k = 0; k < n; k++) {
		uint32_t i = find(x, keys[k]);
		if (i == NIL) {
			i = alloc_entry(x);
			struct lentry *e = &x->e[i];
			e->key = keys[k];
			e->used = 1;
			for (int j = 0; j < GW_LOCAL_HOLDERS; j++)
				e->w[j] = -1;
			uint32_t b = bidx(x, keys[k]);
			e->hnext = x->bucket[b];
			x->bucket[b] = i;
		} else {
			lru_unlink(x, i);
		}
		lru_push(x, i);
		/* widx to the front of the holder list. */
		struct lentry *e = &x->e[i];
		int pos = GW_LOCAL_HOLDERS - 1;
		for (int j = 0; j < GW_LOCAL_HOLDERS; j++)
			if (e->w[j] == widx) {
				pos = j;
				break;
			}
		memmove(&e->w[1], &e->w[0], (size_t)pos * sizeof(e->w[0]));
		e->w[0] = widx;
	}
	x->routed_blocks += n;
}

static int local_lookup(void *ix, const char *model, const kvf_blockkey *keys, size_t n, gw_lookup_cb cb, void *ud,
			uint64_t *req)
{
	struct local_ix *x = ix;
	size_t nh = 0;
	x->lookups++;
	for (size_t k = 0; k < n; k++) {
		uint32_t i = find(x, keys[k]);
		if (i == NIL)
			break;
		/* No LRU touch here: every routed request refreshes its chain in
		 * routed(), and a read-only lookup stays cache friendly. */
		struct lentry *e = &x->e[i];
		int extended = 0;
		if (k == 0) {
			for (int j = 0; j < GW_LOCAL_HOLDERS && e->w[j] >= 0; j++) {
				x->tmp[nh] = (gw_holder){ e->w[j], 1, 1, 1 };
				nh++;
				extended = 1;
			}
		} else {
			for (size_t h = 0; h < nh; h++) {
				if (x->tmp[h].any != k)
					continue;
				for (int j = 0; j < GW_LOCAL_HOLDERS; j++)
					if (e->w[j] == x->tmp[h].widx) {
						x->tmp[h].gpu = x->tmp[h].host = x->tmp[h].any = (uint32_t)k + 1;
						extended = 1;
						break;
					}
			}
		}
		if (!extended)
			break;
		x->hits_blocks++;
	}
	if (req)
		*req = 0;
	cb(ud, 0, x->tmp, nh);
	return 0;
}

static void local_cancel(void *ix, uint64_t req) {}

static void local_forget(void *ix, int widx)
{
	struct local_ix *x = ix;
	for (uint32_t i = 0; i < x->cap; i++) {
		struct lentry *e = &x->e[i];
		if (!e->used)
			continue;
		for (int j = 0; j < GW_LOCAL_HOLDERS; j++)
			if (e->w[j] == widx) {
				memmove(&e->w[j], &e->w[j + 1], (size_t)(GW_LOCAL_HOLDERS - 1 - j) * sizeof(e->w[0]));
				e->w[GW_LOCAL_HOLDERS - 1] = -1;
				break;
			}
	}
}

static void local_destroy(void *ix)
{
	struct local_ix *x = ix;
	if (!x)
		return;
	kvf_free(x->e);
	kvf_free(x->bucket);
	kvf_free(x);
}

static void local_info(void *ix, kvf_buf *out)
{
	struct local_ix *x = ix;
	kvf_buf_printf(out, "index: local (estimated from this gateway's routing)\nindex_blocks: %u/%u\n"
			    "index_lookups: %llu\nindex_evictions: %llu\n",
		       x->n, x->cap, (unsigned long long)x->lookups, (unsigned long long)x->evictions);
}

static const gw_index_ops local_ops = {
	"local", local_lookup, local_cancel, local_routed, local_forget, local_destroy, local_info,
};

int gw_index_local_new(size_t max_blocks, gw_index *out)
{
	if (max_blocks < 16)
		max_blocks = 16;
	if (max_blocks > (1u << 30))
		return kvf_errf(KVF_E_CONFIG, "gateway.local_index_blocks: at most 2^30");
	struct local_ix *x = kvf_calloc(1, sizeof(*x));
	if (!x)
		return KVF_E_NOMEM;
	uint32_t nb = 16;
	while (nb < max_blocks)
		nb <<= 1;
	x->cap = (uint32_t)max_blocks;
	x->mask = nb - 1;
	x->e = kvf_calloc(x->cap, sizeof(*x->e));
	x->bucket = kvf_malloc(nb * sizeof(*x->bucket));
	if (!x->e || !x->bucket) {
		local_destroy(x);
		return kvf_errf(KVF_E_NOMEM, "local index: cannot allocate %zu entries", max_blocks);
	}
	for (uint32_t i = 0; i < nb; i++)
		x->bucket[i] = NIL;
	for (uint32_t i = 0; i < x->cap; i++) {
		x->e[i].hnext = i + 1 < x->cap ? i + 1 : NIL;
		x->e[i].prev = x->e[i].next = NIL;
	}
	x->free_head = 0;
	x->head = x->tail = NIL;
	out->ops = &local_ops;
	out->ix = x;
	return 0;
}

/* ---- none ---- */

static int none_lookup(void *ix, const char *model, const kvf_blockkey *keys, size_t n, gw_lookup_cb cb, void *ud,
		       uint64_t *req)
{
	if (req)
		*req = 0;
	cb(ud, 0, NULL, 0);
	return 0;
}
static void none_cancel(void *ix, uint64_t req) {}
static void none_routed(void *ix, int widx, const kvf_blockkey *keys, size_t n) {}
static void none_forget(void *ix, int widx) {}
static void none_destroy(void *ix) {}
static void none_info(void *ix, kvf_buf *out)
{
	kvf_buf_puts(out, "index: none (routing by load only)\n");
}

static const gw_index_ops none_ops = {
	"none", none_lookup, none_cancel, none_routed, none_forget, none_destroy, none_info,
};

int gw_index_none_new(gw_index *out)
{
	out->ops = &none_ops;
	out->ix = NULL;
	return 0;
}
