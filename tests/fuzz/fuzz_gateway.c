/*
 * Fuzz target for the gateway's request path, everything it derives from
 * client bytes before a request leaves for a worker. The first byte picks:
 *   0, 1  an OpenAI body (completions / chat): parse and validate, tokenize
 *         (chat template included) with the repository's small test
 *         tokenizer, tenant-salted block keys, local index record + lookup,
 *         then a routing decision over a fixed worker table with holders
 *         taken from the lookup (filters, scorers, P/D);
 *   2     an HTTP request head: parse, then the routing inputs read from it
 *         (API key from Authorization / x-api-key, x-kvf-session) and the
 *         session table;
 *   3     a worker's response stream split at the second byte into the usage
 *         scanner, and the same bytes as a tenants file.
 * Invariants are asserted (a decision's worker is eligible, cached tokens
 * never exceed the prompt, the scanner's answer does not depend on the
 * split); leaks are LeakSanitizer's.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_blockkey.h"
#include "common/kvf_err.h"
#include "common/kvf_http_parse.h"
#include "gateway/gw.h"

static kvf_tokenizer *tok;
static kvf_blockkey_ctx *bk;
static int inited;

static void init(void)
{
	inited = 1;
	const char *root = getenv("KVF_ROOT");
	char path[4096];
	snprintf(path, sizeof(path), "%s/tests/data/tokenizer/small", root ? root : ".");
	if (kvf_tokenizer_load(path, &tok))
		tok = NULL; /* run without: parsing and routing are still covered */
	kvf_blockkey_ctx_new("fuzz-secret", 11, &bk);
}

#define CHECK(x)                                                                       \
	do {                                                                           \
		if (!(x)) {                                                            \
			fprintf(stderr, "invariant failed: %s (%s:%d)\n", #x, __FILE__, __LINE__); \
			abort();                                                       \
		}                                                                      \
	} while (0)

static struct {
	size_t n;
	gw_holder h[16];
} L;

static void lookup_cb(void *ud, int status, const gw_holder *h, size_t n)
{
	L.n = n < 16 ? n : 16;
	if (L.n)
		memcpy(L.h, h, L.n * sizeof(*h));
}

static void body_path(int endpoint, const uint8_t *data, size_t size)
{
	gw_prompt p;
	if (gw_prompt_parse(&p, endpoint, (const char *)data, size)) {
		CHECK(p.err[0]);
		gw_prompt_free(&p);
		return;
	}
	CHECK(p.model != NULL);
	if (tok && gw_prompt_tokenize(&p, tok)) {
		CHECK(p.err[0]);
		gw_prompt_free(&p);
		return;
	}
	gw_tenants *t;
	if (gw_tenants_new(NULL, 0, &t)) {
		gw_prompt_free(&p);
		return;
	}
	gw_tenant *tn = NULL;
	gw_tenants_add(t, "fuzz", 0, &tn);
	size_t nb = p.ids.n / 16;
	kvf_blockkey *keys = nb ? malloc(nb * sizeof(*keys)) : NULL;
	size_t nk = keys && tn ? gw_block_keys(bk, p.model, tn, p.ids.ids, p.ids.n, 16, keys, nb) : 0;
	CHECK(nk <= nb);

	gw_workers ws;
	gw_workers_init(&ws, 2, 100);
	gw_workers_upsert(&ws, "d0", "127.0.0.1:1", p.model, GW_ROLE_DECODE, GW_W_ACTIVE, GW_SRC_STATIC, 0);
	gw_workers_upsert(&ws, "d1", "127.0.0.1:2", "", GW_ROLE_BOTH, GW_W_ACTIVE, GW_SRC_STATIC, 0);
	gw_workers_upsert(&ws, "d2", "127.0.0.1:3", "other", GW_ROLE_DECODE, GW_W_DRAINING, GW_SRC_STATIC, 0);
	gw_workers_upsert(&ws, "p0", "127.0.0.1:4", p.model, GW_ROLE_PREFILL, GW_W_ACTIVE, GW_SRC_STATIC, 0);
	gw_workers_set_load(&ws, 0, (uint32_t)(size & 7), 1, size & 63, 64);
	gw_index ix;
	L.n = 0;
	if (gw_index_local_new(256, &ix) == 0) {
		if (nk) {
			ix.ops->routed(ix.ix, (int)(size % 2), keys, nk / 2 + 1 > nk ? nk : nk / 2 + 1);
			ix.ops->lookup(ix.ix, p.model, keys, nk, lookup_cb, NULL, NULL);
			CHECK(L.n <= 4);
			for (size_t i = 0; i < L.n; i++)
				CHECK(L.h[i].any <= nk);
		}
		ix.ops->destroy(ix.ix);
	}
	gw_route_cfg c = { GW_POLICY_SCORE, GW_SCORER_PREFIX | GW_SCORER_QUEUE | GW_SCORER_KV | GW_SCORER_SESSION,
			   3, 1, 1, 2, 1.0, 0.8, 0.5, 32, 0 };
	gw_route_in in = { p.model, (uint32_t)p.ids.n, (uint32_t)nk, 16, -1, NULL, 0, 0 };
	static gw_decision d;
	uint64_t rng = size, rr = 0;
	gw_route_decide(&c, &ws, L.h, L.n, &in, &rng, &rr, &d);
	CHECK(d.decode >= 0); /* d1 serves any model */
	for (size_t i = 0; i < d.ncand; i++)
		if (d.cand[i].widx == d.decode)
			CHECK(d.cand[i].filter == GW_F_OK);
	CHECK(d.cached_tokens <= in.n_tokens);
	CHECK(d.cached_tokens + d.uncached_tokens == in.n_tokens);
	if (d.prefill >= 0)
		CHECK(ws.w[d.prefill].role == GW_ROLE_PREFILL && d.uncached_tokens >= c.pd_threshold_tokens);
	gw_workers_free(&ws);
	free(keys);
	gw_tenants_destroy(t);
	gw_prompt_free(&p);
}

static void head_path(const uint8_t *data, size_t size)
{
	kvf_http_parser p;
	if (kvf_http_parser_init(&p, KVF_HTTP_REQUEST, NULL))
		return;
	size_t used;
	kvf_http_event ev;
	int rc = kvf_http_parse(&p, data, size, &used, &ev);
	while (rc == 0 && ev.type != KVF_HTTP_EV_HEAD) {
		data += used;
		size -= used;
		rc = kvf_http_parse(&p, data, size, &used, &ev);
	}
	if (rc == 0) {
		const char *key;
		size_t len;
		if (gw_auth_key(&p.msg, &key, &len) == 0)
			CHECK(len > 0);
		kvf_http_str s;
		if (kvf_http_msg_header(&p.msg, "x-kvf-session", &s) == 0 && s.len) {
			gw_workers ws;
			gw_workers_init(&ws, 2, 100);
			gw_workers_upsert(&ws, "w", "h:1", "m", GW_ROLE_DECODE, GW_W_ACTIVE, GW_SRC_STATIC, 0);
			gw_sessions ss;
			if (gw_sessions_init(&ss, 16, 1000) == 0) {
				gw_sessions_put(&ss, &ws, s.p, s.len, 0, 0);
				CHECK(gw_sessions_get(&ss, &ws, s.p, s.len, 1) == 0);
				gw_sessions_free(&ss);
			}
			gw_workers_free(&ws);
		}
	}
	kvf_http_parser_free(&p);
}

static void stream_path(const uint8_t *data, size_t size)
{
	if (!size)
		return;
	size_t cut = data[0] % (size + 1);
	data++;
	size--;
	if (cut > size)
		cut = size;
	gw_usage_scan a, b;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	gw_usage_feed(&a, (const char *)data, size);
	gw_usage_feed(&b, (const char *)data, cut);
	gw_usage_feed(&b, (const char *)data + cut, size - cut);
	CHECK(a.events == b.events);
	CHECK(gw_usage_completion_tokens(&a) == gw_usage_completion_tokens(&b));
	gw_tenants *t;
	if (gw_tenants_new(NULL, 0, &t) == 0) {
		gw_tenants_load_json(t, (const char *)data, size, "fuzz", 0);
		gw_tenants_destroy(t);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!inited)
		init();
	if (size < 1)
		return 0;
	switch (data[0] & 3) {
	case 0: body_path(GW_EP_COMPLETIONS, data + 1, size - 1); break;
	case 1: body_path(GW_EP_CHAT, data + 1, size - 1); break;
	case 2: head_path(data + 1, size - 1); break;
	case 3: stream_path(data + 1, size - 1); break;
	}
	kvf_err_clear();
	return 0;
}
