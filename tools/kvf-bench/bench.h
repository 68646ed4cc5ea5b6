/*
 * bench.h: the load generator behind kvf-bench: workloads (shared-prefix
 * groups, multi-turn sessions, random prompts), arrival processes (closed
 * loop with N clients, open loop with Poisson arrivals), and the per-request
 * measurements (TTFT, inter-token latency, end to end, tokens, the x-kvf-*
 * cache headers), all on one kvf_loop with the pooled HTTP client.
 */
#ifndef KVF_BENCH_H
#define KVF_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_buf.h"

enum { KB_WL_SHARED_PREFIX = 0, KB_WL_MULTI_TURN, KB_WL_RANDOM };
enum { KB_ARRIVAL_CLOSED = 0, KB_ARRIVAL_POISSON };
enum { KB_EP_COMPLETIONS = 0, KB_EP_CHAT };

typedef struct kb_opts {
	const char *target;        /* "host:port" */
	const char *model;
	const char *api_key;       /* NULL: none */
	int endpoint;
	int workload;
	int arrival;
	int concurrency;           /* closed loop: clients; multi-turn: sessions */
	double rate;               /* Poisson: requests/s */
	int max_inflight;          /* Poisson: cap on requests in flight */
	int requests;              /* measured requests (after warmup) */
	double duration_s;         /* or: stop issuing after this long (0: by count) */
	int warmup;                /* requests run first and not measured */
	int max_tokens;
	int stream;
	int ignore_eos;
	uint64_t seed;
	/* shared-prefix */
	int groups, users, prefix_words, question_words;
	/* multi-turn */
	int turns, turn_words;
	/* random */
	int prompt_words;
	uint32_t timeout_ms;       /* per request, first byte */
	int samples;               /* keep per-request records in the JSON */
} kb_opts;

void kb_opts_default(kb_opts *o);

typedef struct kb_sample {
	int status;
	int err;                   /* KVF_E_* of a transport failure, 0 otherwise */
	double t_start_s;          /* since the run started */
	double ttft_ms, e2e_ms;
	uint32_t out_tokens, prompt_tokens, cached_tokens, fetched_tokens, computed_tokens;
	int kvf_headers;           /* the x-kvf-*-tokens headers were present */
	int worker;                /* index into the worker names, -1 unknown */
	int group;                 /* shared-prefix group / session, -1 none */
} kb_sample;

typedef struct kb_result {
	kb_sample *s;
	size_t n;
	double *itl_ms;            /* every inter-token gap of every measured stream */
	size_t n_itl;
	double duration_s;         /* first measured start to last measured end */
	char **workers;            /* x-kvf-decode values seen */
	size_t n_workers;
} kb_result;

/* Runs the benchmark; 0 and *res (free with kb_result_free), or an error
 * with kvf_errmsg(). */
int kb_run(const kb_opts *o, kb_result *res);
void kb_result_free(kb_result *res);

/* Writes the summary (and samples when o->samples) as JSON, or as text. */
void kb_report_json(const kb_opts *o, const kb_result *r, kvf_buf *out);
void kb_report_text(const kb_opts *o, const kb_result *r, kvf_buf *out);

#endif
