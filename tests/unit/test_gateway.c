/*
 * Unit tests of the gateway's decision logic with fixed inputs and an
 * injected clock: token buckets and tenant admission, API keys and tenant
 * files, auth headers, tenant isolation of block keys, filters, scorers,
 * tie-break, sessions, P/D decision, policies, circuit breaker, OpenAI body
 * parsing and tokenization, the usage scanner and the local index.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_blockkey.h"
#include "common/kvf_err.h"
#include "common/kvf_http_parse.h"
#include "common/kvf_log.h"
#include "engine/tokenizer/kvf_tokenizer.h"
#include "gateway/gw.h"
#include <cmocka.h>

static const char *src_path(const char *rel)
{
	static char buf[4096];
	const char *root = getenv("KVF_ROOT");
	snprintf(buf, sizeof(buf), "%s/%s", root ? root : ".", rel);
	return buf;
}

/* ---- buckets and tenants ---- */

static void test_bucket_rate(void **state)
{
	gw_bucket b;
	gw_bucket_init(&b, 2.0, 2.0, 1000);
	uint64_t retry = 0;
	assert_int_equal(gw_bucket_take(&b, 1000, 1, &retry), 0);
	assert_int_equal(gw_bucket_take(&b, 1000, 1, &retry), 0);
	assert_int_equal(gw_bucket_take(&b, 1000, 1, &retry), KVF_E_OVERLOAD);
	assert_int_equal(retry, 500);
	assert_int_equal(gw_bucket_take(&b, 1250, 1, &retry), KVF_E_OVERLOAD);
	assert_int_equal(retry, 250);
	assert_int_equal(gw_bucket_take(&b, 1500, 1, &retry), 0);
	/* Refill is capped at the burst. */
	assert_int_equal(gw_bucket_take(&b, 100000, 1, &retry), 0);
	assert_int_equal(gw_bucket_take(&b, 100000, 1, &retry), 0);
	assert_int_equal(gw_bucket_take(&b, 100000, 1, &retry), KVF_E_OVERLOAD);
	/* Rate 0 is unlimited. */
	gw_bucket u;
	gw_bucket_init(&u, 0, 0, 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(gw_bucket_take(&u, 0, 1, &retry), 0);
}

static void test_bucket_token_debt(void **state)
{
	gw_bucket b;
	gw_bucket_init(&b, 100.0, 100.0, 0);
	uint64_t retry = 0;
	assert_int_equal(gw_bucket_admit(&b, 0, &retry), 0);
	gw_bucket_charge(&b, 0, 250); /* level -150 */
	assert_int_equal(gw_bucket_admit(&b, 0, &retry), KVF_E_OVERLOAD);
	assert_int_equal(retry, 1500);
	assert_int_equal(gw_bucket_admit(&b, 1000, &retry), KVF_E_OVERLOAD);
	assert_int_equal(retry, 500);
	assert_int_equal(gw_bucket_admit(&b, 1501, &retry), 0);
}

static void test_tenant_admission(void **state)
{
	gw_tenant_defaults def = { .rps = 1, .burst = 3, .tps = 0, .max_concurrency = 2 };
	gw_tenants *t;
	assert_int_equal(gw_tenants_new(&def, 0, &t), 0);
	gw_tenant *a;
	assert_int_equal(gw_tenants_add(t, "acme", 0, &a), 0);
	uint64_t retry;
	assert_int_equal(gw_tenant_admit(a, 0, &retry), GW_ADMIT_OK);
	assert_int_equal(gw_tenant_admit(a, 0, &retry), GW_ADMIT_OK);
	assert_int_equal(gw_tenant_admit(a, 0, &retry), GW_ADMIT_CONCURRENCY);
	assert_int_equal(a->rejected_concurrency, 1);
	gw_tenant_release(a);
	assert_int_equal(gw_tenant_admit(a, 0, &retry), GW_ADMIT_OK); /* third of the burst */
	gw_tenant_release(a);
	assert_int_equal(gw_tenant_admit(a, 0, &retry), GW_ADMIT_RATE);
	assert_int_equal(retry, 1000);
	assert_int_equal(gw_tenant_admit(a, 1000, &retry), GW_ADMIT_OK);
	assert_int_equal(a->requests, 4);
	assert_int_equal(a->rejected_rate, 1);
	/* tokens/s: admitted while not in debt, the debt delays the next one */
	gw_tenant *b;
	assert_int_equal(gw_tenants_add(t, "beta", 0, &b), 0);
	b->tps = 10;
	b->max_concurrency = 0;
	b->rps = 0;
	gw_bucket_init(&b->tok_bucket, 10, 10, 0);
	gw_bucket_init(&b->req_bucket, 0, 0, 0);
	assert_int_equal(gw_tenant_admit(b, 0, &retry), GW_ADMIT_OK);
	gw_tenant_charge_tokens(b, 0, 40, 0);
	gw_tenant_charge_tokens(b, 0, 5, 1);
	assert_int_equal(b->prompt_tokens, 40);
	assert_int_equal(b->completion_tokens, 5);
	assert_int_equal(gw_tenant_admit(b, 0, &retry), GW_ADMIT_TOKENS);
	assert_int_equal(retry, 3500);
	assert_int_equal(gw_tenant_admit(b, 3600, &retry), GW_ADMIT_OK);
	gw_tenants_destroy(t);
}

static void test_tenant_keys_and_file(void **state)
{
	gw_tenants *t;
	assert_int_equal(gw_tenants_new(NULL, 0, &t), 0);
	assert_int_equal(gw_tenants_add_key_spec(t, "acme:sk-acme-0001", 0), 0);
	assert_int_equal(gw_tenants_add_key_spec(t, "acme:sk-acme-0002", 0), 0);
	assert_int_equal(gw_tenants_add_key_spec(t, "other:sk-acme-0001", 0), KVF_E_EXISTS);
	assert_int_equal(gw_tenants_add_key_spec(t, "nokey", 0), KVF_E_CONFIG);
	assert_int_equal(gw_tenants_add_key_spec(t, "x:short", 0), KVF_E_INVAL);
	assert_int_equal(gw_tenants_add_key_spec(t, "anonymous:sk-anon-0001", 0), KVF_E_INVAL);
	gw_tenant *a = gw_tenants_by_key(t, "sk-acme-0002", 12);
	assert_non_null(a);
	assert_string_equal(a->name, "acme");
	assert_int_equal(a->nkeys, 2);
	assert_null(gw_tenants_by_key(t, "sk-acme-000", 11));
	assert_null(gw_tenants_by_key(t, "sk-acme-00021", 13));
	const char *js = "{\"tenants\":[{\"name\":\"beta\",\"keys\":[\"sk-beta-0001\"],\"rps\":5,\"burst\":10,"
			 "\"tps\":1000,\"max_concurrency\":4},"
			 "{\"name\":\"gamma\",\"keys\":[\"sk-gamma-001\"],\"salt\":\"beta\"}]}";
	assert_int_equal(gw_tenants_load_json(t, js, strlen(js), "tenants.json", 0), 0);
	gw_tenant *b = gw_tenants_by_key(t, "sk-beta-0001", 12);
	assert_non_null(b);
	assert_true(b->rps == 5 && b->req_bucket.burst == 10 && b->tps == 1000 && b->max_concurrency == 4);
	gw_tenant *g = gw_tenants_by_key(t, "sk-gamma-001", 12);
	assert_int_equal(g->salt_len, 4);
	assert_memory_equal(g->salt, "beta", 4);
	assert_int_equal(gw_tenants_count(t), 3);
	/* Errors name the file and place. */
	assert_int_equal(gw_tenants_load_json(t, "{\"tenants\": [", 13, "bad.json", 0), KVF_E_CONFIG);
	assert_non_null(strstr(kvf_errmsg(), "bad.json:1:"));
	const char *js2 = "{\"tenants\":[{\"name\":\"d\",\"rps\":\"x\"}]}";
	assert_int_equal(gw_tenants_load_json(t, js2, strlen(js2), "t2.json", 0), KVF_E_CONFIG);
	assert_non_null(strstr(kvf_errmsg(), "rps must be a number"));
	gw_tenant *anon = gw_tenants_anonymous(t);
	assert_string_equal(anon->name, "anonymous");
	assert_int_equal(anon->salt_len, 0);
	/* Many keys: the table grows. */
	char spec[64];
	for (int i = 0; i < 300; i++) {
		snprintf(spec, sizeof(spec), "bulk:sk-bulk-%06d", i);
		assert_int_equal(gw_tenants_add_key_spec(t, spec, 0), 0);
	}
	for (int i = 0; i < 300; i += 37) {
		snprintf(spec, sizeof(spec), "sk-bulk-%06d", i);
		gw_tenant *x = gw_tenants_by_key(t, spec, strlen(spec));
		assert_non_null(x);
		assert_string_equal(x->name, "bulk");
	}
	gw_tenants_destroy(t);
}

static int parse_head(kvf_http_parser *p, const char *req)
{
	assert_int_equal(kvf_http_parser_init(p, KVF_HTTP_REQUEST, NULL), 0);
	size_t used;
	kvf_http_event ev;
	int rc = kvf_http_parse(p, req, strlen(req), &used, &ev);
	assert_int_equal(rc, 0);
	assert_int_equal(ev.type, KVF_HTTP_EV_HEAD);
	return 0;
}

static void test_auth_header(void **state)
{
	static const struct {
		const char *req;
		const char *key;
	} cases[] = {
		{ "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-abc-123\r\n\r\n", "sk-abc-123" },
		{ "POST / HTTP/1.1\r\nHost: x\r\nauthorization: bearer   sk-abc\r\n\r\n", "sk-abc" },
		{ "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n", NULL },
		{ "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \r\n\r\n", NULL },
		{ "POST / HTTP/1.1\r\nHost: x\r\nx-api-key: sk-header-1\r\n\r\n", "sk-header-1" },
		{ "POST / HTTP/1.1\r\nHost: x\r\n\r\n", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kvf_http_parser p;
		parse_head(&p, cases[i].req);
		const char *key;
		size_t len;
		int rc = gw_auth_key(&p.msg, &key, &len);
		if (cases[i].key) {
			assert_int_equal(rc, 0);
			assert_int_equal(len, strlen(cases[i].key));
			assert_memory_equal(key, cases[i].key, len);
		} else {
			assert_int_equal(rc, KVF_E_NOTFOUND);
		}
		kvf_http_parser_free(&p);
	}
}

static void test_block_keys_tenant_isolation(void **state)
{
	kvf_blockkey_ctx *bk;
	assert_int_equal(kvf_blockkey_ctx_new("secret", 6, &bk), 0);
	gw_tenants *t;
	assert_int_equal(gw_tenants_new(NULL, 0, &t), 0);
	gw_tenant *a, *b;
	assert_int_equal(gw_tenants_add(t, "tenant-a", 0, &a), 0);
	assert_int_equal(gw_tenants_add(t, "tenant-b", 0, &b), 0);
	uint32_t ids[80];
	for (int i = 0; i < 80; i++)
		ids[i] = (uint32_t)(i * 7 + 3);
	kvf_blockkey ka[5], kb[5], ka2[5], kanon[5];
	assert_int_equal(gw_block_keys(bk, "m", a, ids, 80, 16, ka, 5), 5);
	assert_int_equal(gw_block_keys(bk, "m", b, ids, 80, 16, kb, 5), 5);
	assert_int_equal(gw_block_keys(bk, "m", a, ids, 79, 16, ka2, 5), 4); /* partial block not keyed */
	for (int i = 0; i < 5; i++)
		for (int j = 0; j < 5; j++)
			assert_false(kvf_blockkey_eq(ka[i], kb[j]));
	for (int i = 0; i < 4; i++)
		assert_true(kvf_blockkey_eq(ka[i], ka2[i]));
	/* The salt is the tenant's name by default: the same chain as the
	 * block-key library with that salt. */
	kvf_blockkey root = kvf_blockkey_root(bk, "m", "tenant-a", 8);
	kvf_blockkey ref[5];
	kvf_blockkey_chain(bk, root, ids, 80, 16, ref, 5);
	assert_memory_equal(ref, ka, sizeof(ref));
	/* Anonymous: empty salt. */
	assert_int_equal(gw_block_keys(bk, "m", gw_tenants_anonymous(t), ids, 80, 16, kanon, 5), 5);
	root = kvf_blockkey_root(bk, "m", NULL, 0);
	kvf_blockkey_chain(bk, root, ids, 80, 16, ref, 5);
	assert_memory_equal(ref, kanon, sizeof(ref));
	assert_false(kvf_blockkey_eq(kanon[0], ka[0]));
	/* A different model never shares either. */
	kvf_blockkey km[5];
	gw_block_keys(bk, "m2", a, ids, 80, 16, km, 5);
	assert_false(kvf_blockkey_eq(km[0], ka[0]));
	gw_tenants_destroy(t);
	kvf_blockkey_ctx_free(bk);
}

/* ---- index ---- */

static struct {
	int calls, status;
	size_t n;
	gw_holder h[16];
} L;

static void lookup_cb(void *ud, int status, const gw_holder *h, size_t n)
{
	L.calls++;
	L.status = status;
	L.n = n;
	if (n)
		memcpy(L.h, h, n * sizeof(*h));
}

static const gw_holder *holder_of(int widx)
{
	for (size_t i = 0; i < L.n; i++)
		if (L.h[i].widx == widx)
			return &L.h[i];
	return NULL;
}

static void mkkeys(kvf_blockkey *k, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		k[i].lo = seed * 1000003 + i * 7919 + 1;
		k[i].hi = seed ^ (i << 32);
	}
}

static void test_local_index(void **state)
{
	gw_index ix;
	assert_int_equal(gw_index_local_new(64, &ix), 0);
	kvf_blockkey k[12], other[12];
	mkkeys(k, 12, 1);
	mkkeys(other, 12, 2);
	memset(&L, 0, sizeof(L));
	ix.ops->lookup(ix.ix, "m", k, 12, lookup_cb, NULL, NULL);
	assert_int_equal(L.calls, 1);
	assert_int_equal(L.n, 0);
	ix.ops->routed(ix.ix, 1, k, 10);
	ix.ops->routed(ix.ix, 2, k, 4);
	ix.ops->lookup(ix.ix, "m", k, 12, lookup_cb, NULL, NULL);
	assert_int_equal(L.n, 2);
	assert_int_equal(holder_of(1)->any, 10);
	assert_int_equal(holder_of(2)->any, 4);
	assert_int_equal(holder_of(1)->gpu, 10);
	/* A chain that diverges after block 0 hits one block. */
	kvf_blockkey mixed[3] = { k[0], other[1], other[2] };
	ix.ops->lookup(ix.ix, "m", mixed, 3, lookup_cb, NULL, NULL);
	assert_int_equal(holder_of(1)->any, 1);
	/* Forget a worker. */
	ix.ops->forget(ix.ix, 1);
	ix.ops->lookup(ix.ix, "m", k, 12, lookup_cb, NULL, NULL);
	assert_int_equal(L.n, 1);
	assert_int_equal(holder_of(2)->any, 4);
	/* Capacity 64: 100 other keys evict the oldest. */
	kvf_blockkey many[100];
	mkkeys(many, 100, 3);
	ix.ops->routed(ix.ix, 5, many, 100);
	ix.ops->lookup(ix.ix, "m", k, 12, lookup_cb, NULL, NULL);
	assert_int_equal(L.n, 0);
	ix.ops->lookup(ix.ix, "m", many + 90, 10, lookup_cb, NULL, NULL);
	assert_int_equal(L.n, 1);
	assert_int_equal(holder_of(5)->any, 10);
	ix.ops->destroy(ix.ix);
	gw_index none;
	gw_index_none_new(&none);
	L.calls = 0;
	none.ops->lookup(none.ix, "m", k, 12, lookup_cb, NULL, NULL);
	assert_int_equal(L.calls, 1);
	assert_int_equal(L.n, 0);
}

static void test_index_tenant_isolation(void **state)
{
	kvf_blockkey_ctx *bk;
	assert_int_equal(kvf_blockkey_ctx_new("s", 1, &bk), 0);
	gw_tenants *t;
	assert_int_equal(gw_tenants_new(NULL, 0, &t), 0);
	gw_tenant *a, *b;
	gw_tenants_add(t, "a-corp", 0, &a);
	gw_tenants_add(t, "b-corp", 0, &b);
	uint32_t ids[64];
	for (int i = 0; i < 64; i++)
		ids[i] = (uint32_t)i;
	kvf_blockkey ka[4], kb[4];
	gw_block_keys(bk, "m", a, ids, 64, 16, ka, 4);
	gw_block_keys(bk, "m", b, ids, 64, 16, kb, 4);
	gw_index ix;
	assert_int_equal(gw_index_local_new(1024, &ix), 0);
	ix.ops->routed(ix.ix, 0, ka, 4);
	memset(&L, 0, sizeof(L));
	ix.ops->lookup(ix.ix, "m", ka, 4, lookup_cb, NULL, NULL);
	assert_int_equal(L.n, 1);
	assert_int_equal(L.h[0].any, 4);
	ix.ops->lookup(ix.ix, "m", kb, 4, lookup_cb, NULL, NULL);
	assert_int_equal(L.n, 0);
	ix.ops->destroy(ix.ix);
	gw_tenants_destroy(t);
	kvf_blockkey_ctx_free(bk);
}

/* ---- routing ---- */

static gw_route_cfg rcfg(void)
{
	gw_route_cfg c = { 0 };
	c.policy = GW_POLICY_SCORE;
	c.scorers = GW_SCORER_PREFIX | GW_SCORER_QUEUE | GW_SCORER_KV | GW_SCORER_SESSION;
	c.w_prefix = 3;
	c.w_queue = 1;
	c.w_kv = 1;
	c.w_session = 2;
	c.tier_gpu = 1.0;
	c.tier_host = 0.8;
	c.tier_disk = 0.5;
	c.pd_threshold_tokens = 0;
	return c;
}

static int add(gw_workers *ws, const char *id, const char *model, int role)
{
	int i = gw_workers_upsert(ws, id, id, model, role, GW_W_ACTIVE, GW_SRC_STATIC, 0);
	assert_true(i >= 0);
	return i;
}

static const gw_cand *cand_of(const gw_decision *d, int widx)
{
	for (size_t i = 0; i < d->ncand; i++)
		if (d->cand[i].widx == widx)
			return &d->cand[i];
	fail();
	return NULL;
}

static gw_route_in rin(uint32_t tokens, uint32_t blocks)
{
	gw_route_in in = { "m", tokens, blocks, 16, -1, NULL, 0, 1000 };
	return in;
}

static void test_filters(void **state)
{
	gw_workers ws;
	gw_workers_init(&ws, 3, 1000);
	int ok = add(&ws, "ok", "m", GW_ROLE_DECODE);
	int disc = add(&ws, "disc", "m", GW_ROLE_DECODE);
	ws.w[disc].state = GW_W_DISCONNECTED;
	int drain = add(&ws, "drain", "m", GW_ROLE_DECODE);
	ws.w[drain].state = GW_W_DRAINING;
	int other = add(&ws, "other", "m2", GW_ROLE_DECODE);
	int pre = add(&ws, "pre", "m", GW_ROLE_PREFILL);
	int brk = add(&ws, "brk", "m", GW_ROLE_DECODE);
	ws.w[brk].breaker = GW_BRK_OPEN;
	ws.w[brk].open_until_ms = 5000;
	int cap = add(&ws, "cap", "m", GW_ROLE_BOTH);
	ws.w[cap].inflight = 4;
	int tried = add(&ws, "tried", "m", GW_ROLE_DECODE);
	int any = add(&ws, "any-model", "", GW_ROLE_DECODE);
	gw_route_cfg c = rcfg();
	c.worker_max_inflight = 4;
	int excl[1] = { tried };
	gw_route_in in = rin(100, 6);
	in.exclude = excl;
	in.nexclude = 1;
	uint64_t rng = 1, rr = 0;
	static gw_decision d;
	gw_route_decide(&c, &ws, NULL, 0, &in, &rng, &rr, &d);
	assert_int_equal(d.ncand, 9);
	assert_int_equal(cand_of(&d, ok)->filter, GW_F_OK);
	assert_int_equal(cand_of(&d, disc)->filter, GW_F_NOT_ALIVE);
	assert_int_equal(cand_of(&d, drain)->filter, GW_F_DRAINING);
	assert_int_equal(cand_of(&d, other)->filter, GW_F_MODEL);
	assert_int_equal(cand_of(&d, pre)->filter, GW_F_ROLE);
	assert_int_equal(cand_of(&d, brk)->filter, GW_F_BREAKER);
	assert_int_equal(cand_of(&d, cap)->filter, GW_F_CAP);
	assert_int_equal(cand_of(&d, tried)->filter, GW_F_TRIED);
	assert_int_equal(cand_of(&d, any)->filter, GW_F_OK); /* no model: serves any */
	assert_int_equal(d.neligible, 2);
	assert_true(d.decode == ok || d.decode == any);
	/* Nothing eligible: no decision. */
	ws.w[ok].state = GW_W_DRAINING;
	ws.w[any].state = GW_W_DRAINING;
	gw_route_decide(&c, &ws, NULL, 0, &in, &rng, &rr, &d);
	assert_int_equal(d.decode, -1);
	assert_string_equal(d.reason, "no-worker");
	assert_string_equal(gw_filter_name(GW_F_BREAKER), "breaker-open");
	gw_workers_free(&ws);
}

static void test_prefix_scorer_tiers(void **state)
{
	gw_workers ws;
	gw_workers_init(&ws, 3, 1000);
	int w0 = add(&ws, "w0", "m", GW_ROLE_DECODE);
	int w1 = add(&ws, "w1", "m", GW_ROLE_DECODE);
	int w2 = add(&ws, "w2", "m", GW_ROLE_DECODE);
	int w3 = add(&ws, "w3", "m", GW_ROLE_DECODE);
	gw_holder h[3] = {
		{ w0, 6, 6, 6 },   /* 6 of 10 in gpu: 0.6 */
		{ w1, 0, 10, 10 }, /* 10 in host: 0.8 */
		{ w2, 4, 4, 10 },  /* 4 gpu + 6 disk: 0.4 + 0.3 = 0.7 */
	};
	gw_route_cfg c = rcfg();
	gw_route_in in = rin(170, 10);
	uint64_t rng = 7, rr = 0;
	static gw_decision d;
	gw_route_decide(&c, &ws, h, 3, &in, &rng, &rr, &d);
	assert_true(cand_of(&d, w0)->s_prefix > 0.6 - 1e-9 && cand_of(&d, w0)->s_prefix < 0.6 + 1e-9);
	assert_true(cand_of(&d, w1)->s_prefix > 0.8 - 1e-9 && cand_of(&d, w1)->s_prefix < 0.8 + 1e-9);
	assert_true(cand_of(&d, w2)->s_prefix > 0.7 - 1e-9 && cand_of(&d, w2)->s_prefix < 0.7 + 1e-9);
	assert_true(cand_of(&d, w3)->s_prefix == 0);
	assert_int_equal(d.decode, w1);
	assert_string_equal(d.reason, "prefix;hit=10/10");
	assert_int_equal(d.cached_tokens, 160);
	assert_int_equal(d.uncached_tokens, 10);
	/* total = 3*prefix + queue(1, all equal) + kv(1) */
	assert_true(cand_of(&d, w1)->total > 3 * 0.8 + 2 - 1e-9 && cand_of(&d, w1)->total < 3 * 0.8 + 2 + 1e-9);
	/* Without the prefix scorer the hit does not matter. */
	c.scorers &= ~GW_SCORER_PREFIX;
	int seen[4] = { 0 };
	for (int i = 0; i < 200; i++) {
		gw_route_decide(&c, &ws, h, 3, &in, &rng, &rr, &d);
		seen[d.decode]++;
		assert_non_null(strstr(d.reason, "tie"));
	}
	for (int i = 0; i < 4; i++)
		assert_true(seen[i] > 20); /* random tie-break spreads */
	gw_workers_free(&ws);
}

static void test_queue_and_kv_scorers(void **state)
{
	gw_workers ws;
	gw_workers_init(&ws, 3, 1000);
	int w0 = add(&ws, "w0", "m", GW_ROLE_DECODE);
	int w1 = add(&ws, "w1", "m", GW_ROLE_DECODE);
	int w2 = add(&ws, "w2", "m", GW_ROLE_DECODE);
	gw_workers_set_load(&ws, w0, 8, 2, 10, 100); /* depth 10 */
	gw_workers_set_load(&ws, w1, 0, 0, 90, 100); /* depth 0, kv 90% used */
	gw_workers_set_load(&ws, w2, 3, 2, 10, 100); /* depth 5 */
	gw_route_cfg c = rcfg();
	gw_route_in in = rin(32, 2);
	uint64_t rng = 3, rr = 0;
	static gw_decision d;
	gw_route_decide(&c, &ws, NULL, 0, &in, &rng, &rr, &d);
	assert_true(cand_of(&d, w0)->s_queue == 0);
	assert_true(cand_of(&d, w1)->s_queue == 1);
	assert_true(cand_of(&d, w2)->s_queue > 0.5 - 1e-9 && cand_of(&d, w2)->s_queue < 0.5 + 1e-9);
	assert_true(cand_of(&d, w1)->s_kv > 0.1 - 1e-9 && cand_of(&d, w1)->s_kv < 0.1 + 1e-9);
	/* w1: 1 + 0.1 = 1.1; w2: 0.5 + 0.9 = 1.4; w0: 0 + 0.9 */
	assert_int_equal(d.decode, w2);
	assert_string_equal(d.reason, "load;hit=0/2");
	/* The gateway's own in-flight count counts when higher than the
	 * directory's (fresh between heartbeats). */
	ws.w[w2].inflight = 20; /* depths now 10, 0, 20: w0 0.5+0.9 beats w1 1+0.1 */
	gw_route_decide(&c, &ws, NULL, 0, &in, &rng, &rr, &d);
	assert_true(cand_of(&d, w2)->s_queue == 0);
	assert_int_equal(d.decode, w0);
	/* A strong prefix beats load. */
	gw_holder h[1] = { { w0, 2, 2, 2 } };
	gw_route_decide(&c, &ws, h, 1, &in, &rng, &rr, &d);
	assert_int_equal(d.decode, w0);
	assert_true(strncmp(d.reason, "prefix", 6) == 0);
	gw_workers_free(&ws);
}

static void test_sessions(void **state)
{
	gw_workers ws;
	gw_workers_init(&ws, 3, 1000);
	add(&ws, "w0", "m", GW_ROLE_DECODE);
	add(&ws, "w1", "m", GW_ROLE_DECODE);
	int w2 = add(&ws, "w2", "m", GW_ROLE_DECODE);
	gw_sessions s;
	assert_int_equal(gw_sessions_init(&s, 100, 10000), 0);
	assert_int_equal(gw_sessions_get(&s, &ws, "sess-1", 6, 0), -1);
	gw_sessions_put(&s, &ws, "sess-1", 6, w2, 0);
	assert_int_equal(gw_sessions_get(&s, &ws, "sess-1", 6, 9999), w2);
	assert_int_equal(gw_sessions_get(&s, &ws, "sess-1", 6, 10000), -1); /* expired */
	gw_sessions_put(&s, &ws, "sess-1", 6, w2, 20000);
	gw_route_cfg c = rcfg();
	gw_route_in in = rin(32, 2);
	in.session_widx = gw_sessions_get(&s, &ws, "sess-1", 6, 20001);
	assert_int_equal(in.session_widx, w2);
	uint64_t rng = 5, rr = 0;
	static gw_decision d;
	for (int i = 0; i < 20; i++) {
		gw_route_decide(&c, &ws, NULL, 0, &in, &rng, &rr, &d);
		assert_int_equal(d.decode, w2);
		assert_string_equal(d.reason, "session;hit=0/2");
	}
	/* The worker left and its slot went to another: the pin is stale. */
	gw_workers_remove(&ws, w2);
	int w3 = add(&ws, "w3", "m", GW_ROLE_DECODE);
	assert_int_equal(w3, w2); /* slot reused */
	assert_int_equal(gw_sessions_get(&s, &ws, "sess-1", 6, 20002), -1);
	gw_sessions_free(&s);
	gw_workers_free(&ws);
}

static void test_pd_decision(void **state)
{
	gw_workers ws;
	gw_workers_init(&ws, 3, 1000);
	int d0 = add(&ws, "d0", "m", GW_ROLE_DECODE);
	int d1 = add(&ws, "d1", "m", GW_ROLE_DECODE);
	gw_route_cfg c = rcfg();
	c.pd_threshold_tokens = 64;
	gw_route_in in = rin(160, 10);
	uint64_t rng = 9, rr = 0;
	static gw_decision d;
	/* No prefill pool: no P/D whatever the length. */
	gw_route_decide(&c, &ws, NULL, 0, &in, &rng, &rr, &d);
	assert_int_equal(d.prefill, -1);
	assert_int_equal(d.nprefill_eligible, 0);
	int p0 = add(&ws, "p0", "m", GW_ROLE_PREFILL);
	int p1 = add(&ws, "p1", "m", GW_ROLE_PREFILL);
	/* d0 holds 9 of 10 blocks: 16 tokens uncached < 64: no prefill. */
	gw_holder h[3] = { { d0, 9, 9, 9 }, { d1, 2, 2, 2 }, { p1, 5, 5, 5 } };
	gw_route_decide(&c, &ws, h, 3, &in, &rng, &rr, &d);
	assert_int_equal(d.decode, d0);
	assert_int_equal(d.uncached_tokens, 16);
	assert_int_equal(d.prefill, -1);
	/* d0 gone: d1 holds 2 blocks, 128 tokens uncached: prefill picked,
	 * the one holding more of the prefix. */
	ws.w[d0].state = GW_W_DRAINING;
	gw_route_decide(&c, &ws, h, 3, &in, &rng, &rr, &d);
	assert_int_equal(d.decode, d1);
	assert_int_equal(d.uncached_tokens, 128);
	assert_int_equal(d.prefill, p1);
	assert_int_equal(d.nprefill_eligible, 2);
	assert_non_null(strstr(d.reason, ";pd"));
	/* Exactly at the threshold counts. */
	gw_route_in in2 = rin(64, 4);
	gw_route_decide(&c, &ws, NULL, 0, &in2, &rng, &rr, &d);
	assert_true(d.prefill == p0 || d.prefill == p1);
	gw_route_in in3 = rin(63, 3);
	gw_route_decide(&c, &ws, NULL, 0, &in3, &rng, &rr, &d);
	assert_int_equal(d.prefill, -1);
	/* An unhealthy prefill worker is skipped. */
	ws.w[p1].breaker = GW_BRK_OPEN;
	ws.w[p1].open_until_ms = 1u << 30;
	gw_route_decide(&c, &ws, h, 3, &in, &rng, &rr, &d);
	assert_int_equal(d.prefill, p0);
	/* threshold 0: never. */
	c.pd_threshold_tokens = 0;
	gw_route_decide(&c, &ws, h, 3, &in, &rng, &rr, &d);
	assert_int_equal(d.prefill, -1);
	gw_workers_free(&ws);
}

static void test_policies(void **state)
{
	gw_workers ws;
	gw_workers_init(&ws, 3, 1000);
	int w[4];
	w[0] = add(&ws, "a", "m", GW_ROLE_DECODE);
	w[1] = add(&ws, "b", "m", GW_ROLE_DECODE);
	w[2] = add(&ws, "c", "m", GW_ROLE_DECODE);
	w[3] = add(&ws, "d", "m", GW_ROLE_DECODE);
	ws.w[w[2]].state = GW_W_DRAINING;
	gw_route_cfg c = rcfg();
	c.policy = GW_POLICY_ROUND_ROBIN;
	gw_holder h[1] = { { w[3], 4, 4, 4 } };
	gw_route_in in = rin(64, 4);
	uint64_t rng = 11, rr = 0;
	static gw_decision d;
	int order[6];
	for (int i = 0; i < 6; i++) {
		gw_route_decide(&c, &ws, h, 1, &in, &rng, &rr, &d);
		order[i] = d.decode;
		assert_string_equal(d.reason, i == 2 || i == 5 ? "round-robin;hit=4/4" : "round-robin;hit=0/4");
	}
	assert_int_equal(order[0], w[0]);
	assert_int_equal(order[1], w[1]);
	assert_int_equal(order[2], w[3]);
	assert_int_equal(order[3], w[0]);
	c.policy = GW_POLICY_RANDOM;
	int seen[4] = { 0 };
	for (int i = 0; i < 300; i++) {
		gw_route_decide(&c, &ws, h, 1, &in, &rng, &rr, &d);
		seen[d.decode]++;
	}
	assert_int_equal(seen[w[2]], 0);
	assert_true(seen[w[0]] > 50 && seen[w[1]] > 50 && seen[w[3]] > 50);
	gw_workers_free(&ws);
}

static void test_breaker(void **state)
{
	gw_workers ws;
	gw_workers_init(&ws, 3, 1000);
	int i = add(&ws, "w", "m", GW_ROLE_DECODE);
	gw_worker *w = &ws.w[i];
	assert_true(gw_breaker_allows(w, 0));
	assert_int_equal(gw_breaker_on_result(&ws, w, 0, 0), 0);
	assert_int_equal(gw_breaker_on_result(&ws, w, 0, 0), 0);
	assert_int_equal(gw_breaker_on_result(&ws, w, 1, 0), 0); /* a success resets */
	assert_int_equal(gw_breaker_on_result(&ws, w, 0, 0), 0);
	assert_int_equal(gw_breaker_on_result(&ws, w, 0, 0), 0);
	assert_int_equal(gw_breaker_on_result(&ws, w, 0, 100), 1); /* third in a row */
	assert_int_equal(w->breaker, GW_BRK_OPEN);
	assert_false(gw_breaker_allows(w, 1099));
	assert_true(gw_breaker_allows(w, 1100)); /* half-open: one trial */
	assert_int_equal(w->breaker, GW_BRK_HALF_OPEN);
	gw_breaker_on_send(w);
	assert_false(gw_breaker_allows(w, 1100));
	assert_int_equal(gw_breaker_on_result(&ws, w, 0, 1200), 1); /* trial failed: open, 2x longer */
	assert_false(gw_breaker_allows(w, 3199));
	assert_true(gw_breaker_allows(w, 3200));
	gw_breaker_on_send(w);
	assert_int_equal(gw_breaker_on_result(&ws, w, 1, 3300), 0);
	assert_int_equal(w->breaker, GW_BRK_CLOSED);
	assert_true(gw_breaker_allows(w, 3300));
	gw_workers_free(&ws);
}

static void test_workers_table(void **state)
{
	gw_workers ws;
	gw_workers_init(&ws, 3, 1000);
	int a = add(&ws, "a", "m", GW_ROLE_DECODE);
	int b = add(&ws, "b", "m", GW_ROLE_DECODE);
	assert_int_equal(gw_workers_upsert(&ws, "a", "h:1", "m", GW_ROLE_BOTH, GW_W_DRAINING, GW_SRC_DIRECTORY, 5), a);
	assert_int_equal(ws.w[a].state, GW_W_DRAINING);
	assert_string_equal(ws.w[a].http, "h:1");
	uint32_t gen = ws.w[b].gen;
	ws.w[b].inflight = 1;
	gw_workers_remove(&ws, b);
	int c = add(&ws, "c", "m", GW_ROLE_DECODE);
	assert_int_not_equal(c, b); /* in-flight slot not reused */
	ws.w[b].inflight = 0;
	int d = add(&ws, "d", "m", GW_ROLE_DECODE);
	assert_int_equal(d, b);
	assert_int_not_equal(ws.w[d].gen, gen);
	for (int i = 0; i < 40; i++) {
		char id[16];
		snprintf(id, sizeof(id), "x%d", i);
		add(&ws, id, "m", GW_ROLE_DECODE);
	}
	assert_int_equal(gw_workers_find(&ws, "x39"), 42);
	gw_workers_remove_source(&ws, GW_SRC_DIRECTORY);
	assert_int_equal(gw_workers_find(&ws, "a"), -1);
	gw_workers_free(&ws);
}

static void test_scorers_parse(void **state)
{
	char *v[] = { "prefix", "kv" };
	kvf_strlist l = { v, 2 };
	unsigned m;
	assert_int_equal(gw_scorers_parse(&l, &m), 0);
	assert_int_equal(m, GW_SCORER_PREFIX | GW_SCORER_KV);
	char *bad[] = { "prefix", "vibes" };
	kvf_strlist lb = { bad, 2 };
	assert_int_equal(gw_scorers_parse(&lb, &m), KVF_E_CONFIG);
	assert_non_null(strstr(kvf_errmsg(), "vibes"));
}

/* ---- OpenAI bodies ---- */

static void parse_ok(gw_prompt *p, int ep, const char *body)
{
	int rc = gw_prompt_parse(p, ep, body, strlen(body));
	if (rc)
		fprintf(stderr, "parse: %s\n", p->err);
	assert_int_equal(rc, 0);
}

static void parse_bad(int ep, const char *body, const char *param, const char *msg_part)
{
	gw_prompt p;
	assert_int_equal(gw_prompt_parse(&p, ep, body, strlen(body)), KVF_E_INVAL);
	assert_string_equal(p.err_param, param);
	if (!strstr(p.err, msg_part))
		fprintf(stderr, "message: %s\n", p.err);
	assert_non_null(strstr(p.err, msg_part));
	gw_prompt_free(&p);
}

static void test_openai_parse(void **state)
{
	gw_prompt p;
	parse_ok(&p, GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"hello\",\"stream\":true,\"max_tokens\":7}");
	assert_string_equal(p.model, "m");
	assert_int_equal(p.stream, 1);
	assert_int_equal(p.max_tokens, 7);
	assert_int_equal(p.text_len, 5);
	assert_int_equal(p.have_ids, 0);
	assert_int_equal(gw_prompt_work_bytes(&p), 5);
	gw_prompt_free(&p);
	parse_ok(&p, GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,2,3]}");
	assert_int_equal(p.have_ids, 1);
	assert_int_equal(p.ids.n, 3);
	assert_int_equal(p.ids.ids[2], 3);
	assert_int_equal(p.max_tokens, -1);
	assert_int_equal(gw_prompt_work_bytes(&p), 0);
	gw_prompt_free(&p);
	parse_ok(&p, GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"first\"]}");
	assert_int_equal(p.text_len, 5);
	gw_prompt_free(&p);
	parse_ok(&p, GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[[9,8]]}");
	assert_int_equal(p.ids.n, 2);
	assert_int_equal(p.ids.ids[0], 9);
	gw_prompt_free(&p);
	parse_ok(&p, GW_EP_CHAT,
		 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_completion_tokens\":3}");
	assert_int_equal(p.max_tokens, 3);
	assert_true(json_is_true(json_object_get(p.chat_vars, "add_generation_prompt")));
	assert_null(json_object_get(p.root, "add_generation_prompt")); /* the forwarded body is untouched */
	gw_prompt_free(&p);
	/* Content parts are flattened as the workers do. */
	parse_ok(&p, GW_EP_CHAT,
		 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
		 "{\"type\":\"text\",\"text\":\"b\"}]}]}");
	json_t *msg0 = json_array_get(json_object_get(p.chat_vars, "messages"), 0);
	assert_string_equal(json_string_value(json_object_get(msg0, "content")), "a\nb");
	gw_prompt_free(&p);
	parse_ok(&p, GW_EP_CHAT,
		 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"add_generation_prompt\":false}");
	assert_true(json_is_false(json_object_get(p.chat_vars, "add_generation_prompt")));
	gw_prompt_free(&p);

	parse_bad(GW_EP_COMPLETIONS, "{\"model\":\"m\"}", "prompt", "required");
	parse_bad(GW_EP_COMPLETIONS, "{\"prompt\":\"x\"}", "model", "model");
	parse_bad(GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":\"ten\"}", "max_tokens", "max_tokens");
	parse_bad(GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"stream\":1}", "stream", "stream");
	parse_bad(GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,-2]}", "prompt", "");
	parse_bad(GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", "prompt", "one prompt");
	parse_bad(GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[]}", "prompt", "empty");
	parse_bad(GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":{}}", "prompt", "must be");
	parse_bad(GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"n\":2}", "n", "");
	parse_bad(GW_EP_COMPLETIONS, "{\"model\":\"m\",", "", "JSON");
	parse_bad(GW_EP_COMPLETIONS, "[1]", "", "");
	parse_bad(GW_EP_CHAT, "{\"model\":\"m\"}", "messages", "messages");
	parse_bad(GW_EP_CHAT, "{\"model\":\"m\",\"messages\":[]}", "messages", "");
	parse_bad(GW_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}", "messages", "role");
	parse_bad(GW_EP_CHAT, "{\"model\":\"m\",\"messages\":\"hi\"}", "messages", "messages");
}

static void test_openai_tokenize(void **state)
{
	kvf_tokenizer *tok;
	int rc = kvf_tokenizer_load(src_path("tests/data/tokenizer/small"), &tok);
	if (rc)
		fprintf(stderr, "tokenizer: %s\n", kvf_errmsg());
	assert_int_equal(rc, 0);
	gw_prompt p;
	parse_ok(&p, GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"the quick brown fox\"}");
	assert_int_equal(gw_prompt_tokenize(&p, tok), 0);
	kvf_tok_ids ref = { 0 };
	assert_int_equal(kvf_tokenizer_encode(tok, "the quick brown fox", 19, KVF_TOK_ADD_SPECIAL, &ref), 0);
	assert_int_equal(p.ids.n, ref.n);
	assert_memory_equal(p.ids.ids, ref.ids, ref.n * 4);
	gw_prompt_free(&p);
	/* chat: the template (generation prompt on), then encode without
	 * extra specials */
	parse_ok(&p, GW_EP_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}");
	assert_int_equal(gw_prompt_tokenize(&p, tok), 0);
	const char *text = "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n";
	ref.n = 0;
	assert_int_equal(kvf_tokenizer_encode(tok, text, strlen(text), 0, &ref), 0);
	assert_int_equal(p.ids.n, ref.n);
	assert_memory_equal(p.ids.ids, ref.ids, ref.n * 4);
	gw_prompt_free(&p);
	/* Invalid UTF-8 in the prompt is a 400 naming the prompt. */
	parse_ok(&p, GW_EP_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"ok\"}");
	p.text = "\xff\xfe"; /* the JSON parser would refuse it: inject past it */
	p.text_len = 2;
	assert_int_equal(gw_prompt_tokenize(&p, tok), KVF_E_INVAL);
	assert_string_equal(p.err_param, "prompt");
	gw_prompt_free(&p);
	kvf_tok_ids_free(&ref);
	kvf_tokenizer_destroy(tok);
}

static void test_usage_scan(void **state)
{
	const char *stream = "data: {\"choices\":[{\"text\":\"a\"}]}\n\n"
			     "data: {\"choices\":[{\"text\":\"b\"}]}\n\n"
			     "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":37,\"total_tokens\":49}}\n\n"
			     "data: [DONE]\n\n";
	size_t n = strlen(stream);
	/* Whatever the split, the answer is the same. */
	for (size_t cut = 0; cut <= n; cut += 3) {
		gw_usage_scan u;
		memset(&u, 0, sizeof(u));
		gw_usage_feed(&u, stream, cut);
		gw_usage_feed(&u, stream + cut, n - cut);
		assert_int_equal(u.events, 3);
		assert_int_equal(gw_usage_completion_tokens(&u), 37);
	}
	/* Without usage: the number of data events. */
	gw_usage_scan u;
	memset(&u, 0, sizeof(u));
	for (int i = 0; i < 50; i++)
		gw_usage_feed(&u, "data: {\"x\":1}\n\n", 15);
	gw_usage_feed(&u, "data: [DONE]\n\n", 14);
	assert_int_equal(gw_usage_completion_tokens(&u), 50);
	/* A JSON answer with a long body before the usage. */
	memset(&u, 0, sizeof(u));
	char big[4096];
	memset(big, 'x', sizeof(big));
	gw_usage_feed(&u, "{\"choices\":[{\"text\":\"", 21);
	gw_usage_feed(&u, big, sizeof(big));
	const char *tail = "\"}],\"usage\":{\"completion_tokens\": 128}}";
	gw_usage_feed(&u, tail, strlen(tail));
	assert_int_equal(gw_usage_completion_tokens(&u), 128);
}

int main(void)
{
	kvf_log_set_level(KVF_LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_rate),
		cmocka_unit_test(test_bucket_token_debt),
		cmocka_unit_test(test_tenant_admission),
		cmocka_unit_test(test_tenant_keys_and_file),
		cmocka_unit_test(test_auth_header),
		cmocka_unit_test(test_block_keys_tenant_isolation),
		cmocka_unit_test(test_local_index),
		cmocka_unit_test(test_index_tenant_isolation),
		cmocka_unit_test(test_filters),
		cmocka_unit_test(test_prefix_scorer_tiers),
		cmocka_unit_test(test_queue_and_kv_scorers),
		cmocka_unit_test(test_sessions),
		cmocka_unit_test(test_pd_decision),
		cmocka_unit_test(test_policies),
		cmocka_unit_test(test_breaker),
		cmocka_unit_test(test_workers_table),
		cmocka_unit_test(test_scorers_parse),
		cmocka_unit_test(test_openai_parse),
		cmocka_unit_test(test_openai_tokenize),
		cmocka_unit_test(test_usage_scan),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
