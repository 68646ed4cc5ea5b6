/*
 * internal.h (private to worker/): the worker object and one served request.
 */
#ifndef KVF_WORKER_INTERNAL_H
#define KVF_WORKER_INTERNAL_H

#include "common/kvf_blockkey.h"
#include "common/kvf_buf.h"
#include "common/kvf_http.h"
#include "common/kvf_http_client.h"
#include "common/kvf_metrics.h"
#include "common/kvf_openai.h"
#include "engine/tokenizer/kvf_tokenizer.h"
#include "fabric/kvf_fabric.h"
#include "cachedir/kvf_cachedir.h"
#include "worker/engine_thread.h"
#include "worker/kvf_worker.h"

/* Metric handles: the order of worker_metrics[] in worker.c. */
enum {
	WM_REQUESTS,     /* {outcome} */
	WM_PROMPT_TOKENS,
	WM_GEN_TOKENS,
	WM_CACHED_TOKENS,
	WM_FETCHED_TOKENS,
	WM_COMPUTED_TOKENS,
	WM_TTFT,
	WM_ITL,
	WM_E2E,
	WM_WAITING,
	WM_RUNNING,
	WM_KV_USAGE,
	WM_KV_BLOCKS,    /* {state} */
	WM_PREFIX_HIT,
	WM_PREEMPTIONS,
	WM_VLLM_WAITING,
	WM_VLLM_RUNNING,
	WM_VLLM_KV,
	WM_N
};

enum { OUTCOME_OK, OUTCOME_ERROR, OUTCOME_CANCELLED, OUTCOME_REJECTED, OUTCOME_N };

struct wreq;

/* A set of block keys (dir.c): the loop thread's mirror of the prefix cache. */
typedef struct keyset {
	kvf_blockkey *keys;
	uint8_t *used;
	size_t cap, n;
} keyset;

int keyset_add(keyset *s, kvf_blockkey k);
int keyset_has(const keyset *s, kvf_blockkey k);
void keyset_del(keyset *s, kvf_blockkey k);
void keyset_free(keyset *s);

struct kvf_worker {
	kvf_daemon *d;
	kvf_worker_role role;
	const kvf_engine_cfg *ecfg;
	const kvf_worker_cfg *wcfg;
	const kvf_cluster_cfg *cluster;
	kvf_loop *loop;
	kvf_tokenizer *tok;
	ew *engine;
	kvf_blockkey_ctx *keys;
	char model_name[256];
	uint32_t eos_ids[8];
	size_t n_eos;
	kvf_metric *m[WM_N];
	kvf_series *outcome[OUTCOME_N];
	kvf_series *kv_state[3];
	uint64_t preempt_seen;
	/* prefill/decode disaggregation (pd.c) */
	kvf_fabric_opts *fopts;
	kvf_fabric *fabric;
	kvf_fabric_mr *mr;    /* the engine's KV pool, registered once */
	kvf_fabric_cq *cq;    /* pulls posted from the loop thread */
	char *pool;
	size_t pool_len, block_bytes;
	int block_size;
	kvf_http_client *hc;  /* calls to other workers */
	struct pd_lease *leases;
	size_t n_leases;
	kvf_metric *pm[8];
	int pull_threshold;   /* tokens: pull a cached prefix from a holder when it saves this many */
	kvf_series *pull_outcome[2];
	/* the cluster directory (dir.c) */
	kvf_cachedir *dir;
	keyset cached;        /* keys in the prefix cache, as published */
	int tier;             /* enum kvf_cachedir_tier of this worker's KV */
	char worker_id[160], http_ep[140], fabric_ep[140];
	struct wreq *reqs;    /* every request in flight (list) */
	size_t n_reqs;
	uint64_t next_id;
	int draining;
	int stopping;         /* kvf_worker_destroy has begun */
};

/* One API request, from parse to the last byte sent. */
typedef struct wreq {
	ew_req er;                 /* handed to the engine thread */
	struct wreq *next, *prev;  /* kvf_worker.reqs */
	kvf_worker *w;
	uint64_t id;               /* for show requests */
	kvf_http_req *http;        /* NULL once the HTTP side finished */
	kvf_oai_request oai;
	kvf_oai_resp resp;
	char resp_id[40];
	char tenant[129];          /* x-kvf-tenant: the salt of the block keys */
	kvf_tok_ids prompt;        /* prompt token ids */
	kvf_blockkey *keys;        /* keys of the prompt's full blocks */
	int n_keys;
	const char *stops[KVF_OAI_MAX_STOP];
	kvf_detok *detok;
	kvf_buf text;              /* generated text */
	size_t sent;               /* bytes of text already streamed */
	size_t hold;               /* bytes held back from streaming (stop strings) */
	size_t lp_sent;            /* generated tokens whose logprobs/ids were streamed */
	uint32_t *out_ids;         /* generated ids */
	size_t n_out, cap_out;
	kvf_oai_logprob *lps;      /* per generated token when logprobs */
	char **lp_strings;         /* strings the logprobs point at */
	size_t n_lp_strings, cap_lp_strings, cap_lps;
	kvf_request_info info;
	uint64_t t_arrive_ns, t_first_ns, t_last_ns;
	int began;                 /* streaming response started */
	int engine_done;           /* terminal event received */
	int cancel_sent, cancel_acked;
	const char *finish;        /* "stop" | "length" once finished */
	int stop_matched;          /* a stop string ended the text (loop side) */
	/* When set, the engine's final event goes here instead of an OpenAI
	 * response (the P/D protocol's prefill requests). */
	void (*on_finish)(struct wreq *r, const kvf_event *ev);
	void *on_finish_ud;
	void (*free_ud)(void *ud); /* frees on_finish_ud if the request ends without it */
	struct pd_pull *pull;      /* decode: KV being pulled before submission */
	int32_t *kv_blocks;        /* imported blocks handed to the engine (params.kv_blocks) */
	char prefill_ep[128];      /* the prefill worker the KV came from */
} wreq;

/* serve.c */
void worker_serve_http(kvf_http_req *req, void *ud);
void worker_respond_error(kvf_http_req *req, int status, const char *message, const char *param,
			  const char *code);
wreq *wreq_new(kvf_worker *w);
int wreq_build_params(kvf_worker *w, wreq *r);
void wreq_submit(wreq *r);
void wreq_free(wreq *r);
void wreq_maybe_free(wreq *r);
void worker_on_batch(void *ud, const ew_batch *b);
void worker_cancel_all(kvf_worker *w);
/* At shutdown, after the engine thread stopped: frees every request. */
void worker_free_all(kvf_worker *w);

/* dir.c: the cluster directory */
int dir_init(kvf_worker *w);
void dir_fini(kvf_worker *w);
void dir_on_blocks(kvf_worker *w, const ew_block_event *ev, int n);
void dir_drain(kvf_worker *w);

/* pd.c: prefill/decode disaggregation */
int pd_init(kvf_worker *w);
void pd_fini(kvf_worker *w);
/* Serves /kvf/v1/...: returns 1 when it handled the request. */
int pd_serve(kvf_worker *w, kvf_http_req *req);
/* Decode: pulls the prompt's KV from the prefill worker at ep, then submits
 * r. Returns 0 when the pull started (r is then the pull's until it
 * submits), or an error (the caller submits r itself). */
int pd_pull_start(wreq *r, const char *ep, size_t ep_len);
/* The client left during r's pull: abandons what can be abandoned; r is
 * freed when the pull's last step finishes. */
void pd_pull_abort(wreq *r);
/* Decode, without a prefill worker: when the cachedir names another holder
 * of a longer cached prefix than this worker has, by at least
 * pull_threshold tokens, pulls those blocks first. Returns 0 when r is now
 * the lookup's (it submits r in every case), or an error (submit r now). */
int pd_holder_start(wreq *r);

#endif
