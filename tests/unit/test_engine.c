/*
 * Unit tests for the engine's forward pass against Hugging Face transformers
 * (tests/data/models/<name>/reference.json: float32 logits at the last
 * position, argmax at every position, 20 greedy tokens), and the
 * equivalences the paged design must keep: token-by-token decode == one
 * prefill, chunked == whole, mixed batch == each alone, a block exported
 * from one pool and imported into another gives the same logits, prefix
 * cache hits give the same logits. Model loading errors name their cause.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/kvf_engine.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static const char *models[] = {"llama", "llama3", "mistral", "qwen2", "qwen3"};

static void model_path(char *buf, size_t n, const char *name)
{
	const char *root = getenv("KVF_ROOT");
	snprintf(buf, n, "%s/tests/data/models/%s", root ? root : ".", name);
}

static kvf_engine *open_engine(const char *name, kvf_dtype kv, int max_batch)
{
	char dir[1024];
	model_path(dir, sizeof dir, name);
	kvf_engine_options o;
	kvf_engine_options_init(&o);
	o.model_dir = dir;
	o.n_threads = 2;
	o.kv_dtype = kv;
	o.kv_blocks = 64;
	o.max_batch_tokens = max_batch;
	kvf_engine *e = NULL;
	int rc = kvf_engine_create(&o, &e);
	if (rc)
		fprintf(stderr, "engine %s: %s\n", name, kvf_errmsg());
	assert_int_equal(rc, 0);
	return e;
}

typedef struct ref {
	json_t *root;
	int n_inputs;
	uint32_t *ids[3];
	int len[3];
} ref;

static void ref_load(ref *r, const char *name)
{
	char path[1200], dir[1024];
	model_path(dir, sizeof dir, name);
	snprintf(path, sizeof path, "%s/reference.json", dir);
	json_error_t err;
	r->root = json_load_file(path, 0, &err);
	assert_non_null(r->root);
	json_t *in = json_object_get(r->root, "inputs");
	r->n_inputs = (int)json_array_size(in);
	assert_int_equal(r->n_inputs, 3);
	for (int i = 0; i < 3; i++) {
		json_t *a = json_array_get(in, (size_t)i);
		r->len[i] = (int)json_array_size(a);
		r->ids[i] = malloc((size_t)r->len[i] * sizeof(uint32_t));
		for (int j = 0; j < r->len[i]; j++)
			r->ids[i][j] = (uint32_t)json_integer_value(json_array_get(a, (size_t)j));
	}
}

static void ref_free(ref *r)
{
	for (int i = 0; i < 3; i++)
		free(r->ids[i]);
	json_decref(r->root);
}

static int argmax(const float *v, int n)
{
	int b = 0;
	for (int i = 1; i < n; i++)
		if (v[i] > v[b])
			b = i;
	return b;
}

static float maxdiff(const float *a, const float *b, size_t n)
{
	float m = 0;
	for (size_t i = 0; i < n; i++) {
		float d = fabsf(a[i] - b[i]);
		if (d > m || isnan(d))
			m = isnan(d) ? INFINITY : d;
	}
	return m;
}

/* Logits at every position, argmax, last-position values, and greedy 20
 * through the sequence API, all against transformers. */
static void check_reference(const char *name)
{
	kvf_engine *e = open_engine(name, KVF_DTYPE_F32, 512);
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	int V = info.vocab_size;
	ref r;
	ref_load(&r, name);
	json_t *lref = json_object_get(r.root, "logits_last");
	json_t *aref = json_object_get(r.root, "argmax_all");
	json_t *gref = json_object_get(r.root, "greedy_20");
	for (int i = 0; i < 3; i++) {
		int n = r.len[i];
		float *lg = malloc((size_t)n * V * sizeof(float));
		kvf_seq *s;
		assert_int_equal(kvf_seq_create(e, &s), 0);
		const uint32_t *tk = r.ids[i];
		assert_int_equal(kvf_engine_eval(e, &s, &tk, &n, 1, KVF_LOGITS_ALL, lg), 0);
		json_t *ai = json_array_get(aref, (size_t)i);
		assert_int_equal((int)json_array_size(ai), n);
		int bad = 0;
		for (int j = 0; j < n; j++)
			if (argmax(lg + (size_t)j * V, V) != (int)json_integer_value(json_array_get(ai, (size_t)j)))
				bad++;
		json_t *li = json_array_get(lref, (size_t)i);
		assert_int_equal((int)json_array_size(li), V);
		float md = 0;
		for (int v = 0; v < V; v++) {
			float d = fabsf(lg[(size_t)(n - 1) * V + v] -
					(float)json_number_value(json_array_get(li, (size_t)v)));
			md = d > md ? d : md;
		}
		printf("%s input %d (%d tokens): last-logits max-abs diff %.3g, argmax mismatches %d\n",
		       name, i, n, md, bad);
		assert_true(md < 1e-4f); /* the spec asks 1e-3; we get ~1e-6 */
		assert_int_equal(bad, 0);

		if (i < 2) {
			json_t *gi = json_array_get(gref, (size_t)i);
			assert_int_equal((int)json_array_size(gi), 20);
			uint32_t tok = (uint32_t)argmax(lg + (size_t)(n - 1) * V, V);
			for (int g = 0; g < 20; g++) {
				assert_int_equal(tok, json_integer_value(json_array_get(gi, (size_t)g)));
				const uint32_t *tp = &tok;
				int one = 1;
				assert_int_equal(kvf_engine_eval(e, &s, &tp, &one, 1, KVF_LOGITS_LAST, lg), 0);
				tok = (uint32_t)argmax(lg, V);
			}
		}
		kvf_seq_destroy(s);
		free(lg);
	}
	/* every block came back */
	kvf_kv_stats st;
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.used, 0);
	ref_free(&r);
	kvf_engine_destroy(e);
}

static void test_ref_llama(void **state) { check_reference("llama"); }
static void test_ref_llama3(void **state) { check_reference("llama3"); }
static void test_ref_mistral(void **state) { check_reference("mistral"); }
static void test_ref_qwen2(void **state) { check_reference("qwen2"); }
static void test_ref_qwen3(void **state) { check_reference("qwen3"); }

/* Greedy 20 through the scheduler (submit/step) equals transformers too. */
static void test_ref_greedy_scheduler(void **state)
{
	for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
		kvf_engine *e = open_engine(models[m], KVF_DTYPE_F32, 32);
		ref r;
		ref_load(&r, models[m]);
		json_t *gref = json_object_get(r.root, "greedy_20");
		uint64_t id[2];
		for (int i = 0; i < 2; i++) {
			kvf_request_params p;
			kvf_request_params_init(&p);
			p.prompt = r.ids[i];
			p.n_prompt = r.len[i];
			p.max_tokens = 20;
			p.ignore_eos = 1;
			assert_int_equal(kvf_engine_submit(e, &p, &id[i]), 0);
		}
		int got[2] = {0, 0}, done = 0;
		while (done < 2) {
			const kvf_event *ev;
			int n;
			assert_int_equal(kvf_engine_step(e, &ev, &n), 0);
			assert_true(n > 0);
			for (int k = 0; k < n; k++) {
				int i = ev[k].req == id[0] ? 0 : 1;
				json_t *gi = json_array_get(gref, (size_t)i);
				assert_int_equal(ev[k].token,
						 json_integer_value(json_array_get(gi, (size_t)got[i])));
				got[i]++;
				if (ev[k].finish) {
					assert_int_equal(ev[k].finish, KVF_FINISH_LENGTH);
					assert_int_equal(got[i], 20);
					done++;
				}
			}
		}
		ref_free(&r);
		kvf_engine_destroy(e);
	}
}

/* ------------------------------------------------------------------------ */

static void eval_all(kvf_engine *e, const uint32_t *ids, int n, float *out)
{
	kvf_seq *s;
	assert_int_equal(kvf_seq_create(e, &s), 0);
	assert_int_equal(kvf_engine_eval(e, &s, &ids, &n, 1, KVF_LOGITS_ALL, out), 0);
	kvf_seq_destroy(s);
}

/* Decoding one token at a time gives the logits of one prefill, bit for
 * bit, for every model; so does chunking the prefill in odd sizes. */
static void test_decode_equals_prefill(void **state)
{
	for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
		kvf_engine *e = open_engine(models[m], KVF_DTYPE_F32, 512);
		kvf_engine *e7 = open_engine(models[m], KVF_DTYPE_F32, 7);
		kvf_engine_info info;
		kvf_engine_info_get(e, &info);
		size_t V = (size_t)info.vocab_size;
		ref r;
		ref_load(&r, models[m]);
		int n = r.len[2];
		float *full = malloc((size_t)n * V * sizeof(float));
		float *step = malloc((size_t)n * V * sizeof(float));
		float *chunked = malloc((size_t)n * V * sizeof(float));
		eval_all(e, r.ids[2], n, full);
		kvf_seq *s;
		assert_int_equal(kvf_seq_create(e, &s), 0);
		for (int j = 0; j < n; j++) {
			const uint32_t *tp = r.ids[2] + j;
			int one = 1;
			assert_int_equal(kvf_engine_eval(e, &s, &tp, &one, 1, KVF_LOGITS_LAST,
							 step + (size_t)j * V),
					 0);
		}
		assert_int_equal(kvf_seq_len(s), n);
		kvf_seq_destroy(s);
		eval_all(e7, r.ids[2], n, chunked);
		float d1 = maxdiff(full, step, (size_t)n * V), d2 = maxdiff(full, chunked, (size_t)n * V);
		printf("%s: token-by-token vs prefill max diff %g, chunks of 7 vs prefill %g\n",
		       models[m], d1, d2);
		assert_true(d1 == 0.0f);
		assert_true(d2 == 0.0f);
		free(full);
		free(step);
		free(chunked);
		ref_free(&r);
		kvf_engine_destroy(e);
		kvf_engine_destroy(e7);
	}
}

/* Three sequences of different lengths in one batch give exactly what each
 * gives alone. */
static void test_mixed_batch(void **state)
{
	kvf_engine *e = open_engine("qwen3", KVF_DTYPE_F32, 512);
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	size_t V = (size_t)info.vocab_size;
	ref r;
	ref_load(&r, "qwen3");
	size_t tot = (size_t)(r.len[0] + r.len[1] + r.len[2]);
	float *batch = malloc(tot * V * sizeof(float));
	float *alone = malloc(tot * V * sizeof(float));
	kvf_seq *s[3];
	const uint32_t *tk[3];
	int n[3];
	size_t off = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(kvf_seq_create(e, &s[i]), 0);
		tk[i] = r.ids[i];
		n[i] = r.len[i];
		eval_all(e, r.ids[i], r.len[i], alone + off * V);
		off += (size_t)r.len[i];
	}
	assert_int_equal(kvf_engine_eval(e, s, tk, n, 3, KVF_LOGITS_ALL, batch), 0);
	float d = maxdiff(batch, alone, tot * V);
	printf("mixed batch (5, 40, 130) vs alone: max diff %g\n", d);
	assert_true(d == 0.0f);
	/* and a decode step for all three at once, vs each alone */
	uint32_t next[3] = {7, 8, 9};
	const uint32_t *np[3] = {&next[0], &next[1], &next[2]};
	int ones[3] = {1, 1, 1};
	float *b3 = malloc(3 * V * sizeof(float));
	assert_int_equal(kvf_engine_eval(e, s, np, ones, 3, KVF_LOGITS_LAST, b3), 0);
	for (int i = 0; i < 3; i++) {
		kvf_seq *a;
		assert_int_equal(kvf_seq_create(e, &a), 0);
		float *one = malloc(V * sizeof(float));
		assert_int_equal(kvf_engine_eval(e, &a, &tk[i], &n[i], 1, KVF_LOGITS_NONE, NULL), 0);
		assert_int_equal(kvf_engine_eval(e, &a, &np[i], &ones[i], 1, KVF_LOGITS_LAST, one), 0);
		assert_true(maxdiff(one, b3 + (size_t)i * V, V) == 0.0f);
		free(one);
		kvf_seq_destroy(a);
	}
	for (int i = 0; i < 3; i++)
		kvf_seq_destroy(s[i]);
	free(b3);
	free(batch);
	free(alone);
	ref_free(&r);
	kvf_engine_destroy(e);
}

/* Export the blocks of a 40-token sequence (2 full + 1 partial) as bytes,
 * import them into a fresh engine's pool: the next-token logits are those
 * of the original engine. Done for each KV dtype. */
static void test_export_import(void **state)
{
	kvf_dtype dts[] = {KVF_DTYPE_F32, KVF_DTYPE_BF16, KVF_DTYPE_F16};
	for (int d = 0; d < 3; d++) {
		kvf_engine *a = open_engine("llama", dts[d], 512);
		kvf_engine *b = open_engine("llama", dts[d], 512);
		kvf_engine_info info;
		kvf_engine_info_get(a, &info);
		size_t V = (size_t)info.vocab_size;
		ref r;
		ref_load(&r, "llama");
		int n = r.len[1];
		kvf_seq *sa, *sb;
		assert_int_equal(kvf_seq_create(a, &sa), 0);
		assert_int_equal(kvf_seq_create(b, &sb), 0);
		const uint32_t *tk = r.ids[1];
		assert_int_equal(kvf_engine_eval(a, &sa, &tk, &n, 1, KVF_LOGITS_NONE, NULL), 0);
		const int32_t *blocks;
		int nb;
		kvf_seq_blocks(sa, &blocks, &nb);
		assert_int_equal(nb, 3);
		/* a block is one contiguous region of the documented size */
		assert_int_equal(info.block_bytes,
				 (size_t)info.n_layers * 2 * info.n_kv_heads * 16 * info.head_dim *
					 kvf_dtype_size(dts[d]));
		int32_t imp[3];
		assert_int_equal(kvf_engine_kv_alloc(b, 3, imp), 0);
		for (int i = 0; i < 3; i++) {
			void *src, *dst;
			size_t ls, ld;
			assert_int_equal(kvf_engine_kv_block(a, blocks[i], &src, &ls), 0);
			assert_int_equal(kvf_engine_kv_block(b, imp[i], &dst, &ld), 0);
			assert_int_equal(ls, ld);
			memcpy(dst, src, ls); /* what the fabric does */
		}
		assert_int_equal(kvf_seq_attach(sb, imp, 3, n), 0);
		uint32_t next = 42;
		const uint32_t *np = &next;
		int one = 1;
		float *la = malloc(V * sizeof(float)), *lb = malloc(V * sizeof(float));
		assert_int_equal(kvf_engine_eval(a, &sa, &np, &one, 1, KVF_LOGITS_LAST, la), 0);
		assert_int_equal(kvf_engine_eval(b, &sb, &np, &one, 1, KVF_LOGITS_LAST, lb), 0);
		printf("export/import kv %s: max diff %g\n", kvf_dtype_name(dts[d]), maxdiff(la, lb, V));
		assert_true(maxdiff(la, lb, V) == 0.0f);
		free(la);
		free(lb);
		kvf_seq_destroy(sa);
		kvf_seq_destroy(sb);
		ref_free(&r);
		kvf_engine_destroy(a);
		kvf_engine_destroy(b);
	}
}

/* bf16 and fp16 KV stay close to float32 KV (rounding only). */
static void test_kv_dtypes_close(void **state)
{
	kvf_engine *e32 = open_engine("llama3", KVF_DTYPE_F32, 512);
	kvf_engine *e16 = open_engine("llama3", KVF_DTYPE_BF16, 512);
	kvf_engine *eh = open_engine("llama3", KVF_DTYPE_F16, 512);
	kvf_engine_info info;
	kvf_engine_info_get(e32, &info);
	size_t V = (size_t)info.vocab_size;
	ref r;
	ref_load(&r, "llama3");
	int n = r.len[2];
	float *a = malloc((size_t)n * V * 4), *b = malloc((size_t)n * V * 4), *c = malloc((size_t)n * V * 4);
	eval_all(e32, r.ids[2], n, a);
	eval_all(e16, r.ids[2], n, b);
	eval_all(eh, r.ids[2], n, c);
	float db = maxdiff(a, b, (size_t)n * V), dh = maxdiff(a, c, (size_t)n * V);
	printf("kv bf16 vs f32 max diff %g, f16 vs f32 %g\n", db, dh);
	assert_true(db > 0 && db < 0.05f);
	assert_true(dh > 0 && dh < 0.01f);
	free(a);
	free(b);
	free(c);
	ref_free(&r);
	kvf_engine_destroy(e32);
	kvf_engine_destroy(e16);
	kvf_engine_destroy(eh);
}

static kvf_blockkey test_key(kvf_blockkey parent, const uint32_t *t, int n)
{
	uint64_t h = parent.lo ^ 0x9e3779b97f4a7c15ull, g = parent.hi + 0x632be59bd9b4e019ull;
	for (int i = 0; i < n; i++) {
		h = (h ^ t[i]) * 0x100000001b3ull;
		g = (g + t[i]) * 0xff51afd7ed558ccdull;
	}
	return (kvf_blockkey){h, g ^ (g >> 29)};
}

/* A second sequence with the same prefix reuses the cached blocks and gets
 * the same logits as computing everything. */
static void test_prefix_cache_logits(void **state)
{
	kvf_engine *e = open_engine("qwen2", KVF_DTYPE_F32, 512);
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	size_t V = (size_t)info.vocab_size;
	ref r;
	ref_load(&r, "qwen2");
	int n = r.len[2]; /* 130 tokens: 8 full blocks */
	kvf_blockkey keys[8], root = {1, 2};
	for (int i = 0; i < 8; i++)
		keys[i] = test_key(i ? keys[i - 1] : root, r.ids[2] + i * 16, 16);
	float *ref_l = malloc(V * 4), *hit_l = malloc(V * 4);
	kvf_seq *a, *b;
	assert_int_equal(kvf_seq_create(e, &a), 0);
	assert_int_equal(kvf_seq_set_keys(a, keys, 8), 0);
	const uint32_t *tk = r.ids[2];
	assert_int_equal(kvf_engine_eval(e, &a, &tk, &n, 1, KVF_LOGITS_LAST, ref_l), 0);
	kvf_kv_stats st;
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.cached, 8);
	assert_int_equal(st.stored, 8);
	kvf_seq_destroy(a);
	kvf_engine_kv_stats(e, &st);
	assert_int_equal(st.cached_idle, 8);
	assert_int_equal(st.used, 0);

	assert_int_equal(kvf_seq_create(e, &b), 0);
	assert_int_equal(kvf_seq_set_keys(b, keys, 8), 0);
	assert_int_equal(kvf_seq_match_prefix(b, n), 128);
	const uint32_t *rest = r.ids[2] + 128;
	int nr = n - 128;
	assert_int_equal(kvf_engine_eval(e, &b, &rest, &nr, 1, KVF_LOGITS_LAST, hit_l), 0);
	assert_true(maxdiff(ref_l, hit_l, V) == 0.0f);
	kvf_seq_destroy(b);
	free(ref_l);
	free(hit_l);
	ref_free(&r);
	kvf_engine_destroy(e);
}

/* ------------------------------------------------------------------------ */
/* loading errors                                                           */

static char tmpdir[256];

static void copy_file(const char *from, const char *to)
{
	FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
	assert_non_null(a);
	assert_non_null(b);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, a)) > 0)
		assert_int_equal(fwrite(buf, 1, n, b), n);
	fclose(a);
	fclose(b);
}

/* A copy of the llama model whose config.json has `key` replaced by `val`
 * (raw JSON), or without `key` when val is NULL. */
static const char *variant(const char *key, const char *val)
{
	char src[1024], path[1300];
	model_path(src, sizeof src, "llama");
	snprintf(tmpdir, sizeof tmpdir, "/tmp/kvf-test-engine-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	snprintf(path, sizeof path, "%s/model.safetensors", src);
	char dst[1300];
	snprintf(dst, sizeof dst, "%s/model.safetensors", tmpdir);
	copy_file(path, dst);
	snprintf(path, sizeof path, "%s/config.json", src);
	json_error_t err;
	json_t *cfg = json_load_file(path, 0, &err);
	assert_non_null(cfg);
	if (val)
		json_object_set_new(cfg, key, json_loads(val, JSON_DECODE_ANY, &err));
	else
		json_object_del(cfg, key);
	snprintf(dst, sizeof dst, "%s/config.json", tmpdir);
	assert_int_equal(json_dump_file(cfg, dst, 0), 0);
	json_decref(cfg);
	return tmpdir;
}

static void rm_variant(void)
{
	char p[512];
	snprintf(p, sizeof p, "%s/config.json", tmpdir);
	unlink(p);
	snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
	unlink(p);
	rmdir(tmpdir);
}

static int try_open(const char *dir)
{
	kvf_engine_options o;
	kvf_engine_options_init(&o);
	o.model_dir = dir;
	o.n_threads = 1;
	o.kv_blocks = 8;
	kvf_engine *e = NULL;
	int rc = kvf_engine_create(&o, &e);
	kvf_engine_destroy(e);
	return rc;
}

static void expect_error(const char *key, const char *val, int code, const char *needle)
{
	const char *dir = variant(key, val);
	int rc = try_open(dir);
	printf("%s=%s -> %s\n", key, val ? val : "(deleted)", kvf_errmsg());
	assert_int_equal(rc, code);
	assert_non_null(strstr(kvf_errmsg(), needle));
	rm_variant();
}

static void test_load_errors(void **state)
{
	expect_error("architectures", "[\"GPT2LMHeadModel\"]", KVF_E_UNSUPPORTED, "GPT2LMHeadModel");
	expect_error("num_hidden_layers", "3", KVF_E_MODEL, "model.layers.2.input_layernorm.weight");
	expect_error("intermediate_size", "300", KVF_E_MODEL,
		     "model.layers.0.mlp.gate_proj.weight has shape [256, 96], expected [300, 96]");
	expect_error("hidden_size", NULL, KVF_E_MODEL, "hidden_size");
	expect_error("rope_parameters", "{\"rope_type\":\"yarn\",\"factor\":4.0}", KVF_E_UNSUPPORTED,
		     "rope_parameters.rope_type 'yarn'");
	expect_error("tie_word_embeddings", "true", 0, "");
	expect_error("hidden_act", "\"gelu\"", KVF_E_UNSUPPORTED, "hidden_act");
	assert_int_equal(try_open("/nonexistent/model"), KVF_E_NOTFOUND);
	assert_non_null(strstr(kvf_errmsg(), "/nonexistent/model/config.json"));
}

/* A truncated safetensors file is rejected with the file named. */
static void test_load_truncated(void **state)
{
	const char *dir = variant("vocab_size", "512");
	char p[512];
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	assert_int_equal(truncate(p, 4096), 0);
	int rc = try_open(dir);
	printf("truncated -> %s\n", kvf_errmsg());
	assert_int_equal(rc, KVF_E_MODEL);
	assert_non_null(strstr(kvf_errmsg(), "model.safetensors"));
	rm_variant();
}

/* The older config form (rope_theta + rope_scaling) loads the same model:
 * llama3 scaling read from either form gives identical logits. */
static void test_rope_config_forms(void **state)
{
	char src[1024], path[1300];
	model_path(src, sizeof src, "llama3");
	snprintf(tmpdir, sizeof tmpdir, "/tmp/kvf-test-engine-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	char dst[1300];
	snprintf(path, sizeof path, "%s/model.safetensors", src);
	snprintf(dst, sizeof dst, "%s/model.safetensors", tmpdir);
	copy_file(path, dst);
	snprintf(path, sizeof path, "%s/config.json", src);
	json_error_t err;
	json_t *cfg = json_load_file(path, 0, &err);
	json_t *rp = json_incref(json_object_get(cfg, "rope_parameters"));
	json_object_set(cfg, "rope_theta", json_object_get(rp, "rope_theta"));
	json_object_del(rp, "rope_theta");
	json_object_set(rp, "type", json_object_get(rp, "rope_type")); /* the oldest spelling */
	json_object_del(rp, "rope_type");
	json_object_set_new(cfg, "rope_scaling", rp);
	json_object_del(cfg, "rope_parameters");
	snprintf(dst, sizeof dst, "%s/config.json", tmpdir);
	assert_int_equal(json_dump_file(cfg, dst, 0), 0);
	json_decref(cfg);

	kvf_engine *a = open_engine("llama3", KVF_DTYPE_F32, 512);
	kvf_engine_options o;
	kvf_engine_options_init(&o);
	o.model_dir = tmpdir;
	o.n_threads = 2;
	o.kv_blocks = 64;
	kvf_engine *b;
	assert_int_equal(kvf_engine_create(&o, &b), 0);
	ref r;
	ref_load(&r, "llama3");
	kvf_engine_info info;
	kvf_engine_info_get(a, &info);
	size_t V = (size_t)info.vocab_size;
	int n = r.len[2];
	float *la = malloc((size_t)n * V * 4), *lb = malloc((size_t)n * V * 4);
	eval_all(a, r.ids[2], n, la);
	eval_all(b, r.ids[2], n, lb);
	assert_true(maxdiff(la, lb, (size_t)n * V) == 0.0f);
	free(la);
	free(lb);
	ref_free(&r);
	kvf_engine_destroy(a);
	kvf_engine_destroy(b);
	rm_variant();
}

/* Every kernel flavour this CPU runs matches the reference and keeps
 * decode == prefill bit for bit. */
static void test_isa_flavours(void **state)
{
	const char *isas[] = {"generic", "avx2", "avx512"};
	for (int i = 0; i < 3; i++) {
		setenv("KVF_CPU_ISA", isas[i], 1);
		kvf_engine *e = open_engine("llama3", KVF_DTYPE_F32, 512);
		kvf_engine_info info;
		kvf_engine_info_get(e, &info);
		if (strcmp(info.isa, isas[i])) {
			printf("isa %s: not available here (%s used)\n", isas[i], info.isa);
			kvf_engine_destroy(e);
			continue;
		}
		size_t V = (size_t)info.vocab_size;
		ref r;
		ref_load(&r, "llama3");
		int n = r.len[1];
		float *full = malloc((size_t)n * V * 4), *one = malloc(V * 4);
		eval_all(e, r.ids[1], n, full);
		json_t *li = json_array_get(json_object_get(r.root, "logits_last"), 1);
		float md = 0;
		for (size_t v = 0; v < V; v++) {
			float d = fabsf(full[(size_t)(n - 1) * V + v] -
					(float)json_number_value(json_array_get(li, v)));
			md = d > md ? d : md;
		}
		kvf_seq *s;
		assert_int_equal(kvf_seq_create(e, &s), 0);
		int n1 = n - 1, o = 1;
		const uint32_t *tk = r.ids[1], *last = r.ids[1] + n - 1;
		assert_int_equal(kvf_engine_eval(e, &s, &tk, &n1, 1, KVF_LOGITS_NONE, NULL), 0);
		assert_int_equal(kvf_engine_eval(e, &s, &last, &o, 1, KVF_LOGITS_LAST, one), 0);
		printf("isa %s: reference diff %.3g\n", isas[i], md);
		assert_true(md < 1e-4f);
		assert_true(maxdiff(one, full + (size_t)(n - 1) * V, V) == 0.0f);
		kvf_seq_destroy(s);
		free(full);
		free(one);
		ref_free(&r);
		kvf_engine_destroy(e);
	}
	unsetenv("KVF_CPU_ISA");
}

/* rope_exact keeps RoPE frequencies in f32: it no longer matches
 * transformers' bf16-rounded buffer, which shows the rounding is what the
 * reference does (and that the option is wired). */
static void test_rope_exact_option(void **state)
{
	char dir[1024];
	model_path(dir, sizeof dir, "llama3");
	kvf_engine_options o;
	kvf_engine_options_init(&o);
	o.model_dir = dir;
	o.n_threads = 2;
	o.kv_blocks = 64;
	o.rope_exact = 1;
	kvf_engine *e;
	assert_int_equal(kvf_engine_create(&o, &e), 0);
	ref r;
	ref_load(&r, "llama3");
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	size_t V = (size_t)info.vocab_size;
	int n = r.len[1];
	float *lg = malloc((size_t)n * V * 4);
	eval_all(e, r.ids[1], n, lg);
	json_t *li = json_array_get(json_object_get(r.root, "logits_last"), 1);
	float md = 0;
	for (size_t v = 0; v < V; v++) {
		float d = fabsf(lg[(size_t)(n - 1) * V + v] - (float)json_number_value(json_array_get(li, v)));
		md = d > md ? d : md;
	}
	printf("rope_exact: reference diff %.3g\n", md);
	assert_true(md > 1e-4f);
	free(lg);
	ref_free(&r);
	kvf_engine_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ref_llama),
		cmocka_unit_test(test_ref_llama3),
		cmocka_unit_test(test_ref_mistral),
		cmocka_unit_test(test_ref_qwen2),
		cmocka_unit_test(test_ref_qwen3),
		cmocka_unit_test(test_ref_greedy_scheduler),
		cmocka_unit_test(test_decode_equals_prefill),
		cmocka_unit_test(test_mixed_batch),
		cmocka_unit_test(test_export_import),
		cmocka_unit_test(test_kv_dtypes_close),
		cmocka_unit_test(test_prefix_cache_logits),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_truncated),
		cmocka_unit_test(test_rope_config_forms),
		cmocka_unit_test(test_isa_flavours),
		cmocka_unit_test(test_rope_exact_option),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
