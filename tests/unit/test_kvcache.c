/*
 * Unit tests for the paged KV pool (engine/kvcache.c): allocation and
 * refcounts, the prefix cache (lookup, acquire, commit, LRU eviction order,
 * stored/removed callbacks), the key table under churn, copy-on-write of
 * shared blocks, block-table attach rules, the pool's single-region layout,
 * and the sim backend's key patterns. The sim "tiny" preset gives a real
 * pool without weights.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_err.h"
#include "engine/kvf_engine.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#define MAX_EV 4096
static struct {
	int n_stored, n_removed;
	kvf_blockkey stored[MAX_EV], removed[MAX_EV];
	int32_t removed_block[MAX_EV];
} cb;

static void on_stored(void *u, kvf_blockkey k, int32_t b)
{
	if (cb.n_stored < MAX_EV)
		cb.stored[cb.n_stored] = k;
	cb.n_stored++;
}

static void on_removed(void *u, kvf_blockkey k, int32_t b)
{
	if (cb.n_removed < MAX_EV) {
		cb.removed[cb.n_removed] = k;
		cb.removed_block[cb.n_removed] = b;
	}
	cb.n_removed++;
}

static kvf_engine *sim_engine(int blocks)
{
	kvf_engine_options o;
	kvf_engine_options_init(&o);
	o.backend = "sim";
	o.sim.preset = "tiny";
	o.sim.time_scale = 1e-6;
	o.kv_blocks = blocks;
	o.on_block_stored = on_stored;
	o.on_block_removed = on_removed;
	kvf_engine *e;
	memset(&cb, 0, sizeof cb);
	assert_int_equal(kvf_engine_create(&o, &e), 0);
	return e;
}

static kvf_blockkey K(uint64_t i)
{
	return (kvf_blockkey){i * 0x9e3779b97f4a7c15ull + 1, i ^ 0xdeadbeefull};
}

static void test_alloc_release(void **state)
{
	kvf_engine *e = sim_engine(8);
	kvf_kv_stats st;
	int32_t b[8];
	assert_int_equal(kvf_engine_kv_alloc(e, 5, b), 0);
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.used, 5);
	assert_int_equal(st.empty, 3);
	/* all-or-nothing */
	assert_int_equal(kvf_engine_kv_alloc(e, 4, b + 5), KVF_E_FULL);
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.empty, 3);
	/* distinct ids */
	for (int i = 0; i < 5; i++)
		for (int j = i + 1; j < 5; j++)
			assert_int_not_equal(b[i], b[j]);
	assert_int_equal(kvf_engine_kv_ref(e, b[0]), 0);
	kvf_engine_kv_release(e, b[0]);
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.used, 5); /* still one reference */
	for (int i = 0; i < 5; i++)
		kvf_engine_kv_release(e, b[i]);
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.used, 0);
	assert_int_equal(st.empty, 8);
	assert_int_equal(kvf_engine_kv_ref(e, b[0]), KVF_E_STATE);
	kvf_engine_destroy(e);
}

/* The pool is one region; block i is at base + i * block_bytes. */
static void test_pool_layout(void **state)
{
	kvf_engine *e = sim_engine(16);
	void *base, *p;
	size_t len, bl;
	kvf_engine_kv_pool(e, &base, &len);
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	assert_int_equal(len, 16 * info.block_bytes);
	/* tiny: 2 layers x k|v x 2 heads x 16 tokens x 16 dims x bf16 */
	assert_int_equal(info.block_bytes, 2 * 2 * 2 * 16 * 16 * 2);
	for (int i = 0; i < 16; i++) {
		assert_int_equal(kvf_engine_kv_block(e, i, &p, &bl), 0);
		assert_ptr_equal(p, (char *)base + (size_t)i * info.block_bytes);
		assert_int_equal(bl, info.block_bytes);
	}
	assert_int_equal(kvf_engine_kv_block(e, 16, &p, &bl), KVF_E_RANGE);
	assert_int_equal(kvf_engine_kv_block(e, -1, &p, &bl), KVF_E_RANGE);
	kvf_engine_destroy(e);
}

static void test_commit_lookup_evict(void **state)
{
	kvf_engine *e = sim_engine(4);
	int32_t b[4];
	assert_int_equal(kvf_engine_kv_alloc(e, 4, b), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(kvf_engine_kv_commit(e, b[i], K(i)), 0);
	assert_int_equal(cb.n_stored, 4);
	assert_true(kvf_blockkey_eq(cb.stored[2], K(2)));
	/* a key is cached once */
	assert_int_equal(kvf_engine_kv_commit(e, b[0], K(1)), KVF_E_EXISTS);
	for (int i = 0; i < 4; i++)
		assert_int_equal(kvf_engine_kv_lookup(e, K(i)), b[i]);
	assert_int_equal(kvf_engine_kv_lookup(e, K(9)), -1);
	/* release in the order 2, 0, 3, 1: eviction follows it */
	int order[4] = {2, 0, 3, 1};
	for (int i = 0; i < 4; i++)
		kvf_engine_kv_release(e, b[order[i]]);
	kvf_kv_stats st;
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.cached_idle, 4);
	assert_int_equal(st.used, 0);
	/* acquiring a block takes it off the LRU: it is not evicted */
	int32_t got[2];
	kvf_blockkey want[2] = {K(0), K(7)};
	assert_int_equal(kvf_engine_kv_acquire(e, want, 2, got), 1);
	assert_int_equal(got[0], b[0]);
	int32_t nb[3];
	assert_int_equal(kvf_engine_kv_alloc(e, 3, nb), 0);
	assert_int_equal(cb.n_removed, 3);
	assert_true(kvf_blockkey_eq(cb.removed[0], K(2)));
	assert_true(kvf_blockkey_eq(cb.removed[1], K(3)));
	assert_true(kvf_blockkey_eq(cb.removed[2], K(1)));
	assert_int_equal(kvf_engine_kv_lookup(e, K(2)), -1);
	assert_int_equal(kvf_engine_kv_lookup(e, K(0)), b[0]);
	/* the held one cannot be evicted: pool full */
	int32_t x;
	assert_int_equal(kvf_engine_kv_alloc(e, 1, &x), KVF_E_FULL);
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.evicted, 3);
	assert_int_equal(st.stored, 4);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.misses, 1);
	for (int i = 0; i < 3; i++)
		kvf_engine_kv_release(e, nb[i]);
	kvf_engine_kv_release(e, got[0]);
	kvf_engine_destroy(e);
}

/* Many keys in and out of the key table (backward-shift deletion) against
 * a plain array model. */
static void count_cached(void *u, kvf_blockkey k, int32_t b)
{
	int *n = u;
	if (k.hi == (3 ^ 0xdeadbeefull) || k.hi == (1 ^ 0xdeadbeefull))
		n[1]++;
	n[0]++;
}

/* Re-announce: every cached block, referenced or idle, is listed once. */
static void test_foreach_cached(void **state)
{
	kvf_engine *e = sim_engine(8);
	int32_t b[4];
	assert_int_equal(kvf_engine_kv_alloc(e, 4, b), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(kvf_engine_kv_commit(e, b[i], K((uint64_t)i)), 0);
	kvf_engine_kv_release(e, b[1]);
	kvf_engine_kv_release(e, b[3]);
	int n[2] = {0, 0};
	kvf_engine_kv_foreach_cached(e, count_cached, n);
	assert_int_equal(n[0], 4);
	assert_int_equal(n[1], 2);
	kvf_engine_kv_release(e, b[0]);
	kvf_engine_kv_release(e, b[2]);
	kvf_engine_destroy(e);
}

static void test_key_table_churn(void **state)
{
	enum { N = 512 };
	kvf_engine *e = sim_engine(N);
	int32_t all[N];
	assert_int_equal(kvf_engine_kv_alloc(e, N, all), 0);
	for (int i = 0; i < N; i++)
		kvf_engine_kv_release(e, all[i]);
	static int32_t holder[4096];
	static int present[4096];
	memset(holder, -1, sizeof holder);
	uint64_t rng = 12345;
	int next_key = 0;
	for (int round = 0; round < 20000; round++) {
		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		if (next_key < 4096 && (rng >> 33) % 3) {
			int32_t b;
			assert_int_equal(kvf_engine_kv_alloc(e, 1, &b), 0);
			assert_int_equal(kvf_engine_kv_commit(e, b, K((uint64_t)next_key)), 0);
			holder[next_key] = b;
			present[next_key] = 1;
			next_key++;
			kvf_engine_kv_release(e, b);
		} else {
			int32_t b;
			if (kvf_engine_kv_alloc(e, 1, &b) == 0)
				kvf_engine_kv_release(e, b);
		}
		/* evictions reported by the callback */
		for (int i = 0; i < cb.n_removed && i < MAX_EV; i++)
			for (int k = 0; k < next_key; k++)
				if (present[k] && kvf_blockkey_eq(cb.removed[i], K((uint64_t)k)))
					present[k] = 0;
		cb.n_removed = 0;
		if (round % 97 == 0)
			for (int k = 0; k < next_key; k++)
				assert_int_equal(kvf_engine_kv_lookup(e, K((uint64_t)k)),
						 present[k] ? holder[k] : -1);
	}
	kvf_engine_destroy(e);
}

/* Writing into a sequence whose last block is shared (cached) copies it
 * first: the cached bytes do not change. */
static void test_copy_on_write(void **state)
{
	kvf_engine *e = sim_engine(16);
	kvf_seq *a, *b;
	assert_int_equal(kvf_seq_create(e, &a), 0);
	uint32_t toks[32];
	for (int i = 0; i < 32; i++)
		toks[i] = (uint32_t)(i * 7 + 3);
	kvf_blockkey keys[2] = {K(100), K(101)};
	assert_int_equal(kvf_seq_set_keys(a, keys, 2), 0);
	const uint32_t *tp = toks;
	int n = 32;
	assert_int_equal(kvf_engine_eval(e, &a, &tp, &n, 1, KVF_LOGITS_NONE, NULL), 0);
	int32_t cached = kvf_engine_kv_lookup(e, K(101));
	assert_true(cached >= 0);
	void *cp;
	size_t len;
	kvf_engine_kv_block(e, cached, &cp, &len);
	/* the sim stores the key's pattern in a cached block */
	assert_int_equal(kvf_sim_pattern_check(cp, len, K(101)), 0);
	assert_int_equal(kvf_sim_pattern_check(cp, len, K(100)), KVF_E_PROTO);

	assert_int_equal(kvf_seq_create(e, &b), 0);
	assert_int_equal(kvf_seq_set_keys(b, keys, 2), 0);
	assert_int_equal(kvf_seq_match_prefix(b, 32), 32);
	assert_int_equal(kvf_seq_truncate(b, 31), 0);
	const int32_t *bl;
	int nb;
	kvf_seq_blocks(b, &bl, &nb);
	assert_int_equal(nb, 2);
	assert_int_not_equal(bl[1], cached);
	uint32_t other = 5;
	const uint32_t *op = &other;
	int one = 1;
	assert_int_equal(kvf_engine_eval(e, &b, &op, &one, 1, KVF_LOGITS_NONE, NULL), 0);
	assert_int_equal(kvf_sim_pattern_check(cp, len, K(101)), 0);
	kvf_seq_destroy(a);
	kvf_seq_destroy(b);
	kvf_kv_stats st;
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.used, 0);
	kvf_engine_destroy(e);
}

static void test_attach_rules(void **state)
{
	kvf_engine *e = sim_engine(8);
	kvf_seq *s;
	assert_int_equal(kvf_seq_create(e, &s), 0);
	int32_t b[3];
	assert_int_equal(kvf_engine_kv_alloc(e, 3, b), 0);
	/* wrong block count for the token count */
	assert_int_equal(kvf_seq_attach(s, b, 3, 20), KVF_E_INVAL);
	/* unreferenced block */
	int32_t bad = 7;
	assert_int_equal(kvf_seq_attach(s, &bad, 1, 16), KVF_E_STATE);
	assert_int_equal(kvf_seq_attach(s, b, 2, 20), 0);
	assert_int_equal(kvf_seq_len(s), 20);
	/* onto a partial block: refused */
	assert_int_equal(kvf_seq_attach(s, b + 2, 1, 16), KVF_E_INVAL);
	kvf_engine_kv_release(e, b[2]);
	kvf_seq_destroy(s); /* releases the two it took over */
	kvf_kv_stats st;
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.used, 0);
	kvf_engine_destroy(e);
}

static void test_sim_pattern(void **state)
{
	uint8_t buf[1003];
	kvf_sim_pattern_fill(buf, sizeof buf, K(5));
	assert_int_equal(kvf_sim_pattern_check(buf, sizeof buf, K(5)), 0);
	buf[1002] ^= 1;
	assert_int_equal(kvf_sim_pattern_check(buf, sizeof buf, K(5)), KVF_E_PROTO);
	buf[1002] ^= 1;
	buf[500] ^= 0x80;
	assert_int_equal(kvf_sim_pattern_check(buf, sizeof buf, K(5)), KVF_E_PROTO);
	assert_non_null(strstr(kvf_errmsg(), "byte 496"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_release),
		cmocka_unit_test(test_pool_layout),
		cmocka_unit_test(test_commit_lookup_evict),
		cmocka_unit_test(test_foreach_cached),
		cmocka_unit_test(test_key_table_churn),
		cmocka_unit_test(test_copy_on_write),
		cmocka_unit_test(test_attach_rules),
		cmocka_unit_test(test_sim_pattern),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
