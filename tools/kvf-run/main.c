/*
 * kvf-run: offline engine runs.
 *
 *   kvf-run -m DIR -p "text" [--chat] [-n N] [sampling]   generate text
 *   kvf-run -m DIR --ids 1,2,3 --dump-logits FILE.json      float32 logits of
 *                                                           every position
 *   kvf-run -m DIR --ids 1,2,3 --greedy N                   N greedy ids (JSON)
 *   kvf-run -m DIR --bench [--batch B] [--prompt-len P] [--gen G] [--json]
 *   kvf-run -m DIR --info
 *
 * --ids, --dump-logits, --greedy and --bench need no tokenizer files; -p
 * needs tokenizer.json (and the tokenizer library at build time). Text
 * generation goes through the scheduler (submit/step) like the workers;
 * logits and greedy runs use the sequence API directly.
 *
 * The bench measures, in the same run: memcpy bandwidth with the engine's
 * thread count, prefill tokens/s for B sequences of P tokens, decode tokens/s
 * for B sequences stepping together, and for batch 1 the weight bytes read
 * per decode step / step time as a fraction of the memcpy bandwidth.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/kvf_engine.h"

#ifndef KVF_RUN_TOKENIZER
#define KVF_RUN_TOKENIZER 0
#endif
#if KVF_RUN_TOKENIZER
#include "engine/tokenizer/kvf_tokenizer.h"
#endif

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "kvf-run: %s: %s\n", what, rc ? kvf_errmsg() : "failed");
	exit(1);
}

static int parse_ids(const char *s, uint32_t **out)
{
	int n = 0, cap = 16;
	uint32_t *ids = malloc((size_t)cap * sizeof *ids);
	while (ids && *s) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(s, &end, 10);
		if (end == s || errno || v > UINT32_MAX) {
			fprintf(stderr, "kvf-run: --ids: bad number at '%s'\n", s);
			exit(2);
		}
		if (n == cap) {
			cap *= 2;
			ids = realloc(ids, (size_t)cap * sizeof *ids);
			if (!ids)
				break;
		}
		ids[n++] = (uint32_t)v;
		s = end;
		while (*s == ',' || *s == ' ' || *s == '[' || *s == ']')
			s++;
	}
	if (!ids) {
		perror("kvf-run");
		exit(1);
	}
	*out = ids;
	return n;
}

static int argmax(const float *v, int n)
{
	int b = 0;
	for (int i = 1; i < n; i++)
		if (v[i] > v[b])
			b = i;
	return b;
}

/* ------------------------------------------------------------------------ */

static int dump_logits(kvf_engine *e, const uint32_t *ids, int n, const char *path)
{
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	size_t V = (size_t)info.vocab_size;
	float *lg = malloc((size_t)n * V * sizeof *lg);
	if (!lg)
		die("logits", KVF_E_NOMEM);
	kvf_seq *s;
	int rc = kvf_seq_create(e, &s);
	if (rc || (rc = kvf_engine_eval(e, &s, &ids, &n, 1, KVF_LOGITS_ALL, lg)))
		die("eval", rc);
	kvf_seq_destroy(s);
	FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;
	if (!f) {
		fprintf(stderr, "kvf-run: %s: %s\n", path, strerror(errno));
		return 1;
	}
	fputs("{\"logits\": [", f);
	for (int t = 0; t < n; t++) {
		fputs(t ? ",\n[" : "\n[", f);
		for (size_t v = 0; v < V; v++)
			fprintf(f, v ? ", %.9g" : "%.9g", (double)lg[(size_t)t * V + v]);
		fputc(']', f);
	}
	fputs("]}\n", f);
	if (f != stdout && fclose(f)) {
		fprintf(stderr, "kvf-run: %s: %s\n", path, strerror(errno));
		return 1;
	}
	free(lg);
	return 0;
}

static int greedy(kvf_engine *e, const uint32_t *ids, int n, int count)
{
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	float *lg = malloc((size_t)info.vocab_size * sizeof *lg);
	kvf_seq *s;
	int rc = kvf_seq_create(e, &s);
	if (rc || (rc = kvf_engine_eval(e, &s, &ids, &n, 1, KVF_LOGITS_LAST, lg)))
		die("eval", rc);
	fputc('[', stdout);
	for (int i = 0; i < count; i++) {
		uint32_t t = (uint32_t)argmax(lg, info.vocab_size);
		printf(i ? ", %u" : "%u", t);
		const uint32_t *tp = &t;
		int one = 1;
		if (i + 1 < count && (rc = kvf_engine_eval(e, &s, &tp, &one, 1, KVF_LOGITS_LAST, lg)))
			die("eval", rc);
	}
	fputs("]\n", stdout);
	kvf_seq_destroy(s);
	free(lg);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* bench                                                                    */

struct copy_arg {
	char *dst;
	const char *src;
	size_t len;
};

static void *copy_thread(void *p)
{
	struct copy_arg *a = p;
	memcpy(a->dst, a->src, a->len);
	return NULL;
}

/* Best of 5 copies of `bytes` split over n threads; GB/s of bytes copied. */
static double memcpy_gbps(size_t bytes, int n)
{
	char *src = malloc(bytes), *dst = malloc(bytes);
	if (!src || !dst)
		die("bench buffers", KVF_E_NOMEM);
	memset(src, 1, bytes);
	memset(dst, 2, bytes);
	double best = 1e30;
	pthread_t th[64];
	struct copy_arg args[64];
	if (n > 64)
		n = 64;
	for (int rep = 0; rep < 5; rep++) {
		double t0 = now_s();
		for (int i = 0; i < n; i++) {
			size_t a = bytes * (size_t)i / (size_t)n, b = bytes * (size_t)(i + 1) / (size_t)n;
			args[i] = (struct copy_arg){dst + a, src + a, b - a};
			if (i)
				pthread_create(&th[i], NULL, copy_thread, &args[i]);
		}
		copy_thread(&args[0]);
		for (int i = 1; i < n; i++)
			pthread_join(th[i], NULL);
		double dt = now_s() - t0;
		if (dt < best)
			best = dt;
	}
	free(src);
	free(dst);
	return (double)bytes / best / 1e9;
}

static int bench(kvf_engine *e, int batch, int plen, int gen, int json)
{
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	/* well beyond the caches, like the weights: 4x their size, 64..256 MiB */
	size_t mb = 4 * info.weight_bytes;
	if (mb < ((size_t)64 << 20))
		mb = (size_t)64 << 20;
	if (mb > ((size_t)256 << 20))
		mb = (size_t)256 << 20;
	double bw = memcpy_gbps(mb, info.n_threads);
	kvf_seq **s = calloc((size_t)batch, sizeof *s);
	uint32_t *toks = malloc((size_t)plen * sizeof *toks);
	const uint32_t **tp = calloc((size_t)batch, sizeof *tp);
	int *n = calloc((size_t)batch, sizeof *n);
	float *lg = malloc((size_t)batch * info.vocab_size * sizeof *lg);
	if (!s || !toks || !tp || !n || !lg)
		die("bench", KVF_E_NOMEM);
	uint64_t x = 7;
	for (int i = 0; i < plen; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		toks[i] = (uint32_t)((x >> 33) % (uint64_t)info.vocab_size);
	}
	int rc;
	for (int b = 0; b < batch; b++) {
		if ((rc = kvf_seq_create(e, &s[b])))
			die("seq", rc);
		tp[b] = toks;
		n[b] = plen;
	}
	/* warm-up: touch the weights once */
	{
		kvf_seq *w;
		int one = 1;
		const uint32_t *t0 = toks;
		kvf_seq_create(e, &w);
		kvf_engine_eval(e, &w, &t0, &one, 1, KVF_LOGITS_LAST, lg);
		kvf_seq_destroy(w);
	}
	double t0 = now_s();
	if ((rc = kvf_engine_eval(e, s, tp, n, batch, KVF_LOGITS_LAST, lg)))
		die("prefill", rc);
	double t_pre = now_s() - t0;
	uint32_t *next = malloc((size_t)batch * sizeof *next);
	const uint32_t **np = calloc((size_t)batch, sizeof *np);
	int *ones = calloc((size_t)batch, sizeof *ones);
	for (int b = 0; b < batch; b++) {
		next[b] = (uint32_t)argmax(lg + (size_t)b * info.vocab_size, info.vocab_size);
		np[b] = &next[b];
		ones[b] = 1;
	}
	double *steps = malloc((size_t)gen * sizeof *steps);
	if (!steps)
		die("bench", KVF_E_NOMEM);
	t0 = now_s();
	for (int g = 0; g < gen; g++) {
		double ts = now_s();
		if ((rc = kvf_engine_eval(e, s, np, ones, batch, KVF_LOGITS_LAST, lg)))
			die("decode", rc);
		for (int b = 0; b < batch; b++)
			next[b] = (uint32_t)argmax(lg + (size_t)b * info.vocab_size, info.vocab_size);
		steps[g] = now_s() - ts;
	}
	double t_dec = now_s() - t0;
	/* the median step: robust to the scheduler lending our cores away */
	for (int i = 1; i < gen; i++)
		for (int j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
			double tmp = steps[j];
			steps[j] = steps[j - 1];
			steps[j - 1] = tmp;
		}
	double step_s = steps[gen / 2], best_s = steps[0];
	free(steps);
	double pre_tps = (double)batch * plen / t_pre, dec_tps = (double)batch / step_s;
	/* bandwidth again after the run: the best of both, as for the steps */
	double bw2 = memcpy_gbps(mb, info.n_threads);
	if (bw2 > bw)
		bw = bw2;
	double wgbps = (double)info.weight_bytes / step_s / 1e9;
	double ratio = wgbps / bw;
	double wgbps_best = (double)info.weight_bytes / best_s / 1e9;
	(void)t_dec;
	if (json) {
		printf("{\"isa\": \"%s\", \"threads\": %d, \"params\": %zu, \"weight_bytes\": %zu, "
		       "\"weight_dtype\": \"%s\", \"batch\": %d, \"prompt_len\": %d, \"gen\": %d, "
		       "\"memcpy_gbps\": %.3f, \"prefill_tok_s\": %.1f, \"decode_tok_s\": %.1f, "
		       "\"decode_step_ms\": %.3f, \"decode_best_step_ms\": %.3f, \"weights_gbps\": %.3f, "
		       "\"weights_over_memcpy\": %.3f, \"weights_gbps_best\": %.3f, "
		       "\"weights_best_over_memcpy\": %.3f}\n",
		       info.isa, info.n_threads, info.n_params, info.weight_bytes,
		       kvf_dtype_name(info.weight_dtype), batch, plen, gen, bw, pre_tps, dec_tps,
		       step_s * 1e3, best_s * 1e3, wgbps, ratio, wgbps_best, wgbps_best / bw);
	} else {
		printf("model: %s, %zu params, %.1f MB of weights per step (%s), %d threads, %s kernels\n",
		       info.arch, info.n_params, info.weight_bytes / 1e6,
		       kvf_dtype_name(info.weight_dtype), info.n_threads, info.isa);
		printf("memcpy: %.2f GB/s\n", bw);
		printf("prefill: batch %d x %d tokens: %.1f tokens/s\n", batch, plen, pre_tps);
		printf("decode:  batch %d, %d steps: %.1f tokens/s (median %.2f ms/step, best %.2f), "
		       "weights read %.2f GB/s = %.0f%% of memcpy (best step: %.0f%%)\n",
		       batch, gen, dec_tps, step_s * 1e3, best_s * 1e3, wgbps, 100 * ratio,
		       100 * wgbps_best / bw);
	}
	for (int b = 0; b < batch; b++)
		kvf_seq_destroy(s[b]);
	free(s);
	free(toks);
	free(tp);
	free(n);
	free(lg);
	free(next);
	free(np);
	free(ones);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* text generation                                                          */

#if KVF_RUN_TOKENIZER
static int piece_fn(void *user, uint32_t id, char *buf, size_t cap)
{
	char *text = NULL;
	size_t len = 0;
	if (kvf_tokenizer_decode(user, &id, 1, 0, &text, &len))
		return -1;
	if (len > cap)
		len = cap;
	memcpy(buf, text, len);
	kvf_free(text);
	return (int)len;
}
#endif

static int generate(const kvf_engine_options *eo, const char *model, const char *prompt, int chat,
		    int max_tokens, const kvf_sampling *sp, const char *stop)
{
#if KVF_RUN_TOKENIZER
	kvf_tokenizer *tok;
	int rc = kvf_tokenizer_load(model, &tok);
	if (rc)
		die("tokenizer", rc);
	kvf_engine_options o = *eo;
	o.token_piece = piece_fn;
	o.token_piece_user = tok;
	kvf_engine *e;
	if ((rc = kvf_engine_create(&o, &e)))
		die(model, rc);
	char *text = NULL;
	size_t tlen = 0;
	const char *in = prompt;
	size_t inlen = strlen(prompt);
	if (chat) {
		char req[65536];
		char *esc = malloc(2 * strlen(prompt) + 1), *d = esc;
		for (const char *p = prompt; *p; p++) {
			if (*p == '"' || *p == '\\')
				*d++ = '\\';
			if (*p == '\n') {
				*d++ = '\\';
				*d++ = 'n';
				continue;
			}
			*d++ = *p;
		}
		*d = 0;
		snprintf(req, sizeof req,
			 "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
			 "\"add_generation_prompt\":true}",
			 esc);
		free(esc);
		if ((rc = kvf_tokenizer_chat_render(tok, req, strlen(req), &text, &tlen)))
			die("chat template", rc);
		in = text;
		inlen = tlen;
	}
	kvf_tok_ids ids = {0};
	if ((rc = kvf_tokenizer_encode(tok, in, inlen, chat ? 0 : KVF_TOK_ADD_SPECIAL, &ids)))
		die("encode", rc);
	kvf_free(text);
	kvf_request_params p;
	kvf_request_params_init(&p);
	p.prompt = ids.ids;
	p.n_prompt = (int)ids.n;
	p.max_tokens = max_tokens;
	p.sampling = *sp;
	if (stop) {
		p.stop[0] = stop;
		p.n_stop = 1;
	}
	uint32_t eos[8];
	size_t ne = kvf_tokenizer_eos_ids(tok, eos, 8);
	for (size_t i = 0; i < ne && i < KVF_MAX_STOP_IDS; i++)
		p.stop_ids[p.n_stop_ids++] = eos[i];
	uint64_t id;
	if ((rc = kvf_engine_submit(e, &p, &id)))
		die("submit", rc);
	kvf_detok *dt;
	if ((rc = kvf_detok_create(tok, KVF_DETOK_SKIP_SPECIAL, &dt)))
		die("detok", rc);
	double t0 = now_s(), t_first = 0;
	int n_gen = 0, done = 0;
	while (!done) {
		const kvf_event *ev;
		int n;
		if ((rc = kvf_engine_step(e, &ev, &n)))
			die("step", rc);
		for (int i = 0; i < n; i++) {
			if (ev[i].token != KVF_TOKEN_NONE) {
				const char *s;
				size_t l;
				if (!n_gen++)
					t_first = now_s() - t0;
				if (!kvf_detok_step(dt, ev[i].token, &s, &l))
					fwrite(s, 1, l, stdout);
				fflush(stdout);
			}
			if (ev[i].finish) {
				const char *s;
				size_t l;
				if (!kvf_detok_flush(dt, &s, &l))
					fwrite(s, 1, l, stdout);
				fprintf(stderr, "\n[%d prompt tokens, %d generated, finish %s, first token "
						"%.1f ms, %.1f tokens/s]\n",
					(int)ids.n, n_gen, kvf_finish_name(ev[i].finish), t_first * 1e3,
					n_gen > 1 ? (n_gen - 1) / (now_s() - t0 - t_first) : 0.0);
				done = 1;
			}
		}
	}
	putchar('\n');
	kvf_detok_destroy(dt);
	kvf_tok_ids_free(&ids);
	kvf_engine_destroy(e);
	kvf_tokenizer_destroy(tok);
	return 0;
#else
	(void)eo;
	(void)model;
	(void)prompt;
	(void)chat;
	(void)max_tokens;
	(void)sp;
	(void)stop;
	fprintf(stderr, "kvf-run: -p needs the tokenizer library, which this build lacks; use "
			"--ids\n");
	return 2;
#endif
}

/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvf-run -m DIR (-p TEXT [--chat] | --ids I,J,.. [--dump-logits FILE | "
		"--greedy N] | --bench | --info) [options]\n"
		"  -n, --max-tokens N     tokens to generate with -p (default 64)\n"
		"  --temperature T --top-k K --top-p P --min-p P --seed S --stop STR\n"
		"  --repetition-penalty R --presence-penalty P --frequency-penalty F\n"
		"  --threads N            compute threads (default: online CPUs)\n"
		"  --kv-dtype f32|bf16|f16  (default f32)\n"
		"  --block-size N --max-batch-tokens N --kv-blocks N --max-model-len N\n"
		"  --batch B --prompt-len P --gen G --json   bench shape (1, 128, 32)\n");
}

int main(int argc, char **argv)
{
	const char *model = NULL, *prompt = NULL, *ids_s = NULL, *dump = NULL, *stop = NULL;
	int greedy_n = -1, do_bench = 0, do_info = 0, chat = 0, json = 0;
	int max_tokens = 64, batch = 1, plen = 128, gen = 32;
	kvf_engine_options eo;
	kvf_engine_options_init(&eo);
	kvf_sampling sp;
	kvf_sampling_init(&sp);
	enum {
		O_IDS = 256, O_DUMP, O_GREEDY, O_BENCH, O_INFO, O_CHAT, O_TEMP, O_TOPK, O_TOPP,
		O_MINP, O_SEED, O_STOP, O_REP, O_PRES, O_FREQ, O_THREADS, O_KVDT, O_BS, O_MBT,
		O_KVB, O_MML, O_BATCH, O_PLEN, O_GEN, O_JSON,
	};
	static struct option lo[] = {
		{"model", 1, 0, 'm'}, {"prompt", 1, 0, 'p'}, {"max-tokens", 1, 0, 'n'},
		{"ids", 1, 0, O_IDS}, {"dump-logits", 1, 0, O_DUMP}, {"greedy", 1, 0, O_GREEDY},
		{"bench", 0, 0, O_BENCH}, {"info", 0, 0, O_INFO}, {"chat", 0, 0, O_CHAT},
		{"temperature", 1, 0, O_TEMP}, {"top-k", 1, 0, O_TOPK}, {"top-p", 1, 0, O_TOPP},
		{"min-p", 1, 0, O_MINP}, {"seed", 1, 0, O_SEED}, {"stop", 1, 0, O_STOP},
		{"repetition-penalty", 1, 0, O_REP}, {"presence-penalty", 1, 0, O_PRES},
		{"frequency-penalty", 1, 0, O_FREQ}, {"threads", 1, 0, O_THREADS},
		{"kv-dtype", 1, 0, O_KVDT}, {"block-size", 1, 0, O_BS},
		{"max-batch-tokens", 1, 0, O_MBT}, {"kv-blocks", 1, 0, O_KVB},
		{"max-model-len", 1, 0, O_MML}, {"batch", 1, 0, O_BATCH},
		{"prompt-len", 1, 0, O_PLEN}, {"gen", 1, 0, O_GEN}, {"json", 0, 0, O_JSON},
		{"help", 0, 0, 'h'}, {0, 0, 0, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "m:p:n:h", lo, NULL)) != -1) {
		switch (c) {
		case 'm': model = optarg; break;
		case 'p': prompt = optarg; break;
		case 'n': max_tokens = atoi(optarg); break;
		case O_IDS: ids_s = optarg; break;
		case O_DUMP: dump = optarg; break;
		case O_GREEDY: greedy_n = atoi(optarg); break;
		case O_BENCH: do_bench = 1; break;
		case O_INFO: do_info = 1; break;
		case O_CHAT: chat = 1; break;
		case O_TEMP: sp.temperature = strtof(optarg, NULL); break;
		case O_TOPK: sp.top_k = atoi(optarg); break;
		case O_TOPP: sp.top_p = strtof(optarg, NULL); break;
		case O_MINP: sp.min_p = strtof(optarg, NULL); break;
		case O_SEED: sp.seed = strtoull(optarg, NULL, 0); sp.has_seed = 1; break;
		case O_STOP: stop = optarg; break;
		case O_REP: sp.repetition_penalty = strtof(optarg, NULL); break;
		case O_PRES: sp.presence_penalty = strtof(optarg, NULL); break;
		case O_FREQ: sp.frequency_penalty = strtof(optarg, NULL); break;
		case O_THREADS: eo.n_threads = atoi(optarg); break;
		case O_KVDT:
			if (kvf_dtype_parse(optarg, &eo.kv_dtype)) {
				fprintf(stderr, "kvf-run: %s\n", kvf_errmsg());
				return 2;
			}
			break;
		case O_BS: eo.block_size = atoi(optarg); break;
		case O_MBT: eo.max_batch_tokens = atoi(optarg); break;
		case O_KVB: eo.kv_blocks = atoi(optarg); break;
		case O_MML: eo.max_model_len = atoi(optarg); break;
		case O_BATCH: batch = atoi(optarg); break;
		case O_PLEN: plen = atoi(optarg); break;
		case O_GEN: gen = atoi(optarg); break;
		case O_JSON: json = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!model || (!prompt && !ids_s && !do_bench && !do_info) ||
	    (ids_s && !dump && greedy_n < 0) || batch < 1 || plen < 1 || gen < 1) {
		usage(stderr);
		return 2;
	}
	eo.model_dir = model;
	if (prompt)
		return generate(&eo, model, prompt, chat, max_tokens, &sp, stop);

	if (do_bench && !eo.max_batch_tokens)
		eo.max_batch_tokens = batch * plen > 512 ? batch * plen : 512;
	if (do_bench && !eo.kv_blocks) {
		int bs = eo.block_size > 0 ? eo.block_size : 16;
		eo.kv_blocks = batch * ((plen + gen + 2 + bs - 1) / bs) + 4;
	}
	if (do_bench && !eo.max_seqs)
		eo.max_seqs = batch;
	kvf_engine *e;
	int rc = kvf_engine_create(&eo, &e);
	if (rc)
		die(model, rc);
	if (do_info) {
		kvf_engine_info i;
		kvf_engine_info_get(e, &i);
		printf("{\"arch\": \"%s\", \"layers\": %d, \"hidden\": %d, \"heads\": %d, "
		       "\"kv_heads\": %d, \"head_dim\": %d, \"ffn\": %d, \"vocab\": %d, "
		       "\"max_model_len\": %d, \"params\": %zu, \"weight_dtype\": \"%s\", "
		       "\"kv_dtype\": \"%s\", \"block_size\": %d, \"block_bytes\": %zu, "
		       "\"kv_blocks\": %d, \"threads\": %d, \"isa\": \"%s\"}\n",
		       i.arch, i.n_layers, i.hidden, i.n_heads, i.n_kv_heads, i.head_dim, i.ffn,
		       i.vocab_size, i.max_model_len, i.n_params, kvf_dtype_name(i.weight_dtype),
		       kvf_dtype_name(i.kv_dtype), i.block_size, i.block_bytes, i.kv_blocks,
		       i.n_threads, i.isa);
	} else if (do_bench) {
		rc = bench(e, batch, plen, gen, json);
	} else {
		uint32_t *ids;
		int n = parse_ids(ids_s, &ids);
		if (n < 1) {
			fprintf(stderr, "kvf-run: --ids: no ids\n");
			return 2;
		}
		rc = dump ? dump_logits(e, ids, n, dump) : greedy(e, ids, n, greedy_n);
		free(ids);
	}
	kvf_engine_destroy(e);
	return rc;
}
