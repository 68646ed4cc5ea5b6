/*
 * gateway_route_bench: the gateway's routing decision cost per request for
 * 1k-, 32k- and 128k-token prompts, stage by stage, with the gateway's own
 * code (libkvf_gateway):
 *   parse     the OpenAI body (JSON + validation, kvf_oai_parse)
 *   tokenize  the prompt with a real tokenizer: every request's text is
 *             new (it ends with its own request number), so the
 *             tokenizer's segment cache misses; its per-thread word cache
 *             is warm (the first, cold run is reported apart)
 *   chat      a chat request whose long system prompt an earlier request
 *             already sent, and a new short user message: parse + render
 *             + tokenize, where the system prompt, a segment between
 *             special tokens, comes from the segment cache (tokenizers
 *             without a chat template report null)
 *   keys      tenant-salted block keys (XXH3-128 chain)
 *   lookup    the index lookup: the local index, holding this chain on one
 *             worker among 64k other keys (a cachedir LOOKUP adds one
 *             loopback round trip, measured by the cachedir's own bench)
 *   score     filters + scorers + pick over 8 decode and 2 prefill workers
 * and the same with the prompt sent as token ids (no tokenizer).
 *
 *   gateway_route_bench TOKENIZER_PATH [NAME] > result.json
 * Prints one JSON object; medians over repeated runs.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_blockkey.h"
#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_time.h"
#include "gateway/gw.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double median_us(uint64_t *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	return (double)v[n / 2] / 1000.0;
}

static const char *const WORDS[] = {
	"the", "model", "cache", "answer", "request", "token", "system", "prompt", "user", "question", "data",
	"memory", "layer", "block", "route", "worker", "server", "client", "time", "first", "value", "result",
	"number", "small", "large", "fast", "slow", "green", "blue", "river", "mountain", "city", "paper", "music",
};

/* Text of about n tokens: numbered lines of varied words. */
static char *make_text(const kvf_tokenizer *tok, size_t n, size_t *len)
{
	kvf_buf b = KVF_BUF_INIT;
	uint64_t r = 88172645463325252ull;
	kvf_tok_ids ids = { 0 };
	size_t line = 0;
	for (;;) {
		for (int k = 0; k < 64; k++) {
			kvf_buf_printf(&b, "Line %zu:", line++);
			for (int w = 0; w < 12; w++) {
				r ^= r << 13;
				r ^= r >> 7;
				r ^= r << 17;
				kvf_buf_printf(&b, " %s", WORDS[r % (sizeof(WORDS) / sizeof(WORDS[0]))]);
			}
			kvf_buf_puts(&b, ".\n");
		}
		ids.n = 0;
		kvf_tokenizer_encode(tok, b.data, b.len, KVF_TOK_ADD_SPECIAL, &ids);
		if (ids.n >= n)
			break;
	}
	/* Trim to about n tokens by bytes. */
	size_t cut = (size_t)((double)b.len * (double)n / (double)ids.n);
	b.data[cut] = '\0';
	*len = cut;
	kvf_tok_ids_free(&ids);
	return b.data;
}

struct stage {
	uint64_t parse, tok, keys, lookup, score, ids_parse;
};

static struct {
	size_t n;
	gw_holder h[8];
} L;

static void lcb(void *ud, int status, const gw_holder *h, size_t n)
{
	L.n = n < 8 ? n : 8;
	if (L.n)
		memcpy(L.h, h, L.n * sizeof(*h));
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: gateway_route_bench TOKENIZER_PATH [NAME]\n");
		return 2;
	}
	kvf_log_set_level(KVF_LOG_ERROR);
	kvf_tokenizer *tok;
	if (kvf_tokenizer_load(argv[1], &tok)) {
		fprintf(stderr, "gateway_route_bench: %s\n", kvf_errmsg());
		return 1;
	}
	const char *name = argc > 2 ? argv[2] : argv[1];
	kvf_blockkey_ctx *bk;
	kvf_blockkey_ctx_new("bench-secret", 12, &bk);
	gw_tenants *tenants;
	gw_tenants_new(NULL, 0, &tenants);
	gw_tenant *tn;
	gw_tenants_add(tenants, "acme", 0, &tn);
	gw_workers ws;
	gw_workers_init(&ws, 3, 1000);
	char id[32];
	for (int i = 0; i < 8; i++) {
		snprintf(id, sizeof(id), "10.0.0.%d:8200", i + 1);
		int w = gw_workers_upsert(&ws, id, id, "m", GW_ROLE_DECODE, GW_W_ACTIVE, GW_SRC_STATIC, 0);
		gw_workers_set_load(&ws, w, (uint32_t)i, 4, 100 + 10 * (uint64_t)i, 1000);
	}
	for (int i = 0; i < 2; i++) {
		snprintf(id, sizeof(id), "10.0.1.%d:8100", i + 1);
		gw_workers_upsert(&ws, id, id, "m", GW_ROLE_PREFILL, GW_W_ACTIVE, GW_SRC_STATIC, 0);
	}
	gw_route_cfg rc = { GW_POLICY_SCORE, GW_SCORER_PREFIX | GW_SCORER_QUEUE | GW_SCORER_KV | GW_SCORER_SESSION,
			    3, 1, 1, 2, 1.0, 0.8, 0.5, 512, 0 };
	static gw_decision dec;
	uint64_t rng = 1, rr = 0;

	static const size_t sizes[] = { 1024, 32768, 131072 };
	printf("{\"tokenizer\":\"%s\",\"sizes\":[", name);
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t tlen;
		char *text = make_text(tok, sizes[si], &tlen);
		int iters = sizes[si] >= 131072 ? 9 : sizes[si] >= 32768 ? 21 : 201;
		/* one body per request, each text new: "<text> (request N)" */
		char **jsv = calloc((size_t)iters + 1, sizeof(char *));
		char **chatv = calloc((size_t)iters + 1, sizeof(char *));
		for (int k = 0; k <= iters; k++) {
			kvf_buf u = KVF_BUF_INIT;
			kvf_buf_append(&u, text, tlen);
			kvf_buf_printf(&u, " (request %d)", k);
			json_t *body = json_pack("{s:s,s:s%,s:i}", "model", "m", "prompt", u.data, u.len, "max_tokens", 16);
			jsv[k] = json_dumps(body, JSON_COMPACT);
			json_decref(body);
			kvf_buf_free(&u);
			char q[64];
			snprintf(q, sizeof(q), "Question %d: which line mentions a river?", k);
			body = json_pack("{s:s,s:[{s:s,s:s%},{s:s,s:s}],s:i}", "model", "m", "messages", "role", "system",
					 "content", text, tlen, "role", "user", "content", q, "max_tokens", 16);
			chatv[k] = json_dumps(body, JSON_COMPACT);
			json_decref(body);
		}
		size_t jlen = strlen(jsv[0]);
		/* The same prompt as token ids. */
		kvf_tok_ids ids = { 0 };
		kvf_tokenizer_encode(tok, text, tlen, KVF_TOK_ADD_SPECIAL, &ids);
		json_t *arr = json_array();
		for (size_t i = 0; i < ids.n; i++)
			json_array_append_new(arr, json_integer(ids.ids[i]));
		json_t *body2 = json_pack("{s:s,s:o,s:i}", "model", "m", "prompt", arr, "max_tokens", 16);
		char *js2 = json_dumps(body2, JSON_COMPACT);
		size_t jlen2 = strlen(js2);
		json_decref(body2);
		size_t nb = ids.n / 16;
		kvf_blockkey *keys = malloc(nb * sizeof(*keys));
		/* Index: this chain on worker 5, plus 64k unrelated keys. */
		gw_index ix;
		gw_index_local_new(1 << 20, &ix);
		gw_block_keys(bk, "m", tn, ids.ids, ids.n, 16, keys, nb);
		kvf_blockkey *noise = malloc(65536 * sizeof(*noise));
		for (size_t i = 0; i < 65536; i++)
			noise[i] = (kvf_blockkey){ i * 0x9e3779b97f4a7c15ull + 7, i };
		ix.ops->routed(ix.ix, 1, noise, 65536);
		ix.ops->routed(ix.ix, 5, keys, nb);

		uint64_t *t[7];
		for (int k = 0; k < 7; k++)
			t[k] = calloc((size_t)iters, sizeof(uint64_t));
		uint64_t cold_ns = 0;
		size_t ntok = 0;
		int chat_ok = 1;
		for (int it = -1; it < iters; it++) {
			gw_prompt p;
			const char *js = jsv[it + 1];
			jlen = strlen(js);
			uint64_t t0 = kvf_now_ns();
			gw_prompt_parse(&p, GW_EP_COMPLETIONS, js, jlen);
			uint64_t t1 = kvf_now_ns();
			gw_prompt_tokenize(&p, tok);
			uint64_t t2 = kvf_now_ns();
			ntok = p.ids.n;
			size_t nk = gw_block_keys(bk, p.model, tn, p.ids.ids, p.ids.n, 16, keys, nb);
			uint64_t t3 = kvf_now_ns();
			ix.ops->lookup(ix.ix, "m", keys, nk, lcb, NULL, NULL);
			uint64_t t4 = kvf_now_ns();
			gw_route_in in = { "m", (uint32_t)p.ids.n, (uint32_t)nk, 16, -1, NULL, 0, 0 };
			gw_route_decide(&rc, &ws, L.h, L.n, &in, &rng, &rr, &dec);
			uint64_t t5 = kvf_now_ns();
			gw_prompt_free(&p);
			gw_prompt p2;
			uint64_t t6 = kvf_now_ns();
			gw_prompt_parse(&p2, GW_EP_COMPLETIONS, js2, jlen2);
			uint64_t t7 = kvf_now_ns();
			gw_prompt_free(&p2);
			/* chat: the system prompt was sent by the request before */
			gw_prompt pc;
			uint64_t t8 = kvf_now_ns();
			if (gw_prompt_parse(&pc, GW_EP_CHAT, chatv[it + 1], strlen(chatv[it + 1])) ||
			    gw_prompt_tokenize(&pc, tok))
				chat_ok = 0;
			uint64_t t9 = kvf_now_ns();
			gw_prompt_free(&pc);
			if (it < 0) {
				cold_ns = t2 - t1;
				continue;
			}
			t[0][it] = t1 - t0;
			t[1][it] = t2 - t1;
			t[2][it] = t3 - t2;
			t[3][it] = t4 - t3;
			t[4][it] = t5 - t4;
			t[5][it] = t7 - t6;
			t[6][it] = t9 - t8;
		}
		if (dec.decode < 0 || strcmp(ws.w[dec.decode].id, "10.0.0.6:8200")) {
			fprintf(stderr, "gateway_route_bench: the holder was not picked\n");
			return 1;
		}
		double parse = median_us(t[0], iters), tk = median_us(t[1], iters), ky = median_us(t[2], iters);
		double lk = median_us(t[3], iters), sc = median_us(t[4], iters), ip = median_us(t[5], iters);
		double ch = median_us(t[6], iters);
		char chat_total[32] = "null", chat_tok[32] = "null";
		if (chat_ok) {
			snprintf(chat_tok, sizeof(chat_tok), "%.1f", ch);
			snprintf(chat_total, sizeof(chat_total), "%.1f", ch + ky + lk + sc);
		}
		printf("%s{\"tokens\":%zu,\"blocks\":%zu,\"body_bytes\":%zu,\"parse_us\":%.1f,\"tokenize_us\":%.1f,"
		       "\"tokenize_cold_us\":%.1f,\"keys_us\":%.1f,\"lookup_us\":%.1f,\"score_us\":%.1f,\"total_us\":%.1f,"
		       "\"ids_body_bytes\":%zu,\"ids_parse_us\":%.1f,\"total_with_ids_us\":%.1f,\"tokenize_mtok_s\":%.2f,"
		       "\"chat_cached_system_parse_tokenize_us\":%s,\"chat_cached_system_total_us\":%s}",
		       si ? "," : "", ntok, nb, jlen, parse, tk, (double)cold_ns / 1000.0, ky, lk, sc, parse + tk + ky + lk + sc,
		       jlen2, ip, ip + ky + lk + sc, (double)ntok / tk, chat_tok, chat_total);
		fflush(stdout);
		for (int k = 0; k < 7; k++)
			free(t[k]);
		for (int k = 0; k <= iters; k++) {
			free(jsv[k]);
			free(chatv[k]);
		}
		free(jsv);
		free(chatv);
		free(noise);
		free(keys);
		ix.ops->destroy(ix.ix);
		kvf_tok_ids_free(&ids);
		free(js2);
		free(text);
	}
	printf("]}\n");
	gw_workers_free(&ws);
	gw_tenants_destroy(tenants);
	kvf_blockkey_ctx_free(bk);
	kvf_tokenizer_destroy(tok);
	return 0;
}
