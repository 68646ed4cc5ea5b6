/*
 * Unit tests for the scheduler (engine/sched.c), driven by the sim backend
 * (many requests, no weights) and by the small llama reference model (exact
 * outputs): continuous batching with chunked prefill mixed with decode,
 * preemption by recompute that changes no output, cancellation, prefix
 * caching through requests, the prefill/decode hand-off (hold_kv, export,
 * import into another engine, only the last prompt token recomputed), stop
 * ids / strings / EOS, logprobs, key extension over generated tokens, and
 * request validation.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/kvf_err.h"
#include "common/kvf_blockkey.h"
#include "engine/kvf_engine.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static kvf_engine *sim_engine(int blocks, int max_batch, int max_seqs)
{
	kvf_engine_options o;
	kvf_engine_options_init(&o);
	o.backend = "sim";
	o.sim.preset = "tiny";
	o.sim.time_scale = 0.001;
	o.kv_blocks = blocks;
	o.max_batch_tokens = max_batch;
	o.max_seqs = max_seqs;
	kvf_engine *e;
	assert_int_equal(kvf_engine_create(&o, &e), 0);
	return e;
}

static kvf_engine *llama_engine(int blocks, int max_batch, kvf_engine_options *extra)
{
	char dir[1024];
	const char *root = getenv("KVF_ROOT");
	snprintf(dir, sizeof dir, "%s/tests/data/models/llama", root ? root : ".");
	kvf_engine_options o;
	if (extra)
		o = *extra;
	else
		kvf_engine_options_init(&o);
	o.model_dir = dir;
	o.n_threads = 2;
	o.kv_blocks = blocks;
	o.max_batch_tokens = max_batch;
	kvf_engine *e;
	int rc = kvf_engine_create(&o, &e);
	if (rc)
		fprintf(stderr, "%s\n", kvf_errmsg());
	assert_int_equal(rc, 0);
	return e;
}

#define MAXR 64
#define MAXT 64
typedef struct run {
	int n;
	uint64_t id[MAXR];
	uint32_t out[MAXR][MAXT];
	int n_out[MAXR];
	kvf_finish fin[MAXR];
	int first_step[MAXR];
	int steps_with_token[MAXR];
	int steps;
} run;

static int idx_of(run *r, uint64_t id)
{
	for (int i = 0; i < r->n; i++)
		if (r->id[i] == id)
			return i;
	return -1;
}

/* Steps until nothing is left; records every event. */
static void drain(kvf_engine *e, run *r)
{
	for (int guard = 0; guard < 100000; guard++) {
		int w, ru;
		kvf_engine_load(e, &w, &ru);
		if (!w && !ru)
			return;
		const kvf_event *ev;
		int n;
		assert_int_equal(kvf_engine_step(e, &ev, &n), 0);
		r->steps++;
		for (int k = 0; k < n; k++) {
			int i = idx_of(r, ev[k].req);
			assert_true(i >= 0);
			assert_int_equal(r->fin[i], KVF_FINISH_NONE); /* nothing after the end */
			if (ev[k].token != KVF_TOKEN_NONE) {
				assert_true(r->n_out[i] < MAXT);
				if (!r->n_out[i])
					r->first_step[i] = r->steps;
				r->out[i][r->n_out[i]++] = ev[k].token;
				r->steps_with_token[i]++;
			}
			r->fin[i] = ev[k].finish;
		}
	}
	fail_msg("scheduler did not drain");
}

static uint64_t submit(kvf_engine *e, run *r, const uint32_t *prompt, int n, int max_tokens)
{
	kvf_request_params p;
	kvf_request_params_init(&p);
	p.prompt = prompt;
	p.n_prompt = n;
	p.max_tokens = max_tokens;
	p.ignore_eos = 1;
	uint64_t id;
	int rc = kvf_engine_submit(e, &p, &id);
	if (rc)
		fprintf(stderr, "submit: %s\n", kvf_errmsg());
	assert_int_equal(rc, 0);
	if (r) {
		r->id[r->n] = id;
		r->n++;
	}
	return id;
}

static uint32_t prompts[MAXR][256];
static int plen[MAXR], pmax[MAXR];

static void make_prompts(int n, int maxlen, int vocab, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < n; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		plen[i] = 1 + (int)((x >> 33) % (uint64_t)maxlen);
		pmax[i] = 1 + (int)((x >> 20) % 30);
		for (int j = 0; j < plen[i]; j++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			prompts[i][j] = (uint32_t)((x >> 33) % (uint64_t)vocab);
		}
	}
}

/* 40 requests through a small budget: all finish with max_tokens tokens,
 * each output equals the same request run alone. */
static void test_sim_many(void **state)
{
	enum { N = 40 };
	make_prompts(N, 200, 512, 11);
	kvf_engine *e = sim_engine(256, 64, 16);
	run *r = calloc(1, sizeof *r);
	for (int i = 0; i < N; i++)
		submit(e, r, prompts[i], plen[i], pmax[i]);
	drain(e, r);
	for (int i = 0; i < N; i++) {
		assert_int_equal(r->n_out[i], pmax[i]);
		assert_int_equal(r->fin[i], KVF_FINISH_LENGTH);
		kvf_engine *a = sim_engine(64, 512, 4);
		run *s = calloc(1, sizeof *s);
		submit(a, s, prompts[i], plen[i], pmax[i]);
		drain(a, s);
		assert_memory_equal(s->out[0], r->out[i], (size_t)pmax[i] * sizeof(uint32_t));
		free(s);
		kvf_engine_destroy(a);
	}
	kvf_kv_stats st;
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.used, 0);
	free(r);
	kvf_engine_destroy(e);
}

/* A 200-token prompt is prefilled in chunks of the step budget while an
 * earlier request keeps decoding in the same steps. */
static void test_chunked_prefill_mixed(void **state)
{
	kvf_engine *e = sim_engine(64, 48, 8);
	run *r = calloc(1, sizeof *r);
	uint32_t shortp[4] = {1, 2, 3, 4}, longp[200];
	for (int i = 0; i < 200; i++)
		longp[i] = (uint32_t)(i % 500);
	submit(e, r, shortp, 4, 20);
	const kvf_event *ev;
	int n;
	assert_int_equal(kvf_engine_step(e, &ev, &n), 0); /* short prefilled: 1st token */
	assert_int_equal(n, 1);
	r->steps = 1;
	r->first_step[0] = 1;
	r->n_out[0] = 1;
	r->out[0][0] = ev[0].token;
	r->steps_with_token[0] = 1;
	submit(e, r, longp, 200, 5);
	drain(e, r);
	/* 200 tokens at <= 47 per step (one slot goes to the decoder): >= 5 steps */
	printf("long request first token at step %d, short one decoded in %d steps\n",
	       r->first_step[1], r->steps_with_token[0]);
	assert_true(r->first_step[1] >= 6);
	/* the short request got a token in every step while the long one
	 * was prefilling */
	assert_true(r->steps_with_token[0] >= r->first_step[1] - 1 ||
		    r->steps_with_token[0] == 20);
	assert_int_equal(r->n_out[0], 20);
	assert_int_equal(r->n_out[1], 5);
	free(r);
	kvf_engine_destroy(e);
}

/* Greedy outputs of the real model under a pool too small for all
 * requests at once: preemptions happen, outputs equal each-alone runs. */
static void test_preemption_exact(void **state)
{
	enum { N = 4 };
	make_prompts(N, 60, 512, 5);
	for (int i = 0; i < N; i++) {
		plen[i] = 40 + i;
		pmax[i] = 30;
	}
	kvf_engine *e = llama_engine(14, 64, NULL);
	run *r = calloc(1, sizeof *r);
	for (int i = 0; i < N; i++)
		submit(e, r, prompts[i], plen[i], pmax[i]);
	int preempted = 0;
	for (int guard = 0; guard < 10000; guard++) {
		int w, ru;
		kvf_engine_load(e, &w, &ru);
		if (!w && !ru)
			break;
		const kvf_event *ev;
		int n;
		assert_int_equal(kvf_engine_step(e, &ev, &n), 0);
		for (int i = 0; i < N; i++) {
			kvf_request_info info;
			if (kvf_engine_request_info(e, r->id[i], &info) == 0 && info.n_preemptions > preempted)
				preempted = info.n_preemptions;
		}
		for (int k = 0; k < n; k++) {
			int i = idx_of(r, ev[k].req);
			r->out[i][r->n_out[i]++] = ev[k].token;
			r->fin[i] = ev[k].finish;
		}
	}
	printf("max preemptions of one request: %d\n", preempted);
	assert_true(preempted > 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(r->n_out[i], 30);
		kvf_engine *a = llama_engine(64, 512, NULL);
		run *s = calloc(1, sizeof *s);
		submit(a, s, prompts[i], plen[i], pmax[i]);
		drain(a, s);
		assert_memory_equal(s->out[0], r->out[i], 30 * sizeof(uint32_t));
		free(s);
		kvf_engine_destroy(a);
	}
	free(r);
	kvf_engine_destroy(e);
}

static void test_cancel(void **state)
{
	kvf_engine *e = sim_engine(64, 64, 8);
	uint32_t p[40];
	for (int i = 0; i < 40; i++)
		p[i] = (uint32_t)i;
	uint64_t a = submit(e, NULL, p, 40, 20), b = submit(e, NULL, p, 30, 20);
	const kvf_event *ev;
	int n;
	assert_int_equal(kvf_engine_step(e, &ev, &n), 0);
	assert_int_equal(kvf_engine_step(e, &ev, &n), 0);
	kvf_kv_stats before, after;
	kvf_engine_kv_stats(e, &before);
	assert_int_equal(kvf_engine_cancel(e, a), 0);
	kvf_engine_kv_stats(e, &after);
	assert_int_equal(before.used - after.used, 3); /* 41 tokens -> 3 blocks */
	assert_int_equal(kvf_engine_cancel(e, a), KVF_E_NOTFOUND);
	for (int s = 0; s < 30; s++) {
		assert_int_equal(kvf_engine_step(e, &ev, &n), 0);
		for (int k = 0; k < n; k++)
			assert_true(ev[k].req == b);
	}
	/* cancel a waiting request too */
	uint64_t c = submit(e, NULL, p, 10, 5);
	assert_int_equal(kvf_engine_cancel(e, c), 0);
	int w, ru;
	kvf_engine_load(e, &w, &ru);
	assert_int_equal(w + ru, 0);
	kvf_engine_destroy(e);
}

static kvf_blockkey chain_key(void *u, kvf_blockkey parent, const uint32_t *t, size_t n)
{
	uint64_t h = parent.lo ^ 0x9e3779b97f4a7c15ull, g = parent.hi + 0x632be59bd9b4e019ull;
	for (size_t i = 0; i < n; i++) {
		h = (h ^ t[i]) * 0x100000001b3ull;
		g = (g + t[i]) * 0xff51afd7ed558ccdull;
	}
	return (kvf_blockkey){h, g ^ (g >> 29)};
}

/* The second request sharing a 128-token prefix computes only the rest,
 * and produces the same tokens. */
static void test_prefix_cache_requests(void **state)
{
	kvf_engine *e = llama_engine(64, 512, NULL);
	uint32_t p[140];
	for (int i = 0; i < 140; i++)
		p[i] = (uint32_t)((i * 37 + 11) % 512);
	kvf_blockkey keys[8], root = {3, 4};
	for (int i = 0; i < 8; i++)
		keys[i] = chain_key(NULL, i ? keys[i - 1] : root, p + 16 * i, 16);
	uint64_t id[2];
	uint32_t out[2][10];
	for (int r = 0; r < 2; r++) {
		kvf_request_params rp;
		kvf_request_params_init(&rp);
		rp.prompt = p;
		rp.n_prompt = 140;
		rp.keys = keys;
		rp.n_keys = 8;
		rp.max_tokens = 10;
		rp.ignore_eos = 1;
		assert_int_equal(kvf_engine_submit(e, &rp, &id[r]), 0);
		int got = 0;
		kvf_request_info info = {0};
		while (got < 10) {
			const kvf_event *ev;
			int n;
			assert_int_equal(kvf_engine_step(e, &ev, &n), 0);
			if (got == 0)
				assert_int_equal(kvf_engine_request_info(e, id[r], &info), 0);
			for (int k = 0; k < n; k++)
				out[r][got++] = ev[k].token;
		}
		printf("request %d: cached %d computed %d\n", r, info.n_cached_tokens,
		       info.n_computed_tokens);
		assert_int_equal(info.n_cached_tokens, r ? 128 : 0);
		assert_int_equal(info.n_computed_tokens, r ? 12 : 140);
	}
	assert_memory_equal(out[0], out[1], sizeof out[0]);
	kvf_kv_stats st;
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.hits, 8);
	kvf_engine_destroy(e);
}

/* A fully cached prompt still yields logits: the last block is copied and
 * its last token recomputed. */
static void test_full_prefix_hit(void **state)
{
	kvf_engine *e = llama_engine(64, 512, NULL);
	uint32_t p[32];
	for (int i = 0; i < 32; i++)
		p[i] = (uint32_t)(i * 5 + 1);
	kvf_blockkey keys[2];
	keys[0] = chain_key(NULL, (kvf_blockkey){9, 9}, p, 16);
	keys[1] = chain_key(NULL, keys[0], p + 16, 16);
	uint32_t first[2];
	for (int r = 0; r < 2; r++) {
		kvf_request_params rp;
		kvf_request_params_init(&rp);
		rp.prompt = p;
		rp.n_prompt = 32;
		rp.keys = keys;
		rp.n_keys = 2;
		rp.max_tokens = 1;
		uint64_t id;
		assert_int_equal(kvf_engine_submit(e, &rp, &id), 0);
		const kvf_event *ev;
		int n;
		assert_int_equal(kvf_engine_step(e, &ev, &n), 0);
		assert_int_equal(n, 1);
		first[r] = ev[0].token;
	}
	assert_int_equal(first[0], first[1]);
	kvf_kv_stats st;
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.used, 0);
	assert_int_equal(st.cached, 2);
	kvf_engine_destroy(e);
}

/* Prefill on engine P (hold_kv, max_tokens 1), blocks copied into engine D's
 * pool as the fabric would, decode on D: D recomputes only the last prompt
 * token, and the tokens equal an aggregated run. */
static void test_prefill_decode_handoff(void **state)
{
	kvf_engine *P = llama_engine(64, 512, NULL), *D = llama_engine(64, 512, NULL),
		   *A = llama_engine(64, 512, NULL);
	uint32_t p[130];
	for (int i = 0; i < 130; i++)
		p[i] = (uint32_t)((i * 13 + 7) % 512);
	run *agg = calloc(1, sizeof *agg);
	submit(A, agg, p, 130, 16);
	drain(A, agg);

	kvf_request_params rp;
	kvf_request_params_init(&rp);
	rp.prompt = p;
	rp.n_prompt = 130;
	rp.max_tokens = 1;
	rp.hold_kv = 1;
	uint64_t pid;
	assert_int_equal(kvf_engine_submit(P, &rp, &pid), 0);
	const kvf_event *ev;
	int n;
	assert_int_equal(kvf_engine_step(P, &ev, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ev[0].finish, KVF_FINISH_LENGTH);
	uint32_t first = ev[0].token;
	assert_int_equal(first, agg->out[0][0]);
	const int32_t *blocks;
	int nb, nt;
	assert_int_equal(kvf_engine_request_blocks(P, pid, &blocks, &nb, &nt), 0);
	assert_int_equal(nt, 130);
	assert_int_equal(nb, 9);
	int32_t imp[9];
	assert_int_equal(kvf_engine_kv_alloc(D, 9, imp), 0);
	for (int i = 0; i < 9; i++) {
		void *src, *dst;
		size_t ls, ld;
		kvf_engine_kv_block(P, blocks[i], &src, &ls);
		kvf_engine_kv_block(D, imp[i], &dst, &ld);
		memcpy(dst, src, ls);
	}
	assert_int_equal(kvf_engine_release(P, pid), 0);
	assert_int_equal(kvf_engine_release(P, pid), KVF_E_NOTFOUND);
	kvf_kv_stats st;
	kvf_engine_kv_stats(P, &st);
	assert_int_equal(st.used, 0);

	kvf_request_params_init(&rp);
	rp.prompt = p;
	rp.n_prompt = 130;
	rp.max_tokens = 16;
	rp.ignore_eos = 1;
	rp.kv_blocks = imp;
	rp.n_kv_blocks = 9;
	rp.n_kv_tokens = 130;
	run *dec = calloc(1, sizeof *dec);
	assert_int_equal(kvf_engine_submit(D, &rp, &dec->id[0]), 0);
	dec->n = 1;
	assert_int_equal(kvf_engine_step(D, &ev, &n), 0);
	kvf_request_info info;
	assert_int_equal(kvf_engine_request_info(D, dec->id[0], &info), 0);
	assert_int_equal(info.n_computed_tokens, 1);
	assert_int_equal(info.n_imported_tokens, 129);
	dec->out[0][0] = ev[0].token;
	dec->n_out[0] = 1;
	drain(D, dec);
	assert_int_equal(dec->n_out[0], 16);
	assert_memory_equal(dec->out[0], agg->out[0], 16 * sizeof(uint32_t));
	free(agg);
	free(dec);
	kvf_engine_destroy(P);
	kvf_engine_destroy(D);
	kvf_engine_destroy(A);
}

static int piece(void *u, uint32_t id, char *buf, size_t cap)
{
	return snprintf(buf, cap, "<%u>", id);
}

static void test_stops(void **state)
{
	kvf_engine_options o;
	kvf_engine_options_init(&o);
	o.token_piece = piece;
	kvf_engine *e = llama_engine(64, 512, &o);
	uint32_t p[20];
	for (int i = 0; i < 20; i++)
		p[i] = (uint32_t)(i * 3 + 5);
	run *ref = calloc(1, sizeof *ref);
	submit(e, ref, p, 20, 12);
	drain(e, ref);
	assert_int_equal(ref->n_out[0], 12);

	/* stop string spanning tokens 3 and 4: "<a><b>" with a = out[3] */
	char stop[64];
	snprintf(stop, sizeof stop, "%u><%u", ref->out[0][3], ref->out[0][4]);
	kvf_request_params rp;
	kvf_request_params_init(&rp);
	rp.prompt = p;
	rp.n_prompt = 20;
	rp.max_tokens = 12;
	rp.ignore_eos = 1;
	rp.stop[0] = "never-there";
	rp.stop[1] = stop;
	rp.n_stop = 2;
	rp.logprobs = 1;
	rp.top_logprobs = 3;
	uint64_t id;
	assert_int_equal(kvf_engine_submit(e, &rp, &id), 0);
	int got = 0;
	kvf_event last = {0};
	while (got < 12) {
		const kvf_event *ev;
		int n;
		assert_int_equal(kvf_engine_step(e, &ev, &n), 0);
		if (!n)
			break;
		for (int k = 0; k < n; k++) {
			assert_int_equal(ev[k].token, ref->out[0][got]);
			/* greedy: the sampled token is the top alternative */
			assert_int_equal(ev[k].n_top, 3);
			assert_int_equal(ev[k].top_ids[0], ev[k].token);
			assert_true(fabsf(ev[k].top_logprobs[0] - ev[k].logprob) < 1e-6f);
			assert_true(ev[k].logprob <= 0 && ev[k].top_logprobs[1] <= ev[k].logprob);
			got++;
			last = ev[k];
		}
		if (last.finish)
			break;
	}
	assert_int_equal(got, 5);
	assert_int_equal(last.finish, KVF_FINISH_STOP);
	assert_int_equal(last.stop_index, 1);
	/* text so far ends "...<a><b>"; the stop starts after "<" of <a> */
	char tail[64];
	int tl = snprintf(tail, sizeof tail, "<%u><%u>", ref->out[0][3], ref->out[0][4]);
	assert_int_equal(last.stop_trim_bytes, tl - 1);

	/* stop id: the 3rd token */
	kvf_request_params_init(&rp);
	rp.prompt = p;
	rp.n_prompt = 20;
	rp.max_tokens = 12;
	rp.ignore_eos = 1;
	rp.stop_ids[0] = ref->out[0][2];
	rp.n_stop_ids = 1;
	run *s = calloc(1, sizeof *s);
	assert_int_equal(kvf_engine_submit(e, &rp, &s->id[0]), 0);
	s->n = 1;
	drain(e, s);
	int first = 0;
	while (ref->out[0][first] != ref->out[0][2])
		first++;
	assert_int_equal(s->n_out[0], first + 1);
	assert_int_equal(s->fin[0], KVF_FINISH_STOP);
	free(s);
	free(ref);
	kvf_engine_destroy(e);
}

/* The model's EOS ends a request unless ignore_eos: a copy of the llama
 * model whose config names the 3rd greedy token as eos_token_id stops
 * there. */
static void test_eos(void **state)
{
	kvf_engine *e = llama_engine(64, 512, NULL);
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	assert_int_equal(info.n_eos, 1);
	assert_int_equal(info.eos_ids[0], 2);
	uint32_t p[6] = {5, 6, 7, 8, 9, 10};
	run *ref = calloc(1, sizeof *ref);
	submit(e, ref, p, 6, 8);
	drain(e, ref);
	kvf_engine_destroy(e);
	int first = 0;
	while (ref->out[0][first] != ref->out[0][2])
		first++;

	char src[1024], dir[] = "/tmp/kvf-test-eos-XXXXXX", path[1200], link[1200];
	const char *root = getenv("KVF_ROOT");
	snprintf(src, sizeof src, "%s/tests/data/models/llama", root ? root : ".");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/config.json", src);
	FILE *in = fopen(path, "r");
	assert_non_null(in);
	static char cfg[8192];
	size_t n = fread(cfg, 1, sizeof cfg - 1, in);
	fclose(in);
	cfg[n] = 0;
	char *k = strstr(cfg, "\"eos_token_id\": 2");
	assert_non_null(k);
	char patched[8400];
	snprintf(patched, sizeof patched, "%.*s\"eos_token_id\": [%u, 2]%s", (int)(k - cfg), cfg,
		 ref->out[0][2], k + strlen("\"eos_token_id\": 2"));
	snprintf(path, sizeof path, "%s/config.json", dir);
	FILE *out = fopen(path, "w");
	fputs(patched, out);
	fclose(out);
	snprintf(path, sizeof path, "%s/model.safetensors", src);
	snprintf(link, sizeof link, "%s/model.safetensors", dir);
	assert_int_equal(symlink(path, link), 0);

	kvf_engine_options o;
	kvf_engine_options_init(&o);
	o.model_dir = dir;
	o.n_threads = 2;
	o.kv_blocks = 64;
	assert_int_equal(kvf_engine_create(&o, &e), 0);
	kvf_engine_info_get(e, &info);
	assert_int_equal(info.n_eos, 2);
	for (int ignore = 0; ignore < 2; ignore++) {
		kvf_request_params rp;
		kvf_request_params_init(&rp);
		rp.prompt = p;
		rp.n_prompt = 6;
		rp.max_tokens = 8;
		rp.ignore_eos = ignore;
		run *r = calloc(1, sizeof *r);
		assert_int_equal(kvf_engine_submit(e, &rp, &r->id[0]), 0);
		r->n = 1;
		drain(e, r);
		if (ignore) {
			assert_int_equal(r->n_out[0], 8);
			assert_int_equal(r->fin[0], KVF_FINISH_LENGTH);
		} else {
			assert_int_equal(r->n_out[0], first + 1);
			assert_int_equal(r->fin[0], KVF_FINISH_STOP);
		}
		free(r);
	}
	kvf_engine_destroy(e);
	unlink(link); /* the symlink only, never the model it points to */
	snprintf(path, sizeof path, "%s/config.json", dir);
	unlink(path);
	rmdir(dir);
	free(ref);
}

static kvf_blockkey next_key(void *u, kvf_blockkey parent, const uint32_t *t, size_t n)
{
	return kvf_blockkey_next(u, parent, t, n);
}

/* With common/'s block keys as a worker uses them: prompt keys from
 * kvf_blockkey_chain, and the engine's block_key callback wrapping
 * kvf_blockkey_next, blocks filled by generated tokens are cached too, under
 * exactly the keys the chain gives for prompt + output (what a gateway
 * computes for the next turn of a conversation). */
static void test_key_extension(void **state)
{
	kvf_blockkey_ctx *ctx;
	assert_int_equal(kvf_blockkey_ctx_new("cluster-secret", 14, &ctx), 0);
	kvf_blockkey root = kvf_blockkey_root(ctx, "sim-tiny", "tenant", 6);
	kvf_engine_options o;
	kvf_engine_options_init(&o);
	o.backend = "sim";
	o.sim.preset = "tiny";
	o.sim.time_scale = 0.001;
	o.kv_blocks = 64;
	o.block_key = next_key;
	o.block_key_user = ctx;
	kvf_engine *e;
	assert_int_equal(kvf_engine_create(&o, &e), 0);
	uint32_t p[40];
	for (int i = 0; i < 40; i++)
		p[i] = (uint32_t)i;
	kvf_blockkey pk[2];
	assert_int_equal(kvf_blockkey_chain(ctx, root, p, 40, 16, pk, 2), 2);
	kvf_request_params rp;
	kvf_request_params_init(&rp);
	rp.prompt = p;
	rp.n_prompt = 40;
	rp.keys = pk;
	rp.n_keys = 2;
	rp.root = root;
	rp.has_root = 1;
	rp.max_tokens = 30;
	run *r = calloc(1, sizeof *r);
	assert_int_equal(kvf_engine_submit(e, &rp, &r->id[0]), 0);
	r->n = 1;
	drain(e, r);
	/* 70 tokens, the last one's KV never computed: 69 -> 4 full blocks */
	kvf_kv_stats st;
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.stored, 4);
	uint32_t all[70];
	memcpy(all, p, sizeof p);
	memcpy(all + 40, r->out[0], 30 * sizeof(uint32_t));
	kvf_blockkey k[4];
	assert_int_equal(kvf_blockkey_chain(ctx, root, all, 70, 16, k, 4), 4);
	assert_true(kvf_blockkey_eq(k[0], pk[0]) && kvf_blockkey_eq(k[1], pk[1]));
	for (int b = 0; b < 4; b++) {
		int32_t blk = kvf_engine_kv_lookup(e, k[b]);
		assert_true(blk >= 0);
		void *ptr;
		size_t len;
		kvf_engine_kv_block(e, blk, &ptr, &len);
		assert_int_equal(kvf_sim_pattern_check(ptr, len, k[b]), 0);
	}
	/* the next turn (prompt + answer + more) hits all four blocks */
	uint32_t turn2[80];
	memcpy(turn2, all, sizeof all);
	for (int i = 70; i < 80; i++)
		turn2[i] = (uint32_t)i;
	kvf_blockkey k2[5];
	assert_int_equal(kvf_blockkey_chain(ctx, root, turn2, 80, 16, k2, 5), 5);
	kvf_request_params_init(&rp);
	rp.prompt = turn2;
	rp.n_prompt = 80;
	rp.keys = k2;
	rp.n_keys = 5;
	rp.max_tokens = 2;
	uint64_t id2;
	assert_int_equal(kvf_engine_submit(e, &rp, &id2), 0);
	const kvf_event *ev;
	int n;
	assert_int_equal(kvf_engine_step(e, &ev, &n), 0);
	kvf_request_info info;
	assert_int_equal(kvf_engine_request_info(e, id2, &info), 0);
	assert_int_equal(info.n_cached_tokens, 64);
	assert_int_equal(info.n_computed_tokens, 16);
	free(r);
	kvf_engine_destroy(e);
	kvf_blockkey_ctx_free(ctx);
}

static void test_validation(void **state)
{
	kvf_engine *e = sim_engine(16, 64, 8);
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	static uint32_t p[4096];
	kvf_request_params rp;
	uint64_t id;
	kvf_request_params_init(&rp);
	rp.prompt = p;
	rp.n_prompt = info.max_model_len;
	assert_int_equal(kvf_engine_submit(e, &rp, &id), KVF_E_RANGE);
	rp.n_prompt = 10;
	rp.max_tokens = info.max_model_len;
	assert_int_equal(kvf_engine_submit(e, &rp, &id), KVF_E_RANGE);
	rp.max_tokens = 300; /* 310 tokens > 16 blocks of 16 */
	assert_int_equal(kvf_engine_submit(e, &rp, &id), KVF_E_RANGE);
	rp.max_tokens = 10;
	rp.stop[0] = "x";
	rp.n_stop = 1;
	assert_int_equal(kvf_engine_submit(e, &rp, &id), KVF_E_INVAL); /* no token_piece */
	rp.n_stop = 0;
	rp.sampling.top_p = 0;
	assert_int_equal(kvf_engine_submit(e, &rp, &id), KVF_E_INVAL);
	rp.sampling.top_p = 1;
	p[3] = 100000;
	assert_int_equal(kvf_engine_submit(e, &rp, &id), KVF_E_RANGE);
	p[3] = 0;
	rp.n_prompt = 0;
	assert_int_equal(kvf_engine_submit(e, &rp, &id), KVF_E_INVAL);
	/* imported references are dropped on a refused submit */
	int32_t b[1];
	assert_int_equal(kvf_engine_kv_alloc(e, 1, b), 0);
	rp.n_prompt = 10;
	rp.kv_blocks = b;
	rp.n_kv_blocks = 1;
	rp.n_kv_tokens = 10;
	rp.sampling.temperature = -1;
	assert_int_equal(kvf_engine_submit(e, &rp, &id), KVF_E_INVAL);
	kvf_kv_stats st;
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.used, 0);
	kvf_engine_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sim_many),
		cmocka_unit_test(test_chunked_prefill_mixed),
		cmocka_unit_test(test_preemption_exact),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_prefix_cache_requests),
		cmocka_unit_test(test_full_prefix_hit),
		cmocka_unit_test(test_prefill_decode_handoff),
		cmocka_unit_test(test_stops),
		cmocka_unit_test(test_eos),
		cmocka_unit_test(test_key_extension),
		cmocka_unit_test(test_validation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
