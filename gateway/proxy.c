/*
 * proxy.c: the life of one API request through the gateway.
 *
 *   admit (auth, tenant limits) -> parse the body -> tokenize (inline, or on
 *   a tokenizer thread for long prompts) -> tenant-salted block keys -> one
 *   index lookup -> filters + scorers + pick (+ prefill worker) -> forward the
 *   client's body to the decode worker -> stream the answer back as it
 *   arrives -> account (tenant tokens, breaker, metrics)
 *
 * Each step may complete later (tokenizer thread, cachedir round trip,
 * upstream I/O), so a request is a small state machine in struct gw_req.
 * The client can disappear at any step: gw_on_client_close() cancels what is
 * in flight (upstream request, lookup) and the request is released once no
 * thread holds it.
 *
 * Resilience: a connect failure, timeout, reset or 5xx before anything was
 * sent to the client counts against the worker's breaker and the request is
 * routed again without that worker (up to max_retries times); a 5xx is
 * passed through when no other worker fits. Once the answer has started the
 * gateway can only cut it: an SSE stream gets a final error event, other
 * bodies are closed short so the client sees the truncation.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_json.h"
#include "common/kvf_log.h"
#include "common/kvf_time.h"
#include "gateway/gw_core.h"

static void route(gw_req *r);
static void attempt_end(gw_req *r, int outcome);

/* ---- lifetime ---- */

static void req_free(gw_req *r)
{
	kvf_gateway *gw = r->gw;
	kvf_loop_timer_stop(gw->loop, &r->lookup_timer);
	if (r->prev)
		r->prev->next = r->next;
	else if (gw->reqs == r)
		gw->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	gw_prompt_free(&r->prompt);
	kvf_free(r->keys);
	kvf_free(r->holders);
	kvf_free(r);
}

/* The request's accounting is over; the client side must be finished. */
static void req_done(gw_req *r)
{
	kvf_gateway *gw = r->gw;
	if (r->finished)
		return;
	r->finished = 1;
	if (r->up) {
		kvf_http_creq_cancel(r->up);
		r->up = NULL;
		attempt_end(r, -1);
	}
	if (r->looking_up) {
		gw->index.ops->cancel(gw->index.ix, r->lookup_req);
		r->looking_up = 0;
	}
	kvf_loop_timer_stop(gw->loop, &r->lookup_timer);
	uint64_t now = kvf_loop_now_ms(gw->loop);
	if (r->tenant) {
		uint64_t ct = gw_usage_completion_tokens(&r->usage);
		if (ct) {
			gw_tenant_charge_tokens(r->tenant, now, ct, 1);
			if (gw->m[GM_COMPLETION_TOK])
				kvf_metric_add(gw->m[GM_COMPLETION_TOK], ct);
		}
		if (r->admitted)
			gw_tenant_release(r->tenant);
	}
	if (r->counted_inflight) {
		gw->inflight--;
		if (gw->m[GM_INFLIGHT])
			kvf_metric_set(gw->m[GM_INFLIGHT], (double)gw->inflight);
		if (gw->m[GM_E2E_S])
			kvf_metric_observe(gw->m[GM_E2E_S], (double)(kvf_now_ns() - r->t0_ns) / 1e9);
	}
	if (r->tokenizing)
		return; /* freed when the tokenizer thread hands it back */
	req_free(r);
}

/* Answers the client with an error (if nothing was sent yet) and ends. */
static void fail_client_param(gw_req *r, int status, const char *msg, const char *param, const char *code,
			      const char *const *hdrs)
{
	if (r->io.r && !r->began) {
		gw_reply_error_param(r->gw, r->io, status, msg, param, code, hdrs);
		r->io.r = NULL;
	}
	req_done(r);
}

static void fail_client(gw_req *r, int status, const char *msg, const char *code, const char *const *hdrs)
{
	fail_client_param(r, status, msg, NULL, code, hdrs);
}

void gw_on_client_close(void *ud)
{
	gw_req *r = ud;
	r->client_gone = 1;
	KVF_DEBUG("gateway", "client went away", "req=%" PRIu64 " began=%d", r->id, r->began);
	if (r->io.r) {
		r->io.ops->end(r->io.r);
		r->io.r = NULL;
	}
	req_done(r);
}

void gw_on_client_drain(void *ud)
{
	gw_req *r = ud;
	if (r->paused && r->up) {
		r->paused = 0;
		kvf_http_creq_pause(r->up, 0);
	}
}

/* ---- upstream attempts ---- */

/* The attempt on r->decode ended: outcome 1 ok, 0 failure (breaker), -1
 * neither (canceled). */
static void attempt_end(gw_req *r, int outcome)
{
	kvf_gateway *gw = r->gw;
	if (r->decode < 0)
		return;
	gw_worker *w = &gw->workers.w[r->decode];
	if (w->inflight)
		w->inflight--;
	if (r->prefill >= 0 && gw->workers.w[r->prefill].inflight)
		gw->workers.w[r->prefill].inflight--;
	if (outcome >= 0 && gw_breaker_on_result(&gw->workers, w, outcome, kvf_loop_now_ms(gw->loop))) {
		KVF_WARN("gateway", "circuit breaker opened", "worker=%s failures=%u trips=%u", w->id,
			 w->consec_failures, w->trips);
		if (gw->m[GM_BREAKER])
			kvf_metric_inc(gw->m[GM_BREAKER]);
	} else if (outcome < 0 && w->breaker == GW_BRK_HALF_OPEN && w->half_open_trials) {
		w->half_open_trials--;
	}
}

static void count_upstream_error(kvf_gateway *gw, const char *kind)
{
	if (!gw->m[GM_UPSTREAM_ERR])
		return;
	kvf_series *s;
	if (kvf_metric_labels(gw->m[GM_UPSTREAM_ERR], (const char *[]){ kind }, &s) == 0)
		kvf_series_add(s, 1);
}

/* Whether another worker would take the request after this one failed. */
static int can_retry(gw_req *r)
{
	kvf_gateway *gw = r->gw;
	if (r->attempt >= gw->cfg->max_retries || r->ntried + 1 >= GW_MAX_TRIES)
		return 0;
	int tried[GW_MAX_TRIES];
	memcpy(tried, r->tried, sizeof(tried));
	tried[r->ntried] = r->decode;
	gw_route_in in = { r->prompt.model, r->n_tokens, (uint32_t)r->nkeys, gw->block_size, -1,
			   tried, (size_t)r->ntried + 1, kvf_loop_now_ms(gw->loop) };
	uint64_t rng = gw->rng, rr = gw->rr;
	gw_route_decide(&gw->rcfg, &gw->workers, r->holders, r->nholders, &in, &rng, &rr, &gw->dec);
	return gw->dec.decode >= 0;
}

static void retry(gw_req *r)
{
	kvf_gateway *gw = r->gw;
	r->tried[r->ntried++] = r->decode;
	r->attempt++;
	r->decode = r->prefill = -1;
	gw->n_retries++;
	if (gw->m[GM_RETRIES])
		kvf_metric_inc(gw->m[GM_RETRIES]);
	route(r);
}

static void set_hdr(const char **h, int *k, const char *name, const char *value)
{
	h[(*k)++] = name;
	h[(*k)++] = value;
}

#define GW_PASS_HEADERS 32 /* worker headers passed through at most */

/* Whether a worker's response header goes on to the client: not hop-by-hop,
 * not framing (the gateway frames its own answer), not one the gateway
 * writes itself. */
static int pass_header(kvf_http_str name)
{
	static const char *const drop[] = {
		"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade",
		"proxy-connection", "proxy-authenticate", "date", "server", "content-type", "x-kvf-decode",
		"x-kvf-prefill", "x-kvf-route", "x-kvf-cached-tokens", "x-kvf-fetched-tokens", "x-kvf-computed-tokens",
		"x-request-id", NULL,
	};
	for (int i = 0; drop[i]; i++)
		if (kvf_http_str_ieq(name, drop[i]))
			return 0;
	return 1;
}

static void up_head(kvf_http_creq *cr, const kvf_http_msg *m, void *ud)
{
	gw_req *r = ud;
	kvf_gateway *gw = r->gw;
	gw_worker *w = &gw->workers.w[r->decode];
	r->up_status = m->status;
	if (m->status >= 500) {
		count_upstream_error(gw, "5xx");
		snprintf(r->last_err, sizeof(r->last_err), "worker %s answered %d", w->id, m->status);
		r->last_err_code = KVF_E_PEERDEAD;
		if (can_retry(r)) {
			KVF_INFO("gateway", "retrying after a 5xx", "req=%" PRIu64 " worker=%s status=%d", r->id, w->id,
				 m->status);
			attempt_end(r, 0);
			kvf_http_creq_cancel(cr);
			r->up = NULL;
			retry(r);
			return;
		}
	}
	if (!r->io.r) {
		kvf_http_creq_cancel(cr);
		r->up = NULL;
		attempt_end(r, -1);
		req_done(r);
		return;
	}
	/* Headers for the client: the worker's end-to-end headers, then the
	 * gateway's routing headers. */
	char ctype[128] = "", cached[24], fetched[24], computed[24], idbuf[24];
	kvf_http_str v;
	if (kvf_http_msg_header(m, "content-type", &v) == 0 && v.len < sizeof(ctype))
		snprintf(ctype, sizeof(ctype), "%.*s", (int)v.len, v.p);
	r->up_sse = !strncmp(ctype, "text/event-stream", 17);
#define UP_OR(name, buf, fallback)                                                          \
	do {                                                                                    \
		if (kvf_http_msg_header(m, name, &v) == 0 && v.len < sizeof(buf))               \
			snprintf(buf, sizeof(buf), "%.*s", (int)v.len, v.p);                   \
		else                                                                            \
			snprintf(buf, sizeof(buf), "%" PRIu64, (uint64_t)(fallback));           \
	} while (0)
	UP_OR("x-kvf-cached-tokens", cached, r->cached_tokens);
	UP_OR("x-kvf-fetched-tokens", fetched, 0);
	UP_OR("x-kvf-computed-tokens", computed, r->n_tokens - r->cached_tokens);
#undef UP_OR
	snprintf(idbuf, sizeof(idbuf), "%" PRIu64, r->id);
	kvf_buf hb = KVF_BUF_INIT;
	size_t off[2 * GW_PASS_HEADERS];
	int npass = 0;
	for (size_t i = 0; i < m->n_headers && npass < 2 * GW_PASS_HEADERS; i++) {
		const kvf_http_header *x = &m->headers[i];
		if (!pass_header(x->name))
			continue;
		off[npass++] = hb.len;
		kvf_buf_append(&hb, x->name.p, x->name.len);
		kvf_buf_putc(&hb, '\0');
		off[npass++] = hb.len;
		kvf_buf_append(&hb, x->value.p, x->value.len);
		kvf_buf_putc(&hb, '\0');
	}
	const char *h[2 * GW_PASS_HEADERS + 20];
	int k = 0;
	for (int i = 0; i < npass && !hb.oom; i++)
		h[k++] = hb.data + off[i];
	int nup = k;
	set_hdr(h, &k, "x-kvf-decode", w->id);
	if (r->prefill >= 0)
		set_hdr(h, &k, "x-kvf-prefill", gw->workers.w[r->prefill].id);
	set_hdr(h, &k, "x-kvf-route", r->reason);
	set_hdr(h, &k, "x-kvf-cached-tokens", cached);
	set_hdr(h, &k, "x-kvf-fetched-tokens", fetched);
	set_hdr(h, &k, "x-kvf-computed-tokens", computed);
	set_hdr(h, &k, "x-request-id", idbuf);
	h[k] = NULL;
	int64_t clen = -1;
	if (m->body_kind == KVF_HTTP_BODY_LENGTH)
		clen = (int64_t)m->content_length;
	else if (m->body_kind == KVF_HTTP_BODY_NONE)
		clen = 0;
	int rc = r->io.ops->begin(r->io.r, m->status, ctype[0] ? ctype : NULL, h, clen);
	if (rc == KVF_E_INVAL) /* something of the worker's we cannot repeat: ours only */
		r->io.ops->begin(r->io.r, m->status, NULL, h + nup, clen);
	kvf_buf_free(&hb);
	r->began = 1;
	gw_count_response(gw, m->status);
}

static void up_body(kvf_http_creq *cr, const char *data, size_t len, void *ud)
{
	gw_req *r = ud;
	kvf_gateway *gw = r->gw;
	if (!r->first_byte) {
		r->first_byte = 1;
		if (gw->m[GM_TTFB_S])
			kvf_metric_observe(gw->m[GM_TTFB_S], (double)(kvf_now_ns() - r->t0_ns) / 1e9);
	}
	gw_usage_feed(&r->usage, data, len);
	if (!r->io.r)
		return;
	r->io.ops->send(r->io.r, data, len);
	if (!r->paused && r->io.ops->pending(r->io.r) > gw->cfg->stream_high_water_bytes) {
		r->paused = 1;
		kvf_http_creq_pause(cr, 1);
	}
}

static void up_done(kvf_http_creq *cr, void *ud)
{
	gw_req *r = ud;
	r->up = NULL;
	attempt_end(r, r->up_status < 500);
	if (r->io.r) {
		r->io.ops->end(r->io.r);
		r->io.r = NULL;
	}
	req_done(r);
}

static const char *error_kind(const kvf_http_cerror *e)
{
	if (e->err == KVF_E_CONNREFUSED || e->stage == KVF_HTTP_CS_CONNECT)
		return "connect";
	if (e->err == KVF_E_TIMEOUT)
		return "timeout";
	if (e->err == KVF_E_CLOSED)
		return kvf_http_cstage_before_response(e->stage) ? "reset-before-answer" : "reset-during-answer";
	if (e->err == KVF_E_PARSE)
		return "bad-response";
	return "other";
}

static void upstream_failed(gw_req *r, int err, const char *kind, const char *msg)
{
	kvf_gateway *gw = r->gw;
	gw_worker *w = &gw->workers.w[r->decode];
	count_upstream_error(gw, kind);
	snprintf(r->last_err, sizeof(r->last_err), "worker %s: %s", w->id, msg);
	r->last_err_code = err;
	KVF_INFO("gateway", "upstream failed", "req=%" PRIu64 " worker=%s kind=%s began=%d error=\"%s\"", r->id, w->id,
		 kind, r->began, msg);
	if (!r->began) {
		if (can_retry(r)) {
			attempt_end(r, 0);
			retry(r);
			return;
		}
		attempt_end(r, 0);
		if (!r->io.r) {
			req_done(r);
			return;
		}
		int status = err == KVF_E_TIMEOUT ? 504 : 502;
		char m[256];
		snprintf(m, sizeof(m), "upstream failed after %d attempt%s: %s", r->attempt + 1, r->attempt ? "s" : "",
			 r->last_err);
		fail_client(r, status, m, err == KVF_E_TIMEOUT ? "upstream_timeout" : "upstream_error", NULL);
		return;
	}
	/* The answer had started: cut it visibly. */
	attempt_end(r, 0);
	if (r->io.r) {
		if (r->up_sse) {
			kvf_buf b = KVF_BUF_INIT;
			kvf_buf_puts(&b, "data: ");
			kvf_json_openai_error(&b, "the worker failed while answering", "server_error", NULL, "upstream_error");
			kvf_buf_puts(&b, "\n\n");
			if (!b.oom)
				r->io.ops->send(r->io.r, b.data, b.len);
			kvf_buf_free(&b);
		} else {
			r->io.ops->set_close(r->io.r);
		}
		r->io.ops->end(r->io.r);
		r->io.r = NULL;
	}
	req_done(r);
}

static void up_error(kvf_http_creq *cr, const kvf_http_cerror *e, void *ud)
{
	gw_req *r = ud;
	r->up = NULL;
	upstream_failed(r, e->err, error_kind(e), e->msg);
}

static const kvf_http_creq_cbs up_cbs = { up_head, up_body, up_done, up_error };

static void send_upstream(gw_req *r)
{
	kvf_gateway *gw = r->gw;
	gw_worker *w = &gw->workers.w[r->decode];
	/* The workers salt their block keys with x-kvf-tenant: it carries the
	 * tenant's salt (its name unless the tenants file gives one); the
	 * anonymous tenant has none and sends none. */
	char salt[GW_SALT_MAX + 1], idbuf[24];
	snprintf(salt, sizeof(salt), "%.*s", (int)r->tenant->salt_len, (const char *)r->tenant->salt);
	snprintf(idbuf, sizeof(idbuf), "%" PRIu64, r->id);
	const char *h[24];
	int k = 0;
	set_hdr(h, &k, "Content-Type", "application/json");
	if (salt[0])
		set_hdr(h, &k, "x-kvf-tenant", salt);
	if (r->prefill >= 0)
		set_hdr(h, &k, "x-kvf-prefill", gw->workers.w[r->prefill].http);
	char sess[sizeof(r->session)];
	if (r->session_len) {
		snprintf(sess, sizeof(sess), "%.*s", (int)r->session_len, r->session);
		set_hdr(h, &k, "x-kvf-session", sess);
	}
	set_hdr(h, &k, "x-request-id", idbuf);
	h[k] = NULL;
	size_t blen;
	const char *body = r->io.ops->body(r->io.r, &blen);
	kvf_http_creq_opts o = {
		.method = "POST",
		.target = r->endpoint == GW_EP_CHAT ? "/v1/chat/completions" : "/v1/completions",
		.headers = h,
		.body = body,
		.body_len = blen,
		.first_byte_timeout_ms = (uint32_t)gw->cfg->upstream_first_byte_timeout_ms,
		.read_timeout_ms = (uint32_t)gw->cfg->upstream_read_timeout_ms,
	};
	w->inflight++;
	gw_breaker_on_send(w);
	if (r->prefill >= 0)
		gw->workers.w[r->prefill].inflight++;
	r->up_status = 0;
	r->paused = 0;
	int rc = kvf_http_client_request(gw->up, w->http, &o, &up_cbs, r, &r->up);
	if (rc) {
		r->up = NULL;
		upstream_failed(r, rc, rc == KVF_E_OVERLOAD ? "queue-full" : "other", kvf_errmsg());
	}
}

/* ---- routing ---- */

static void route(gw_req *r)
{
	kvf_gateway *gw = r->gw;
	uint64_t t0 = kvf_now_ns();
	uint64_t now = kvf_loop_now_ms(gw->loop);
	int sess = gw_sessions_get(&gw->sessions, &gw->workers, r->session, r->session_len, now);
	gw_route_in in = { r->prompt.model, r->n_tokens, (uint32_t)r->nkeys, gw->block_size, sess,
			   r->tried, (size_t)r->ntried, now };
	gw_decision *d = &gw->dec;
	gw_route_decide(&gw->rcfg, &gw->workers, r->holders, r->nholders, &in, &gw->rng, &gw->rr, d);
	r->t_score_ns += kvf_now_ns() - t0;
	if (d->decode < 0) {
		if (r->attempt > 0) {
			char m[256];
			snprintf(m, sizeof(m), "upstream failed after %d attempt%s and no other worker fits: %s",
				 r->attempt, r->attempt > 1 ? "s" : "", r->last_err);
			int t = r->last_err_code == KVF_E_TIMEOUT;
			fail_client(r, t ? 504 : 502, m, t ? "upstream_timeout" : "upstream_error", NULL);
			return;
		}
		int counts[GW_F_TRIED + 1] = { 0 };
		for (size_t i = 0; i < d->ncand; i++)
			counts[d->cand[i].filter]++;
		char m[256];
		int n = snprintf(m, sizeof(m), "no worker available for model '%s' (%zu known", r->prompt.model,
				 d->ncand);
		for (int f = 1; f <= GW_F_TRIED && n < (int)sizeof(m) - 40; f++)
			if (counts[f])
				n += snprintf(m + n, sizeof(m) - (size_t)n, ", %d %s", counts[f], gw_filter_name(f));
		snprintf(m + n, sizeof(m) - (size_t)n, ")");
		gw_count_rejected(gw, "no_worker");
		fail_client(r, 503, m, "no_worker_available", (const char *const[]){ "Retry-After", "1", NULL });
		return;
	}
	r->decode = d->decode;
	r->prefill = d->prefill;
	r->cached_tokens = d->cached_tokens;
	if (r->attempt)
		snprintf(r->reason, sizeof(r->reason), "%s;retry=%d", d->reason, r->attempt);
	else
		snprintf(r->reason, sizeof(r->reason), "%s", d->reason);
	gw_record_route(gw, r, d);
	if (r->attempt == 0) {
		gw->n_routed++;
		if (gw->m[GM_ROUTING_S])
			kvf_metric_observe(gw->m[GM_ROUTING_S],
					   (double)(r->t_tok_ns + r->t_lookup_ns + r->t_score_ns) / 1e9);
		if (gw->m[GM_CACHED_TOK])
			kvf_metric_add(gw->m[GM_CACHED_TOK], d->cached_tokens);
		if (d->prefill >= 0) {
			gw->n_pd++;
			if (gw->m[GM_PD])
				kvf_metric_inc(gw->m[GM_PD]);
		}
	}
	if (r->nkeys) {
		gw->index.ops->routed(gw->index.ix, r->decode, r->keys, r->nkeys);
		if (r->prefill >= 0)
			gw->index.ops->routed(gw->index.ix, r->prefill, r->keys, r->nkeys);
	}
	if (r->session_len)
		gw_sessions_put(&gw->sessions, &gw->workers, r->session, r->session_len, r->decode, now);
	send_upstream(r);
}

static void lookup_done(void *ud, int status, const gw_holder *h, size_t n)
{
	gw_req *r = ud;
	kvf_gateway *gw = r->gw;
	if (!r->looking_up)
		return;
	r->looking_up = 0;
	kvf_loop_timer_stop(gw->loop, &r->lookup_timer);
	r->t_lookup_ns = kvf_now_ns() - r->t_lookup_start_ns;
	if (gw->m[GM_LOOKUP_S])
		kvf_metric_observe(gw->m[GM_LOOKUP_S], (double)r->t_lookup_ns / 1e9);
	if (status == 0 && n) {
		r->holders = kvf_malloc(n * sizeof(*h));
		if (r->holders) {
			memcpy(r->holders, h, n * sizeof(*h));
			r->nholders = n;
		}
	} else if (status) {
		KVF_LOG_RL(KVF_LOG_WARN, 5, 10000, "gateway", "index lookup failed: routing by load", "error=\"%s\"",
			   kvf_strerror(status));
	}
	route(r);
}

static void lookup_timeout(kvf_loop *loop, kvf_timer *t, void *ud)
{
	gw_req *r = ud;
	kvf_gateway *gw = r->gw;
	if (!r->looking_up)
		return;
	gw->index.ops->cancel(gw->index.ix, r->lookup_req);
	KVF_LOG_RL(KVF_LOG_WARN, 5, 10000, "gateway", "index lookup timed out: routing by load", "timeout_ms=%llu",
		   (unsigned long long)gw->cfg->lookup_timeout_ms);
	r->looking_up = 1; /* lookup_done() clears it */
	lookup_done(r, KVF_E_TIMEOUT, NULL, 0);
}

static void start_lookup(gw_req *r)
{
	kvf_gateway *gw = r->gw;
	if (!r->nkeys) {
		route(r);
		return;
	}
	r->looking_up = 1;
	r->t_lookup_start_ns = kvf_now_ns();
	kvf_loop_timer_start(gw->loop, &r->lookup_timer, gw->cfg->lookup_timeout_ms, 0, lookup_timeout, r);
	/* The callback may run before lookup returns: do not touch r after. */
	int rc = gw->index.ops->lookup(gw->index.ix, r->prompt.model, r->keys, r->nkeys, lookup_done, r,
				       &r->lookup_req);
	if (rc)
		lookup_done(r, rc, NULL, 0);
}

/* ---- tokens and keys ---- */

static void tokenized(gw_req *r, int rc)
{
	kvf_gateway *gw = r->gw;
	if (rc) {
		gw_count_rejected(gw, "bad_request");
		fail_client_param(r, 400, r->prompt.err, r->prompt.err_param, NULL, NULL);
		return;
	}
	if (gw->m[GM_TOKENIZE_S])
		kvf_metric_observe(gw->m[GM_TOKENIZE_S], (double)r->t_tok_ns / 1e9);
	r->n_tokens = (uint32_t)r->prompt.ids.n;
	gw_tenant_charge_tokens(r->tenant, kvf_loop_now_ms(gw->loop), r->n_tokens, 0);
	if (gw->m[GM_PROMPT_TOK])
		kvf_metric_add(gw->m[GM_PROMPT_TOK], r->n_tokens);
	size_t nb = gw->block_size ? r->n_tokens / gw->block_size : 0;
	if (nb) {
		r->keys = kvf_malloc(nb * sizeof(*r->keys));
		if (r->keys) {
			r->nkeys = gw_block_keys(gw->bk, r->prompt.model, r->tenant, r->prompt.ids.ids, r->prompt.ids.n,
						 gw->block_size, r->keys, nb);
		}
	}
	start_lookup(r);
}

static void tok_job_done(gw_tokjob *job, void *ud)
{
	gw_req *r = ud;
	kvf_gateway *gw = r->gw;
	r->tokenizing = 0;
	gw->tok_pending--;
	r->t_tok_ns = job->ns;
	if (r->finished) {
		req_free(r); /* the client left while we tokenized */
		return;
	}
	tokenized(r, job->rc);
}

static void start_tokenize(gw_req *r)
{
	kvf_gateway *gw = r->gw;
	if (!gw->tok || strcmp(r->prompt.model, gw->model)) {
		/* No tokenizer for this model: route by load, estimate the size. */
		size_t blen;
		r->io.ops->body(r->io.r, &blen);
		r->n_tokens = r->prompt.have_ids ? (uint32_t)r->prompt.ids.n : (uint32_t)(blen / 4);
		gw_tenant_charge_tokens(r->tenant, kvf_loop_now_ms(gw->loop), r->n_tokens, 0);
		start_lookup(r);
		return;
	}
	/* tenants never share the tokenizer's segment cache (no timing probe) */
	r->prompt.cache_ns = r->tenant ? kvf_tokenizer_cache_ns(r->tenant->salt, r->tenant->salt_len) : 0;
	if (r->prompt.have_ids || gw_prompt_work_bytes(&r->prompt) <= gw->cfg->tokenize_inline_bytes || !gw->tokpool) {
		uint64_t t0 = kvf_now_ns();
		int rc = gw_prompt_tokenize(&r->prompt, gw->tok);
		r->t_tok_ns = kvf_now_ns() - t0;
		tokenized(r, rc);
		return;
	}
	r->tokenizing = 1;
	gw->tok_pending++;
	r->job.prompt = &r->prompt;
	r->job.tok = gw->tok;
	r->job.done = tok_job_done;
	r->job.ud = r;
	gw_tokpool_submit(gw->tokpool, &r->job);
}

/* ---- entry ---- */

void gw_proxy_api(kvf_gateway *gw, gw_io_req io, int endpoint)
{
	const kvf_http_msg *m = io.ops->msg(io.r);
	if (gw->draining || gw->destroying) {
		gw_count_rejected(gw, "draining");
		io.ops->set_close(io.r);
		gw_reply_error(gw, io, 503, "the gateway is shutting down", "draining",
			       (const char *const[]){ "Retry-After", "1", NULL });
		return;
	}
	/* Tenant. */
	gw_tenant *tn = NULL;
	const char *key;
	size_t klen;
	int have_key = gw_auth_key(m, &key, &klen) == 0;
	if (have_key)
		tn = gw_tenants_by_key(gw->tenants, key, klen);
	if (!tn) {
		if (gw->cfg->auth) {
			gw_count_rejected(gw, "auth");
			gw_reply_error(gw, io, 401,
				       have_key ? "Incorrect API key provided" : "Missing API key: send Authorization: Bearer KEY",
				       "invalid_api_key", (const char *const[]){ "WWW-Authenticate", "Bearer", NULL });
			return;
		}
		tn = gw_tenants_anonymous(gw->tenants);
		if (!tn) {
			gw_reply_error(gw, io, 503, "out of memory", NULL, NULL);
			return;
		}
	}
	uint64_t retry_ms = 0;
	int adm = gw_tenant_admit(tn, kvf_loop_now_ms(gw->loop), &retry_ms);
	if (adm != GW_ADMIT_OK) {
		static const char *const what[] = { "", "requests per second", "tokens per second", "concurrent requests" };
		static const char *const reason[] = { "", "rate", "tokens", "concurrency" };
		char msg[256], ra[24];
		uint64_t secs = (retry_ms + 999) / 1000;
		if (!secs)
			secs = 1;
		snprintf(ra, sizeof(ra), "%" PRIu64, secs);
		snprintf(msg, sizeof(msg), "Rate limit reached for %s of tenant '%s'; retry after %" PRIu64 " s", what[adm],
			 tn->name, secs);
		gw_count_rejected(gw, reason[adm]);
		gw_reply_error(gw, io, 429, msg, "rate_limit_exceeded", (const char *const[]){ "Retry-After", ra, NULL });
		return;
	}
	gw_req *r = kvf_calloc(1, sizeof(*r));
	if (!r) {
		gw_tenant_release(tn);
		gw_reply_error(gw, io, 503, "out of memory", NULL, NULL);
		return;
	}
	r->gw = gw;
	r->io = io;
	r->id = ++gw->next_id;
	r->endpoint = endpoint;
	r->tenant = tn;
	r->admitted = 1;
	r->decode = r->prefill = -1;
	r->t0_ns = kvf_now_ns();
	r->next = gw->reqs;
	if (gw->reqs)
		gw->reqs->prev = r;
	gw->reqs = r;
	r->counted_inflight = 1;
	gw->inflight++;
	gw->n_requests++;
	if (gw->m[GM_INFLIGHT])
		kvf_metric_set(gw->m[GM_INFLIGHT], (double)gw->inflight);
	if (gw->m[GM_TENANT_REQ]) {
		kvf_series *s;
		if (kvf_metric_labels(gw->m[GM_TENANT_REQ], (const char *[]){ tn->name }, &s) == 0)
			kvf_series_add(s, 1);
	}
	io.ops->watch(io.r, r);

	size_t blen;
	const char *body = io.ops->body(io.r, &blen);
	if (gw_prompt_parse(&r->prompt, endpoint, body, blen)) {
		gw_count_rejected(gw, "bad_request");
		fail_client_param(r, 400, r->prompt.err, r->prompt.err_param, NULL, NULL);
		return;
	}
	if (!gw_model_known(gw, r->prompt.model)) {
		char msg[256];
		snprintf(msg, sizeof(msg), "The model '%.128s' does not exist", r->prompt.model);
		gw_count_rejected(gw, "model");
		fail_client(r, 404, msg, "model_not_found", NULL);
		return;
	}
	kvf_http_str sv;
	if (kvf_http_msg_header(m, "x-kvf-session", &sv) == 0 && sv.len && sv.len < sizeof(r->session)) {
		memcpy(r->session, sv.p, sv.len);
		r->session_len = sv.len;
	}
	start_tokenize(r);
}

void gw_proxy_abort_all(kvf_gateway *gw)
{
	while (gw->reqs) {
		gw_req *r = gw->reqs;
		if (r->finished) {
			/* only a tokenizer job holds it; unlink and let the job free it */
			gw->reqs = r->next;
			if (gw->reqs)
				gw->reqs->prev = NULL;
			r->prev = r->next = NULL;
			continue;
		}
		if (r->io.r) {
			if (r->began) {
				r->io.ops->set_close(r->io.r);
				r->io.ops->end(r->io.r);
			} else {
				gw_reply_error(gw, r->io, 503, "the gateway is shutting down", "draining", NULL);
			}
			r->io.r = NULL;
		}
		req_done(r);
	}
}
