/*
 * pd.c: prefill/decode disaggregation (docs/workers.md, "P/D protocol").
 *
 * Holder side (every worker): POST /kvf/v1/prefill computes the KV of a
 * prompt and keeps it under a lease; POST /kvf/v1/blocks leases cached
 * blocks named by their keys; both answer a fabric descriptor of the blocks.
 * POST /kvf/v1/extend and /kvf/v1/release end or prolong a lease; a lease
 * that is neither released nor extended expires and frees its blocks.
 *
 * Puller side (decode): a request carrying x-kvf-prefill asks that worker to
 * prefill the prompt, pulls the blocks holding the KV of every prompt token
 * but the last over the fabric into freshly allocated blocks of its own pool,
 * checks their count and sizes, releases the lease, and submits the request
 * with the blocks attached: the engine computes only the last prompt token,
 * so the output is the same as computing locally. Any failure on the way
 * (prefill worker unreachable, slow, killed mid-transfer, a bad descriptor,
 * a full pool) falls back to computing locally: the request still succeeds
 * (kvf_decode_prefill_fallbacks_total counts it).
 */
#include "worker/internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_base64.h"
#include "common/kvf_err.h"
#include "common/kvf_json.h"
#include "common/kvf_log.h"
#include "common/kvf_time.h"

enum {
	PM_FALLBACKS,
	PM_PULLS,
	PM_PULL_BYTES,
	PM_PULL_SECONDS,
	PM_LEASES,
	PM_LEASES_EXPIRED,
	PM_PREFILLS,
	PM_N
};

static const kvf_metric_def pd_metrics[PM_N] = {
	[PM_FALLBACKS] = { "kvf_decode_prefill_fallbacks_total", KVF_METRIC_COUNTER,
			   "Requests whose KV could not be pulled from the prefill worker and were computed locally",
			   NULL, NULL, 0 },
	[PM_PULLS] = { "kvf_worker_pulls_total", KVF_METRIC_COUNTER, "KV pulls from other workers, by outcome",
		       "outcome", NULL, 0 },
	[PM_PULL_BYTES] = { "kvf_worker_pull_bytes_total", KVF_METRIC_COUNTER, "KV bytes pulled over the fabric",
			    NULL, NULL, 0 },
	[PM_PULL_SECONDS] = { "kvf_worker_pull_seconds", KVF_METRIC_HISTOGRAM,
			      "From asking the holder to having the KV in the local pool", NULL, kvf_buckets_fast_s,
			      KVF_BUCKETS_FAST_S_N },
	[PM_LEASES] = { "kvf_worker_leases", KVF_METRIC_GAUGE, "KV leases held for pullers", NULL, NULL, 0 },
	[PM_LEASES_EXPIRED] = { "kvf_worker_leases_expired_total", KVF_METRIC_COUNTER,
				"Leases that ran out without a release (the puller died or gave up)", NULL, NULL, 0 },
	[PM_PREFILLS] = { "kvf_worker_prefills_served_total", KVF_METRIC_COUNTER,
			  "POST /kvf/v1/prefill and /kvf/v1/blocks answered with a lease", NULL, NULL, 0 },
};

/* ------------------------------------------------------------------------ */
/* Leases (holder side)                                                     */
/* ------------------------------------------------------------------------ */

enum { LEASE_REQUEST, LEASE_BLOCKS };

typedef struct pd_lease {
	struct pd_lease *next, *prev;
	kvf_worker *w;
	uint64_t id;
	int kind;
	uint64_t engine_req;   /* LEASE_REQUEST */
	kvf_blockkey *keys;    /* LEASE_BLOCKS: asked for */
	int n_keys;
	int32_t *blocks;       /* filled on the engine thread */
	int n_blocks, n_tokens;
	kvf_timer timer;
	ew_call call;
	kvf_http_req *http;    /* while the answer is being prepared */
	uint32_t first_token;
	int cached_tokens, computed_tokens;
	int held;              /* in the lease table */
	uint64_t created_ms;
} pd_lease;

static void lease_unlink(pd_lease *l)
{
	kvf_worker *w = l->w;
	if (!l->held)
		return;
	if (l->prev)
		l->prev->next = l->next;
	else
		w->leases = l->next;
	if (l->next)
		l->next->prev = l->prev;
	l->held = 0;
	w->n_leases--;
	kvf_metric_set(w->pm[PM_LEASES], (double)w->n_leases);
	kvf_loop_timer_stop(w->loop, &l->timer);
}

static void lease_free(pd_lease *l)
{
	kvf_free(l->keys);
	kvf_free(l->blocks);
	kvf_free(l);
}

/* Engine thread: drop the KV the lease holds. */
static void lease_release_engine(kvf_engine *e, void *arg)
{
	pd_lease *l = arg;
	if (l->kind == LEASE_REQUEST)
		kvf_engine_release(e, l->engine_req);
	else
		for (int i = 0; i < l->n_blocks; i++)
			kvf_engine_kv_release(e, l->blocks[i]);
}

static void lease_freed(void *arg)
{
	lease_free(arg);
}

/* Ends a lease: out of the table, KV released on the engine thread, freed. */
static void lease_end(pd_lease *l)
{
	lease_unlink(l);
	l->call.fn = lease_release_engine;
	l->call.done = lease_freed;
	l->call.arg = l;
	ew_run(l->w->engine, &l->call);
}

static void on_lease_timeout(kvf_loop *loop, kvf_timer *t, void *ud)
{
	pd_lease *l = ud;
	KVF_INFO("pd", "lease expired", "lease=%016llx blocks=%d", (unsigned long long)l->id, l->n_blocks);
	kvf_metric_inc(l->w->pm[PM_LEASES_EXPIRED]);
	lease_end(l);
}

static pd_lease *lease_find(kvf_worker *w, uint64_t id)
{
	for (pd_lease *l = w->leases; l; l = l->next)
		if (l->id == id)
			return l;
	return NULL;
}

static void lease_hold(pd_lease *l)
{
	kvf_worker *w = l->w;
	l->next = w->leases;
	if (w->leases)
		w->leases->prev = l;
	w->leases = l;
	l->held = 1;
	w->n_leases++;
	l->created_ms = kvf_loop_now_ms(w->loop);
	kvf_metric_set(w->pm[PM_LEASES], (double)w->n_leases);
	kvf_loop_timer_start(w->loop, &l->timer, w->wcfg->lease_ms, 0, on_lease_timeout, l);
}

static void lease_client_gone(kvf_http_req *req, void *ud)
{
	pd_lease *l = ud;
	kvf_http_end(req);
	l->http = NULL; /* the engine-thread step in flight finds it and ends the lease */
}

/* Loop thread, once the engine thread filled l->blocks: answer the puller. */
static void lease_answer(void *arg)
{
	pd_lease *l = arg;
	kvf_worker *w = l->w;
	if (!l->http) { /* the asker went away */
		lease_end(l);
		return;
	}
	kvf_http_req_on_close(l->http, NULL, NULL);
	if (l->n_blocks == 0) {
		worker_respond_error(l->http, 404, "none of the requested blocks is cached here", "keys", NULL);
		l->http = NULL;
		lease_end(l);
		return;
	}
	kvf_fabric_range *ranges = kvf_malloc((size_t)l->n_blocks * sizeof(*ranges));
	kvf_buf desc = KVF_BUF_INIT, b64 = KVF_BUF_INIT, body = KVF_BUF_INIT;
	int rc = ranges ? 0 : KVF_E_NOMEM;
	for (int i = 0; !rc && i < l->n_blocks; i++)
		ranges[i] = (kvf_fabric_range){ (uint64_t)l->blocks[i] * w->block_bytes, w->block_bytes };
	if (!rc)
		rc = kvf_fabric_export(w->fabric, w->mr, ranges, (size_t)l->n_blocks, &desc);
	if (!rc)
		rc = kvf_base64_encode(desc.data, desc.len, &b64);
	kvf_free(ranges);
	if (rc) {
		worker_respond_error(l->http, 500, kvf_errmsg(), NULL, NULL);
		l->http = NULL;
		lease_end(l);
		goto out;
	}
	do {
		if (getrandom(&l->id, sizeof(l->id), 0) != sizeof(l->id))
			l->id = kvf_now_ns();
	} while (l->id == 0 || lease_find(w, l->id));
	kvf_buf_printf(&body, "{\"lease_id\":\"%016llx\",\"lease_ms\":%llu,\"block_size\":%d,\"block_bytes\":%zu,"
			      "\"n_blocks\":%d,\"n_tokens\":%d,\"first_token\":%d,\"cached_tokens\":%d,"
			      "\"computed_tokens\":%d,\"fabric_port\":%u,\"descriptor\":\"",
		       (unsigned long long)l->id, (unsigned long long)w->wcfg->lease_ms, w->block_size,
		       w->block_bytes, l->n_blocks, l->n_tokens,
		       l->kind == LEASE_REQUEST ? (int)l->first_token : -1, l->cached_tokens, l->computed_tokens,
		       kvf_fabric_port(w->fabric));
	kvf_buf_append(&body, b64.data, b64.len);
	kvf_buf_puts(&body, "\"}");
	lease_hold(l);
	kvf_metric_inc(w->pm[PM_PREFILLS]);
	kvf_http_respond(l->http, 200, "application/json", NULL, body.data, body.len);
	l->http = NULL;
out:
	kvf_buf_free(&desc);
	kvf_buf_free(&b64);
	kvf_buf_free(&body);
}

/* Engine thread: the blocks of a finished prefill request. */
static void lease_collect_request(kvf_engine *e, void *arg)
{
	pd_lease *l = arg;
	const int32_t *b;
	int n = 0, ntok = 0;
	if (kvf_engine_request_blocks(e, l->engine_req, &b, &n, &ntok) != 0 || n <= 0)
		return;
	if (!(l->blocks = kvf_malloc((size_t)n * sizeof(int32_t)))) {
		n = 0;
		return;
	}
	memcpy(l->blocks, b, (size_t)n * sizeof(int32_t));
	l->n_blocks = n;
	l->n_tokens = ntok;
}

/* Engine thread: take references on the longest cached prefix of the keys. */
static void lease_collect_keys(kvf_engine *e, void *arg)
{
	pd_lease *l = arg;
	if (!(l->blocks = kvf_malloc((size_t)l->n_keys * sizeof(int32_t))))
		return;
	l->n_blocks = kvf_engine_kv_acquire(e, l->keys, l->n_keys, l->blocks);
	l->n_tokens = l->n_blocks * l->w->block_size;
}

static void lease_free_ud(void *ud)
{
	lease_free(ud);
}

static void prefill_client_gone(kvf_http_req *req, void *ud)
{
	wreq *r = ud;
	kvf_http_end(req);
	r->http = NULL;
	if (!r->engine_done && !r->cancel_sent) {
		r->cancel_sent = 1;
		ew_cancel(r->w->engine, &r->er); /* the engine frees or releases the KV */
	}
	wreq_maybe_free(r);
}

/* serve.c calls this when the engine finished a /kvf/v1/prefill request. */
static void prefill_finished(wreq *r, const kvf_event *ev)
{
	pd_lease *l = r->on_finish_ud;
	r->on_finish_ud = NULL; /* consumed here, whatever happens */
	if (ev->finish == KVF_FINISH_ERROR || ev->finish == KVF_FINISH_CANCEL) {
		if (r->http)
			worker_respond_error(r->http, ev->error == KVF_E_RANGE ? 400 : 500, kvf_strerror(ev->error),
					     NULL, NULL);
		r->http = NULL;
		lease_free(l);
		return;
	}
	/* The lease takes over the HTTP request and the held engine request. */
	l->engine_req = r->er.engine_id;
	l->first_token = ev->token;
	l->cached_tokens = r->info.n_cached_tokens;
	l->computed_tokens = r->info.n_computed_tokens;
	l->http = r->http;
	r->http = NULL;
	if (l->http)
		kvf_http_req_on_close(l->http, lease_client_gone, l);
	l->call.fn = lease_collect_request;
	l->call.done = lease_answer;
	l->call.arg = l;
	ew_run(r->w->engine, &l->call);
}

static int parse_lease_id(const json_t *root, uint64_t *id)
{
	const char *hex = NULL;
	if (kvf_json_req_string(root, "lease_id", &hex))
		return KVF_E_INVAL;
	char *end;
	unsigned long long v = strtoull(hex, &end, 16);
	if (!*hex || *end || strlen(hex) != 16)
		return kvf_json_fail("lease_id", "'lease_id' must be 16 hex digits");
	*id = v;
	return 0;
}

/* POST /kvf/v1/prefill {"model","prompt_token_ids":[...],"tenant"} */
static void serve_prefill(kvf_worker *w, kvf_http_req *req, const json_t *root)
{
	const char *model = NULL, *tenant = "";
	const json_t *ids = NULL;
	if (kvf_json_req_string(root, "model", &model) || kvf_json_opt_string(root, "tenant", &tenant) ||
	    kvf_json_opt_array(root, "prompt_token_ids", &ids)) {
		worker_respond_error(req, 400, kvf_errmsg(), kvf_json_bad_param(), NULL);
		return;
	}
	if (strcmp(model, w->model_name) != 0) {
		worker_respond_error(req, 404, "unknown model", "model", "model_not_found");
		return;
	}
	size_t n = ids ? json_array_size(ids) : 0;
	int ctx = ew_info(w->engine)->max_model_len;
	if (n == 0 || n >= (size_t)ctx) {
		worker_respond_error(req, 400, "'prompt_token_ids' must hold 1 .. max_model_len - 1 token ids",
				     "prompt_token_ids", NULL);
		return;
	}
	wreq *r = wreq_new(w);
	pd_lease *l = kvf_calloc(1, sizeof(*l));
	if (!r || !l || kvf_grow((void **)&r->prompt.ids, &r->prompt.cap, n, sizeof(uint32_t))) {
		worker_respond_error(req, 500, "out of memory", NULL, NULL);
		if (r)
			wreq_free(r);
		kvf_free(l);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *v = json_array_get(ids, i);
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) >= ew_info(w->engine)->vocab_size) {
			worker_respond_error(req, 400, "'prompt_token_ids' holds an id outside the vocabulary",
					     "prompt_token_ids", NULL);
			wreq_free(r);
			kvf_free(l);
			return;
		}
		r->prompt.ids[i] = (uint32_t)json_integer_value(v);
	}
	r->prompt.n = n;
	snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
	/* One greedy token: the KV of the whole prompt is what the puller wants. */
	r->oai.kind = KVF_OAI_COMPLETION;
	r->oai.model = w->model_name;
	r->oai.temperature = 0;
	r->oai.top_p = 1;
	r->oai.repetition_penalty = 1;
	r->oai.max_tokens = 1;
	r->oai.ignore_eos = 1;
	if (wreq_build_params(w, r)) {
		worker_respond_error(req, 500, "out of memory", NULL, NULL);
		wreq_free(r);
		kvf_free(l);
		return;
	}
	l->w = w;
	l->kind = LEASE_REQUEST;
	r->er.keep_kv = 1;
	r->on_finish = prefill_finished;
	r->on_finish_ud = l;
	r->free_ud = lease_free_ud;
	r->http = req;
	/* A puller that gives up stops the prefill (and so its lease). */
	kvf_http_req_on_close(req, prefill_client_gone, r);
	kvf_series_add(kvf_metric_series(w->m[WM_PROMPT_TOKENS]), n);
	wreq_submit(r);
}

/* POST /kvf/v1/blocks {"keys":["<32 hex>",...]} */
static void serve_blocks(kvf_worker *w, kvf_http_req *req, const json_t *root)
{
	const json_t *keys = NULL;
	if (kvf_json_opt_array(root, "keys", &keys) || !keys || json_array_size(keys) == 0) {
		worker_respond_error(req, 400, "'keys' must be a non-empty array of block keys", "keys", NULL);
		return;
	}
	size_t n = json_array_size(keys);
	pd_lease *l = kvf_calloc(1, sizeof(*l));
	if (!l || !(l->keys = kvf_malloc(n * sizeof(kvf_blockkey)))) {
		worker_respond_error(req, 500, "out of memory", NULL, NULL);
		kvf_free(l);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *k = json_array_get(keys, i);
		if (!json_is_string(k) || kvf_blockkey_from_hex(json_string_value(k), &l->keys[i])) {
			worker_respond_error(req, 400, "'keys' must hold 32-hex-digit block keys", "keys", NULL);
			lease_free(l);
			return;
		}
	}
	l->w = w;
	l->kind = LEASE_BLOCKS;
	l->n_keys = (int)n;
	l->http = req;
	kvf_http_req_on_close(req, lease_client_gone, l);
	l->call.fn = lease_collect_keys;
	l->call.done = lease_answer;
	l->call.arg = l;
	ew_run(w->engine, &l->call);
}

int pd_serve(kvf_worker *w, kvf_http_req *req)
{
	kvf_http_str path = kvf_http_req_path(req);
	if (path.len < 8 || memcmp(path.p, "/kvf/v1/", 8) != 0)
		return 0;
	if (kvf_http_req_method(req) != KVF_HTTP_POST) {
		worker_respond_error(req, 405, "use POST", NULL, NULL);
		return 1;
	}
	size_t len;
	const char *body = kvf_http_req_body(req, &len);
	json_t *root = NULL;
	if (kvf_json_parse_object(body, len, &root)) {
		worker_respond_error(req, 400, kvf_errmsg(), NULL, NULL);
		return 1;
	}
	if (kvf_http_str_eq(path, "/kvf/v1/prefill")) {
		if (w->draining)
			worker_respond_error(req, 503, "the worker is draining", NULL, NULL);
		else
			serve_prefill(w, req, root);
	} else if (kvf_http_str_eq(path, "/kvf/v1/blocks")) {
		serve_blocks(w, req, root);
	} else if (kvf_http_str_eq(path, "/kvf/v1/release") || kvf_http_str_eq(path, "/kvf/v1/extend")) {
		uint64_t id = 0;
		pd_lease *l;
		if (parse_lease_id(root, &id)) {
			worker_respond_error(req, 400, kvf_errmsg(), "lease_id", NULL);
		} else if (!(l = lease_find(w, id))) {
			worker_respond_error(req, 404, "no such lease (released or expired)", "lease_id", NULL);
		} else if (kvf_http_str_eq(path, "/kvf/v1/release")) {
			lease_end(l);
			kvf_http_respond(req, 200, "application/json", NULL, "{\"released\":true}", 17);
		} else {
			kvf_loop_timer_start(w->loop, &l->timer, w->wcfg->lease_ms, 0, on_lease_timeout, l);
			kvf_http_respond(req, 200, "application/json", NULL, "{\"extended\":true}", 17);
		}
	} else {
		worker_respond_error(req, 404, "no such route", NULL, NULL);
	}
	json_decref(root);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* Pulls (decode side)                                                      */
/* ------------------------------------------------------------------------ */

typedef struct pd_pull {
	wreq *r;
	kvf_worker *w;
	int from_holder;   /* 1: cached blocks from a holder (/kvf/v1/blocks); 0: a prefill */
	int want_blocks;   /* from_holder: blocks asked for */
	char ep[128];
	kvf_http_creq *creq;
	kvf_buf resp;
	int status;
	char lease_id[17];
	kvf_fabric_rdesc *desc;
	int32_t *blocks;   /* allocated here, filled by the fabric */
	int n_blocks;
	int n_kv_tokens;
	ew_call call;
	int alloc_rc;
	uint64_t t0_ns;
	int64_t lease_ms;  /* the holder's lease: extended while the transfer runs */
	kvf_timer extend;
	const char *why;   /* fallback reason for logs */
} pd_pull;

static void noop_done(kvf_http_creq *c, void *ud) {}
static void noop_error(kvf_http_creq *c, const kvf_http_cerror *e, void *ud) {}

/* Fire-and-forget POST /kvf/v1/release (an unreleased lease expires anyway). */
static void release_lease(kvf_worker *w, const char *ep, const char *lease_id)
{
	char body[64];
	int n = snprintf(body, sizeof(body), "{\"lease_id\":\"%s\"}", lease_id);
	static const char *const hdrs[] = { "Content-Type", "application/json", NULL };
	kvf_http_creq_opts o = { .method = "POST", .target = "/kvf/v1/release", .headers = hdrs,
				 .body = body, .body_len = (size_t)n, .first_byte_timeout_ms = 5000 };
	kvf_http_creq_cbs cbs = { NULL, NULL, noop_done, noop_error };
	kvf_http_client_request(w->hc, ep, &o, &cbs, NULL, NULL);
}

/* Keeps the holder's lease alive while our READs run (a large transfer
 * may outlast lease_ms): POST /kvf/v1/extend every half lease. */
static void on_extend(kvf_loop *loop, kvf_timer *t, void *ud)
{
	pd_pull *p = ud;
	char body[64];
	int n = snprintf(body, sizeof(body), "{\"lease_id\":\"%s\"}", p->lease_id);
	static const char *const hdrs[] = { "Content-Type", "application/json", NULL };
	kvf_http_creq_opts o = { .method = "POST", .target = "/kvf/v1/extend", .headers = hdrs,
				 .body = body, .body_len = (size_t)n, .first_byte_timeout_ms = 5000 };
	kvf_http_creq_cbs cbs = { NULL, NULL, noop_done, noop_error };
	kvf_http_client_request(p->w->hc, p->ep, &o, &cbs, NULL, NULL);
}

static void pull_free(pd_pull *p)
{
	kvf_loop_timer_stop(p->w->loop, &p->extend);
	kvf_buf_free(&p->resp);
	kvf_fabric_desc_free(p->desc);
	kvf_free(p->blocks);
	kvf_free(p);
}

/* Engine thread: drop blocks allocated for a pull that failed. */
static void pull_release_blocks(kvf_engine *e, void *arg)
{
	pd_pull *p = arg;
	for (int i = 0; i < p->n_blocks; i++)
		kvf_engine_kv_release(e, p->blocks[i]);
}

static void pull_freed(void *arg)
{
	pull_free(arg);
}

/* Ends a pull: submits r with the pulled KV (ok) or to compute locally. */
static void pull_finish(pd_pull *p, int ok)
{
	wreq *r = p->r;
	kvf_worker *w = p->w;
	r->pull = NULL;
	kvf_loop_timer_stop(w->loop, &p->extend);
	if (p->lease_id[0])
		release_lease(w, p->ep, p->lease_id);
	if (ok && r->http) {
		kvf_series_add(w->pull_outcome[0], 1);
		kvf_metric_observe(w->pm[PM_PULL_SECONDS], (double)(kvf_now_ns() - p->t0_ns) / 1e9);
		kvf_metric_add(w->pm[PM_PULL_BYTES], (uint64_t)p->n_blocks * w->block_bytes);
		/* The request takes over the block references. */
		r->kv_blocks = p->blocks;
		p->blocks = NULL;
		r->er.params.kv_blocks = r->kv_blocks;
		r->er.params.n_kv_blocks = p->n_blocks;
		r->er.params.n_kv_tokens = p->n_kv_tokens;
		if (!p->from_holder)
			snprintf(r->prefill_ep, sizeof(r->prefill_ep), "%s", p->ep);
		pull_free(p);
		wreq_submit(r);
		return;
	}
	if (r->http) {
		if (!p->from_holder)
			kvf_metric_inc(w->pm[PM_FALLBACKS]);
		kvf_series_add(w->pull_outcome[1], 1);
		KVF_LOG_RL(KVF_LOG_WARN, 10, 10000, "pd", "pull failed: computing locally",
			   "from=%s kind=%s reason=\"%s\"", p->ep, p->from_holder ? "holder" : "prefill",
			   p->why ? p->why : "?");
		wreq_submit(r);
	} else {
		wreq_maybe_free(r); /* the client left during the pull */
	}
	if (p->n_blocks && p->blocks) {
		p->call.fn = pull_release_blocks;
		p->call.done = pull_freed;
		p->call.arg = p;
		ew_run(w->engine, &p->call);
	} else {
		pull_free(p);
	}
}

/* Loop thread, once blocks were allocated: post the READs. */
static void pull_allocated(void *arg)
{
	pd_pull *p = arg;
	kvf_worker *w = p->w;
	if (p->alloc_rc) {
		p->n_blocks = 0;
		p->why = "local KV pool full";
		pull_finish(p, 0);
		return;
	}
	if (!p->r->http) {
		p->why = "client left";
		pull_finish(p, 0);
		return;
	}
	kvf_fabric_op *ops = kvf_malloc((size_t)p->n_blocks * sizeof(*ops));
	if (!ops) {
		p->why = "out of memory";
		pull_finish(p, 0);
		return;
	}
	for (int i = 0; i < p->n_blocks; i++)
		ops[i] = (kvf_fabric_op){ w->pool + (size_t)p->blocks[i] * w->block_bytes, (uint32_t)i, 0,
					  w->block_bytes };
	int rc = kvf_fabric_post(w->cq, KVF_FABRIC_READ, p->desc, ops, (size_t)p->n_blocks, (uint64_t)(uintptr_t)p,
				 NULL);
	kvf_free(ops);
	if (rc) {
		p->why = kvf_errmsg();
		pull_finish(p, 0);
		return;
	}
}

/* Engine thread: blocks to pull into, one reference each. */
static void pull_alloc(kvf_engine *e, void *arg)
{
	pd_pull *p = arg;
	p->alloc_rc = kvf_engine_kv_alloc(e, p->n_blocks, p->blocks);
}

/* The prefill worker answered: check the lease, allocate, pull. */
static void pull_got_lease(pd_pull *p)
{
	kvf_worker *w = p->w;
	wreq *r = p->r;
	json_t *root = NULL;
	const char *lease = NULL, *desc = NULL;
	int64_t n_tokens = -1, block_bytes = -1, lease_ms = 30000;
	kvf_buf raw = KVF_BUF_INIT;
	if (p->status != 200) {
		p->why = "the prefill worker refused";
		goto fail;
	}
	if (kvf_json_parse_object(p->resp.data ? p->resp.data : "", p->resp.len, &root) ||
	    kvf_json_req_string(root, "lease_id", &lease) || kvf_json_req_string(root, "descriptor", &desc) ||
	    kvf_json_req_int(root, "n_tokens", 0, INT32_MAX, &n_tokens) ||
	    kvf_json_req_int(root, "block_bytes", 1, INT64_MAX, &block_bytes) ||
	    kvf_json_opt_int(root, "lease_ms", 1, INT64_MAX, &lease_ms) || strlen(lease) != 16) {
		p->why = "malformed prefill answer";
		goto fail;
	}
	memcpy(p->lease_id, lease, 17);
	p->lease_ms = lease_ms;
	/* The holder's lease clock runs from its answer: keep it alive from
	 * now on, through the block allocation (which waits for an engine
	 * step) and the transfer, extending every third of the lease. */
	uint64_t third = p->lease_ms > 3 ? (uint64_t)p->lease_ms / 3 : 1;
	kvf_loop_timer_start(w->loop, &p->extend, third, third, on_extend, p);
	if (kvf_base64_decode(desc, strlen(desc), &raw) || kvf_fabric_desc_parse(raw.data, raw.len, &p->desc)) {
		p->why = "bad descriptor";
		goto fail;
	}
	size_t nd = kvf_fabric_desc_nblocks(p->desc);
	if ((size_t)block_bytes != w->block_bytes) {
		p->why = "block size mismatch (different model, dtype or block size?)";
		goto fail;
	}
	for (size_t i = 0; i < nd; i++)
		if (kvf_fabric_desc_block_len(p->desc, i) != w->block_bytes) {
			p->why = "block size mismatch";
			goto fail;
		}
	if (p->from_holder) {
		/* The holder leased the longest prefix it still had (maybe fewer
		 * blocks than asked): take those, all full blocks. */
		if (nd == 0 || nd > (size_t)p->want_blocks || (size_t)n_tokens != nd * (size_t)w->block_size) {
			p->why = "holder answered an unexpected block count";
			goto fail;
		}
		p->n_blocks = (int)nd;
		p->n_kv_tokens = (int)nd * w->block_size;
	} else {
		/* The prefill worker kept the KV of the whole prompt; we take all
		 * but the last token, which the engine computes to sample the
		 * first output token. */
		size_t want_desc = ((size_t)r->prompt.n + (size_t)w->block_size - 1) / (size_t)w->block_size;
		if ((size_t)n_tokens != r->prompt.n || nd != want_desc) {
			p->why = "block count mismatch (different model or block size?)";
			goto fail;
		}
		p->n_kv_tokens = (int)r->prompt.n - 1;
		p->n_blocks = (p->n_kv_tokens + w->block_size - 1) / w->block_size;
	}
	if (p->n_blocks == 0) {
		p->why = "prompt too short to pull";
		goto fail;
	}
	if (!(p->blocks = kvf_malloc((size_t)p->n_blocks * sizeof(int32_t)))) {
		p->why = "out of memory";
		goto fail;
	}
	json_decref(root);
	kvf_buf_free(&raw);
	p->call.fn = pull_alloc;
	p->call.done = pull_allocated;
	p->call.arg = p;
	ew_run(w->engine, &p->call);
	return;
fail:
	json_decref(root);
	kvf_buf_free(&raw);
	p->n_blocks = 0;
	pull_finish(p, 0);
}

static void pull_on_head(kvf_http_creq *c, const kvf_http_msg *m, void *ud)
{
	((pd_pull *)ud)->status = m->status;
}

static void pull_on_body(kvf_http_creq *c, const char *data, size_t len, void *ud)
{
	kvf_buf_append(&((pd_pull *)ud)->resp, data, len);
}

static void pull_on_done(kvf_http_creq *c, void *ud)
{
	pd_pull *p = ud;
	p->creq = NULL;
	pull_got_lease(p);
}

static void pull_on_error(kvf_http_creq *c, const kvf_http_cerror *e, void *ud)
{
	pd_pull *p = ud;
	p->creq = NULL;
	p->why = e->err == KVF_E_TIMEOUT ? "prefill timed out" : "prefill worker unreachable";
	pull_finish(p, 0);
}

/* Sends the lease request of p (body built by the caller) to p->ep. */
static int pull_send(pd_pull *p, const char *target, kvf_buf *body)
{
	kvf_worker *w = p->w;
	static const char *const hdrs[] = { "Content-Type", "application/json", NULL };
	uint32_t timeout = (uint32_t)(w->wcfg->prefill_timeout_ms > UINT32_MAX ? UINT32_MAX : w->wcfg->prefill_timeout_ms);
	kvf_http_creq_opts o = { .method = "POST", .target = target, .headers = hdrs, .body = body->data,
				 .body_len = body->len, .first_byte_timeout_ms = timeout, .read_timeout_ms = timeout };
	kvf_http_creq_cbs cbs = { pull_on_head, pull_on_body, pull_on_done, pull_on_error };
	p->t0_ns = kvf_now_ns();
	return body->oom ? KVF_E_NOMEM : kvf_http_client_request(w->hc, p->ep, &o, &cbs, p, &p->creq);
}

int pd_pull_start(wreq *r, const char *ep, size_t ep_len)
{
	kvf_worker *w = r->w;
	if (!w->fabric || ep_len == 0 || ep_len >= sizeof(((pd_pull *)0)->ep))
		return KVF_E_INVAL;
	if (r->prompt.n < 2)
		return KVF_E_RANGE; /* nothing to pull: computing is as fast */
	pd_pull *p = kvf_calloc(1, sizeof(*p));
	if (!p)
		return KVF_E_NOMEM;
	p->r = r;
	p->w = w;
	memcpy(p->ep, ep, ep_len);
	kvf_buf body = KVF_BUF_INIT;
	kvf_buf_puts(&body, "{\"model\":");
	kvf_buf_put_json_str(&body, w->model_name, strlen(w->model_name));
	kvf_buf_puts(&body, ",\"tenant\":");
	kvf_buf_put_json_str(&body, r->tenant, strlen(r->tenant));
	kvf_buf_puts(&body, ",\"prompt_token_ids\":[");
	for (size_t i = 0; i < r->prompt.n; i++)
		kvf_buf_printf(&body, i ? ",%u" : "%u", r->prompt.ids[i]);
	kvf_buf_puts(&body, "]}");
	int rc = pull_send(p, "/kvf/v1/prefill", &body);
	kvf_buf_free(&body);
	if (rc) {
		kvf_free(p);
		kvf_metric_inc(w->pm[PM_FALLBACKS]);
		return rc;
	}
	r->pull = p;
	return 0;
}

/* ---- cached prefixes from other holders ---- */

/* Leading keys of r held in this worker's prefix cache. */
static int local_prefix(const wreq *r)
{
	int n = 0;
	while (n < r->n_keys && keyset_has(&r->w->cached, r->keys[n]))
		n++;
	return n;
}

static void holder_looked_up(void *ud, int status, const kvf_cachedir_lookup_result *res)
{
	wreq *r = ud;
	kvf_worker *w = r->w;
	pd_pull *p = r->pull;
	r->pull = NULL;
	kvf_free(p);
	if (!r->http) {
		wreq_maybe_free(r);
		return;
	}
	if (status != 0 || !res) {
		wreq_submit(r);
		return;
	}
	/* Best other holder that is up, by leading blocks held. */
	int local = local_prefix(r);
	const kvf_cachedir_holder *best = NULL;
	for (size_t i = 0; i < res->nholders; i++) {
		const kvf_cachedir_holder *h = &res->holders[i];
		if (h->state != KVF_CACHEDIR_ACTIVE || strcmp(h->worker_id, w->worker_id) == 0)
			continue;
		if (!best || h->prefix_any > best->prefix_any)
			best = h;
	}
	/* At most the blocks before the last prompt token: the engine computes
	 * that one to sample. */
	int max_blocks = ((int)r->prompt.n - 1) / w->block_size;
	int take = best ? (int)best->prefix_any : 0;
	if (take > max_blocks)
		take = max_blocks;
	if (!best || (take - local) * w->block_size < w->pull_threshold || strlen(best->worker_id) >= sizeof(p->ep)) {
		wreq_submit(r);
		return;
	}
	p = kvf_calloc(1, sizeof(*p));
	if (!p) {
		wreq_submit(r);
		return;
	}
	p->r = r;
	p->w = w;
	p->from_holder = 1;
	p->want_blocks = take;
	snprintf(p->ep, sizeof(p->ep), "%s", best->worker_id); /* a worker's id is its HTTP endpoint */
	kvf_buf body = KVF_BUF_INIT;
	kvf_buf_puts(&body, "{\"keys\":[");
	for (int i = 0; i < take; i++) {
		char hex[33];
		kvf_blockkey_to_hex(r->keys[i], hex);
		kvf_buf_printf(&body, i ? ",\"%s\"" : "\"%s\"", hex);
	}
	kvf_buf_puts(&body, "]}");
	int rc = pull_send(p, "/kvf/v1/blocks", &body);
	kvf_buf_free(&body);
	if (rc) {
		kvf_free(p);
		wreq_submit(r);
		return;
	}
	r->pull = p;
}

int pd_holder_start(wreq *r)
{
	kvf_worker *w = r->w;
	if (!w->dir || !w->fabric || r->n_keys * w->block_size < w->pull_threshold)
		return KVF_E_RANGE;
	if ((r->n_keys - local_prefix(r)) * w->block_size < w->pull_threshold)
		return KVF_E_RANGE; /* most of it is here already */
	/* r->pull marks the request busy while the lookup runs. */
	pd_pull *marker = kvf_calloc(1, sizeof(*marker));
	if (!marker)
		return KVF_E_NOMEM;
	marker->r = r;
	marker->w = w;
	r->pull = marker;
	int rc = kvf_cachedir_lookup(w->dir, w->model_name, r->keys, (size_t)r->n_keys, holder_looked_up, r, NULL);
	if (rc) {
		r->pull = NULL;
		kvf_free(marker);
	}
	return rc;
}

void pd_pull_abort(wreq *r)
{
	pd_pull *p = r->pull;
	if (p && p->creq) { /* still waiting for the holder's answer */
		kvf_http_creq_cancel(p->creq);
		p->creq = NULL;
		p->why = "client left";
		pull_finish(p, 0);
	}
	/* later stages (allocation, transfer, a lookup) finish on their own and
	 * see that the client left */
}

/* Fabric completions on the loop thread. */
static void on_cq(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	kvf_worker *w = ud;
	kvf_fabric_comp comps[32];
	int n;
	while ((n = kvf_fabric_poll(w->cq, comps, 32)) > 0) {
		for (int i = 0; i < n; i++) {
			if (comps[i].kind != KVF_FABRIC_COMP_XFER)
				continue;
			pd_pull *p = (pd_pull *)(uintptr_t)comps[i].cookie;
			if (comps[i].status) {
				p->why = comps[i].detail[0] ? comps[i].detail : kvf_strerror(comps[i].status);
				pull_finish(p, 0);
			} else {
				pull_finish(p, 1);
			}
		}
	}
}

/* ------------------------------------------------------------------------ */
/* Setup                                                                    */
/* ------------------------------------------------------------------------ */

static int cmd_show_leases(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_worker *w = ud;
	uint64_t now = kvf_loop_now_ms(w->loop);
	int json = kvf_admin_want_json(out);
	if (json)
		kvf_admin_printf(out, "[");
	else
		kvf_admin_printf(out, "%-16s %-7s %7s %7s %9s\n", "lease", "kind", "blocks", "tokens", "age_ms");
	int first = 1;
	for (pd_lease *l = w->leases; l; l = l->next) {
		const char *kind = l->kind == LEASE_REQUEST ? "prefill" : "blocks";
		if (json)
			kvf_admin_printf(out, "%s{\"lease\":\"%016llx\",\"kind\":\"%s\",\"blocks\":%d,\"tokens\":%d,"
					      "\"age_ms\":%llu}", first ? "" : ",", (unsigned long long)l->id, kind,
					 l->n_blocks, l->n_tokens, (unsigned long long)(now - l->created_ms));
		else
			kvf_admin_printf(out, "%016llx %-7s %7d %7d %9llu\n", (unsigned long long)l->id, kind,
					 l->n_blocks, l->n_tokens, (unsigned long long)(now - l->created_ms));
		first = 0;
	}
	if (json)
		kvf_admin_printf(out, "]\n");
	return 0;
}

static const kvf_admin_cmd pd_cmds[] = {
	{ { "show", "leases" }, "show leases [json]", "KV held for pullers", cmd_show_leases },
};

/* ---- the pull threshold: measured at start-up ---- */

struct calib {
	int n_tokens;
	double seconds;
	int rc;
	int done;
};

/* Engine thread: time a prefill of n_tokens on a scratch sequence (no
 * keys: nothing enters the prefix cache). */
static void calib_prefill(kvf_engine *e, void *arg)
{
	struct calib *c = arg;
	kvf_seq *seq;
	uint32_t *toks = kvf_malloc((size_t)c->n_tokens * sizeof(uint32_t));
	if (!toks || (c->rc = kvf_seq_create(e, &seq))) {
		c->rc = c->rc ? c->rc : KVF_E_NOMEM;
		kvf_free(toks);
		return;
	}
	for (int i = 0; i < c->n_tokens; i++)
		toks[i] = (uint32_t)(1 + (i * 7) % 200);
	const uint32_t *tp = toks;
	uint64_t t0 = kvf_now_ns();
	c->rc = kvf_engine_eval(e, &seq, &tp, &c->n_tokens, 1, KVF_LOGITS_NONE, NULL);
	c->seconds = (double)(kvf_now_ns() - t0) / 1e9;
	kvf_seq_destroy(seq);
	kvf_free(toks);
}

static void calib_done(void *arg)
{
	((struct calib *)arg)->done = 1;
}

/* Time of one fabric READ of n blocks from this worker's own pool into
 * other blocks of it (the pool is idle at start-up), or < 0. */
static double calib_transfer(kvf_worker *w, int n)
{
	size_t nblocks = w->pool_len / w->block_bytes;
	if (nblocks < (size_t)(2 * n))
		return -1;
	kvf_fabric_range ranges[8];
	kvf_fabric_op ops[8];
	for (int i = 0; i < n; i++) {
		ranges[i] = (kvf_fabric_range){ (uint64_t)i * w->block_bytes, w->block_bytes };
		ops[i] = (kvf_fabric_op){ w->pool + (size_t)(n + i) * w->block_bytes, (uint32_t)i, 0, w->block_bytes };
	}
	kvf_buf desc = KVF_BUF_INIT;
	kvf_fabric_rdesc *d = NULL;
	double secs = -1;
	if (kvf_fabric_export(w->fabric, w->mr, ranges, (size_t)n, &desc) ||
	    kvf_fabric_desc_parse(desc.data, desc.len, &d))
		goto out;
	for (int round = 0; round < 2; round++) { /* the first connects */
		uint64_t t0 = kvf_now_ns();
		if (kvf_fabric_post(w->cq, KVF_FABRIC_READ, d, ops, (size_t)n, 0, NULL))
			goto out;
		kvf_fabric_comp comp;
		int got = 0;
		while (!got && kvf_now_ns() - t0 < 5000000000ull) {
			got = kvf_fabric_poll(w->cq, &comp, 1);
			if (!got)
				usleep(50);
		}
		if (!got || comp.status)
			goto out;
		secs = (double)(kvf_now_ns() - t0) / 1e9;
	}
out:
	kvf_fabric_desc_free(d);
	kvf_buf_free(&desc);
	return secs;
}

/* Sets w->pull_threshold: the prefix (in tokens) from which pulling cached
 * blocks from another worker beats computing them here:
 *   compute(T) = T / prefill_tok_s
 *   pull(T)    = fixed + (T / block_size) * per_block
 * with per_block and fixed (one block's pull plus an HTTP round trip to
 * lease it, 0.5 ms) measured on this worker's own fabric. */
static void calibrate(kvf_worker *w)
{
	if (w->wcfg->pull_threshold_tokens >= 0) {
		w->pull_threshold = (int)w->wcfg->pull_threshold_tokens;
		KVF_INFO("pd", "pull threshold", "tokens=%d source=config", w->pull_threshold);
		return;
	}
	struct calib c = { 0 };
	c.n_tokens = ew_info(w->engine)->max_model_len - 1;
	if (c.n_tokens > 4 * w->block_size)
		c.n_tokens = 4 * w->block_size;
	ew_call call = { .fn = calib_prefill, .done = calib_done, .arg = &c };
	ew_run(w->engine, &call);
	while (!c.done)
		kvf_loop_run_once(w->loop, 100);
	double t1 = calib_transfer(w, 1), t4 = calib_transfer(w, 4);
	if (c.rc || c.seconds <= 0 || t1 < 0 || t4 < 0) {
		w->pull_threshold = 8 * w->block_size;
		KVF_WARN("pd", "pull threshold not measured: using a default", "tokens=%d", w->pull_threshold);
		return;
	}
	double tok_s = c.n_tokens / c.seconds;
	double per_block = (t4 - t1) / 3 > 0 ? (t4 - t1) / 3 : t1 / 4;
	double fixed = t1 + 0.0005;
	double gain_per_block = w->block_size / tok_s - per_block;
	double blocks = gain_per_block > 0 ? fixed / gain_per_block : 1e9;
	w->pull_threshold = blocks > 1e6 ? INT32_MAX : ((int)blocks + 1) * w->block_size;
	KVF_INFO("pd", "pull threshold", "tokens=%d prefill_tok_s=%.0f pull_block_us=%.1f pull_fixed_us=%.1f "
		 "source=measured", w->pull_threshold, tok_s, per_block * 1e6, fixed * 1e6);
}

int pd_init(kvf_worker *w)
{
	int rc;
	const kvf_engine_info *info = ew_info(w->engine);
	void *base;
	size_t len;
	ew_kv_pool(w->engine, &base, &len);
	w->pool = base;
	w->pool_len = len;
	w->block_bytes = info->block_bytes;
	w->block_size = info->block_size;
	if ((rc = kvf_metrics_register(kvf_daemon_metrics(w->d), pd_metrics, PM_N, w->pm)))
		return rc;
	if ((rc = kvf_metric_labels(w->pm[PM_PULLS], (const char *[]){ "ok" }, &w->pull_outcome[0])) ||
	    (rc = kvf_metric_labels(w->pm[PM_PULLS], (const char *[]){ "fallback" }, &w->pull_outcome[1])))
		return rc;
	kvf_fabric_opts *fo = w->fopts;
	fo->listen = w->wcfg->fabric_listen;
	fo->metrics = kvf_daemon_metrics(w->d);
	if ((rc = kvf_fabric_open(fo, &w->fabric)))
		return kvf_errf(rc, "fabric: %s", kvf_errmsg());
	if ((rc = kvf_fabric_reg(w->fabric, w->pool, w->pool_len, KVF_FABRIC_MEM_HOST, &w->mr)))
		return kvf_errf(rc, "fabric: registering the KV pool: %s", kvf_errmsg());
	if ((rc = kvf_fabric_cq_new(w->fabric, 0, &w->cq)))
		return rc;
	if ((rc = kvf_loop_add_fd(w->loop, kvf_fabric_cq_fd(w->cq), KVF_EV_READ, on_cq, w)))
		return rc;
	kvf_http_client_opts ho = { 0 };
	if ((rc = kvf_http_client_new(w->loop, &ho, &w->hc)))
		return rc;
	size_t ncmds;
	const kvf_admin_cmd *fcmds = kvf_fabric_admin_cmds(&ncmds);
	if ((rc = kvf_daemon_register_admin(w->d, fcmds, ncmds, w->fabric)) ||
	    (rc = kvf_daemon_register_admin(w->d, pd_cmds, 1, w)))
		return rc;
	KVF_INFO("pd", "fabric ready", "listen=%s port=%u pool_bytes=%zu", fo->listen, kvf_fabric_port(w->fabric),
		 w->pool_len);
	if (w->role == KVF_WORKER_DECODE)
		calibrate(w);
	return 0;
}

void pd_fini(kvf_worker *w)
{
	/* Leases and pulls still open hold engine blocks: the engine goes away
	 * with them, so only the memory of the bookkeeping is freed here. */
	while (w->leases) {
		pd_lease *l = w->leases;
		lease_unlink(l);
		lease_free(l);
	}
	for (wreq *r = w->reqs; r; r = r->next) {
		if (r->pull) {
			pull_free(r->pull);
			r->pull = NULL;
		}
	}
	kvf_http_client_destroy(w->hc);
	w->hc = NULL;
	if (w->cq) {
		kvf_loop_del_fd(w->loop, kvf_fabric_cq_fd(w->cq));
		kvf_fabric_close(w->fabric); /* fails the requests in flight, then frees the cq */
	} else {
		kvf_fabric_close(w->fabric);
	}
	w->fabric = NULL;
	w->cq = NULL;
	w->mr = NULL;
}
