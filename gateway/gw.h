/*
 * gw.h: internal interfaces of the gateway library, one section per file.
 * Every part that makes a decision (tenants and rate limits, the worker
 * table and circuit breakers, filters + scorers + picker, OpenAI body
 * parsing, the session table) is a plain data structure with functions that
 * take the time as an argument, so unit tests drive them with fixed inputs
 * and an injected clock; gateway.c and proxy.c hold the I/O around them.
 */
#ifndef KVF_GW_H
#define KVF_GW_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/kvf_blockkey.h"
#include "common/kvf_buf.h"
#include "common/kvf_http_parse.h"
#include "common/kvf_loop.h"
#include "common/kvf_openai.h"
#include "engine/tokenizer/kvf_tokenizer.h"
#include "gateway/kvf_gateway.h"

/* ================= I/O engine (gw_io.h in spirit) ================= */

/*
 * A client request as an I/O engine hands it over. The engine owns the
 * connection; the gateway answers through the ops. After respond() or end()
 * the request is finished and r is invalid. Engines call the gateway's
 * gw_on_client_close(ud) when the client goes away before the answer is
 * finished and gw_on_client_drain(ud) when buffered output was written,
 * for the ud given to watch().
 */
typedef struct gw_io_ops {
	const char *name;
	const kvf_http_msg *(*msg)(void *r);
	const char *(*body)(void *r, size_t *len);
	const char *(*peer)(void *r);
	int (*respond)(void *r, int status, const char *ctype, const char *const *hdrs, const void *body,
		       size_t len);
	int (*begin)(void *r, int status, const char *ctype, const char *const *hdrs, int64_t content_length);
	int (*send)(void *r, const void *data, size_t len);
	int (*end)(void *r);
	size_t (*pending)(void *r);
	void (*set_close)(void *r);
	void (*watch)(void *r, void *ud); /* NULL ud: stop watching */
} gw_io_ops;

typedef struct gw_io_req {
	const gw_io_ops *ops;
	void *r;
} gw_io_req;

extern const gw_io_ops gw_io_epoll_ops;

/* Engine -> gateway notifications (ud as given to watch()). */
void gw_on_client_close(void *ud);
void gw_on_client_drain(void *ud);

/* The engine-independent entry: one complete request. */
void gw_handle(kvf_gateway *gw, gw_io_req io);

/* ================= token buckets (tenant.c) ================= */

/* rate units per second, up to burst; level may go negative ("debt") for
 * costs known only after admission (tokens). rate 0 = unlimited. */
typedef struct gw_bucket {
	double rate, burst, level;
	uint64_t last_ms;
} gw_bucket;

void gw_bucket_init(gw_bucket *b, double rate, double burst, uint64_t now_ms);
/* Takes cost if level >= cost: 0; else KVF_E_OVERLOAD and *retry_ms until
 * it would succeed. */
int gw_bucket_take(gw_bucket *b, uint64_t now_ms, double cost, uint64_t *retry_ms);
/* Admits when the level is positive (not in debt): 0, or KVF_E_OVERLOAD and
 * *retry_ms until the debt is paid. Takes nothing. */
int gw_bucket_admit(gw_bucket *b, uint64_t now_ms, uint64_t *retry_ms);
/* Charges cost (may go into debt). */
void gw_bucket_charge(gw_bucket *b, uint64_t now_ms, double cost);

/* ================= tenants (tenant.c) ================= */

#define GW_SALT_MAX 64

typedef struct gw_tenant {
	char *name;
	uint8_t salt[GW_SALT_MAX];
	size_t salt_len;
	double rps, burst, tps;
	uint32_t max_concurrency;      /* 0: none */
	gw_bucket req_bucket, tok_bucket;
	uint32_t inflight;
	uint64_t requests, rejected_rate, rejected_tokens, rejected_concurrency;
	uint64_t prompt_tokens, completion_tokens;
	uint32_t nkeys;
} gw_tenant;

typedef struct gw_tenants gw_tenants;

typedef struct gw_tenant_defaults {
	double rps, burst, tps;
	uint32_t max_concurrency;
} gw_tenant_defaults;

int gw_tenants_new(const gw_tenant_defaults *def, uint64_t now_ms, gw_tenants **out);
void gw_tenants_destroy(gw_tenants *t);
/* "tenant:key" (config api_keys entries). */
int gw_tenants_add_key_spec(gw_tenants *t, const char *spec, uint64_t now_ms);
/* Adds a tenant (or returns the existing one of that name). */
int gw_tenants_add(gw_tenants *t, const char *name, uint64_t now_ms, gw_tenant **out);
int gw_tenants_add_key(gw_tenants *t, gw_tenant *tn, const char *key);
/* Loads {"tenants":[{"name","keys":[...],"rps","burst","tps",
 * "max_concurrency","salt"}]} (docs/gateway.md). */
int gw_tenants_load_file(gw_tenants *t, const char *path, uint64_t now_ms);
int gw_tenants_load_json(gw_tenants *t, const char *text, size_t len, const char *origin, uint64_t now_ms);
/* The tenant of an API key, or NULL. */
gw_tenant *gw_tenants_by_key(const gw_tenants *t, const char *key, size_t len);
/* The tenant used without a (valid) key when auth is off: "anonymous",
 * with an empty salt. */
gw_tenant *gw_tenants_anonymous(gw_tenants *t);
size_t gw_tenants_count(const gw_tenants *t);
gw_tenant *gw_tenants_at(gw_tenants *t, size_t i);

enum { GW_ADMIT_OK = 0, GW_ADMIT_RATE, GW_ADMIT_TOKENS, GW_ADMIT_CONCURRENCY };
/* Request admission: concurrency cap, requests/s, tokens/s debt. On
 * GW_ADMIT_OK the request counts as in flight (gw_tenant_release() later).
 * *retry_ms: when to come back otherwise. */
int gw_tenant_admit(gw_tenant *tn, uint64_t now_ms, uint64_t *retry_ms);
void gw_tenant_charge_tokens(gw_tenant *tn, uint64_t now_ms, uint64_t tokens, int completion);
void gw_tenant_release(gw_tenant *tn);

/* Block keys of ids[0..n) for model under the tenant's salt (the root is
 * hash(model, salt), so two tenants never share a key). Returns the count
 * written (full blocks, at most max). */
size_t gw_block_keys(const kvf_blockkey_ctx *bk, const char *model, const gw_tenant *tn, const uint32_t *ids,
		     size_t n, uint32_t block_size, kvf_blockkey *out, size_t max);

/* Extracts the key from "Authorization: Bearer <key>" (or "x-api-key").
 * 0 with *key and *len set, or KVF_E_NOTFOUND. */
int gw_auth_key(const kvf_http_msg *m, const char **key, size_t *len);

/* ================= workers and circuit breakers (workers.c) ================= */

enum { GW_ROLE_PREFILL = 1, GW_ROLE_DECODE = 2, GW_ROLE_BOTH = 3 };
enum { GW_W_ACTIVE = 1, GW_W_DRAINING = 2, GW_W_DISCONNECTED = 3 };
enum { GW_BRK_CLOSED = 0, GW_BRK_OPEN, GW_BRK_HALF_OPEN };
enum { GW_SRC_STATIC = 1, GW_SRC_DIRECTORY = 2 };

#define GW_ID_MAX 128

typedef struct gw_worker {
	int used;                     /* slot holds a worker */
	uint32_t gen;                 /* bumped when the slot is reused */
	char id[GW_ID_MAX];
	char http[GW_ID_MAX];         /* "host:port" */
	char model[GW_ID_MAX];
	int role, state, source;
	/* load from the directory's heartbeats */
	int has_load;
	uint32_t waiting, running;
	uint64_t kv_used, kv_total;
	/* gateway-local */
	uint32_t inflight;
	uint64_t sent, ok, failures;
	int breaker;
	uint32_t consec_failures, trips;
	uint64_t open_until_ms;
	uint32_t half_open_trials;    /* in flight while half-open */
	uint64_t last_change_ms;
} gw_worker;

typedef struct gw_workers {
	gw_worker *w;
	size_t n, cap;
	int *scratch;                 /* cap entries: per-slot scratch for routing */
	uint32_t breaker_failures;
	uint64_t breaker_open_ms;
} gw_workers;

void gw_workers_init(gw_workers *ws, uint32_t breaker_failures, uint64_t breaker_open_ms);
void gw_workers_free(gw_workers *ws);
/* Adds or updates the worker with this id; returns its index or < 0. */
int gw_workers_upsert(gw_workers *ws, const char *id, const char *http, const char *model, int role,
		      int state, int source, uint64_t now_ms);
int gw_workers_find(const gw_workers *ws, const char *id);
/* Removes a worker (its slot is reused once nothing is in flight there). */
void gw_workers_remove(gw_workers *ws, int idx);
/* Removes every worker of a source (a directory snapshot starts over). */
void gw_workers_remove_source(gw_workers *ws, int source);
void gw_workers_set_load(gw_workers *ws, int idx, uint32_t waiting, uint32_t running, uint64_t kv_used,
			 uint64_t kv_total);

/* Breaker: whether a request may go to w now (closed; or half-open with no
 * trial in flight; an open breaker whose time is up turns half-open). */
int gw_breaker_allows(gw_worker *w, uint64_t now_ms);
void gw_breaker_on_send(gw_worker *w);
/* Outcome of a request sent to w; returns 1 when this failure opened it. */
int gw_breaker_on_result(gw_workers *ws, gw_worker *w, int ok, uint64_t now_ms);
const char *gw_breaker_name(int state);
const char *gw_role_name(int role);
const char *gw_wstate_name(int state);

/* ================= routing (route.c) ================= */

enum { GW_POLICY_SCORE = 0, GW_POLICY_ROUND_ROBIN, GW_POLICY_RANDOM };
enum {
	GW_SCORER_PREFIX = 1u << 0,
	GW_SCORER_QUEUE = 1u << 1,
	GW_SCORER_KV = 1u << 2,
	GW_SCORER_SESSION = 1u << 3,
};

/* Why a candidate was filtered out (0: eligible). */
enum {
	GW_F_OK = 0,
	GW_F_NOT_ALIVE,     /* disconnected from the directory */
	GW_F_MODEL,
	GW_F_ROLE,
	GW_F_DRAINING,
	GW_F_BREAKER,
	GW_F_CAP,           /* worker_max_inflight reached */
	GW_F_TRIED,         /* failed earlier for this request */
};
const char *gw_filter_name(int f);

typedef struct gw_route_cfg {
	int policy;
	unsigned scorers;
	double w_prefix, w_queue, w_kv, w_session;
	double tier_gpu, tier_host, tier_disk;
	uint32_t pd_threshold_tokens; /* 0: never disaggregate */
	uint32_t worker_max_inflight; /* 0: none */
} gw_route_cfg;

/* Parses "prefix,queue,kv,session" into GW_SCORER_* bits. */
int gw_scorers_parse(const kvf_strlist *l, unsigned *out);

/* Per worker, the longest prefix of the request's chain it holds. */
typedef struct gw_holder {
	int widx;
	uint32_t gpu, host, any; /* leading blocks in gpu; gpu or host; any tier */
} gw_holder;

typedef struct gw_cand {
	int widx;
	int filter;             /* GW_F_* */
	uint32_t gpu, host, any;
	double s_prefix, s_queue, s_kv, s_session, total;
} gw_cand;

typedef struct gw_route_in {
	const char *model;
	uint32_t n_tokens;
	uint32_t n_blocks;      /* full blocks keyed (the chain length) */
	uint32_t block_size;
	int session_widx;       /* worker the session is pinned to, -1 none */
	const int *exclude;     /* tried workers */
	size_t nexclude;
	uint64_t now_ms;
} gw_route_in;

#define GW_ROUTE_MAX_CANDS 256

typedef struct gw_decision {
	int decode;             /* worker index, -1 none fits */
	int prefill;            /* worker index, -1 no P/D */
	uint32_t cached_tokens; /* on the decode worker (any tier) */
	uint32_t uncached_tokens;
	int tie;                /* several candidates shared the best score */
	char reason[64];
	size_t ncand;           /* workers considered: the first GW_ROUTE_MAX_CANDS slots */
	gw_cand cand[GW_ROUTE_MAX_CANDS];
	size_t neligible;
	size_t nprefill_eligible;
} gw_decision;

/* Filters, scores and picks (see docs/gateway.md). *rng is a xorshift
 * state, *rr a round-robin counter; both advance. Pure: no I/O, no clock. */
void gw_route_decide(const gw_route_cfg *cfg, gw_workers *ws, const gw_holder *holders, size_t nholders,
		     const gw_route_in *in, uint64_t *rng, uint64_t *rr, gw_decision *out);

/* ================= sessions (route.c) ================= */

typedef struct gw_sessions {
	struct gw_session_slot *slots;
	size_t mask;
	uint64_t ttl_ms;
} gw_sessions;

int gw_sessions_init(gw_sessions *s, size_t slots, uint64_t ttl_ms);
void gw_sessions_free(gw_sessions *s);
/* The worker pinned to the session, or -1 (expired, replaced, unknown). */
int gw_sessions_get(gw_sessions *s, const gw_workers *ws, const char *id, size_t len, uint64_t now_ms);
void gw_sessions_put(gw_sessions *s, const gw_workers *ws, const char *id, size_t len, int widx,
		     uint64_t now_ms);

/* ================= the KV index (index_local.c, index_cachedir.c) ================= */

typedef void (*gw_lookup_cb)(void *ud, int status, const gw_holder *h, size_t n);

/* Answers "which workers hold the longest prefixes of this chain". */
typedef struct gw_index_ops {
	const char *name;
	/* cb runs exactly once unless canceled, maybe before lookup returns. */
	int (*lookup)(void *ix, const char *model, const kvf_blockkey *keys, size_t n, gw_lookup_cb cb,
		      void *ud, uint64_t *req);
	void (*cancel)(void *ix, uint64_t req);
	/* The request with these keys was sent to worker widx. */
	void (*routed)(void *ix, int widx, const kvf_blockkey *keys, size_t n);
	/* The worker left: forget what it held. */
	void (*forget)(void *ix, int widx);
	void (*destroy)(void *ix);
	void (*info)(void *ix, kvf_buf *out);
} gw_index_ops;

typedef struct gw_index {
	const gw_index_ops *ops;
	void *ix;
} gw_index;

enum { GW_INDEX_AUTO = 0, GW_INDEX_CACHEDIR, GW_INDEX_LOCAL, GW_INDEX_NONE };

/* Local estimate: remembers where the gateway sent each chain (like
 * llm-d's approximate prefix scorer) in an LRU of max_blocks keys. */
int gw_index_local_new(size_t max_blocks, gw_index *out);
/* No index: every lookup answers "nobody holds anything". */
int gw_index_none_new(gw_index *out);

/* ================= OpenAI bodies (openai.c) ================= */

enum { GW_EP_COMPLETIONS = 1, GW_EP_CHAT = 2 };

typedef struct gw_prompt {
	int endpoint;
	kvf_oai_request oai;     /* the parsed and validated body (common/openai.c) */
	json_t *root;            /* oai.root, borrowed */
	const char *model;       /* borrowed */
	int stream;
	int64_t max_tokens;      /* -1 when absent */
	/* completions: text or ids */
	const char *text;        /* borrowed */
	size_t text_len;
	kvf_tok_ids ids;         /* given as ids, or tokenized */
	int have_ids;
	/* chat: the template's variables, as the workers build them: messages
	 * with flattened content, add_generation_prompt (owned) */
	json_t *chat_vars;
	uint64_t cache_ns;       /* the tenant's tokenizer-cache namespace */
	char err[256];
	char err_param[64];
} gw_prompt;

/* Parses and validates a request body. 0, or KVF_E_INVAL with p->err /
 * p->err_param set for an OpenAI 400. Free with gw_prompt_free(). */
int gw_prompt_parse(gw_prompt *p, int endpoint, const char *body, size_t len);
void gw_prompt_free(gw_prompt *p);
/* Tokenizes (chat: template then encode) into p->ids. Thread-safe for a
 * prompt no other thread touches. Errors leave p->err. */
int gw_prompt_tokenize(gw_prompt *p, const kvf_tokenizer *tok);
/* The size of the text to tokenize (to decide inline vs thread). */
size_t gw_prompt_work_bytes(const gw_prompt *p);

/* Scans a response body stream for usage and events (usage.completion_tokens
 * or the count of SSE data events). */
typedef struct gw_usage_scan {
	char tail[512];
	size_t tail_len;
	uint32_t match;          /* progress matching "data: {" */
	uint64_t events;
} gw_usage_scan;
void gw_usage_feed(gw_usage_scan *u, const char *data, size_t len);
/* Completion tokens: from the last "completion_tokens": N seen, else the
 * event count; 0 when neither. */
uint64_t gw_usage_completion_tokens(const gw_usage_scan *u);

/* ================= tokenizer threads (tokpool.c) ================= */

typedef struct gw_tokpool gw_tokpool;
typedef struct gw_tokjob gw_tokjob;
typedef void (*gw_tokjob_done)(gw_tokjob *job, void *ud);

struct gw_tokjob {
	kvf_task task;           /* private: posts the result back to the loop */
	gw_tokjob *next;         /* private */
	gw_prompt *prompt;
	const kvf_tokenizer *tok;
	int rc;
	uint64_t ns;             /* time spent tokenizing */
	gw_tokjob_done done;
	void *ud;
};

int gw_tokpool_new(kvf_loop *loop, int nthreads, gw_tokpool **out);
/* Joins the threads; jobs still queued are completed first. NULL ok. */
void gw_tokpool_destroy(gw_tokpool *p);
/* Queues job; job->done(job, ud) runs later on the loop's thread. */
void gw_tokpool_submit(gw_tokpool *p, gw_tokjob *job);

#endif
