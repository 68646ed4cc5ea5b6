/*
 * Fuzz target for engine/tokenizer/: arbitrary bytes into encode (invalid
 * UTF-8 included: it must be refused with an error, never crash) and the same
 * bytes read as little-endian u32 ids into decode and the streaming
 * detokenizer (ids past the vocabulary included). The first input byte picks
 * one of two tokenizers built in memory that exercise every pipeline step:
 * a byte-level one (Split regex + ByteLevel, added tokens with lstrip/rstrip/
 * single_word, TemplateProcessing) and a sentencepiece-style one (NFC,
 * Prepend, Replace, Metaspace, Digits, byte_fallback, unk, ByteFallback/
 * Strip/Fuse/Metaspace decoders). Bytes after a 0xFF 0xFE marker are also
 * rendered as a chat template. Leaks are caught by libFuzzer's LeakSanitizer.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/tokenizer/kvf_tokenizer.h"

static const char bytelevel_json[] =
	"{\"added_tokens\":["
	"{\"id\":40,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
	"{\"id\":41,\"content\":\"<|im_end|>\",\"special\":true,\"lstrip\":true,\"rstrip\":true,\"normalized\":false},"
	"{\"id\":42,\"content\":\"word\",\"single_word\":true,\"normalized\":true}],"
	"\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
	"\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
	"\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
	"{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
	"\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},"
	"{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[40]}}},"
	"\"decoder\":{\"type\":\"ByteLevel\"},"
	"\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"Ġ\":3,\"Ċ\":4,\"ab\":5,"
	"\"Ġa\":6,\"Ġab\":7,\"Ã\":8,\"©\":9,\"Ã©\":10,\"0\":11,\"1\":12,\"01\":13,\"ðŁ\":14,\"ð\":15,\"Ł\":16},"
	"\"merges\":[\"a b\",\"Ġ a\",\"Ġa b\",\"Ã ©\",\"0 1\",\"ð Ł\"]}}";

static const char sentencepiece_json[] =
	"{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
	"{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false}],"
	"\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Prepend\",\"prepend\":\"▁\"},"
	"{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"▁\"}]},"
	"\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
	"{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"first\",\"split\":true}]},"
	"\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"▁\"},\"content\":\" \"},"
	"{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0},"
	"{\"type\":\"Metaspace\"}]},"
	"\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
	"\"vocab\":{\"<unk>\":0,\"<s>\":1,\"▁\":2,\"a\":3,\"▁a\":4,\"b\":5,\"é\":6,\"<0xC3>\":7,\"<0xA9>\":8,\"<0xF0>\":9,"
	"\"<0x9F>\":10,\"<0x99>\":11,\"<0x82>\":12,\"1\":13},"
	"\"merges\":[\"▁ a\"]}}";

static kvf_tokenizer *toks[2];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (kvf_tokenizer_load_mem(bytelevel_json, sizeof(bytelevel_json) - 1, NULL, 0, &toks[0]) ||
	    kvf_tokenizer_load_mem(sentencepiece_json, sizeof(sentencepiece_json) - 1, NULL, 0, &toks[1]))
		abort(); /* the fixtures must load */
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	kvf_tokenizer *tok = toks[data[0] & 1];
	unsigned flags = (data[0] >> 1) & 3;
	data++;
	size--;

	/* encode: valid or an error, and ids in range */
	kvf_tok_ids ids = { 0 };
	int rc = kvf_tokenizer_encode(tok, (const char *)data, size, flags, &ids);
	if (rc == 0) {
		for (size_t i = 0; i < ids.n; i++)
			if (ids.ids[i] >= kvf_tokenizer_vocab_size(tok))
				abort();
		/* a successful encode decodes */
		char *s;
		size_t len;
		if (kvf_tokenizer_decode(tok, ids.ids, ids.n, 0, &s, &len) != 0)
			abort();
		kvf_free(s);
	} else if (rc != KVF_E_INVAL) {
		abort();
	}
	kvf_tok_ids_free(&ids);

	/* the bytes as ids: whole decode and streaming must agree */
	size_t n = size / 4;
	uint32_t *v = malloc((n ? n : 1) * sizeof(uint32_t));
	if (!v)
		return 0;
	for (size_t i = 0; i < n; i++) {
		memcpy(&v[i], data + 4 * i, 4);
		if (flags & 1)
			v[i] %= 64; /* mostly known ids */
	}
	char *whole;
	size_t wl;
	if (kvf_tokenizer_decode(tok, v, n, flags >> 1, &whole, &wl) != 0)
		abort();
	kvf_detok *d;
	if (kvf_detok_create(tok, flags >> 1, &d) == 0) {
		char *acc = malloc(wl + 64);
		size_t o = 0;
		bool ok = acc != NULL;
		for (size_t i = 0; ok && i <= n; i++) {
			const char *c;
			size_t cl;
			rc = i < n ? kvf_detok_step(d, v[i], &c, &cl) : kvf_detok_flush(d, &c, &cl);
			if (rc) {
				ok = false;
				break;
			}
			char *na = realloc(acc, o + cl + 1);
			if (!na)
				break;
			acc = na;
			memcpy(acc + o, c, cl);
			o += cl;
		}
		if (!ok)
			abort(); /* streaming never fails */
		/* it adds up to the whole decode unless the ids hold invalid UTF-8,
		 * whose U+FFFDs can differ (docs/tokenizer.md) */
		if (!memmem(whole, wl, "\xEF\xBF\xBD", 3) && (o != wl || memcmp(acc, whole, wl) != 0))
			abort();
		free(acc);
		kvf_detok_destroy(d);
	}
	kvf_free(whole);
	free(v);

	/* chat template after a 0xFF 0xFE marker */
	const uint8_t *m = memmem(data, size, "\xFF\xFE", 2);
	if (m) {
		const char *src = (const char *)m + 2;
		size_t sl = size - (size_t)(m + 2 - data);
		kvf_chat_template *tpl;
		if (kvf_chat_template_compile(src, sl, &tpl) == 0) {
			json_t *vars = json_loads("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
						  "{\"role\":\"assistant\",\"content\":\"yo\"}],\"x\":[1,2,{\"k\":null}],"
						  "\"add_generation_prompt\":true}", 0, NULL);
			char *out;
			size_t ol;
			if (kvf_chat_template_render(tpl, vars, &out, &ol) == 0)
				kvf_free(out);
			json_decref(vars);
			kvf_chat_template_destroy(tpl);
		}
	}
	return 0;
}
