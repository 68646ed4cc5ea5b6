/*
 * Unit tests for engine/tokenizer/: each component of tokenizer.json on a
 * tiny hand-written tokenizer whose right answer follows from HF tokenizers'
 * rules (merge order, added-token flags, split behaviours, decoders), the
 * streaming detokenizer, error reporting, and encoding from several threads.
 * The real tokenizers are checked end to end by
 * tests/integration/tokenizer_conformance.sh.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/tokenizer/kvf_tokenizer.h"

/* Files under the source tree: $KVF_ROOT (make test sets it) or the cwd. */
static const char *src_path(const char *rel)
{
	static char buf[4096];
	const char *root = getenv("KVF_ROOT");
	snprintf(buf, sizeof(buf), "%s/%s", root ? root : ".", rel);
	return buf;
}

static kvf_tokenizer *load(const char *json)
{
	kvf_tokenizer *t = NULL;
	int rc = kvf_tokenizer_load_mem(json, strlen(json), NULL, 0, &t);
	if (rc)
		fail_msg("load failed: %s", kvf_errmsg());
	return t;
}

/* "[1,2,3]" of an encode */
static const char *enc(kvf_tokenizer *t, const char *text, unsigned flags)
{
	static char out[4096];
	kvf_tok_ids ids = { 0 };
	int rc = kvf_tokenizer_encode(t, text, strlen(text), flags, &ids);
	if (rc)
		fail_msg("encode(%s) failed: %s", text, kvf_errmsg());
	size_t o = 0;
	out[o++] = '[';
	for (size_t i = 0; i < ids.n; i++)
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%u", i ? "," : "", ids.ids[i]);
	out[o++] = ']';
	out[o] = '\0';
	kvf_tok_ids_free(&ids);
	return out;
}

static char *dec(kvf_tokenizer *t, const uint32_t *ids, size_t n, unsigned flags)
{
	char *s = NULL;
	size_t len;
	int rc = kvf_tokenizer_decode(t, ids, n, flags, &s, &len);
	if (rc)
		fail_msg("decode failed: %s", kvf_errmsg());
	assert_int_equal(strlen(s), len);
	return s;
}

/* A character-level BPE: a b c d and their merges, both merge syntaxes. */
#define MINI_VOCAB "\"a\":0,\"b\":1,\"c\":2,\"d\":3,\"ab\":4,\"bc\":5,\"abc\":6,\"cd\":7,\"aa\":8,\"abcd\":9,\" \":10,\"x\":11"
static const char *mini_json =
	"{\"model\":{\"type\":\"BPE\",\"vocab\":{" MINI_VOCAB "},"
	"\"merges\":[\"b c\",[\"a\",\"b\"],\"a a\",\"c d\",\"ab cd\"]}}";

static void test_bpe_merge_order(void **state)
{
	kvf_tokenizer *t = load(mini_json);
	/* "b c" has the best rank, so "abc" is a + bc: "a bc" is no merge */
	assert_string_equal(enc(t, "abc", 0), "[0,5]");
	/* ab + cd -> abcd (rank 4) */
	assert_string_equal(enc(t, "abd", 0), "[4,3]");
	/* equal ranks merge leftmost first: aaa -> aa a */
	assert_string_equal(enc(t, "aaa", 0), "[8,0]");
	assert_string_equal(enc(t, "aaaa", 0), "[8,8]");
	/* without a pre-tokenizer the whole text is one word; unknown chars vanish (no unk) */
	assert_string_equal(enc(t, "ab zcd", 0), "[4,10,7]");
	assert_string_equal(enc(t, "", 0), "[]");
	/* the cache gives the same answer the second time */
	assert_string_equal(enc(t, "abd", 0), "[4,3]");
	kvf_tokenizer_destroy(t);
}

static void test_bpe_ignore_merges(void **state)
{
	/* "abc" is in the vocabulary but no merge makes it: only ignore_merges finds it */
	const char *j = "{\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{" MINI_VOCAB "},"
			"\"merges\":[\"b c\"]}}";
	kvf_tokenizer *t = load(j);
	assert_string_equal(enc(t, "abc", 0), "[6]");
	assert_string_equal(enc(t, "abcc", 0), "[0,5,2]");
	kvf_tokenizer_destroy(t);
}

static void test_bpe_byte_fallback_and_unk(void **state)
{
	const char *j = "{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
			"\"vocab\":{\"<unk>\":0,\"a\":1,\"<0xC3>\":2,\"<0xA9>\":3,\"b\":4},\"merges\":[]}}";
	kvf_tokenizer *t = load(j);
	/* é = C3 A9 has byte tokens; 'z' has none -> unk; consecutive unks fuse */
	assert_string_equal(enc(t, "a\xC3\xA9" "b", 0), "[1,2,3,4]");
	assert_string_equal(enc(t, "azzb", 0), "[1,0,4]");
	kvf_tokenizer_destroy(t);
	const char *j2 = "{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":false,"
			 "\"vocab\":{\"<unk>\":0,\"a\":1},\"merges\":[]}}";
	t = load(j2);
	assert_string_equal(enc(t, "zza", 0), "[0,0,1]");
	kvf_tokenizer_destroy(t);
}

static void test_bpe_subword_prefix(void **state)
{
	const char *j = "{\"model\":{\"type\":\"BPE\",\"continuing_subword_prefix\":\"##\","
			"\"vocab\":{\"a\":0,\"##b\":1,\"##c\":2,\"ab\":3,\"abc\":4,\"b\":5},\"merges\":[\"a ##b\",\"ab ##c\"]}}";
	kvf_tokenizer *t = load(j);
	assert_string_equal(enc(t, "abc", 0), "[4]");
	assert_string_equal(enc(t, "ab", 0), "[3]");
	assert_string_equal(enc(t, "b", 0), "[5]");
	kvf_tokenizer_destroy(t);
}

/* Byte-level tokenizer with added tokens carrying every flag. */
static const char *added_json =
	"{\"added_tokens\":["
	"{\"id\":20,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
	"{\"id\":21,\"content\":\"<L>\",\"special\":true,\"lstrip\":true,\"normalized\":false},"
	"{\"id\":22,\"content\":\"<R>\",\"special\":false,\"rstrip\":true,\"normalized\":false},"
	"{\"id\":23,\"content\":\"word\",\"special\":false,\"single_word\":true,\"normalized\":true},"
	"{\"id\":24,\"content\":\"<s><s>\",\"special\":true,\"normalized\":false}],"
	"\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"Ġ\":2,\"<\":3,\"s\":4,\">\":5,\"w\":6,\"o\":7,\"r\":8,\"d\":9,"
	"\"x\":10},\"merges\":[]},"
	"\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
	"\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
	"{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"</s>\",\"type_id\":0}}],"
	"\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[20],\"tokens\":[\"<s>\"]},"
	"\"</s>\":{\"id\":\"</s>\",\"ids\":[20,20],\"tokens\":[\"<s>\",\"<s>\"]}}},"
	"\"decoder\":{\"type\":\"ByteLevel\"}}";

static void test_added_tokens(void **state)
{
	kvf_tokenizer *t = load(added_json);
	assert_string_equal(enc(t, "a<s>b", 0), "[0,20,1]");
	/* longest match wins at the same position */
	assert_string_equal(enc(t, "<s><s>", 0), "[24]");
	/* lstrip eats the spaces before, rstrip the spaces after */
	assert_string_equal(enc(t, "a  <L>b", 0), "[0,21,1]");
	assert_string_equal(enc(t, "a<R>  b", 0), "[0,22,1]");
	/* without the flags the spaces stay: "Ġ" before <s> */
	assert_string_equal(enc(t, "a <s>", 0), "[0,2,20]");
	/* single_word: only as a whole word */
	assert_string_equal(enc(t, "a word b", 0), "[0,2,23,2,1]");
	assert_string_equal(enc(t, "awordb", 0), "[0,6,7,8,9,1]");
	/* KVF_TOK_SPLIT_SPECIAL: special tokens are text, normal added ones still match */
	assert_string_equal(enc(t, "<s>", KVF_TOK_SPLIT_SPECIAL), "[3,4,5]");
	assert_string_equal(enc(t, "a<R>", KVF_TOK_SPLIT_SPECIAL), "[0,22]");
	/* post-processor: BOS ... EOS (two ids) */
	assert_string_equal(enc(t, "ab", KVF_TOK_ADD_SPECIAL), "[20,0,1,20,20]");
	assert_string_equal(enc(t, "", KVF_TOK_ADD_SPECIAL), "[20,20,20]");
	/* queries */
	uint32_t id;
	assert_int_equal(kvf_tokenizer_token_id(t, "<R>", &id), 0);
	assert_int_equal(id, 22);
	assert_int_equal(kvf_tokenizer_token_id(t, "b", &id), 0);
	assert_int_equal(id, 1);
	assert_int_equal(kvf_tokenizer_token_id(t, "nope", &id), KVF_E_NOTFOUND);
	assert_true(kvf_tokenizer_is_special(t, 20));
	assert_false(kvf_tokenizer_is_special(t, 22));
	assert_false(kvf_tokenizer_is_special(t, 0));
	assert_int_equal(kvf_tokenizer_vocab_size(t), 25);
	size_t len;
	assert_string_equal(kvf_tokenizer_id_token(t, 2, &len), "Ġ");
	assert_null(kvf_tokenizer_id_token(t, 15, &len));
	/* decode: specials kept or skipped */
	uint32_t ids[] = { 20, 0, 2, 1, 22 };
	char *s = dec(t, ids, 5, 0);
	assert_string_equal(s, "<s>a b<R>");
	kvf_free(s);
	s = dec(t, ids, 5, KVF_DETOK_SKIP_SPECIAL);
	assert_string_equal(s, "a b<R>");
	kvf_free(s);
	kvf_tokenizer_destroy(t);
}

static void test_normalizers(void **state)
{
	/* Llama-2 style: Prepend "▁" and spaces -> "▁", per piece between added tokens */
	const char *j =
		"{\"added_tokens\":[{\"id\":9,\"content\":\"<s>\",\"special\":true,\"normalized\":false}],"
		"\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"▁\"},"
		"{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"▁\"}]},"
		"\"model\":{\"type\":\"BPE\",\"vocab\":{\"▁\":0,\"a\":1,\"b\":2,\"▁a\":3},\"merges\":[\"▁ a\"]},"
		"\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"▁\"},"
		"\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \","
		"\"start\":1,\"stop\":0}]}}";
	kvf_tokenizer *t = load(j);
	assert_string_equal(enc(t, "a a", 0), "[3,3]");
	assert_string_equal(enc(t, "a<s>a", 0), "[3,9,3]");
	assert_string_equal(enc(t, "", 0), "[]");
	uint32_t ids[] = { 3, 0, 3 };
	char *s = dec(t, ids, 3, 0);
	assert_string_equal(s, "a  a");
	kvf_free(s);
	kvf_tokenizer_destroy(t);

	/* NFC: e + combining acute == é */
	const char *n = "{\"normalizer\":{\"type\":\"NFC\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"é\":0,\"e\":1,"
			"\"\xCC\x81\":2},\"merges\":[]}}";
	t = load(n);
	assert_string_equal(enc(t, "e\xCC\x81", 0), "[0]");
	assert_string_equal(enc(t, "\xC3\xA9", 0), "[0]");
	kvf_tokenizer_destroy(t);

	/* NFC's quick check must not skip text that composes: Hangul jamo, a mark after CJK */
	const char *h = "{\"normalizer\":{\"type\":\"NFC\"},\"model\":{\"type\":\"BPE\",\"vocab\":{"
			"\"\xEA\xB0\x80\":0,\"\xEA\xB0\x81\":1,\"\xE4\xB8\xAD\":2,\"\xC3\xA9\":3,\"e\":4,\"\xCC\x81\":5},"
			"\"merges\":[]}}";
	t = load(h);
	assert_string_equal(enc(t, "\xE1\x84\x80\xE1\x85\xA1", 0), "[0]");           /* U+1100 U+1161 -> U+AC00 */
	assert_string_equal(enc(t, "\xEA\xB0\x80\xE1\x86\xA8", 0), "[1]");           /* U+AC00 U+11A8 -> U+AC01 */
	assert_string_equal(enc(t, "\xE4\xB8\xAD" "e\xCC\x81\xE4\xB8\xAD", 0), "[2,3,2]"); /* 中é中 */
	assert_string_equal(enc(t, "\xE4\xB8\xAD\xCC\x81", 0), "[2,5]");               /* nothing to compose */
	kvf_tokenizer_destroy(t);

	/* Replace with a regex, Strip */
	const char *r = "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Strip\",\"strip_left\":true,"
			"\"strip_right\":true},{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"b+\"},\"content\":\"a\"}]},"
			"\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\" \":1},\"merges\":[]}}";
	t = load(r);
	assert_string_equal(enc(t, "  abbb b \t", 0), "[0,0,1,0]");
	kvf_tokenizer_destroy(t);
}

#define SPLIT_TOK(behavior, invert)                                                                     \
	"{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"" behavior  \
	"\",\"invert\":" invert "},\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"a\":0,\"b\":1,\"-\":2," \
	"\"a-\":3,\"-b\":4,\"--\":5,\"a--\":6,\"--b\":7},\"merges\":[]}}"

static void test_split_behaviors(void **state)
{
	/* pieces are whole vocabulary entries (ignore_merges), so ids show the split */
	static const struct {
		const char *json, *want;
	} cases[] = {
		{ SPLIT_TOK("Removed", "false"), "[0,1]" },
		{ SPLIT_TOK("Isolated", "false"), "[0,2,2,1]" },
		{ SPLIT_TOK("MergedWithPrevious", "false"), "[3,2,1]" },
		{ SPLIT_TOK("MergedWithNext", "false"), "[0,2,4]" },
		{ SPLIT_TOK("Contiguous", "false"), "[0,5,1]" },
		/* invert: the non-dashes are the delimiters */
		{ SPLIT_TOK("Removed", "true"), "[2,2]" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kvf_tokenizer *t = load(cases[i].json);
		const char *got = enc(t, "a--b", 0);
		if (strcmp(got, cases[i].want))
			fail_msg("case %zu: got %s want %s", i, got, cases[i].want);
		kvf_tokenizer_destroy(t);
	}
}

static void test_metaspace_and_digits(void **state)
{
	const char *j =
		"{\"added_tokens\":[{\"id\":9,\"content\":\"<s>\",\"special\":true,\"normalized\":false}],"
		"\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
		"{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"first\",\"split\":true}]},"
		"\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"▁a\":0,\"a\":1,\"▁b\":2,\"1\":3,\"2\":4,\"▁\":5},"
		"\"merges\":[]},"
		"\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"first\"}}";
	kvf_tokenizer *t = load(j);
	/* "first": only the piece at the start of the text gets the prefix */
	assert_string_equal(enc(t, "a b", 0), "[0,2]");
	assert_string_equal(enc(t, "<s>a b", 0), "[9,1,2]");
	assert_string_equal(enc(t, "a12", 0), "[0,3,4]");
	/* decoder: the first token's replacement chars vanish, later ones are spaces */
	uint32_t ids[] = { 0, 2, 5 };
	char *s = dec(t, ids, 3, 0);
	assert_string_equal(s, "a b ");
	kvf_free(s);
	kvf_tokenizer_destroy(t);
}

/* The segment cache: long text between added tokens is reused, keyed by its
 * bytes and by whether it starts the text (Metaspace "first"). */
static void test_segment_cache(void **state)
{
	const char *j =
		"{\"added_tokens\":[{\"id\":9,\"content\":\"<s>\",\"special\":true,\"normalized\":false}],"
		"\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"first\",\"split\":true},"
		"\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"▁a\":0,\"a\":1,\"▁b\":2,\"▁\":5},"
		"\"merges\":[]}}";
	kvf_tokenizer *t = load(j);
	char long_text[1300 + 8], with_s[1300 + 16], want_first[2048], want_later[2048];
	long_text[0] = '\0';
	for (int i = 0; i < 325; i++) /* 1300 bytes: "a b " x 325 */
		strcat(long_text, "a b ");
	snprintf(with_s, sizeof(with_s), "<s>%s", long_text);
	/* expected ids, built by hand: "a" gets the prefix only at the start */
	size_t o = (size_t)snprintf(want_first, sizeof(want_first), "[0,2");
	size_t q = (size_t)snprintf(want_later, sizeof(want_later), "[9,1,2");
	for (int i = 1; i < 325; i++) {
		o += (size_t)snprintf(want_first + o, sizeof(want_first) - o, ",0,2");
		q += (size_t)snprintf(want_later + q, sizeof(want_later) - q, ",0,2");
	}
	snprintf(want_first + o, sizeof(want_first) - o, ",5]");
	snprintf(want_later + q, sizeof(want_later) - q, ",5]");
	uint64_t h, m;
	kvf_tokenizer_cache_stats(t, &h, &m);
	assert_true(h == 0 && m == 0);
	assert_string_equal(enc(t, long_text, 0), want_first); /* miss */
	assert_string_equal(enc(t, with_s, 0), want_later);    /* same bytes, not first: miss */
	kvf_tokenizer_cache_stats(t, &h, &m);
	assert_true(h == 0 && m == 2);
	assert_string_equal(enc(t, long_text, 0), want_first); /* hit */
	assert_string_equal(enc(t, with_s, 0), want_later);    /* hit */
	assert_string_equal(enc(t, "<s>a b<s>a b", 0), "[9,1,2,9,1,2]"); /* short: not cached */
	kvf_tokenizer_cache_stats(t, &h, &m);
	assert_true(h == 2 && m == 2);
	/* another namespace (tenant) does not see them */
	kvf_tok_ids ids = { 0 };
	assert_int_equal(kvf_tokenizer_encode_ns(t, long_text, strlen(long_text), 0, 42, &ids), 0);
	assert_int_equal(ids.n, 2 * 325 + 1);
	assert_int_equal(ids.ids[0], 0);
	kvf_tokenizer_cache_stats(t, &h, &m);
	assert_true(h == 2 && m == 3);
	ids.n = 0;
	assert_int_equal(kvf_tokenizer_encode_ns(t, long_text, strlen(long_text), 0, 42, &ids), 0);
	kvf_tokenizer_cache_stats(t, &h, &m);
	assert_true(h == 3 && m == 3);
	kvf_tok_ids_free(&ids);
	/* many distinct long segments: evicted by age, results stay exact */
	char v[1400];
	for (int k = 0; k < 3 * 32; k++) {
		snprintf(v, sizeof(v), "%s%s", (k & 1) ? "a " : "b ", long_text);
		const char *got = enc(t, v, 0);
		assert_true(strncmp(got, (k & 1) ? "[0,0,2" : "[2,0,2", 6) == 0);
	}
	assert_string_equal(enc(t, long_text, 0), want_first);
	kvf_tokenizer_destroy(t);
}

/* ByteFallback decoding follows HF: an invalid run gives one U+FFFD per byte. */
static void test_decoders(void **state)
{
	const char *j = "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"<0xE4>\":0,\"<0xB8>\":1,"
			"\"<0xAD>\":2,\"a\":3,\"▁b\":4},\"merges\":[]},"
			"\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"▁\"},"
			"\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]}}";
	kvf_tokenizer *t = load(j);
	uint32_t ok[] = { 3, 0, 1, 2, 4 }; /* a 中 b */
	char *s = dec(t, ok, 5, 0);
	assert_string_equal(s, "a\xE4\xB8\xAD b");
	kvf_free(s);
	uint32_t cut[] = { 3, 0, 1, 4 }; /* two bytes of a three-byte character */
	s = dec(t, cut, 4, 0);
	assert_string_equal(s, "a\xEF\xBF\xBD\xEF\xBF\xBD b");
	kvf_free(s);
	/* unknown ids are skipped, as HF does */
	uint32_t unknown[] = { 3, 999, 3 };
	s = dec(t, unknown, 3, 0);
	assert_string_equal(s, "aa");
	kvf_free(s);
	kvf_tokenizer_destroy(t);

	/* no decoder: tokens joined by spaces */
	t = load(mini_json);
	uint32_t ids[] = { 4, 7 };
	s = dec(t, ids, 2, 0);
	assert_string_equal(s, "ab cd");
	kvf_free(s);
	kvf_tokenizer_destroy(t);
}

/* Streaming: chunks add up to decode(all); incomplete UTF-8 is held. */
static void test_detok_stream(void **state)
{
	const char *j = "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"<0xE4>\":0,\"<0xB8>\":1,"
			"\"<0xAD>\":2,\"a\":3,\"▁b\":4,\"<0xFF>\":5},\"merges\":[]},"
			"\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"▁\"},"
			"\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
			"\"content\":\" \",\"start\":1,\"stop\":0}]}}";
	kvf_tokenizer *t = load(j);
	kvf_detok *d;
	assert_int_equal(kvf_detok_create(t, 0, &d), 0);
	const char *txt;
	size_t len;
	/* leading "▁b": the Strip decoder drops the space of the first token only */
	assert_int_equal(kvf_detok_step(d, 4, &txt, &len), 0);
	assert_int_equal(len, 1);
	assert_memory_equal(txt, "b", 1);
	assert_int_equal(kvf_detok_step(d, 0, &txt, &len), 0);
	assert_int_equal(len, 0); /* E4: held */
	assert_int_equal(kvf_detok_step(d, 1, &txt, &len), 0);
	assert_int_equal(len, 0); /* E4 B8: held */
	assert_int_equal(kvf_detok_step(d, 2, &txt, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(txt, "\xE4\xB8\xAD", 3);
	assert_int_equal(kvf_detok_step(d, 4, &txt, &len), 0);
	assert_int_equal(len, 2);
	assert_memory_equal(txt, " b", 2);
	/* a byte that never completes comes out at flush as U+FFFD */
	assert_int_equal(kvf_detok_step(d, 0, &txt, &len), 0);
	assert_int_equal(len, 0);
	assert_int_equal(kvf_detok_flush(d, &txt, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(txt, "\xEF\xBF\xBD", 3);
	/* after flush a new stream starts: the first token is stripped again */
	assert_int_equal(kvf_detok_step(d, 4, &txt, &len), 0);
	assert_int_equal(len, 1);
	assert_int_equal(kvf_detok_flush(d, &txt, &len), 0);
	assert_int_equal(len, 0);
	kvf_detok_destroy(d);
	kvf_detok_destroy(NULL);

	/* an invalid byte after a complete character: HF's ByteFallback turns the
	 * whole run into U+FFFDs, but "中" was already returned; the stream goes
	 * on without failing */
	assert_int_equal(kvf_detok_create(t, 0, &d), 0);
	uint32_t run[] = { 3, 0, 1, 2, 0, 3 };
	char acc[64];
	size_t o = 0;
	for (size_t i = 0; i < 6; i++) {
		assert_int_equal(kvf_detok_step(d, run[i], &txt, &len), 0);
		memcpy(acc + o, txt, len);
		o += len;
	}
	assert_int_equal(kvf_detok_flush(d, &txt, &len), 0);
	acc[o] = '\0';
	assert_string_equal(acc, "a\xE4\xB8\xAD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "a");
	char *whole = dec(t, run, 6, 0);
	assert_string_equal(whole, "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "a");
	kvf_free(whole);
	kvf_detok_destroy(d);
	kvf_tokenizer_destroy(t);
}

/* The repo's byte-level tokenizer: streaming equals whole decode on text
 * whose tokens split UTF-8 characters (emoji). */
static void test_detok_bytelevel(void **state)
{
	kvf_tokenizer *t;
	assert_int_equal(kvf_tokenizer_load(src_path("tests/data/tokenizer/small"), &t), 0);
	const char *text = "emoji 🙂🙃 and 中文 and é!";
	kvf_tok_ids ids = { 0 };
	assert_int_equal(kvf_tokenizer_encode(t, text, strlen(text), 0, &ids), 0);
	assert_true(ids.n > 10);
	char *whole = dec(t, ids.ids, ids.n, 0);
	assert_string_equal(whole, text);
	kvf_detok *d;
	assert_int_equal(kvf_detok_create(t, 0, &d), 0);
	char acc[256];
	size_t o = 0, held = 0;
	for (size_t i = 0; i <= ids.n; i++) {
		const char *c;
		size_t cl;
		if (i < ids.n)
			assert_int_equal(kvf_detok_step(d, ids.ids[i], &c, &cl), 0);
		else
			assert_int_equal(kvf_detok_flush(d, &c, &cl), 0);
		held += i < ids.n && cl == 0;
		/* every chunk is valid UTF-8 on its own: never half a character */
		for (size_t k = 0; k < cl; k++)
			if (k == 0)
				assert_true(((unsigned char)c[0] & 0xC0) != 0x80);
		memcpy(acc + o, c, cl);
		o += cl;
	}
	acc[o] = '\0';
	assert_string_equal(acc, text);
	assert_true(held > 0); /* some byte tokens were held */
	kvf_detok_destroy(d);
	kvf_free(whole);
	kvf_tok_ids_free(&ids);
	/* config: bos/eos from tokenizer_config.json */
	assert_int_equal(kvf_tokenizer_bos_id(t), 1);
	assert_int_equal(kvf_tokenizer_eos_id(t), 2);
	uint32_t stop[8];
	size_t ns = kvf_tokenizer_eos_ids(t, stop, 8);
	assert_true(ns >= 2);
	assert_int_equal(stop[0], 2);
	bool has_im_end = false;
	for (size_t i = 0; i < ns; i++)
		has_im_end |= stop[i] == 4;
	assert_true(has_im_end);
	assert_true(kvf_tokenizer_has_chat_template(t));
	kvf_tokenizer_destroy(t);
}

static void expect_load_error(const char *json, int code, const char *needle)
{
	kvf_tokenizer *t = NULL;
	int rc = kvf_tokenizer_load_mem(json, strlen(json), NULL, 0, &t);
	assert_int_equal(rc, code);
	assert_null(t);
	if (!strstr(kvf_errmsg(), needle))
		fail_msg("error \"%s\" does not mention \"%s\"", kvf_errmsg(), needle);
}

static void test_errors(void **state)
{
	expect_load_error("{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Lowercase\"}]},"
			  "\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
			  KVF_E_UNSUPPORTED, "normalizer.normalizers[1].type");
	expect_load_error("{\"pre_tokenizer\":{\"type\":\"Whitespace\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
			  KVF_E_UNSUPPORTED, "pre_tokenizer.type");
	expect_load_error("{\"decoder\":{\"type\":\"WordPiece\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
			  KVF_E_UNSUPPORTED, "decoder.type");
	expect_load_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", KVF_E_UNSUPPORTED, "model.type");
	expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}", KVF_E_PARSE,
			  "model.merges[0]");
	expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a a a\"]}}", KVF_E_PARSE,
			  "model.merges[0]");
	expect_load_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"},"
			  "\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
			  KVF_E_UNSUPPORTED, "pre_tokenizer.pattern");
	expect_load_error("{\"model\":", KVF_E_PARSE, "tokenizer.json");
	expect_load_error("{\"model\":{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{},\"merges\":[]}}",
			  KVF_E_UNSUPPORTED, "dropout");

	kvf_tokenizer *t;
	assert_int_equal(kvf_tokenizer_load("/nonexistent/tokenizer.json", &t), KVF_E_NOTFOUND);

	/* invalid UTF-8 input is refused with its offset */
	t = load(mini_json);
	kvf_tok_ids ids = { 0 };
	assert_int_equal(kvf_tokenizer_encode(t, "ab\xC3(", 4, 0, &ids), KVF_E_INVAL);
	assert_non_null(strstr(kvf_errmsg(), "byte 2"));
	assert_int_equal(kvf_tokenizer_encode(t, "\xED\xA0\x80", 3, 0, &ids), KVF_E_INVAL); /* surrogate */
	assert_int_equal(kvf_tokenizer_encode(t, "\xC0\xAF", 2, 0, &ids), KVF_E_INVAL);     /* overlong */
	assert_int_equal(ids.n, 0);
	/* appending */
	assert_int_equal(kvf_tokenizer_encode(t, "ab", 2, 0, &ids), 0);
	assert_int_equal(kvf_tokenizer_encode(t, "cd", 2, 0, &ids), 0);
	assert_int_equal(ids.n, 2);
	assert_int_equal(ids.ids[0], 4);
	assert_int_equal(ids.ids[1], 7);
	kvf_tok_ids_free(&ids);
	kvf_tokenizer_destroy(t);
	kvf_tokenizer_destroy(NULL);
}

/* Several threads encode with one tokenizer; each gets its own context. */
struct mt_arg {
	kvf_tokenizer *tok;
	const char *const *texts;
	size_t n;
	char results[8][256];
	int rc;
};

static void *mt_worker(void *p)
{
	struct mt_arg *a = p;
	kvf_tok_ids ids = { 0 };
	for (int rep = 0; rep < 200 && !a->rc; rep++) {
		for (size_t i = 0; i < a->n; i++) {
			ids.n = 0;
			if (kvf_tokenizer_encode(a->tok, a->texts[i], strlen(a->texts[i]), 0, &ids)) {
				a->rc = -1;
				break;
			}
			char buf[256];
			size_t o = 0;
			for (size_t k = 0; k < ids.n && o < sizeof(buf) - 12; k++)
				o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%u,", ids.ids[k]);
			buf[o] = '\0';
			if (rep == 0)
				memcpy(a->results[i], buf, o + 1);
			else if (strcmp(buf, a->results[i]))
				a->rc = -2;
		}
	}
	kvf_tok_ids_free(&ids);
	return NULL;
}

static void test_threads(void **state)
{
	kvf_tokenizer *t;
	assert_int_equal(kvf_tokenizer_load(src_path("tests/data/tokenizer/small/tokenizer.json"), &t), 0);
	static const char *const texts[] = {
		"def main():\n    return 42\n", "Hello <|im_start|>world", "🙂 unicode é 中文",
		"for i in range(10): print(i)", "    indented\tcode  ", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	};
	struct mt_arg ref = { .tok = t, .texts = texts, .n = 6 };
	mt_worker(&ref);
	assert_int_equal(ref.rc, 0);
	pthread_t th[4];
	static struct mt_arg args[4];
	for (int i = 0; i < 4; i++) {
		memset(&args[i], 0, sizeof(args[i]));
		args[i].tok = t;
		args[i].texts = texts;
		args[i].n = 6;
		assert_int_equal(pthread_create(&th[i], NULL, mt_worker, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].rc, 0);
		for (size_t k = 0; k < 6; k++)
			assert_string_equal(args[i].results[k], ref.results[k]);
	}
	kvf_tokenizer_destroy(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bpe_merge_order),
		cmocka_unit_test(test_segment_cache),
		cmocka_unit_test(test_bpe_ignore_merges),
		cmocka_unit_test(test_bpe_byte_fallback_and_unk),
		cmocka_unit_test(test_bpe_subword_prefix),
		cmocka_unit_test(test_added_tokens),
		cmocka_unit_test(test_normalizers),
		cmocka_unit_test(test_split_behaviors),
		cmocka_unit_test(test_metaspace_and_digits),
		cmocka_unit_test(test_decoders),
		cmocka_unit_test(test_detok_stream),
		cmocka_unit_test(test_detok_bytelevel),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
}
