/*
 * gw_core.h: the gateway object and its per-request state, shared by
 * gateway.c (set-up, admin, metrics, models) and proxy.c (the request path).
 * Private to gateway/.
 */
#ifndef KVF_GW_CORE_H
#define KVF_GW_CORE_H

#include "common/kvf_http_client.h"
#include "gateway/gw.h"

enum {
	GM_REQUESTS, GM_ROUTED, GM_PD, GM_RETRIES, GM_UPSTREAM_ERR, GM_BREAKER, GM_REJECTED, GM_INFLIGHT,
	GM_ROUTING_S, GM_TOKENIZE_S, GM_LOOKUP_S, GM_TTFB_S, GM_E2E_S, GM_PROMPT_TOK, GM_CACHED_TOK,
	GM_COMPLETION_TOK, GM_WORKERS, GM_TENANT_REQ, GM_TOKSEG, GM_N
};

#define GW_MAX_TRIES 17
#define GW_REC_CANDS 16

struct gw_route_rec {
	uint64_t id;
	uint64_t wall_ms;
	char tenant[65];
	char model[GW_ID_MAX];
	uint32_t n_tokens, n_blocks, cached_tokens;
	int attempt;
	char decode[GW_ID_MAX], prefill[GW_ID_MAX];
	char reason[80];
	uint32_t tokenize_us, lookup_us, score_us;
	size_t ncand;
	struct {
		char id[GW_ID_MAX];
		int filter;
		uint32_t hit;
		double s_prefix, s_queue, s_kv, s_session, total;
	} cand[GW_REC_CANDS];
};

typedef struct gw_req gw_req;

struct kvf_gateway {
	kvf_loop *loop;
	const kvf_gateway_cfg *cfg;
	const kvf_cluster_cfg *cluster;
	kvf_metrics *metrics;
	kvf_metric *m[GM_N];
	kvf_tokenizer *tok;
	uint64_t tokseg_seen[2]; /* segment cache hits, misses already counted */
	char model[GW_ID_MAX];
	kvf_blockkey_ctx *bk;
	uint32_t block_size;
	gw_tokpool *tokpool;
	kvf_http_client *up;
	gw_workers workers;
	gw_index index;
	gw_tenants *tenants;
	gw_sessions sessions;
	gw_route_cfg rcfg;
	uint64_t rng, rr;
	uint64_t next_id;
	gw_decision dec;              /* scratch for the decision being made */
	struct gw_route_rec *routes;  /* ring of routes_history */
	size_t routes_cap, routes_n, routes_next;
	gw_req *reqs;                 /* in flight */
	size_t inflight;
	size_t tok_pending;           /* jobs in the tokenizer threads */
	int draining, destroying;
	void *cachedir;               /* index_cachedir.c state, when used */
	uint64_t n_requests, n_routed, n_retries, n_pd;
};

struct gw_req {
	kvf_gateway *gw;
	gw_req *prev, *next;
	gw_io_req io;
	uint64_t id;
	int endpoint;
	gw_tenant *tenant;
	gw_prompt prompt;
	gw_tokjob job;
	kvf_blockkey *keys;
	size_t nkeys;
	gw_holder *holders;
	size_t nholders;
	uint64_t lookup_req;
	kvf_timer lookup_timer;
	char session[128];
	size_t session_len;
	int decode, prefill;
	uint32_t n_tokens, cached_tokens;
	char reason[80];
	int tried[GW_MAX_TRIES];
	int ntried;
	int attempt;
	kvf_http_creq *up;
	int up_status;
	int up_sse;
	gw_usage_scan usage;
	uint64_t t0_ns, t_tok_ns, t_lookup_ns, t_score_ns, t_lookup_start_ns;
	unsigned tokenizing : 1, looking_up : 1, began : 1, finished : 1, client_gone : 1, paused : 1;
	unsigned admitted : 1, first_byte : 1, counted_inflight : 1;
	char last_err[160];
	int last_err_code;
};

/* proxy.c */
void gw_proxy_api(kvf_gateway *gw, gw_io_req io, int endpoint);
void gw_proxy_abort_all(kvf_gateway *gw);

/* gateway.c */
void gw_reply_error(kvf_gateway *gw, gw_io_req io, int status, const char *message, const char *code,
		    const char *const *extra_headers);
void gw_reply_error_param(kvf_gateway *gw, gw_io_req io, int status, const char *message, const char *param,
			  const char *code, const char *const *extra_headers);
void gw_count_response(kvf_gateway *gw, int status);
void gw_count_rejected(kvf_gateway *gw, const char *reason);
void gw_record_route(kvf_gateway *gw, gw_req *r, const gw_decision *d);
int gw_model_known(kvf_gateway *gw, const char *model);

/* index_cachedir.c (or cachedir_absent.c in a build without the cachedir
 * client): the directory as index and worker source. */
int gw_cachedir_supported(void);
int gw_cachedir_start(kvf_gateway *gw);
void gw_cachedir_stop(kvf_gateway *gw);
void gw_cachedir_info(kvf_gateway *gw, kvf_buf *out);

#endif
