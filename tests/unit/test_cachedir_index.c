/*
 * Unit tests for cachedir/index.c: holders per tier, prefix lookups, removal,
 * overflow holder arrays, worker removal, sync mark-and-sweep, limits, table
 * growth with backward-shift deletion, member-list compaction, and a
 * randomized comparison against a brute-force reference model.
 */
#include "cachedir/cd_index.h"
#include "common/kvf_err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

static kvf_blockkey K(uint64_t i)
{
	/* Spread like real keys, but reproducible. */
	uint64_t x = i * 0x9e3779b97f4a7c15ull + 0x1234;
	x ^= x >> 31;
	kvf_blockkey k = { x * 0xbf58476d1ce4e5b9ull, i };
	return k;
}

static cd_worker *add_worker(cd_index *ix, const char *id, const char *model, uint32_t bs)
{
	cd_register r;
	memset(&r, 0, sizeof(r));
	snprintf(r.worker_id, sizeof(r.worker_id), "%s", id);
	snprintf(r.model, sizeof(r.model), "%s", model);
	r.role = CD_ROLE_DECODE;
	r.block_size = bs;
	r.tiers = 7;
	r.epoch = 1;
	cd_worker *w = NULL;
	assert_int_equal(cd_index_worker_add(ix, &r, 0, &w), 0);
	return w;
}

static void store_range(cd_index *ix, cd_worker *w, uint64_t from, uint64_t to, uint8_t tier)
{
	for (uint64_t i = from; i < to; i++)
		assert_true(cd_index_store(ix, w, K(i), tier, 0) >= 0);
}

static const cd_match *find_match(const cd_match *m, size_t n, const cd_worker *w)
{
	for (size_t i = 0; i < n; i++)
		if (m[i].w == w)
			return &m[i];
	return NULL;
}

static void chain(kvf_blockkey *keys, uint64_t from, size_t n)
{
	for (size_t i = 0; i < n; i++)
		keys[i] = K(from + i);
}

static void test_lookup_prefix_per_tier(void **state)
{
	(void)state;
	cd_index *ix;
	assert_int_equal(cd_index_new(0, &ix), 0);
	cd_model *m;
	cd_worker *a = add_worker(ix, "a", "llama", 16);
	cd_worker *b = add_worker(ix, "b", "llama", 16);
	cd_worker *c = add_worker(ix, "c", "llama", 16);
	m = cd_index_model(ix, "llama");
	assert_non_null(m);
	assert_int_equal(m->nworkers, 3);

	store_range(ix, a, 0, 10, CD_TIER_GPU);
	store_range(ix, b, 0, 5, CD_TIER_HOST);
	/* c: gpu, host, gpu, disk, (gap), gpu */
	assert_int_equal(cd_index_store(ix, c, K(0), CD_TIER_GPU, 0), 1);
	assert_int_equal(cd_index_store(ix, c, K(1), CD_TIER_HOST, 0), 1);
	assert_int_equal(cd_index_store(ix, c, K(2), CD_TIER_GPU, 0), 1);
	assert_int_equal(cd_index_store(ix, c, K(3), CD_TIER_DISK, 0), 1);
	assert_int_equal(cd_index_store(ix, c, K(5), CD_TIER_GPU, 0), 1);

	kvf_blockkey keys[12];
	chain(keys, 0, 12);
	const cd_match *mt;
	size_t n;
	uint32_t nm;
	assert_int_equal(cd_index_lookup(ix, m, keys, 12, 1, &mt, &n, &nm), 0);
	assert_int_equal(n, 3);
	assert_int_equal(nm, 10);
	assert_ptr_equal(mt[0].w, a); /* sorted by the longest prefix */
	assert_int_equal(mt[0].prefix[0], 10);
	assert_int_equal(mt[0].prefix[1], 10);
	assert_int_equal(mt[0].prefix[2], 10);
	const cd_match *x = find_match(mt, n, b);
	assert_non_null(x);
	assert_int_equal(x->prefix[0], 0);
	assert_int_equal(x->prefix[1], 5);
	assert_int_equal(x->prefix[2], 5);
	x = find_match(mt, n, c);
	assert_int_equal(x->prefix[0], 1);
	assert_int_equal(x->prefix[1], 3);
	assert_int_equal(x->prefix[2], 4);

	/* A chain starting at a key nobody holds lists nobody. */
	chain(keys, 100, 4);
	assert_int_equal(cd_index_lookup(ix, m, keys, 4, 1, &mt, &n, &nm), 0);
	assert_int_equal(n, 0);
	assert_int_equal(nm, 0);

	/* Holding a later key without key 0 does not count. */
	chain(keys, 1, 4);
	assert_int_equal(cd_index_lookup(ix, m, keys, 4, 1, &mt, &n, &nm), 0);
	assert_int_equal(n, 3);
	assert_int_equal(find_match(mt, n, c)->prefix[2], 3); /* K1 K2 K3 */

	/* Tier bits merge: c holds K1 in gpu too now. */
	assert_int_equal(cd_index_store(ix, c, K(1), CD_TIER_GPU, 0), 0);
	assert_int_equal(cd_index_tiers(ix, c, K(1)), 3);
	assert_int_equal(c->blocks[CD_TIER_GPU], 4);
	assert_int_equal(c->blocks[CD_TIER_HOST], 1);
	assert_int_equal(c->nheld, 5);

	cd_index_stats st;
	cd_index_stats_get(ix, &st);
	assert_int_equal(st.keys, 10);
	assert_int_equal(st.holders, 10 + 5 + 5);
	assert_int_equal(st.workers, 3);
	assert_int_equal(st.models, 1);
	cd_index_destroy(ix);
}

static void test_remove_and_tiers(void **state)
{
	(void)state;
	cd_index *ix;
	assert_int_equal(cd_index_new(0, &ix), 0);
	cd_worker *a = add_worker(ix, "a", "m", 16);
	cd_model *m = cd_index_model(ix, "m");
	store_range(ix, a, 0, 8, CD_TIER_GPU);
	store_range(ix, a, 0, 8, CD_TIER_HOST);
	assert_int_equal(a->blocks[0], 8);
	assert_int_equal(a->blocks[1], 8);

	/* Leaving gpu only: still held (host). */
	assert_int_equal(cd_index_remove(ix, a, K(3), 1u << CD_TIER_GPU), 0);
	assert_int_equal(cd_index_tiers(ix, a, K(3)), 2);
	kvf_blockkey keys[8];
	chain(keys, 0, 8);
	const cd_match *mt;
	size_t n;
	uint32_t nm;
	cd_index_lookup(ix, m, keys, 8, 1, &mt, &n, &nm);
	assert_int_equal(mt[0].prefix[0], 3);
	assert_int_equal(mt[0].prefix[1], 8);

	/* Removing a tier it does not hold changes nothing. */
	assert_int_equal(cd_index_remove(ix, a, K(3), 1u << CD_TIER_DISK), 0);
	/* All tiers: the entry goes, the chain breaks at 3. */
	assert_int_equal(cd_index_remove(ix, a, K(3), CD_TIER_ALL), 1);
	assert_int_equal(cd_index_tiers(ix, a, K(3)), 0);
	cd_index_lookup(ix, m, keys, 8, 1, &mt, &n, &nm);
	assert_int_equal(mt[0].prefix[2], 3);
	assert_int_equal(nm, 3);
	assert_int_equal(cd_index_remove(ix, a, K(3), CD_TIER_ALL), 0);
	assert_int_equal(cd_index_remove(ix, a, K(999), CD_TIER_ALL), 0);

	cd_index_stats st;
	cd_index_stats_get(ix, &st);
	assert_int_equal(st.keys, 7);
	assert_int_equal(st.holders, 7);
	assert_int_equal(st.tier_holders[0], 7);
	assert_int_equal(st.tier_holders[1], 7);

	assert_int_equal(cd_index_clear(ix, a), 7);
	cd_index_stats_get(ix, &st);
	assert_int_equal(st.keys, 0);
	assert_int_equal(st.holders, 0);
	assert_int_equal(a->nheld, 0);
	assert_int_equal(a->blocks[0] + a->blocks[1] + a->blocks[2], 0);
	cd_index_destroy(ix);
}

static void test_overflow_holders(void **state)
{
	(void)state;
	cd_index *ix;
	assert_int_equal(cd_index_new(0, &ix), 0);
	cd_worker *w[40];
	for (int i = 0; i < 40; i++) {
		char id[16];
		snprintf(id, sizeof(id), "w%02d", i);
		w[i] = add_worker(ix, id, "m", 16);
		/* Everyone holds the shared prefix K0..K3; w[i] holds i+1 more. */
		store_range(ix, w[i], 0, 4, CD_TIER_GPU);
		store_range(ix, w[i], 4, 4 + (uint64_t)i + 1, CD_TIER_HOST);
	}
	cd_model *m = cd_index_model(ix, "m");
	kvf_blockkey keys[64];
	chain(keys, 0, 64);
	const cd_match *mt;
	size_t n;
	uint32_t nm;
	cd_index_lookup(ix, m, keys, 64, 1, &mt, &n, &nm);
	assert_int_equal(n, 40);
	assert_int_equal(nm, 44);
	for (size_t i = 0; i < n; i++) {
		/* Sorted descending: w39 first with 44. */
		assert_ptr_equal(mt[i].w, w[39 - i]);
		assert_int_equal(mt[i].prefix[0], 4);
		assert_int_equal(mt[i].prefix[2], 4 + 40 - i);
	}
	cd_index_stats st;
	cd_index_stats_get(ix, &st);
	assert_true(st.overflow_arrays > 0);

	/* Remove holders from the middle of the overflow array. */
	for (int i = 0; i < 40; i += 3)
		assert_int_equal(cd_index_remove(ix, w[i], K(0), CD_TIER_ALL), 1);
	cd_index_lookup(ix, m, keys, 64, 1, &mt, &n, &nm);
	assert_int_equal(n, 40 - 14);
	for (int i = 0; i < 40; i++)
		assert_int_equal(find_match(mt, n, w[i]) != NULL, i % 3 != 0);
	/* Remove workers: their entries and overflow arrays go. */
	for (int i = 0; i < 40; i++)
		cd_index_worker_remove(ix, w[i]);
	cd_index_stats_get(ix, &st);
	assert_int_equal(st.keys, 0);
	assert_int_equal(st.holders, 0);
	assert_int_equal(st.overflow_arrays, 0);
	assert_int_equal(st.workers, 0);
	assert_int_equal(st.models, 0);
	assert_null(cd_index_model(ix, "m"));
	cd_index_destroy(ix);
}

static void test_worker_remove_keeps_others(void **state)
{
	(void)state;
	cd_index *ix;
	assert_int_equal(cd_index_new(0, &ix), 0);
	cd_worker *a = add_worker(ix, "a", "m", 16);
	cd_worker *b = add_worker(ix, "b", "m", 16);
	store_range(ix, a, 0, 1000, CD_TIER_GPU);
	store_range(ix, b, 500, 1500, CD_TIER_GPU);
	cd_index_worker_remove(ix, a);
	assert_null(cd_index_worker(ix, "a"));
	assert_ptr_equal(cd_index_worker(ix, "b"), b);
	cd_index_stats st;
	cd_index_stats_get(ix, &st);
	assert_int_equal(st.keys, 1000);
	assert_int_equal(st.holders, 1000);
	for (uint64_t i = 0; i < 1500; i++)
		assert_int_equal(cd_index_tiers(ix, b, K(i)), i >= 500 ? 1 : 0);
	/* The freed index is reused. */
	cd_worker *c = add_worker(ix, "c", "m", 16);
	assert_int_equal(c->idx, 0);
	assert_int_equal(c->nheld, 0);
	cd_index_destroy(ix);
}

struct swept {
	kvf_blockkey k[256];
	size_t n;
};

static void on_swept(void *ud, kvf_blockkey key)
{
	struct swept *s = ud;
	if (s->n < 256)
		s->k[s->n] = key;
	s->n++;
}

static void test_sync_mark_and_sweep(void **state)
{
	(void)state;
	cd_index *ix;
	assert_int_equal(cd_index_new(0, &ix), 0);
	cd_worker *a = add_worker(ix, "a", "m", 16);
	cd_worker *b = add_worker(ix, "b", "m", 16);
	store_range(ix, a, 0, 100, CD_TIER_GPU);
	store_range(ix, b, 0, 100, CD_TIER_GPU);

	cd_index_sync_begin(ix, a);
	/* While syncing, the old entries still answer lookups. */
	assert_int_equal(cd_index_tiers(ix, a, K(70)), 1);
	store_range(ix, a, 0, 50, CD_TIER_GPU);
	store_range(ix, a, 100, 110, CD_TIER_HOST);
	struct swept sw = { .n = 0 };
	assert_int_equal(cd_index_sync_end(ix, a, on_swept, &sw), 50);
	assert_int_equal(sw.n, 50);
	for (size_t i = 0; i < 50; i++) {
		int found = 0;
		for (uint64_t j = 50; j < 100; j++)
			found |= kvf_blockkey_eq(sw.k[i], K(j));
		assert_true(found);
	}
	assert_int_equal(a->nheld, 60);
	for (uint64_t i = 0; i < 110; i++)
		assert_int_equal(cd_index_tiers(ix, a, K(i)), i < 50 ? 1 : i < 100 ? 0 : 2);
	/* b is untouched. */
	assert_int_equal(b->nheld, 100);
	/* The member list was compacted to exactly the held keys. */
	assert_int_equal(a->nkeys, 60);

	/* An empty sync drops everything. */
	cd_index_sync_begin(ix, a);
	assert_int_equal(cd_index_sync_end(ix, a, NULL, NULL), 60);
	assert_int_equal(a->nheld, 0);

	/* A restarted sync: only the second listing counts. */
	store_range(ix, a, 0, 20, CD_TIER_GPU);
	cd_index_sync_begin(ix, a);
	store_range(ix, a, 0, 20, CD_TIER_GPU);
	cd_index_sync_begin(ix, a);
	store_range(ix, a, 0, 5, CD_TIER_GPU);
	assert_int_equal(cd_index_sync_end(ix, a, NULL, NULL), 15);
	assert_int_equal(a->nheld, 5);
	/* sync_end without a sync is a no-op. */
	assert_int_equal(cd_index_sync_end(ix, a, NULL, NULL), 0);
	assert_int_equal(a->nheld, 5);
	cd_index_destroy(ix);
}

static void test_limits_and_models(void **state)
{
	(void)state;
	cd_index *ix;
	assert_int_equal(cd_index_new(0, &ix), 0);
	cd_worker *a = add_worker(ix, "a", "m1", 16);
	cd_worker *b = add_worker(ix, "b", "m2", 32);
	cd_register r;
	memset(&r, 0, sizeof(r));
	strcpy(r.worker_id, "c");
	strcpy(r.model, "m1");
	r.role = 1;
	r.tiers = 1;
	r.block_size = 32;
	cd_worker *c = NULL;
	assert_int_equal(cd_index_worker_add(ix, &r, 0, &c), KVF_E_INVAL);
	assert_non_null(strstr(kvf_errmsg(), "block size 16"));
	r.block_size = 16;
	assert_int_equal(cd_index_worker_add(ix, &r, 2, &c), KVF_E_FULL);
	strcpy(r.worker_id, "a");
	assert_int_equal(cd_index_worker_add(ix, &r, 0, &c), KVF_E_EXISTS);

	/* Same keys, different models: lookups stay within the model. */
	store_range(ix, a, 0, 4, CD_TIER_GPU);
	store_range(ix, b, 0, 4, CD_TIER_GPU);
	kvf_blockkey keys[4];
	chain(keys, 0, 4);
	const cd_match *mt;
	size_t n;
	uint32_t nm;
	cd_index_lookup(ix, cd_index_model(ix, "m2"), keys, 4, 1, &mt, &n, &nm);
	assert_int_equal(n, 1);
	assert_ptr_equal(mt[0].w, b);

	/* Disconnected workers are skipped on request. */
	b->state = CD_WS_DISCONNECTED;
	cd_index_lookup(ix, cd_index_model(ix, "m2"), keys, 4, 1, &mt, &n, &nm);
	assert_int_equal(n, 0);
	cd_index_lookup(ix, cd_index_model(ix, "m2"), keys, 4, 0, &mt, &n, &nm);
	assert_int_equal(n, 1);

	/* max_keys bounds distinct keys, not holders. */
	assert_int_equal(cd_index_store(ix, a, K(100), 0, 4), KVF_E_FULL);
	assert_int_equal(cd_index_store(ix, a, K(1), 1, 4), 0);
	assert_int_equal(cd_index_store(ix, a, K(100), 0, 5), 1);
	cd_index_destroy(ix);
}

static void test_growth_and_delete(void **state)
{
	(void)state;
	cd_index *ix;
	assert_int_equal(cd_index_new(0, &ix), 0);
	cd_worker *a = add_worker(ix, "a", "m", 16);
	const uint64_t N = 60000;
	store_range(ix, a, 0, N, CD_TIER_GPU);
	cd_index_stats st;
	cd_index_stats_get(ix, &st);
	assert_int_equal(st.keys, N);
	assert_true(st.table_slots * 3 / 4 >= N);
	/* Delete every other key, then check all of them. */
	for (uint64_t i = 0; i < N; i += 2)
		assert_int_equal(cd_index_remove(ix, a, K(i), CD_TIER_ALL), 1);
	for (uint64_t i = 0; i < N; i++)
		assert_int_equal(cd_index_tiers(ix, a, K(i)), (i & 1) ? 1 : 0);
	/* Compaction ran: the member list is not twice the held set. */
	assert_true(a->nkeys <= 2 * a->nheld + 1100);
	/* Churn: store and remove the same keys many times. */
	for (int round = 0; round < 10; round++) {
		for (uint64_t i = 0; i < N; i += 2)
			assert_int_equal(cd_index_store(ix, a, K(i), 1, 0), 1);
		for (uint64_t i = 0; i < N; i += 2)
			assert_int_equal(cd_index_remove(ix, a, K(i), CD_TIER_ALL), 1);
	}
	assert_int_equal(a->nheld, N / 2);
	assert_true(a->nkeys <= 2 * a->nheld + 1100);
	cd_index_destroy(ix);
}

static uint64_t count_cb_n;
static void count_cb(void *ud, kvf_blockkey key, uint8_t tiers)
{
	uint8_t *seen = ud;
	assert_int_equal(key.hi < 64, 1);
	seen[key.hi] |= tiers;
	count_cb_n++;
}

static void test_foreach_unique(void **state)
{
	(void)state;
	cd_index *ix;
	assert_int_equal(cd_index_new(0, &ix), 0);
	cd_worker *a = add_worker(ix, "a", "m", 16);
	store_range(ix, a, 0, 32, CD_TIER_GPU);
	/* Remove and re-add: the member list now has duplicates. */
	for (uint64_t i = 0; i < 16; i++)
		cd_index_remove(ix, a, K(i), CD_TIER_ALL);
	store_range(ix, a, 0, 16, CD_TIER_HOST);
	store_range(ix, a, 40, 48, CD_TIER_DISK);
	uint8_t seen[64] = { 0 };
	count_cb_n = 0;
	assert_int_equal(cd_index_foreach(ix, a, count_cb, seen), 40);
	assert_int_equal(count_cb_n, 40);
	for (int i = 0; i < 64; i++)
		assert_int_equal(seen[i], i < 16 ? 2 : i < 32 ? 1 : (i >= 40 && i < 48) ? 4 : 0);
	cd_index_destroy(ix);
}

/* ---- randomized comparison with a brute-force model ---- */

#define RW 7   /* workers */
#define RK 200 /* key universe */

struct ref {
	uint8_t t[RW][RK];
	int alive[RW];
	int syncing[RW];
	uint8_t listed[RW][RK]; /* listed since sync_begin */
};

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void ref_check(cd_index *ix, cd_worker **w, struct ref *ref, cd_model *m)
{
	cd_index_stats st;
	cd_index_stats_get(ix, &st);
	uint64_t holders = 0, keys = 0;
	for (int k = 0; k < RK; k++) {
		int any = 0;
		for (int i = 0; i < RW; i++)
			if (ref->alive[i] && ref->t[i][k]) {
				holders++;
				any = 1;
				assert_int_equal(cd_index_tiers(ix, w[i], K((uint64_t)k)), ref->t[i][k]);
			} else if (ref->alive[i]) {
				assert_int_equal(cd_index_tiers(ix, w[i], K((uint64_t)k)), 0);
			}
		keys += any;
	}
	assert_int_equal(st.holders, holders);
	assert_int_equal(st.keys, keys);
	/* Random chains. */
	for (int q = 0; q < 20; q++) {
		size_t n = 1 + rnd() % 12;
		kvf_blockkey keys_[12];
		int idx[12];
		for (size_t i = 0; i < n; i++) {
			idx[i] = (int)(rnd() % 24); /* small range: long prefixes happen */
			keys_[i] = K((uint64_t)idx[i]);
		}
		const cd_match *mt;
		size_t nm_;
		uint32_t nmatched;
		if (!m)
			return;
		assert_int_equal(cd_index_lookup(ix, m, keys_, n, 1, &mt, &nm_, &nmatched), 0);
		uint32_t best = 0;
		size_t expect_n = 0;
		for (int i = 0; i < RW; i++) {
			if (!ref->alive[i])
				continue;
			uint32_t p[3] = { 0, 0, 0 };
			int run[3] = { 1, 1, 1 };
			for (size_t j = 0; j < n; j++) {
				uint8_t t = ref->t[i][idx[j]];
				uint8_t cls[3] = { 1, 3, 7 };
				for (int c = 0; c < 3; c++) {
					if (run[c] && (t & cls[c]))
						p[c]++;
					else
						run[c] = 0;
				}
			}
			const cd_match *x = find_match(mt, nm_, w[i]);
			if (p[2] == 0) {
				assert_null(x);
				continue;
			}
			expect_n++;
			assert_non_null(x);
			assert_memory_equal(x->prefix, p, sizeof(p));
			if (p[2] > best)
				best = p[2];
		}
		assert_int_equal(nm_, expect_n);
		assert_int_equal(nmatched, best);
	}
}

static void test_random_vs_reference(void **state)
{
	(void)state;
	cd_index *ix;
	assert_int_equal(cd_index_new(0, &ix), 0);
	static struct ref ref;
	memset(&ref, 0, sizeof(ref));
	cd_worker *w[RW];
	for (int i = 0; i < RW; i++) {
		char id[16];
		snprintf(id, sizeof(id), "r%d", i);
		w[i] = add_worker(ix, id, "m", 16);
		ref.alive[i] = 1;
	}
	for (int step = 0; step < 4000; step++) {
		int i = (int)(rnd() % RW);
		int op = (int)(rnd() % 100);
		if (!ref.alive[i]) {
			char id[16];
			snprintf(id, sizeof(id), "r%d", i);
			w[i] = add_worker(ix, id, "m", 16);
			ref.alive[i] = 1;
			memset(ref.t[i], 0, RK);
			ref.syncing[i] = 0;
			continue;
		}
		int k = (int)(rnd() % RK);
		if (k >= 40 && rnd() % 2)
			k = (int)(rnd() % 24); /* keep the chain keys busy */
		if (op < 45) {
			uint8_t tier = (uint8_t)(rnd() % 3);
			assert_true(cd_index_store(ix, w[i], K((uint64_t)k), tier, 0) >= 0);
			ref.t[i][k] |= (uint8_t)(1u << tier);
			ref.listed[i][k] = 1;
		} else if (op < 80) {
			uint8_t mask = (uint8_t)(rnd() % 2 ? CD_TIER_ALL : 1u << (rnd() % 3));
			cd_index_remove(ix, w[i], K((uint64_t)k), mask);
			ref.t[i][k] &= (uint8_t)~mask;
			ref.t[i][k] &= 7;
		} else if (op < 83) {
			cd_index_clear(ix, w[i]);
			memset(ref.t[i], 0, RK);
		} else if (op < 90) {
			cd_index_sync_begin(ix, w[i]);
			ref.syncing[i] = 1;
			memset(ref.listed[i], 0, RK);
		} else if (op < 97) {
			cd_index_sync_end(ix, w[i], NULL, NULL);
			if (ref.syncing[i])
				for (int j = 0; j < RK; j++)
					if (!ref.listed[i][j])
						ref.t[i][j] = 0;
			ref.syncing[i] = 0;
		} else {
			cd_index_worker_remove(ix, w[i]);
			ref.alive[i] = 0;
			memset(ref.t[i], 0, RK);
		}
		if (step % 50 == 0)
			ref_check(ix, w, &ref, cd_index_model(ix, "m"));
	}
	ref_check(ix, w, &ref, cd_index_model(ix, "m"));
	cd_index_destroy(ix);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup_prefix_per_tier),
		cmocka_unit_test(test_remove_and_tiers),
		cmocka_unit_test(test_overflow_holders),
		cmocka_unit_test(test_worker_remove_keeps_others),
		cmocka_unit_test(test_sync_mark_and_sweep),
		cmocka_unit_test(test_limits_and_models),
		cmocka_unit_test(test_growth_and_delete),
		cmocka_unit_test(test_foreach_unique),
		cmocka_unit_test(test_random_vs_reference),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
