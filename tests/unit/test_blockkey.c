/*
 * test_blockkey.c: block keys against the committed vectors
 * (tests/data/blockkey_vectors.json) and their defining properties: tenant
 * salt and cluster secret change every key, a prefix's keys are the first keys
 * of the longer chain, a partial last block is not keyed, the streaming path
 * for large blocks equals the one-shot definition, hex round-trips.
 *
 * `test_blockkey --write-vectors FILE` regenerates the vector file from the
 * input table below (do this only when the definition deliberately changes,
 * and update docs/block-keys.md with it).
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cmocka.h>

#include "common/kvf_blockkey.h"
#include "common/kvf_err.h"

/* ---- helpers ---- */

static kvf_blockkey_ctx *ctx_of(const char *secret)
{
	kvf_blockkey_ctx *ctx = NULL;
	assert_int_equal(kvf_blockkey_ctx_new(secret, strlen(secret), &ctx), 0);
	assert_non_null(ctx);
	return ctx;
}

static void fill_tokens(uint32_t *t, size_t n, uint32_t mul, uint32_t add)
{
	for (size_t i = 0; i < n; i++)
		t[i] = (uint32_t)(i * mul + add);
}

static int hex_nibble(char c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

static size_t unhex(const char *hex, unsigned char *out, size_t cap)
{
	size_t n = strlen(hex) / 2;
	assert_true(n <= cap);
	for (size_t i = 0; i < n; i++)
		out[i] = (unsigned char)(hex_nibble(hex[2 * i]) << 4 | hex_nibble(hex[2 * i + 1]));
	return n;
}

static void tohex(const unsigned char *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
	out[2 * n] = '\0';
}

static void le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* The definition spelled out byte by byte, for the default (empty) secret. */
static kvf_blockkey ref_next_default(kvf_blockkey parent, const uint32_t *t, size_t n)
{
	unsigned char *msg = malloc(16 + 4 * n);
	assert_non_null(msg);
	le64(msg, parent.lo);
	le64(msg + 8, parent.hi);
	for (size_t i = 0; i < n; i++)
		le32(msg + 16 + 4 * i, t[i]);
	XXH128_hash_t h = XXH3_128bits(msg, 16 + 4 * n);
	free(msg);
	return (kvf_blockkey){ .lo = h.low64, .hi = h.high64 };
}

static kvf_blockkey ref_root_default(const char *model, const unsigned char *salt, size_t salt_len)
{
	unsigned char msg[512];
	size_t ml = strlen(model), o = 0;
	le32(msg, (uint32_t)ml);
	memcpy(msg + 4, model, ml);
	o = 4 + ml;
	le32(msg + o, (uint32_t)salt_len);
	memcpy(msg + o + 4, salt, salt_len);
	XXH128_hash_t h = XXH3_128bits(msg, o + 4 + salt_len);
	return (kvf_blockkey){ .lo = h.low64, .hi = h.high64 };
}

/* ---- the vector table (inputs; outputs live in the JSON file) ---- */

struct vec_in {
	const char *name;
	const char *secret_hex;
	const char *model_id;
	const char *salt_hex;
	size_t block_size;
	size_t n_tokens;
	const uint32_t *tokens; /* explicit, or NULL: tokens[i] = i*mul + add (mod 2^32) */
	uint32_t mul, add;
};

static const uint32_t toks_edge[] = { 0, 1, 0x7fffffffu, 0x80000000u, 0xffffffffu, 151643,
				      128000, 42, 0xdeadbeefu, 7 };

/* "kvfabric-test-cluster-secret" */
#define SECRET1 "6b766661627269632d746573742d636c75737465722d736563726574"

static const struct vec_in vec_inputs[] = {
	{ "default-secret-no-salt", "", "llama-3.1-8b", "", 16, 40, NULL, 1, 0 },
	{ "default-secret-salted", "", "llama-3.1-8b", "74656e616e742d61", 16, 40, NULL, 1, 0 },
	{ "secret-no-salt", SECRET1, "llama-3.1-8b", "", 16, 40, NULL, 1, 0 },
	{ "secret-salted", SECRET1, "llama-3.1-8b", "74656e616e742d61", 16, 40, NULL, 1, 0 },
	{ "secret-other-tenant", SECRET1, "llama-3.1-8b", "74656e616e742d62", 16, 40, NULL, 1, 0 },
	{ "binary-secret-edge-tokens",
	  "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	  "Qwen/Qwen2.5-0.5B-Instruct", "00ff10ee", 4, 10, toks_edge, 0, 0 },
	{ "default-secret-empty-model-block1", "", "", "", 1, 3, NULL, 1, 0 },
	{ "default-secret-block300-long-path", "", "m", "", 300, 650, NULL, 2654435761u, 7 },
	{ "secret-block300-long-path", "73", "m", "", 300, 650, NULL, 2654435761u, 7 },
	{ "default-secret-block2000-streaming", "", "big-block-model", "01", 2000, 4001, NULL,
	  2246822519u, 3 },
	{ "secret-block2000-streaming", SECRET1, "big-block-model", "01", 2000, 4001, NULL,
	  2246822519u, 3 },
};
#define N_VEC (sizeof(vec_inputs) / sizeof(vec_inputs[0]))

/* Key of every full block for a vector, plus the root, via the public API. */
static size_t compute_vec(const struct vec_in *v, kvf_blockkey *root, kvf_blockkey *keys, size_t max)
{
	unsigned char secret[64], salt[64];
	size_t slen = unhex(v->secret_hex, secret, sizeof(secret));
	size_t salt_len = unhex(v->salt_hex, salt, sizeof(salt));
	kvf_blockkey_ctx *ctx = NULL;
	assert_int_equal(kvf_blockkey_ctx_new(secret, slen, &ctx), 0);
	uint32_t *t = malloc(v->n_tokens * sizeof(*t));
	assert_non_null(t);
	if (v->tokens)
		memcpy(t, v->tokens, v->n_tokens * sizeof(*t));
	else
		fill_tokens(t, v->n_tokens, v->mul, v->add);
	*root = kvf_blockkey_root(ctx, v->model_id, salt, salt_len);
	size_t n = kvf_blockkey_chain(ctx, *root, t, v->n_tokens, v->block_size, keys, max);
	free(t);
	kvf_blockkey_ctx_free(ctx);
	return n;
}

static int write_vectors(const char *path)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < N_VEC; i++) {
		const struct vec_in *v = &vec_inputs[i];
		kvf_blockkey root, keys[16];
		size_t n = compute_vec(v, &root, keys, 16);
		char hex[33];
		json_t *o = json_object();
		json_object_set_new(o, "name", json_string(v->name));
		json_object_set_new(o, "cluster_secret_hex", json_string(v->secret_hex));
		json_object_set_new(o, "model_id", json_string(v->model_id));
		json_object_set_new(o, "tenant_salt_hex", json_string(v->salt_hex));
		json_object_set_new(o, "block_size", json_integer((json_int_t)v->block_size));
		if (v->tokens) {
			json_t *ta = json_array();
			for (size_t j = 0; j < v->n_tokens; j++)
				json_array_append_new(ta, json_integer(v->tokens[j]));
			json_object_set_new(o, "tokens", ta);
		} else {
			json_object_set_new(o, "token_rule",
					    json_pack("{s:I,s:I,s:I}", "n", (json_int_t)v->n_tokens,
						      "mul", (json_int_t)v->mul, "add", (json_int_t)v->add));
		}
		kvf_blockkey_to_hex(root, hex);
		json_object_set_new(o, "root", json_string(hex));
		json_t *ka = json_array();
		for (size_t j = 0; j < n; j++) {
			kvf_blockkey_to_hex(keys[j], hex);
			json_array_append_new(ka, json_string(hex));
		}
		json_object_set_new(o, "keys", ka);
		json_array_append_new(arr, o);
	}
	json_t *doc = json_pack(
		"{s:s,s:o}", "description",
		"kvfabric block key test vectors; definition in docs/block-keys.md. token_rule: "
		"tokens[i] = (i*mul + add) mod 2^32 for i in [0,n). Keys are canonical hex "
		"(hi then lo, big-endian).",
		"vectors", arr);
	int rc = json_dump_file(doc, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(doc);
	return rc == 0 ? 0 : 1;
}

/* ---- tests ---- */

static void test_vectors_match_file(void **state)
{
	(void)state;
	const char *root_dir = getenv("KVF_ROOT");
	char path[4096];
	snprintf(path, sizeof(path), "%s/tests/data/blockkey_vectors.json", root_dir ? root_dir : ".");
	json_error_t jerr;
	json_t *doc = json_load_file(path, 0, &jerr);
	if (!doc)
		fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
	json_t *arr = json_object_get(doc, "vectors");
	assert_int_equal(json_array_size(arr), N_VEC);
	for (size_t i = 0; i < N_VEC; i++) {
		const struct vec_in *v = &vec_inputs[i];
		json_t *o = json_array_get(arr, i);
		assert_string_equal(json_string_value(json_object_get(o, "name")), v->name);
		kvf_blockkey root, keys[16];
		size_t n = compute_vec(v, &root, keys, 16);
		json_t *ka = json_object_get(o, "keys");
		assert_int_equal(n, json_array_size(ka));
		assert_int_equal(n, v->n_tokens / v->block_size);
		char hex[33];
		kvf_blockkey_to_hex(root, hex);
		assert_string_equal(hex, json_string_value(json_object_get(o, "root")));
		for (size_t j = 0; j < n; j++) {
			kvf_blockkey_to_hex(keys[j], hex);
			assert_string_equal(hex, json_string_value(json_array_get(ka, j)));
		}
	}
	json_decref(doc);
}

/* Default secret: the API must equal plain XXH3-128 of the documented bytes,
 * across the one-shot (<= 1024 tokens) and streaming (> 1024) paths. */
static void test_definition_bytes_default_secret(void **state)
{
	(void)state;
	kvf_blockkey_ctx *ctx = ctx_of("");
	const unsigned char salt[] = { 0x00, 0x01, 0xfe };
	kvf_blockkey r = kvf_blockkey_root(ctx, "model-x", salt, sizeof(salt));
	assert_true(kvf_blockkey_eq(r, ref_root_default("model-x", salt, sizeof(salt))));

	static uint32_t t[3000];
	fill_tokens(t, 3000, 0x9e3779b1u, 5);
	const size_t sizes[] = { 0, 1, 16, 59, 60, 61, 1023, 1024, 1025, 2999 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		kvf_blockkey got = kvf_blockkey_next(ctx, r, t, sizes[i]);
		kvf_blockkey want = ref_next_default(r, t, sizes[i]);
		if (!kvf_blockkey_eq(got, want))
			fail_msg("block of %zu tokens differs from the definition", sizes[i]);
	}
	kvf_blockkey_ctx_free(ctx);
}

static void test_salt_changes_every_key(void **state)
{
	(void)state;
	kvf_blockkey_ctx *ctx = ctx_of("cluster");
	uint32_t t[64];
	fill_tokens(t, 64, 1, 100);
	const char *salts[] = { "", "a", "b", "tenant-a", "tenant-b" };
	enum { NS = 5 };
	kvf_blockkey roots[NS], keys[NS][4];
	for (int s = 0; s < NS; s++) {
		roots[s] = kvf_blockkey_root(ctx, "m", salts[s], strlen(salts[s]));
		assert_int_equal(kvf_blockkey_chain(ctx, roots[s], t, 64, 16, keys[s], 4), 4);
	}
	for (int a = 0; a < NS; a++)
		for (int b = a + 1; b < NS; b++) {
			assert_false(kvf_blockkey_eq(roots[a], roots[b]));
			for (int j = 0; j < 4; j++)
				assert_false(kvf_blockkey_eq(keys[a][j], keys[b][j]));
		}
	kvf_blockkey_ctx_free(ctx);
}

static void test_secret_and_model_change_every_key(void **state)
{
	(void)state;
	kvf_blockkey_ctx *c[3] = { ctx_of(""), ctx_of("s1"), ctx_of("s2") };
	uint32_t t[32];
	fill_tokens(t, 32, 3, 1);
	kvf_blockkey k[5][2], root[5];
	for (int i = 0; i < 3; i++)
		root[i] = kvf_blockkey_root(c[i], "m", "x", 1);
	root[3] = kvf_blockkey_root(c[1], "m2", "x", 1);
	/* length prefixes: ("ab","c") and ("a","bc") are different roots */
	kvf_blockkey r_ab = kvf_blockkey_root(c[1], "ab", "c", 1);
	kvf_blockkey r_a = kvf_blockkey_root(c[1], "a", "bc", 2);
	assert_false(kvf_blockkey_eq(r_ab, r_a));
	root[4] = r_ab;
	for (int i = 0; i < 5; i++)
		assert_int_equal(kvf_blockkey_chain(c[i < 3 ? i : 1], root[i], t, 32, 16, k[i], 2), 2);
	for (int a = 0; a < 5; a++)
		for (int b = a + 1; b < 5; b++) {
			assert_false(kvf_blockkey_eq(root[a], root[b]));
			assert_false(kvf_blockkey_eq(k[a][0], k[b][0]));
			assert_false(kvf_blockkey_eq(k[a][1], k[b][1]));
		}
	/* NULL model id is "" */
	assert_true(kvf_blockkey_eq(kvf_blockkey_root(c[1], NULL, NULL, 0),
				    kvf_blockkey_root(c[1], "", "", 0)));
	for (int i = 0; i < 3; i++)
		kvf_blockkey_ctx_free(c[i]);
}

static void test_chain_prefix_and_partial_block(void **state)
{
	(void)state;
	kvf_blockkey_ctx *ctx = ctx_of("prefix");
	kvf_blockkey root = kvf_blockkey_root(ctx, "m", "t", 1);
	uint32_t t[16 * 10 + 7];
	fill_tokens(t, 167, 7919, 11);
	kvf_blockkey full[16], pre[16];
	assert_int_equal(kvf_blockkey_chain(ctx, root, t, 167, 16, full, 16), 10);
	for (size_t n = 0; n <= 167; n++) {
		size_t m = kvf_blockkey_chain(ctx, root, t, n, 16, pre, 16);
		assert_int_equal(m, n / 16);
		for (size_t j = 0; j < m; j++)
			assert_true(kvf_blockkey_eq(pre[j], full[j]));
	}
	/* the partial tail is not keyed: changing it changes nothing */
	t[165] ^= 1;
	assert_int_equal(kvf_blockkey_chain(ctx, root, t, 167, 16, pre, 16), 10);
	assert_memory_equal(pre, full, sizeof(kvf_blockkey) * 10);
	/* a changed token changes its block's key and every later key, not earlier */
	t[40] ^= 1;
	assert_int_equal(kvf_blockkey_chain(ctx, root, t, 167, 16, pre, 16), 10);
	assert_memory_equal(pre, full, sizeof(kvf_blockkey) * 2);
	for (int j = 2; j < 10; j++)
		assert_false(kvf_blockkey_eq(pre[j], full[j]));
	/* chain is next() folded from the root */
	t[40] ^= 1;
	kvf_blockkey k = root;
	for (int j = 0; j < 10; j++) {
		k = kvf_blockkey_next(ctx, k, t + 16 * j, 16);
		assert_true(kvf_blockkey_eq(k, full[j]));
	}
	/* max_out bounds the output; block_size 0 yields nothing */
	pre[3] = (kvf_blockkey){ 0, 0 };
	assert_int_equal(kvf_blockkey_chain(ctx, root, t, 167, 16, pre, 3), 3);
	assert_true(kvf_blockkey_eq(pre[3], (kvf_blockkey){ 0, 0 }));
	assert_int_equal(kvf_blockkey_chain(ctx, root, t, 167, 0, pre, 16), 0);
	assert_int_equal(kvf_blockkey_chain(ctx, root, t, 15, 16, pre, 16), 0);
	/* same tokens under another parent: another key */
	assert_false(kvf_blockkey_eq(kvf_blockkey_next(ctx, full[0], t, 16), full[0]));
	kvf_blockkey_ctx_free(ctx);
}

static void test_hex(void **state)
{
	(void)state;
	kvf_blockkey k = { .lo = 0x0123456789abcdefull, .hi = 0xfedcba9876543210ull }, back;
	char hex[33];
	kvf_blockkey_to_hex(k, hex);
	assert_string_equal(hex, "fedcba98765432100123456789abcdef");
	assert_int_equal(kvf_blockkey_from_hex(hex, &back), 0);
	assert_true(kvf_blockkey_eq(k, back));
	assert_int_equal(kvf_blockkey_from_hex("FEDCBA98765432100123456789ABCDEF", &back), 0);
	assert_true(kvf_blockkey_eq(k, back));
	back = (kvf_blockkey){ 1, 2 };
	assert_int_equal(kvf_blockkey_from_hex("fedcba98765432100123456789abcde", &back), KVF_E_PARSE);
	assert_non_null(strstr(kvf_errmsg(), "31 hex digits"));
	assert_int_equal(kvf_blockkey_from_hex("fedcba98765432100123456789abcdef0", &back), KVF_E_PARSE);
	assert_int_equal(kvf_blockkey_from_hex("fedcba9876543210g123456789abcdef", &back), KVF_E_PARSE);
	assert_int_equal(kvf_blockkey_from_hex(" edcba98765432100123456789abcdef", &back), KVF_E_PARSE);
	assert_int_equal(kvf_blockkey_from_hex("", &back), KVF_E_PARSE);
	assert_int_equal(kvf_blockkey_from_hex(NULL, &back), KVF_E_PARSE);
	assert_true(kvf_blockkey_eq(back, (kvf_blockkey){ 1, 2 }));
	/* canonical hex is XXH128's canonical (big-endian) form */
	XXH128_hash_t h = XXH3_128bits("abc", 3);
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, h);
	char want[33];
	tohex(c.digest, 16, want);
	kvf_blockkey_to_hex((kvf_blockkey){ .lo = h.low64, .hi = h.high64 }, hex);
	assert_string_equal(hex, want);
	assert_string_equal(hex, "06b05ab6733a618578af5f94892f3950"); /* xxhsum -H2 of "abc" */
}

static void test_ctx_errors(void **state)
{
	(void)state;
	kvf_blockkey_ctx *ctx = (kvf_blockkey_ctx *)1;
	assert_int_equal(kvf_blockkey_ctx_new(NULL, 4, &ctx), KVF_E_INVAL);
	assert_null(ctx);
	assert_int_equal(kvf_blockkey_ctx_new(NULL, 0, &ctx), 0);
	kvf_blockkey_ctx_free(ctx);
	kvf_blockkey_ctx_free(NULL);
	/* a long secret (> 192 bytes) is accepted and differs from its prefix */
	char longsec[1000];
	memset(longsec, 'z', sizeof(longsec));
	kvf_blockkey_ctx *a, *b;
	assert_int_equal(kvf_blockkey_ctx_new(longsec, sizeof(longsec), &a), 0);
	assert_int_equal(kvf_blockkey_ctx_new(longsec, 192, &b), 0);
	assert_false(kvf_blockkey_eq(kvf_blockkey_root(a, "m", NULL, 0), kvf_blockkey_root(b, "m", NULL, 0)));
	kvf_blockkey_ctx_free(a);
	kvf_blockkey_ctx_free(b);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-vectors") == 0)
		return write_vectors(argv[2]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors_match_file),
		cmocka_unit_test(test_definition_bytes_default_secret),
		cmocka_unit_test(test_salt_changes_every_key),
		cmocka_unit_test(test_secret_and_model_change_every_key),
		cmocka_unit_test(test_chain_prefix_and_partial_block),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_ctx_errors),
	};
	return cmocka_run_group_tests_name("blockkey", tests, NULL, NULL);
}
