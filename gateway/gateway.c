/*
 * gateway.c: the gateway object: set-up from the config (tokenizer, tenants,
 * static workers, index, upstream client, tokenizer threads), request
 * dispatch by path, /v1/models, error answers, the routing history behind
 * `show routes`, the admin commands and the metrics table.
 * The request path itself is proxy.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_json.h"
#include "common/kvf_log.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"
#include "gateway/gw_core.h"

static const kvf_metric_def gw_metric_defs[GM_N] = {
	[GM_REQUESTS] = { "kvf_gateway_responses_total", KVF_METRIC_COUNTER, "API responses by HTTP status", "code", NULL, 0 },
	[GM_ROUTED] = { "kvf_gateway_routed_total", KVF_METRIC_COUNTER,
			"Routing decisions by reason (prefix, session, load, only, tie, round-robin, random)", "reason", NULL, 0 },
	[GM_PD] = { "kvf_gateway_pd_requests_total", KVF_METRIC_COUNTER, "Requests sent with a prefill worker (x-kvf-prefill)", NULL, NULL, 0 },
	[GM_RETRIES] = { "kvf_gateway_retries_total", KVF_METRIC_COUNTER, "Requests routed again after a worker failed", NULL, NULL, 0 },
	[GM_UPSTREAM_ERR] = { "kvf_gateway_upstream_errors_total", KVF_METRIC_COUNTER, "Worker failures by kind", "kind", NULL, 0 },
	[GM_BREAKER] = { "kvf_gateway_breaker_trips_total", KVF_METRIC_COUNTER, "Circuit breakers opened", NULL, NULL, 0 },
	[GM_REJECTED] = { "kvf_gateway_rejected_total", KVF_METRIC_COUNTER,
			  "Requests answered by the gateway itself, by reason", "reason", NULL, 0 },
	[GM_INFLIGHT] = { "kvf_gateway_requests_in_flight", KVF_METRIC_GAUGE, "API requests being served", NULL, NULL, 0 },
	[GM_ROUTING_S] = { "kvf_gateway_routing_seconds", KVF_METRIC_HISTOGRAM,
			   "Routing decision cost: tokenize + block keys + index lookup + scoring", NULL, kvf_buckets_fast_s,
			   KVF_BUCKETS_FAST_S_N },
	[GM_TOKENIZE_S] = { "kvf_gateway_tokenize_seconds", KVF_METRIC_HISTOGRAM, "Prompt tokenization time", NULL,
			    kvf_buckets_fast_s, KVF_BUCKETS_FAST_S_N },
	[GM_LOOKUP_S] = { "kvf_gateway_lookup_seconds", KVF_METRIC_HISTOGRAM, "Index lookup time", NULL, kvf_buckets_fast_s,
			  KVF_BUCKETS_FAST_S_N },
	[GM_TTFB_S] = { "kvf_gateway_time_to_first_byte_seconds", KVF_METRIC_HISTOGRAM,
			"Request arrival to the first body byte from the worker (TTFT for streams)", NULL, kvf_buckets_ttft_s,
			KVF_BUCKETS_TTFT_S_N },
	[GM_E2E_S] = { "kvf_gateway_request_duration_seconds", KVF_METRIC_HISTOGRAM, "API request duration", NULL,
		       kvf_buckets_e2e_s, KVF_BUCKETS_E2E_S_N },
	[GM_PROMPT_TOK] = { "kvf_gateway_prompt_tokens_total", KVF_METRIC_COUNTER, "Prompt tokens routed", NULL, NULL, 0 },
	[GM_CACHED_TOK] = { "kvf_gateway_predicted_cached_tokens_total", KVF_METRIC_COUNTER,
			    "Prompt tokens the index said the chosen worker holds", NULL, NULL, 0 },
	[GM_COMPLETION_TOK] = { "kvf_gateway_completion_tokens_total", KVF_METRIC_COUNTER,
				"Completion tokens seen in answers (usage, or SSE events)", NULL, NULL, 0 },
	[GM_WORKERS] = { "kvf_gateway_workers", KVF_METRIC_GAUGE, "Known workers by state", "state", NULL, 0 },
	[GM_TENANT_REQ] = { "kvf_gateway_tenant_requests_total", KVF_METRIC_COUNTER, "Admitted API requests by tenant",
			    "tenant", NULL, 0 },
	[GM_TOKSEG] = { "kvf_gateway_tokenizer_segment_cache_total", KVF_METRIC_COUNTER,
			"Prompt segments of 1 KiB or more between special tokens, reused (hit) or tokenized (miss)",
			"result", NULL, 0 },
};

/* ---- helpers used by proxy.c ---- */

void gw_count_response(kvf_gateway *gw, int status)
{
	if (!gw->m[GM_REQUESTS])
		return;
	char code[8];
	snprintf(code, sizeof(code), "%d", status);
	kvf_series *s;
	if (kvf_metric_labels(gw->m[GM_REQUESTS], (const char *[]){ code }, &s) == 0)
		kvf_series_add(s, 1);
}

void gw_count_rejected(kvf_gateway *gw, const char *reason)
{
	if (!gw->m[GM_REJECTED])
		return;
	kvf_series *s;
	if (kvf_metric_labels(gw->m[GM_REJECTED], (const char *[]){ reason }, &s) == 0)
		kvf_series_add(s, 1);
}

void gw_reply_error(kvf_gateway *gw, gw_io_req io, int status, const char *message, const char *code,
		    const char *const *extra_headers)
{
	gw_reply_error_param(gw, io, status, message, NULL, code, extra_headers);
}

void gw_reply_error_param(kvf_gateway *gw, gw_io_req io, int status, const char *message, const char *param,
			  const char *code, const char *const *extra_headers)
{
	kvf_buf b = KVF_BUF_INIT;
	kvf_json_openai_error(&b, message, kvf_http_error_type(status), param && param[0] ? param : NULL, code);
	kvf_buf_putc(&b, '\n');
	if (b.oom)
		io.ops->respond(io.r, 503, "text/plain", NULL, "out of memory\n", 14);
	else
		io.ops->respond(io.r, status, "application/json", extra_headers, b.data, b.len);
	kvf_buf_free(&b);
	gw_count_response(gw, status);
}

int gw_model_known(kvf_gateway *gw, const char *model)
{
	if (gw->model[0] && !strcmp(gw->model, model))
		return 1;
	for (size_t i = 0; i < gw->workers.n; i++) {
		const gw_worker *w = &gw->workers.w[i];
		if (w->used && (!w->model[0] || !strcmp(w->model, model)))
			return 1;
	}
	return 0;
}

void gw_record_route(kvf_gateway *gw, gw_req *r, const gw_decision *d)
{
	if (!gw->routes_cap)
		return;
	struct gw_route_rec *rec = &gw->routes[gw->routes_next];
	gw->routes_next = (gw->routes_next + 1) % gw->routes_cap;
	if (gw->routes_n < gw->routes_cap)
		gw->routes_n++;
	memset(rec, 0, sizeof(*rec));
	rec->id = r->id;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	rec->wall_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	snprintf(rec->tenant, sizeof(rec->tenant), "%s", r->tenant->name);
	snprintf(rec->model, sizeof(rec->model), "%s", r->prompt.model);
	rec->n_tokens = r->n_tokens;
	rec->n_blocks = (uint32_t)r->nkeys;
	rec->cached_tokens = d->cached_tokens;
	rec->attempt = r->attempt;
	snprintf(rec->decode, sizeof(rec->decode), "%s", gw->workers.w[d->decode].id);
	snprintf(rec->prefill, sizeof(rec->prefill), "%s", d->prefill >= 0 ? gw->workers.w[d->prefill].id : "-");
	snprintf(rec->reason, sizeof(rec->reason), "%s", r->reason);
	rec->tokenize_us = (uint32_t)(r->t_tok_ns / 1000);
	rec->lookup_us = (uint32_t)(r->t_lookup_ns / 1000);
	rec->score_us = (uint32_t)(r->t_score_ns / 1000);
	/* The chosen worker first, then the others in table order. */
	size_t k = 0;
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < d->ncand && k < GW_REC_CANDS; i++) {
			const gw_cand *c = &d->cand[i];
			if ((pass == 0) != (c->widx == d->decode))
				continue;
			snprintf(rec->cand[k].id, sizeof(rec->cand[k].id), "%s", gw->workers.w[c->widx].id);
			rec->cand[k].filter = c->filter;
			rec->cand[k].hit = c->any;
			rec->cand[k].s_prefix = c->s_prefix;
			rec->cand[k].s_queue = c->s_queue;
			rec->cand[k].s_kv = c->s_kv;
			rec->cand[k].s_session = c->s_session;
			rec->cand[k].total = c->total;
			k++;
		}
	rec->ncand = k;
	if (gw->m[GM_ROUTED] && r->attempt == 0) {
		char reason[32];
		size_t n = strcspn(d->reason, ";");
		snprintf(reason, sizeof(reason), "%.*s", (int)n, d->reason);
		kvf_series *s;
		if (kvf_metric_labels(gw->m[GM_ROUTED], (const char *[]){ reason }, &s) == 0)
			kvf_series_add(s, 1);
	}
	KVF_DEBUG("gateway", "routed", "req=%" PRIu64 " tenant=%s tokens=%u blocks=%zu decode=%s prefill=%s reason=%s",
		  r->id, r->tenant->name, r->n_tokens, r->nkeys, rec->decode, rec->prefill, r->reason);
}

/* ---- /v1/models ---- */

static void handle_models(kvf_gateway *gw, gw_io_req io)
{
	const kvf_http_msg *m = io.ops->msg(io.r);
	if (gw->cfg->auth) {
		const char *key;
		size_t klen;
		if (gw_auth_key(m, &key, &klen) || !gw_tenants_by_key(gw->tenants, key, klen)) {
			gw_count_rejected(gw, "auth");
			gw_reply_error(gw, io, 401, "Incorrect API key provided", "invalid_api_key",
				       (const char *const[]){ "WWW-Authenticate", "Bearer", NULL });
			return;
		}
	}
	json_t *data = json_array();
	json_t *seen = json_object();
	uint64_t created = kvf_wall_s();
	for (size_t i = 0; i <= gw->workers.n; i++) {
		const char *name = NULL;
		if (i == gw->workers.n)
			name = gw->model[0] ? gw->model : NULL;
		else if (gw->workers.w[i].used && gw->workers.w[i].state != GW_W_DISCONNECTED)
			name = gw->workers.w[i].model[0] ? gw->workers.w[i].model : gw->model;
		if (!name || !name[0] || json_object_get(seen, name))
			continue;
		json_object_set_new(seen, name, json_true());
		json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s}", "id", name, "object", "model", "created",
						      (json_int_t)created, "owned_by", "kvfabric"));
	}
	json_t *root = json_pack("{s:s,s:o}", "object", "list", "data", data);
	kvf_buf b = KVF_BUF_INIT;
	kvf_json_dump(root, &b);
	kvf_buf_putc(&b, '\n');
	io.ops->respond(io.r, 200, "application/json", NULL, b.data, b.len);
	gw_count_response(gw, 200);
	kvf_buf_free(&b);
	json_decref(root);
	json_decref(seen);
}

void gw_handle(kvf_gateway *gw, gw_io_req io)
{
	const kvf_http_msg *m = io.ops->msg(io.r);
	int ep = 0;
	if (kvf_http_str_eq(m->path, "/v1/completions"))
		ep = GW_EP_COMPLETIONS;
	else if (kvf_http_str_eq(m->path, "/v1/chat/completions"))
		ep = GW_EP_CHAT;
	if (ep) {
		if (m->method != KVF_HTTP_POST) {
			gw_reply_error(gw, io, 405, "use POST", "method_not_allowed", (const char *const[]){ "Allow", "POST", NULL });
			return;
		}
		gw_proxy_api(gw, io, ep);
		return;
	}
	if (kvf_http_str_eq(m->path, "/v1/models")) {
		if (m->method != KVF_HTTP_GET && m->method != KVF_HTTP_HEAD) {
			gw_reply_error(gw, io, 405, "use GET", "method_not_allowed", (const char *const[]){ "Allow", "GET", NULL });
			return;
		}
		handle_models(gw, io);
		return;
	}
	gw_reply_error(gw, io, 404, "no such endpoint: the gateway serves /v1/completions, /v1/chat/completions, /v1/models",
		       "not_found", NULL);
}

/* ---- admin ---- */

static int cmd_show_routes(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_gateway *gw = ud;
	size_t want = 10;
	if (argc > 1)
		return kvf_admin_error(out, "usage: show routes [N] [json]");
	if (argc == 1) {
		char *end;
		long v = strtol(argv[0], &end, 10);
		if (*end || v < 1)
			return kvf_admin_error(out, "show routes: N must be a positive number");
		want = (size_t)v;
	}
	if (want > gw->routes_n)
		want = gw->routes_n;
	int json = kvf_admin_want_json(out);
	kvf_buf *b = kvf_admin_buf(out);
	if (json)
		kvf_buf_putc(b, '[');
	for (size_t k = 0; k < want; k++) {
		size_t idx = (gw->routes_next + gw->routes_cap - 1 - k) % gw->routes_cap;
		const struct gw_route_rec *rec = &gw->routes[idx];
		if (json) {
			kvf_buf_printf(b, "%s{\"id\":%" PRIu64 ",\"time_ms\":%" PRIu64 ",\"tenant\":", k ? "," : "", rec->id,
				       rec->wall_ms);
			kvf_buf_put_json_str(b, rec->tenant, strlen(rec->tenant));
			kvf_buf_puts(b, ",\"model\":");
			kvf_buf_put_json_str(b, rec->model, strlen(rec->model));
			kvf_buf_printf(b, ",\"tokens\":%u,\"blocks\":%u,\"cached_tokens\":%u,\"attempt\":%d,\"decode\":", rec->n_tokens,
				       rec->n_blocks, rec->cached_tokens, rec->attempt);
			kvf_buf_put_json_str(b, rec->decode, strlen(rec->decode));
			kvf_buf_puts(b, ",\"prefill\":");
			kvf_buf_put_json_str(b, rec->prefill, strlen(rec->prefill));
			kvf_buf_puts(b, ",\"reason\":");
			kvf_buf_put_json_str(b, rec->reason, strlen(rec->reason));
			kvf_buf_printf(b, ",\"tokenize_us\":%u,\"lookup_us\":%u,\"score_us\":%u,\"candidates\":[", rec->tokenize_us,
				       rec->lookup_us, rec->score_us);
			for (size_t i = 0; i < rec->ncand; i++) {
				kvf_buf_printf(b, "%s{\"worker\":", i ? "," : "");
				kvf_buf_put_json_str(b, rec->cand[i].id, strlen(rec->cand[i].id));
				kvf_buf_printf(b, ",\"filter\":\"%s\",\"hit_blocks\":%u,\"prefix\":%.4f,\"queue\":%.4f,\"kv\":%.4f,"
						  "\"session\":%.4f,\"total\":%.4f}",
					       gw_filter_name(rec->cand[i].filter), rec->cand[i].hit, rec->cand[i].s_prefix,
					       rec->cand[i].s_queue, rec->cand[i].s_kv, rec->cand[i].s_session, rec->cand[i].total);
			}
			kvf_buf_puts(b, "]}");
			continue;
		}
		kvf_buf_printf(b, "#%" PRIu64 " tenant=%s model=%s tokens=%u blocks=%u decode=%s prefill=%s reason=%s "
				  "cached_tokens=%u cost_us=tokenize:%u+lookup:%u+score:%u\n",
			       rec->id, rec->tenant, rec->model, rec->n_tokens, rec->n_blocks, rec->decode, rec->prefill,
			       rec->reason, rec->cached_tokens, rec->tokenize_us, rec->lookup_us, rec->score_us);
		for (size_t i = 0; i < rec->ncand; i++) {
			if (rec->cand[i].filter)
				kvf_buf_printf(b, "  %-24s filtered=%s\n", rec->cand[i].id, gw_filter_name(rec->cand[i].filter));
			else
				kvf_buf_printf(b, "  %-24s hit=%u prefix=%.3f queue=%.3f kv=%.3f session=%.3f total=%.3f\n",
					       rec->cand[i].id, rec->cand[i].hit, rec->cand[i].s_prefix, rec->cand[i].s_queue,
					       rec->cand[i].s_kv, rec->cand[i].s_session, rec->cand[i].total);
		}
	}
	if (json)
		kvf_buf_puts(b, "]\n");
	else if (!want)
		kvf_buf_puts(b, "no routing decisions yet\n");
	return 0;
}

static int cmd_show_workers(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_gateway *gw = ud;
	int json = kvf_admin_want_json(out);
	kvf_buf *b = kvf_admin_buf(out);
	uint64_t now = kvf_now_ms();
	if (json)
		kvf_buf_putc(b, '[');
	int k = 0;
	for (size_t i = 0; i < gw->workers.n; i++) {
		const gw_worker *w = &gw->workers.w[i];
		if (!w->used)
			continue;
		const char *src = w->source == GW_SRC_STATIC ? "static" : "cachedir";
		if (json) {
			kvf_buf_printf(b, "%s{\"id\":", k++ ? "," : "");
			kvf_buf_put_json_str(b, w->id, strlen(w->id));
			kvf_buf_puts(b, ",\"http\":");
			kvf_buf_put_json_str(b, w->http, strlen(w->http));
			kvf_buf_puts(b, ",\"model\":");
			kvf_buf_put_json_str(b, w->model, strlen(w->model));
			kvf_buf_printf(b, ",\"role\":\"%s\",\"state\":\"%s\",\"source\":\"%s\",\"inflight\":%u,\"waiting\":%u,"
					  "\"running\":%u,\"kv_used\":%" PRIu64 ",\"kv_total\":%" PRIu64 ",\"sent\":%" PRIu64
					  ",\"ok\":%" PRIu64 ",\"failures\":%" PRIu64 ",\"breaker\":\"%s\",\"trips\":%u}",
				       gw_role_name(w->role), gw_wstate_name(w->state), src, w->inflight, w->waiting, w->running,
				       w->kv_used, w->kv_total, w->sent, w->ok, w->failures, gw_breaker_name(w->breaker), w->trips);
			continue;
		}
		kvf_buf_printf(b, "%-24s http=%s model=%s role=%s state=%s source=%s inflight=%u", w->id, w->http,
			       w->model[0] ? w->model : "*", gw_role_name(w->role), gw_wstate_name(w->state), src, w->inflight);
		if (w->has_load)
			kvf_buf_printf(b, " waiting=%u running=%u kv=%" PRIu64 "/%" PRIu64, w->waiting, w->running, w->kv_used,
				       w->kv_total);
		kvf_buf_printf(b, " sent=%" PRIu64 " ok=%" PRIu64 " failures=%" PRIu64 " breaker=%s", w->sent, w->ok,
			       w->failures, gw_breaker_name(w->breaker));
		if (w->breaker == GW_BRK_OPEN && w->open_until_ms > now)
			kvf_buf_printf(b, " reopens_in_ms=%" PRIu64, w->open_until_ms - now);
		kvf_buf_putc(b, '\n');
		k++;
	}
	if (json)
		kvf_buf_puts(b, "]\n");
	else if (!k)
		kvf_buf_puts(b, "no workers\n");
	return 0;
}

static void tenant_line(kvf_buf *b, const gw_tenant *t, int json, int first)
{
	char salt[GW_SALT_MAX + 1];
	snprintf(salt, sizeof(salt), "%.*s", (int)t->salt_len, (const char *)t->salt);
	if (json) {
		kvf_buf_printf(b, "%s{\"name\":", first ? "" : ",");
		kvf_buf_put_json_str(b, t->name, strlen(t->name));
		kvf_buf_printf(b, ",\"keys\":%u,\"salt\":\"%s\",\"rps\":%g,\"burst\":%g,\"tps\":%g,\"max_concurrency\":%u,"
				  "\"inflight\":%u,\"requests\":%" PRIu64 ",\"rejected_rate\":%" PRIu64
				  ",\"rejected_tokens\":%" PRIu64 ",\"rejected_concurrency\":%" PRIu64
				  ",\"prompt_tokens\":%" PRIu64 ",\"completion_tokens\":%" PRIu64 ",\"token_budget\":%.1f}",
			       t->nkeys, salt, t->rps, t->req_bucket.burst, t->tps, t->max_concurrency, t->inflight, t->requests,
			       t->rejected_rate, t->rejected_tokens, t->rejected_concurrency, t->prompt_tokens,
			       t->completion_tokens, t->tok_bucket.level);
		return;
	}
	kvf_buf_printf(b, "%-16s keys=%u salt=%s rps=%g burst=%g tps=%g max_concurrency=%u inflight=%u requests=%" PRIu64
			  " rejected=rate:%" PRIu64 ",tokens:%" PRIu64 ",concurrency:%" PRIu64 " tokens=prompt:%" PRIu64
			  ",completion:%" PRIu64 "\n",
		       t->name, t->nkeys, salt[0] ? salt : "-", t->rps, t->req_bucket.burst, t->tps, t->max_concurrency,
		       t->inflight, t->requests, t->rejected_rate, t->rejected_tokens, t->rejected_concurrency,
		       t->prompt_tokens, t->completion_tokens);
}

static int cmd_show_tenants(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_gateway *gw = ud;
	int json = kvf_admin_want_json(out);
	kvf_buf *b = kvf_admin_buf(out);
	if (json)
		kvf_buf_putc(b, '[');
	size_t n = gw_tenants_count(gw->tenants);
	for (size_t i = 0; i < n; i++)
		tenant_line(b, gw_tenants_at(gw->tenants, i), json, i == 0);
	if (!gw->cfg->auth)
		tenant_line(b, gw_tenants_anonymous(gw->tenants), json, n == 0);
	if (json)
		kvf_buf_puts(b, "]\n");
	else if (!n && gw->cfg->auth)
		kvf_buf_puts(b, "no tenants\n");
	return 0;
}

static const kvf_admin_cmd gw_admin_cmds[] = {
	{ { "show", "routes" }, "show routes [N] [json]", "last N routing decisions with every scorer's score", cmd_show_routes },
	{ { "show", "workers" }, "show workers [json]", "workers with role, load, in-flight requests and breaker", cmd_show_workers },
	{ { "show", "tenants" }, "show tenants [json]", "tenants with limits, usage and rejections", cmd_show_tenants },
};

int kvf_gateway_register_admin(kvf_gateway *gw, kvf_admin *admin)
{
	if (!admin)
		return 0;
	return kvf_admin_register(admin, gw_admin_cmds, sizeof(gw_admin_cmds) / sizeof(gw_admin_cmds[0]), gw);
}

/* ---- metrics ---- */

static void collect(void *ud)
{
	kvf_gateway *gw = ud;
	size_t n[5] = { 0 };
	uint64_t now = kvf_now_ms();
	for (size_t i = 0; i < gw->workers.n; i++) {
		const gw_worker *w = &gw->workers.w[i];
		if (!w->used)
			continue;
		if (w->breaker == GW_BRK_OPEN && now < w->open_until_ms)
			n[4]++;
		else if (w->state >= 1 && w->state <= 3)
			n[w->state]++;
	}
	if (gw->tok) {
		uint64_t now_v[2];
		kvf_tokenizer_cache_stats(gw->tok, &now_v[0], &now_v[1]);
		static const char *const res[2] = { "hit", "miss" };
		for (int i = 0; i < 2; i++) {
			kvf_series *s;
			if (now_v[i] >= gw->tokseg_seen[i] &&
			    kvf_metric_labels(gw->m[GM_TOKSEG], (const char *[]){ res[i] }, &s) == 0) {
				kvf_series_add(s, now_v[i] - gw->tokseg_seen[i]);
				gw->tokseg_seen[i] = now_v[i];
			}
		}
	}
	static const char *const names[5] = { "", "active", "draining", "disconnected", "breaker-open" };
	for (int i = 1; i < 5; i++) {
		kvf_series *s;
		if (kvf_metric_labels(gw->m[GM_WORKERS], (const char *[]){ names[i] }, &s) == 0)
			kvf_series_set(s, (double)n[i]);
	}
}

/* ---- lifecycle ---- */

static void model_name_from_path(const char *path, char *out, size_t cap)
{
	char tmp[1024];
	snprintf(tmp, sizeof(tmp), "%s", path);
	size_t n = strlen(tmp);
	while (n > 1 && tmp[n - 1] == '/')
		tmp[--n] = '\0';
	struct stat st;
	if (stat(tmp, &st) == 0 && S_ISREG(st.st_mode)) {
		char *slash = strrchr(tmp, '/');
		if (slash)
			*slash = '\0';
		else
			snprintf(tmp, sizeof(tmp), ".");
	}
	const char *base = strrchr(tmp, '/');
	base = base ? base + 1 : tmp;
	if (!strcmp(base, ".") || !base[0]) {
		char cwd[1024];
		if (getcwd(cwd, sizeof(cwd))) {
			base = strrchr(cwd, '/');
			snprintf(out, cap, "%.127s", base ? base + 1 : cwd);
			return;
		}
	}
	snprintf(out, cap, "%.127s", base);
}

int kvf_gateway_new(kvf_loop *loop, const kvf_gateway_cfg *cfg, const kvf_cluster_cfg *cluster, kvf_metrics *metrics,
		    kvf_gateway **out)
{
	int rc;
	kvf_gateway *gw = kvf_calloc(1, sizeof(*gw));
	if (!gw)
		return kvf_errf(KVF_E_NOMEM, "gateway: out of memory");
	gw->loop = loop;
	gw->cfg = cfg;
	gw->cluster = cluster;
	gw->metrics = metrics;
	gw->rng = kvf_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
	gw->block_size = (uint32_t)cluster->block_size;
	gw_workers_init(&gw->workers, (uint32_t)cfg->breaker_failures, cfg->breaker_open_ms);

	/* Model and tokenizer. */
	if (cfg->model && cfg->model[0])
		snprintf(gw->model, sizeof(gw->model), "%s", cfg->model);
	if (cfg->tokenizer && cfg->tokenizer[0]) {
		if ((rc = kvf_tokenizer_load(cfg->tokenizer, &gw->tok))) {
			rc = kvf_errf(rc, "gateway.tokenizer %s: %s", cfg->tokenizer, kvf_errmsg());
			goto fail;
		}
		if (!gw->model[0])
			model_name_from_path(cfg->tokenizer, gw->model, sizeof(gw->model));
	}
	const char *secret = cluster->secret ? cluster->secret : "";
	if ((rc = kvf_blockkey_ctx_new(secret, strlen(secret), &gw->bk)))
		goto fail;

	/* Tenants. */
	gw_tenant_defaults def = { cfg->tenant_rps, cfg->tenant_burst, cfg->tenant_tps,
				   (uint32_t)cfg->tenant_max_concurrency };
	uint64_t now = kvf_now_ms();
	if ((rc = gw_tenants_new(&def, now, &gw->tenants)))
		goto fail;
	for (size_t i = 0; i < cfg->api_keys.n; i++)
		if ((rc = gw_tenants_add_key_spec(gw->tenants, cfg->api_keys.v[i], now))) {
			rc = kvf_errf(KVF_E_CONFIG, "gateway.api_keys[%zu]: %s", i, kvf_errmsg());
			goto fail;
		}
	if (cfg->tenants_file && cfg->tenants_file[0] && (rc = gw_tenants_load_file(gw->tenants, cfg->tenants_file, now)))
		goto fail;
	if (cfg->auth && gw_tenants_count(gw->tenants) == 0) {
		rc = kvf_errf(KVF_E_CONFIG, "gateway.auth is on but no API key is configured (api_keys or tenants_file)");
		goto fail;
	}

	/* Static workers. */
	for (int role = GW_ROLE_PREFILL; role <= GW_ROLE_DECODE; role++) {
		const kvf_strlist *l = role == GW_ROLE_DECODE ? &cfg->decode_workers : &cfg->prefill_workers;
		for (size_t i = 0; i < l->n; i++) {
			char host[KVF_NET_HOST_MAX];
			uint16_t port;
			if (kvf_net_parse_hostport(l->v[i], host, sizeof(host), &port) || !port) {
				rc = kvf_errf(KVF_E_CONFIG, "gateway.%s_workers[%zu]: '%s' is not host:port",
					      role == GW_ROLE_DECODE ? "decode" : "prefill", i, l->v[i]);
				goto fail;
			}
			if (gw_workers_upsert(&gw->workers, l->v[i], l->v[i], gw->model, role, GW_W_ACTIVE, GW_SRC_STATIC, now) <
			    0) {
				rc = KVF_E_NOMEM;
				goto fail;
			}
		}
	}

	/* Routing. */
	gw->rcfg.policy = cfg->policy;
	if ((rc = gw_scorers_parse(&cfg->scorers, &gw->rcfg.scorers)))
		goto fail;
	gw->rcfg.w_prefix = cfg->weight_prefix;
	gw->rcfg.w_queue = cfg->weight_queue;
	gw->rcfg.w_kv = cfg->weight_kv;
	gw->rcfg.w_session = cfg->weight_session;
	gw->rcfg.tier_gpu = cfg->tier_weight_gpu;
	gw->rcfg.tier_host = cfg->tier_weight_host;
	gw->rcfg.tier_disk = cfg->tier_weight_disk;
	gw->rcfg.pd_threshold_tokens = (uint32_t)cfg->pd_threshold_tokens;
	gw->rcfg.worker_max_inflight = (uint32_t)cfg->worker_max_inflight;
	if ((rc = gw_sessions_init(&gw->sessions, (size_t)cfg->session_slots, cfg->session_ttl_ms)))
		goto fail;
	gw->routes_cap = (size_t)cfg->routes_history;
	gw->routes = kvf_calloc(gw->routes_cap, sizeof(*gw->routes));
	if (!gw->routes) {
		rc = KVF_E_NOMEM;
		goto fail;
	}

	/* Upstream client and tokenizer threads. */
	kvf_http_client_opts co = { 0 };
	co.max_conns_per_host = (uint32_t)cfg->upstream_max_conns;
	co.max_idle_per_host = (uint32_t)cfg->upstream_max_conns;
	co.connect_timeout_ms = (uint32_t)cfg->upstream_connect_timeout_ms;
	co.queue_timeout_ms = (uint32_t)(cfg->upstream_first_byte_timeout_ms ? cfg->upstream_first_byte_timeout_ms : 300000);
	if ((rc = kvf_http_client_new(loop, &co, &gw->up)))
		goto fail;
	if (gw->tok && (rc = gw_tokpool_new(loop, (int)cfg->tokenize_threads, &gw->tokpool)))
		goto fail;

	/* Index. */
	int want = cfg->index;
	if (want == GW_INDEX_AUTO)
		want = cluster->cachedir.n && gw_cachedir_supported() ? GW_INDEX_CACHEDIR : GW_INDEX_LOCAL;
	if (want == GW_INDEX_CACHEDIR) {
		if (!gw_cachedir_supported()) {
			rc = kvf_errf(KVF_E_UNSUPPORTED, "gateway.index = cachedir: this build has no cachedir client");
			goto fail;
		}
		if (!cluster->cachedir.n) {
			rc = kvf_errf(KVF_E_CONFIG, "gateway.index = cachedir needs cluster.cachedir replicas");
			goto fail;
		}
		if ((rc = gw_cachedir_start(gw)))
			goto fail;
	} else if (want == GW_INDEX_LOCAL) {
		if ((rc = gw_index_local_new((size_t)cfg->local_index_blocks, &gw->index)))
			goto fail;
	} else {
		gw_index_none_new(&gw->index);
	}
	if (cluster->cachedir.n && want != GW_INDEX_CACHEDIR)
		KVF_WARN("gateway", "cluster.cachedir is set but not used", "index=%s",
			 want == GW_INDEX_LOCAL ? "local" : "none");

	/* Metrics. */
	if (metrics) {
		if ((rc = kvf_metrics_register(metrics, gw_metric_defs, GM_N, gw->m)) ||
		    (rc = kvf_metrics_on_collect(metrics, collect, gw)))
			goto fail;
	}
	KVF_INFO("gateway", "ready", "model=%s tokenizer=%s index=%s static_decode=%zu static_prefill=%zu auth=%d tenants=%zu",
		 gw->model[0] ? gw->model : "*", gw->tok ? cfg->tokenizer : "-", gw->index.ops->name, cfg->decode_workers.n,
		 cfg->prefill_workers.n, cfg->auth, gw_tenants_count(gw->tenants));
	*out = gw;
	return 0;
fail:
	kvf_gateway_destroy(gw);
	return rc;
}

void kvf_gateway_destroy(kvf_gateway *gw)
{
	if (!gw)
		return;
	gw->destroying = 1;
	gw_proxy_abort_all(gw);
	/* Join the tokenizer threads, then take back the jobs they posted. */
	gw_tokpool_destroy(gw->tokpool);
	gw->tokpool = NULL;
	for (int i = 0; i < 1000 && gw->tok_pending; i++)
		kvf_loop_run_once(gw->loop, 10);
	if (gw->cachedir)
		gw_cachedir_stop(gw);
	else if (gw->index.ops)
		gw->index.ops->destroy(gw->index.ix);
	kvf_http_client_destroy(gw->up);
	gw_sessions_free(&gw->sessions);
	kvf_free(gw->routes);
	gw_tenants_destroy(gw->tenants);
	gw_workers_free(&gw->workers);
	kvf_blockkey_ctx_free(gw->bk);
	kvf_tokenizer_destroy(gw->tok);
	kvf_free(gw);
}

void kvf_gateway_http_opts(const kvf_gateway_cfg *cfg, kvf_http_server_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->header_timeout_ms = (uint32_t)cfg->header_timeout_ms;
	o->body_timeout_ms = (uint32_t)cfg->body_timeout_ms;
	o->idle_timeout_ms = (uint32_t)cfg->idle_timeout_ms;
	o->max_conns = (uint32_t)cfg->max_connections;
	o->limits.max_body_bytes = cfg->max_body_bytes;
	o->limits.max_header_bytes = (uint32_t)cfg->max_header_bytes;
}

void kvf_gateway_drain(kvf_gateway *gw)
{
	gw->draining = 1;
}

int kvf_gateway_busy(kvf_gateway *gw)
{
	return gw->inflight > 0 || gw->tok_pending > 0;
}

void kvf_gateway_info(kvf_gateway *gw, kvf_buf *out)
{
	size_t nw = 0;
	for (size_t i = 0; i < gw->workers.n; i++)
		nw += gw->workers.w[i].used;
	static const char *const pol[] = { "score", "round_robin", "random" };
	kvf_buf_printf(out, "model: %s\ntokenizer: %s\nblock_size: %u\npolicy: %s\nworkers: %zu\ntenants: %zu\nauth: %s\n"
			    "requests_in_flight: %zu\nrequests: %" PRIu64 "\nretries: %" PRIu64 "\npd_requests: %" PRIu64 "\n",
		       gw->model[0] ? gw->model : "*", gw->tok ? gw->cfg->tokenizer : "-", gw->block_size,
		       pol[gw->cfg->policy], nw, gw_tenants_count(gw->tenants), gw->cfg->auth ? "on" : "off", gw->inflight,
		       gw->n_requests, gw->n_retries, gw->n_pd);
	if (gw->cachedir)
		gw_cachedir_info(gw, out);
	else if (gw->index.ops && gw->index.ops->info)
		gw->index.ops->info(gw->index.ix, out);
}
