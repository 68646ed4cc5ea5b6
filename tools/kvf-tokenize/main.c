/*
 * kvf-tokenize: the tokenizer library on stdin/stdout, one JSON value per
 * line, so scripts and other programs can check tokenization without linking
 * C. This interface is relied upon; keep it stable.
 *
 *   kvf-tokenize -t PATH            JSON string per line -> JSON id array per line
 *   kvf-tokenize -t PATH --special  ... with the post-processor (BOS etc.)
 *   kvf-tokenize -t PATH --decode   JSON id array per line -> JSON string per line
 *   kvf-tokenize -t PATH --chat     {"messages":[...],"add_generation_prompt":b}
 *                                   per line -> rendered prompt as a JSON string
 * Extra options: --split-special (special tokens in text are plain text),
 * --skip-special (decode drops special tokens), --stream (decode through the
 * streaming detokenizer, one id at a time), --template FILE (chat template
 * to use instead of the model's), --bench FILE [--repeat N] (encode FILE's
 * text N times and print {"bytes":..,"seconds":..,"mb_per_s":..}),
 * --bench-scan FILE (the byte-scan baseline of the benchmark).
 * PATH is a tokenizer.json file or a model directory.
 * Exit status 0; 1 on the first bad line (message on stderr), 2 on usage.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/tokenizer/kvf_tokenizer.h"

enum mode { M_ENCODE, M_DECODE, M_CHAT, M_BENCH };

static void usage(void)
{
	fprintf(stderr,
		"usage: kvf-tokenize -t PATH [--special] [--split-special]\n"
		"       kvf-tokenize -t PATH --decode [--skip-special] [--stream]\n"
		"       kvf-tokenize -t PATH --chat [--template FILE]\n"
		"       kvf-tokenize -t PATH --bench FILE [--repeat N] [--special]\n"
		"PATH: tokenizer.json or a model directory. One JSON value per line on stdin and stdout.\n");
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0;
	char *b = malloc(cap);
	while (b) {
		size_t r = fread(b + n, 1, cap - n, f);
		n += r;
		if (n < cap)
			break;
		cap *= 2;
		char *nb = realloc(b, cap);
		if (!nb) {
			free(b);
			b = NULL;
		} else {
			b = nb;
		}
	}
	fclose(f);
	if (b)
		*len = n;
	return b;
}

static int print_json(json_t *v)
{
	char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	if (!s)
		return -1;
	fputs(s, stdout);
	fputc('\n', stdout);
	free(s);
	return 0;
}

static json_error_t jerr;

static int do_line(kvf_tokenizer *tok, enum mode mode, unsigned flags, bool stream, const char *line,
		   size_t len, kvf_tok_ids *ids, const char **err)
{
	json_t *in = json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	int rc = 0;
	if (!in) {
		*err = jerr.text;
		return KVF_E_PARSE;
	}
	if (mode == M_ENCODE) {
		if (!json_is_string(in)) {
			*err = "expected a JSON string";
			rc = KVF_E_PARSE;
			goto out;
		}
		ids->n = 0;
		rc = kvf_tokenizer_encode(tok, json_string_value(in), json_string_length(in), flags, ids);
		if (rc)
			goto out;
		json_t *arr = json_array();
		for (size_t i = 0; arr && i < ids->n; i++)
			json_array_append_new(arr, json_integer(ids->ids[i]));
		rc = arr && print_json(arr) == 0 ? 0 : KVF_E_NOMEM;
		json_decref(arr);
	} else if (mode == M_DECODE) {
		if (!json_is_array(in)) {
			*err = "expected a JSON array of ids";
			rc = KVF_E_PARSE;
			goto out;
		}
		size_t n = json_array_size(in);
		uint32_t *v = malloc((n ? n : 1) * sizeof(uint32_t));
		if (!v) {
			rc = KVF_E_NOMEM;
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			json_t *x = json_array_get(in, i);
			if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > UINT32_MAX) {
				free(v);
				*err = "ids must be integers in [0, 2^32)";
				rc = KVF_E_PARSE;
				goto out;
			}
			v[i] = (uint32_t)json_integer_value(x);
		}
		char *text = NULL;
		size_t tl = 0;
		if (!stream) {
			rc = kvf_tokenizer_decode(tok, v, n, flags, &text, &tl);
		} else {
			kvf_detok *d;
			rc = kvf_detok_create(tok, flags, &d);
			size_t cap = 0;
			for (size_t i = 0; !rc && i <= n; i++) {
				const char *chunk;
				size_t cl;
				rc = i < n ? kvf_detok_step(d, v[i], &chunk, &cl) : kvf_detok_flush(d, &chunk, &cl);
				if (!rc && kvf_grow((void **)&text, &cap, tl + cl + 1, 1) != 0)
					rc = KVF_E_NOMEM;
				if (!rc) {
					memcpy(text + tl, chunk, cl);
					tl += cl;
					text[tl] = '\0';
				}
			}
			kvf_detok_destroy(d);
			if (!rc && !text)
				text = kvf_strdup("");
		}
		free(v);
		if (rc) {
			kvf_free(text);
			goto out;
		}
		json_t *s = json_stringn(text, tl);
		rc = s && print_json(s) == 0 ? 0 : KVF_E_NOMEM;
		json_decref(s);
		kvf_free(text);
	} else {
		char *text;
		size_t tl;
		rc = kvf_tokenizer_chat_render_json(tok, in, &text, &tl);
		if (rc)
			goto out;
		json_t *s = json_stringn(text, tl);
		rc = s && print_json(s) == 0 ? 0 : KVF_E_NOMEM;
		json_decref(s);
		kvf_free(text);
	}
out:
	json_decref(in);
	return rc;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The byte-scan baseline of bench/tokenizer_bench.sh: the same line split
 * plus one pass over every byte (counting UTF-8 characters), repeated until
 * 0.2 s have passed. */
static int bench_scan(const char *file)
{
	size_t len;
	char *text = slurp(file, &len);
	if (!text) {
		fprintf(stderr, "kvf-tokenize: %s: %s\n", file, strerror(errno));
		return 1;
	}
	volatile size_t sink = 0;
	long reps = 0;
	double t0 = now_s(), dt;
	do {
		size_t pos = 0, chars = 0;
		while (pos < len) {
			const char *nl = memchr(text + pos, '\n', len - pos);
			size_t e = nl ? (size_t)(nl - text) + 1 : len;
			for (size_t i = pos; i < e; i++)
				chars += ((unsigned char)text[i] & 0xC0) != 0x80;
			pos = e;
		}
		sink += chars;
		reps++;
		dt = now_s() - t0;
	} while (dt < 0.2);
	printf("{\"bytes\": %zu, \"seconds\": %.6f, \"mb_per_s\": %.3f}\n", len, dt / (double)reps,
	       (double)len * (double)reps / dt / 1e6);
	free(text);
	return 0;
}

static int bench(kvf_tokenizer *tok, const char *file, long repeat, unsigned flags)
{
	size_t len;
	char *text = slurp(file, &len);
	if (!text) {
		fprintf(stderr, "kvf-tokenize: %s: %s\n", file, strerror(errno));
		return 1;
	}
	/* one string per line, as a server sees requests */
	kvf_tok_ids ids = { 0 };
	size_t tokens = 0;
	int rc = 0;
	double t0 = now_s();
	for (long r = 0; r < repeat && !rc; r++) {
		size_t pos = 0;
		while (pos < len && !rc) {
			const char *nl = memchr(text + pos, '\n', len - pos);
			size_t e = nl ? (size_t)(nl - text) + 1 : len;
			ids.n = 0;
			rc = kvf_tokenizer_encode(tok, text + pos, e - pos, flags, &ids);
			tokens += ids.n;
			pos = e;
		}
	}
	double dt = now_s() - t0;
	if (rc) {
		fprintf(stderr, "kvf-tokenize: %s\n", kvf_errmsg());
		free(text);
		kvf_tok_ids_free(&ids);
		return 1;
	}
	double bytes = (double)len * (double)repeat;
	printf("{\"bytes\": %.0f, \"tokens\": %zu, \"seconds\": %.6f, \"mb_per_s\": %.3f, \"tokens_per_s\": %.0f}\n",
	       bytes, tokens, dt, bytes / dt / 1e6, (double)tokens / dt);
	free(text);
	kvf_tok_ids_free(&ids);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tokenizer", required_argument, NULL, 't' }, { "special", no_argument, NULL, 's' },
		{ "decode", no_argument, NULL, 'd' },          { "chat", no_argument, NULL, 'c' },
		{ "split-special", no_argument, NULL, 'S' },   { "skip-special", no_argument, NULL, 'K' },
		{ "stream", no_argument, NULL, 'x' },          { "template", required_argument, NULL, 'T' },
		{ "bench", required_argument, NULL, 'b' },     { "repeat", required_argument, NULL, 'r' },
		{ "bench-scan", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },            { NULL, 0, NULL, 0 }
	};
	const char *path = NULL, *template = NULL, *bench_file = NULL;
	enum mode mode = M_ENCODE;
	unsigned enc_flags = 0, dec_flags = 0;
	bool stream = false;
	long repeat = 1;
	int c;
	while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
		switch (c) {
		case 't': path = optarg; break;
		case 's': enc_flags |= KVF_TOK_ADD_SPECIAL; break;
		case 'S': enc_flags |= KVF_TOK_SPLIT_SPECIAL; break;
		case 'd': mode = M_DECODE; break;
		case 'c': mode = M_CHAT; break;
		case 'K': dec_flags |= KVF_DETOK_SKIP_SPECIAL; break;
		case 'x': stream = true; break;
		case 'T': template = optarg; break;
		case 'b': mode = M_BENCH; bench_file = optarg; break;
		case 'r': repeat = strtol(optarg, NULL, 10); break;
		case 'B': return bench_scan(optarg);
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (!path || optind != argc || repeat < 1) {
		usage();
		return 2;
	}
	kvf_tokenizer *tok;
	if (kvf_tokenizer_load(path, &tok) != 0) {
		fprintf(stderr, "kvf-tokenize: %s\n", kvf_errmsg());
		return 1;
	}
	int status = 0;
	if (template) {
		size_t tl;
		char *src = slurp(template, &tl);
		if (!src || kvf_tokenizer_set_chat_template(tok, src, tl) != 0) {
			fprintf(stderr, "kvf-tokenize: %s: %s\n", template, src ? kvf_errmsg() : strerror(errno));
			free(src);
			kvf_tokenizer_destroy(tok);
			return 1;
		}
		free(src);
	}
	if (mode == M_BENCH) {
		status = bench(tok, bench_file, repeat, enc_flags);
		kvf_tokenizer_destroy(tok);
		return status;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long lineno = 0;
	kvf_tok_ids ids = { 0 };
	while ((n = getline(&line, &cap, stdin)) >= 0) {
		lineno++;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			n--;
		const char *err = NULL;
		int rc = do_line(tok, mode, mode == M_DECODE ? dec_flags : enc_flags, stream, line, (size_t)n, &ids,
				 &err);
		if (rc) {
			fprintf(stderr, "kvf-tokenize: line %ld: %s\n", lineno, err ? err : kvf_errmsg());
			status = 1;
			break;
		}
	}
	fflush(stdout);
	free(line);
	kvf_tok_ids_free(&ids);
	kvf_tokenizer_destroy(tok);
	return status;
}
