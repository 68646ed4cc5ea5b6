/*
 * kvf-mkmodel: writes a small Hugging Face model directory with random
 * weights, for the demo, the tests and the benchmarks.
 *
 *   kvf-mkmodel --arch llama|qwen3 --out DIR [--layers N] [--dim N]
 *               [--heads N] [--kv-heads N] [--head-dim N] [--ffn N]
 *               [--vocab N] [--max-pos N] [--dtype bf16|f16|f32]
 *               [--tie 0|1] [--seed N] [--shards N]
 *
 * Output: config.json (the classic rope_theta form; the reference models
 * use the newer rope_parameters, so both are exercised), model.safetensors
 * or N shards with model.safetensors.index.json, generation_config.json,
 * and a byte-level BPE tokenizer.json trained here on a built-in text (256
 * byte symbols, the specials <unk> <s> </s> <|im_start|> <|im_end|>, merges
 * up to the vocabulary size or what the text supports) with a
 * tokenizer_config.json carrying a ChatML chat template. Matrices are
 * N(0, 0.02), norm weights 1 + N(0, 0.1), all from one seeded generator, so
 * the same arguments always give the same bytes.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "engine/dtype.h"

typedef struct opts {
	const char *arch, *out, *dtype;
	int layers, dim, heads, kv_heads, head_dim, ffn, vocab, max_pos, tie, shards;
	uint64_t seed;
} opts;

/* ------------------------------------------------------------------------ */
/* random numbers                                                           */

static uint64_t rng_state;

static uint64_t next64(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double uniform(void)
{
	return ((double)(next64() >> 11) + 0.5) * 0x1.0p-53;
}

static double gauss(void)
{
	return sqrt(-2.0 * log(uniform())) * cos(2.0 * M_PI * uniform());
}

/* ------------------------------------------------------------------------ */
/* tensors                                                                  */

typedef struct tensor {
	char name[96];
	int64_t rows, cols; /* cols 0: 1-D */
	int norm;           /* norm weight: 1 + N(0, 0.1) */
	size_t nbytes;
	int shard;
} tensor;

static tensor *tensors;
static int n_tensors, cap_tensors;

static void add(const char *name, int64_t rows, int64_t cols, int norm)
{
	if (n_tensors == cap_tensors) {
		cap_tensors = cap_tensors ? 2 * cap_tensors : 64;
		tensors = realloc(tensors, (size_t)cap_tensors * sizeof *tensors);
		if (!tensors) {
			perror("realloc");
			exit(1);
		}
	}
	tensor *t = &tensors[n_tensors++];
	snprintf(t->name, sizeof t->name, "%s", name);
	t->rows = rows;
	t->cols = cols;
	t->norm = norm;
}

static size_t esize(const char *dt)
{
	return strcmp(dt, "f32") ? 2 : 4;
}

static const char *st_dtype(const char *dt)
{
	return !strcmp(dt, "f32") ? "F32" : !strcmp(dt, "f16") ? "F16" : "BF16";
}

static int write_shard(const opts *o, const char *path, int shard)
{
	json_t *hdr = json_object();
	json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
	size_t off = 0;
	for (int i = 0; i < n_tensors; i++) {
		tensor *t = &tensors[i];
		if (t->shard != shard)
			continue;
		json_t *shape = t->cols ? json_pack("[I,I]", (json_int_t)t->rows, (json_int_t)t->cols)
					: json_pack("[I]", (json_int_t)t->rows);
		json_object_set_new(hdr, t->name,
				    json_pack("{s:s,s:o,s:[I,I]}", "dtype", st_dtype(o->dtype), "shape",
					      shape, "data_offsets", (json_int_t)off,
					      (json_int_t)(off + t->nbytes)));
		off += t->nbytes;
	}
	char *h = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(hdr);
	size_t hl = strlen(h), pad = (8 - hl % 8) % 8;
	FILE *f = fopen(path, "wb");
	if (!f) {
		fprintf(stderr, "kvf-mkmodel: %s: %s\n", path, strerror(errno));
		free(h);
		return -1;
	}
	uint64_t total = hl + pad;
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(total >> (8 * i));
	fwrite(le, 1, 8, f);
	fwrite(h, 1, hl, f);
	for (size_t i = 0; i < pad; i++)
		fputc(' ', f);
	free(h);
	/* data in header order: json_dumps sorted the keys, sort ours alike */
	for (int i = 0; i < n_tensors; i++) {
		tensor *t = &tensors[i];
		if (t->shard != shard)
			continue;
		size_t n = (size_t)t->rows * (size_t)(t->cols ? t->cols : 1);
		size_t es = esize(o->dtype);
		uint8_t *buf = malloc(n * es);
		if (!buf) {
			fclose(f);
			return -1;
		}
		for (size_t j = 0; j < n; j++) {
			float v = t->norm ? (float)(1.0 + 0.1 * gauss()) : (float)(0.02 * gauss());
			if (es == 4) {
				memcpy(buf + 4 * j, &v, 4);
			} else {
				uint16_t h16 = !strcmp(o->dtype, "f16") ? kvf_f32_to_f16(v) : kvf_f32_to_bf16(v);
				memcpy(buf + 2 * j, &h16, 2);
			}
		}
		if (fwrite(buf, 1, n * es, f) != n * es) {
			free(buf);
			fclose(f);
			fprintf(stderr, "kvf-mkmodel: %s: write failed\n", path);
			return -1;
		}
		free(buf);
	}
	if (fclose(f)) {
		fprintf(stderr, "kvf-mkmodel: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int cmp_tensor(const void *a, const void *b)
{
	return strcmp(((const tensor *)a)->name, ((const tensor *)b)->name);
}

/* ------------------------------------------------------------------------ */
/* tokenizer                                                                */

static const char corpus[] =
	"The quick brown fox jumps over the lazy dog. A key-value cache keeps the keys and "
	"values of every token the model has seen, so that the next token only attends to "
	"them instead of recomputing them. In a disaggregated deployment, the prefill worker "
	"computes the cache for the prompt and the decode worker pulls it over the fabric, "
	"then generates the answer one token at a time.\n"
	"def forward(self, input_ids, positions):\n"
	"    hidden = self.embed_tokens(input_ids)\n"
	"    for layer in self.layers:\n"
	"        hidden = layer(hidden, positions)\n"
	"    return self.norm(hidden)\n"
	"int main(int argc, char **argv)\n{\n    printf(\"hello, world\\n\");\n    return 0;\n}\n"
	"User: What is the capital of France?\nAssistant: The capital of France is Paris.\n"
	"User: How many tokens are in a block?\nAssistant: There are sixteen tokens in a block "
	"by default, and every block holds the keys and values of all the layers.\n"
	"Numbers like 2024, 3.14159 and 1000000 appear in text, and so do names, dates and "
	"times: Monday, 12 March, 10:30. The scheduler batches requests continuously; when "
	"memory runs out it preempts the newest request and recomputes it later.\n";

/* GPT-2's byte -> printable code point map. */
static unsigned byte_cp[256];

static void init_bytes(void)
{
	int n = 0;
	for (int b = 0; b < 256; b++) {
		if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
			byte_cp[b] = (unsigned)b;
		else
			byte_cp[b] = 256u + (unsigned)n++;
	}
}

static size_t put_utf8(char *d, unsigned cp)
{
	if (cp < 0x80) {
		d[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		d[0] = (char)(0xC0 | (cp >> 6));
		d[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	d[0] = (char)(0xE0 | (cp >> 12));
	d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
	d[2] = (char)(0x80 | (cp & 0x3F));
	return 3;
}

#define MAX_SYMS 4096
static char *sym_str[MAX_SYMS];
static int n_syms;

static int sym_add(const char *s)
{
	sym_str[n_syms] = strdup(s);
	return n_syms++;
}

typedef struct word {
	int *sym;
	int n;
	int count;
} word;

static int cls(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80)
		return 1;
	if (c >= '0' && c <= '9')
		return 2;
	if (c == ' ' || c == '\n' || c == '\t' || c == '\r')
		return 3;
	return 4;
}

/* Pre-tokenizes like GPT-2's regex on ASCII (" ?letters", " ?digits",
 * " ?other", whitespace runs) and trains merges on the corpus. Writes the
 * merges (pairs of symbol ids) and returns their count. */
static int train(int max_merges, int (*merges)[2], int base)
{
	word words[1024];
	int nw = 0;
	const unsigned char *s = (const unsigned char *)corpus;
	size_t len = strlen(corpus), i = 0;
	while (i < len && nw < 1024) {
		size_t j = i;
		if (s[j] == ' ' && j + 1 < len && cls(s[j + 1]) != 3)
			j++;
		int c = cls(s[j]);
		size_t k = j + 1;
		while (k < len && cls(s[k]) == c && !(c == 3 && s[k] != s[j]))
			k++;
		/* same word seen before? */
		int found = -1;
		for (int w = 0; w < nw; w++) {
			if (words[w].n != (int)(k - i))
				continue;
			int same = 1;
			for (int t = 0; t < words[w].n && same; t++)
				same = words[w].sym[t] == base + s[i + t];
			if (same) {
				found = w;
				break;
			}
		}
		if (found >= 0) {
			words[found].count++;
		} else {
			words[nw].n = (int)(k - i);
			words[nw].sym = malloc((k - i) * sizeof(int));
			for (size_t t = i; t < k; t++)
				words[nw].sym[t - i] = base + s[t];
			words[nw].count = 1;
			nw++;
		}
		i = k;
	}
	int nm = 0;
	while (nm < max_merges && n_syms < MAX_SYMS) {
		/* most frequent adjacent pair (seen twice at least); ties: smallest (a, b) */
		int ba = -1, bb = -1, bc = 1;
		for (int w = 0; w < nw; w++)
			for (int t = 0; t + 1 < words[w].n; t++) {
				int a = words[w].sym[t], b = words[w].sym[t + 1], cnt = 0;
				for (int w2 = 0; w2 < nw; w2++)
					for (int t2 = 0; t2 + 1 < words[w2].n; t2++)
						if (words[w2].sym[t2] == a && words[w2].sym[t2 + 1] == b)
							cnt += words[w2].count;
				if (cnt > bc || (cnt == bc && ba >= 0 && (a < ba || (a == ba && b < bb)))) {
					bc = cnt;
					ba = a;
					bb = b;
				}
			}
		if (ba < 0)
			break;
		char buf[512];
		snprintf(buf, sizeof buf, "%s%s", sym_str[ba], sym_str[bb]);
		int id = -1;
		for (int q = 0; q < n_syms; q++)
			if (!strcmp(sym_str[q], buf))
				id = q;
		if (id < 0)
			id = sym_add(buf);
		merges[nm][0] = ba;
		merges[nm][1] = bb;
		nm++;
		for (int w = 0; w < nw; w++) {
			int o = 0;
			for (int t = 0; t < words[w].n; t++) {
				if (t + 1 < words[w].n && words[w].sym[t] == ba && words[w].sym[t + 1] == bb) {
					words[w].sym[o++] = id;
					t++;
				} else {
					words[w].sym[o++] = words[w].sym[t];
				}
			}
			words[w].n = o;
		}
	}
	for (int w = 0; w < nw; w++)
		free(words[w].sym);
	return nm;
}

static json_t *added(int id, const char *content)
{
	return json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", id, "content", content, "single_word",
			 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

static int write_tokenizer(const opts *o, const char *dir)
{
	static const char *specials[] = {"<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"};
	init_bytes();
	for (int i = 0; i < 5; i++)
		sym_add(specials[i]);
	int base = n_syms;
	for (int b = 0; b < 256; b++) {
		char u[4] = {0};
		put_utf8(u, byte_cp[b]);
		sym_add(u);
	}
	int max_merges = o->vocab - n_syms;
	static int merges[MAX_SYMS][2];
	int nm = max_merges > 0 ? train(max_merges, merges, base) : 0;

	json_t *vocab = json_object(), *jm = json_array(), *add = json_array();
	for (int i = 0; i < n_syms; i++)
		json_object_set_new(vocab, sym_str[i], json_integer(i));
	for (int i = 0; i < nm; i++)
		json_array_append_new(jm, json_pack("[s,s]", sym_str[merges[i][0]], sym_str[merges[i][1]]));
	for (int i = 0; i < 5; i++)
		json_array_append_new(add, added(i, specials[i]));
	json_t *tok = json_pack(
		"{s:s,s:n,s:n,s:o,s:n,"
		"s:{s:s,s:b,s:b,s:b},"
		"s:{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}],s:[{s:{s:s,s:i}},{s:{s:s,s:i}},{s:{s:s,s:i}},{s:{s:s,s:i}}],s:{s:{s:s,s:[i],s:[s]}}},"
		"s:{s:s,s:b,s:b,s:b},"
		"s:{s:s,s:n,s:n,s:n,s:n,s:b,s:b,s:b,s:o,s:o}}",
		"version", "1.0", "truncation", "padding", "added_tokens", add, "normalizer",
		"pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
		"use_regex", 1,
		"post_processor", "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>",
		"type_id", 0, "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", "<s>",
		"type_id", 0, "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id", "<s>",
		"type_id", 0, "Sequence", "id", "B", "type_id", 0, "special_tokens", "<s>", "id", "<s>",
		"ids", 1, "tokens", "<s>",
		"decoder", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1,
		"model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix",
		"end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab",
		vocab, "merges", jm);
	if (!tok) {
		fprintf(stderr, "kvf-mkmodel: cannot build tokenizer.json\n");
		return -1;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	int rc = json_dump_file(tok, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(tok);
	json_t *tc = json_pack(
		"{s:s,s:s,s:s,s:i,s:s,s:s}", "bos_token", "<s>", "eos_token", "</s>", "unk_token",
		"<unk>", "model_max_length", o->max_pos, "chat_template",
		"{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
		"message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt "
		"%}{{ '<|im_start|>assistant\\n' }}{% endif %}",
		"tokenizer_class", "PreTrainedTokenizerFast");
	snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
	rc |= json_dump_file(tc, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(tc);
	for (int i = 0; i < n_syms; i++)
		free(sym_str[i]);
	n_syms = 0;
	return rc ? -1 : 0;
}

/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvf-mkmodel --arch llama|qwen3 --out DIR [--layers N] [--dim N] [--heads N]\n"
		"                   [--kv-heads N] [--head-dim N] [--ffn N] [--vocab N] [--max-pos N]\n"
		"                   [--dtype bf16|f16|f32] [--tie 0|1] [--seed N] [--shards N]\n"
		"defaults: llama, 2 layers, dim 128, 4 heads, 2 kv heads, head-dim dim/heads,\n"
		"          ffn 3*dim, vocab 512, max-pos 2048, bf16, seed 1, 1 shard;\n"
		"          tie 0 for llama, 1 for qwen3\n");
}

int main(int argc, char **argv)
{
	opts o = {.arch = "llama", .dtype = "bf16", .layers = 2, .dim = 128, .heads = 4,
		  .kv_heads = 2, .vocab = 512, .max_pos = 2048, .tie = -1, .seed = 1, .shards = 1};
	static struct option lo[] = {
		{"arch", 1, 0, 'a'},   {"out", 1, 0, 'o'},    {"layers", 1, 0, 'l'},
		{"dim", 1, 0, 'd'},    {"heads", 1, 0, 'H'},  {"kv-heads", 1, 0, 'k'},
		{"head-dim", 1, 0, 'D'}, {"ffn", 1, 0, 'f'},  {"vocab", 1, 0, 'v'},
		{"max-pos", 1, 0, 'p'}, {"dtype", 1, 0, 't'}, {"tie", 1, 0, 'T'},
		{"seed", 1, 0, 's'},   {"shards", 1, 0, 'S'}, {"help", 0, 0, 'h'},
		{0, 0, 0, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "a:o:h", lo, NULL)) != -1) {
		switch (c) {
		case 'a': o.arch = optarg; break;
		case 'o': o.out = optarg; break;
		case 'l': o.layers = atoi(optarg); break;
		case 'd': o.dim = atoi(optarg); break;
		case 'H': o.heads = atoi(optarg); break;
		case 'k': o.kv_heads = atoi(optarg); break;
		case 'D': o.head_dim = atoi(optarg); break;
		case 'f': o.ffn = atoi(optarg); break;
		case 'v': o.vocab = atoi(optarg); break;
		case 'p': o.max_pos = atoi(optarg); break;
		case 't': o.dtype = optarg; break;
		case 'T': o.tie = atoi(optarg); break;
		case 's': o.seed = strtoull(optarg, NULL, 0); break;
		case 'S': o.shards = atoi(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	int qwen3 = !strcmp(o.arch, "qwen3");
	if (!o.out || (!qwen3 && strcmp(o.arch, "llama"))) {
		usage(stderr);
		return 2;
	}
	if (strcmp(o.dtype, "bf16") && strcmp(o.dtype, "f16") && strcmp(o.dtype, "f32")) {
		fprintf(stderr, "kvf-mkmodel: --dtype must be bf16, f16 or f32\n");
		return 2;
	}
	if (!o.head_dim)
		o.head_dim = o.heads > 0 ? o.dim / o.heads : 0;
	if (!o.ffn)
		o.ffn = 3 * o.dim;
	if (o.tie < 0)
		o.tie = qwen3;
	if (o.layers < 1 || o.dim < 2 || o.heads < 1 || o.kv_heads < 1 || o.heads % o.kv_heads ||
	    o.head_dim < 2 || o.head_dim % 2 || o.ffn < 1 || o.vocab < 8 || o.max_pos < 1 ||
	    o.shards < 1 || o.shards > 99) {
		fprintf(stderr, "kvf-mkmodel: inconsistent shape (heads must be a multiple of "
				"kv-heads, head-dim even)\n");
		return 2;
	}
	if (mkdir(o.out, 0755) && errno != EEXIST) {
		fprintf(stderr, "kvf-mkmodel: %s: %s\n", o.out, strerror(errno));
		return 1;
	}
	rng_state = o.seed;

	int64_t H = o.dim, QD = (int64_t)o.heads * o.head_dim, KD = (int64_t)o.kv_heads * o.head_dim;
	add("model.embed_tokens.weight", o.vocab, H, 0);
	if (!o.tie)
		add("lm_head.weight", o.vocab, H, 0);
	add("model.norm.weight", H, 0, 1);
	for (int l = 0; l < o.layers; l++) {
		char n[96];
#define L(suffix, r, cc, norm)                                              \
	do {                                                                \
		snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);     \
		add(n, r, cc, norm);                                        \
	} while (0)
		L("input_layernorm.weight", H, 0, 1);
		L("self_attn.q_proj.weight", QD, H, 0);
		L("self_attn.k_proj.weight", KD, H, 0);
		L("self_attn.v_proj.weight", KD, H, 0);
		L("self_attn.o_proj.weight", H, QD, 0);
		if (qwen3) {
			L("self_attn.q_norm.weight", o.head_dim, 0, 1);
			L("self_attn.k_norm.weight", o.head_dim, 0, 1);
		}
		L("post_attention_layernorm.weight", H, 0, 1);
		L("mlp.gate_proj.weight", o.ffn, H, 0);
		L("mlp.up_proj.weight", o.ffn, H, 0);
		L("mlp.down_proj.weight", H, o.ffn, 0);
#undef L
	}
	qsort(tensors, (size_t)n_tensors, sizeof *tensors, cmp_tensor);
	size_t total = 0, params = 0;
	for (int i = 0; i < n_tensors; i++) {
		tensor *t = &tensors[i];
		size_t n = (size_t)t->rows * (size_t)(t->cols ? t->cols : 1);
		t->nbytes = n * esize(o.dtype);
		total += t->nbytes;
		params += n;
	}
	/* shards: consecutive tensors, about total/shards bytes each */
	size_t acc = 0;
	for (int i = 0; i < n_tensors; i++) {
		int s = (int)((acc * (size_t)o.shards) / (total ? total : 1));
		tensors[i].shard = s < o.shards ? s : o.shards - 1;
		acc += tensors[i].nbytes;
	}

	char path[4096];
	if (o.shards == 1) {
		snprintf(path, sizeof path, "%s/model.safetensors", o.out);
		if (write_shard(&o, path, 0))
			return 1;
	} else {
		json_t *wm = json_object();
		for (int s = 0; s < o.shards; s++) {
			char file[64];
			snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, o.shards);
			snprintf(path, sizeof path, "%s/%s", o.out, file);
			if (write_shard(&o, path, s))
				return 1;
			for (int i = 0; i < n_tensors; i++)
				if (tensors[i].shard == s)
					json_object_set_new(wm, tensors[i].name, json_string(file));
		}
		json_t *idx = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total,
					"weight_map", wm);
		snprintf(path, sizeof path, "%s/model.safetensors.index.json", o.out);
		if (json_dump_file(idx, path, JSON_INDENT(2) | JSON_SORT_KEYS)) {
			fprintf(stderr, "kvf-mkmodel: %s: cannot write\n", path);
			return 1;
		}
		json_decref(idx);
	}

	const char *tdt = !strcmp(o.dtype, "f32") ? "float32" : !strcmp(o.dtype, "f16") ? "float16" : "bfloat16";
	json_t *cfg = json_pack(
		"{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:s,s:i,s:f,s:f,s:n,s:b,s:i,s:i,s:i,s:s,s:b,s:b}",
		"architectures", qwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM", "model_type",
		qwen3 ? "qwen3" : "llama", "hidden_size", o.dim, "intermediate_size", o.ffn,
		"num_hidden_layers", o.layers, "num_attention_heads", o.heads, "num_key_value_heads",
		o.kv_heads, "head_dim", o.head_dim, "hidden_act", "silu", "max_position_embeddings",
		o.max_pos, "rms_norm_eps", qwen3 ? 1e-6 : 1e-5, "rope_theta", qwen3 ? 1000000.0 : 10000.0,
		"rope_scaling", "tie_word_embeddings", o.tie, "vocab_size", o.vocab, "bos_token_id", 1,
		"eos_token_id", 2, "torch_dtype", tdt, "attention_bias", 0, "mlp_bias", 0);
	snprintf(path, sizeof path, "%s/config.json", o.out);
	if (!cfg || json_dump_file(cfg, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) {
		fprintf(stderr, "kvf-mkmodel: %s: cannot write\n", path);
		return 1;
	}
	json_decref(cfg);
	json_t *gen = json_pack("{s:i,s:i}", "bos_token_id", 1, "eos_token_id", 2);
	snprintf(path, sizeof path, "%s/generation_config.json", o.out);
	json_dump_file(gen, path, JSON_INDENT(2));
	json_decref(gen);
	if (write_tokenizer(&o, o.out))
		return 1;
	printf("kvf-mkmodel: %s: %s, %zu parameters (%.1f MB %s), %d layer(s), %d shard(s)\n", o.out,
	       qwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM", params, (double)total / 1e6, o.dtype,
	       o.layers, o.shards);
	free(tensors);
	return 0;
}
