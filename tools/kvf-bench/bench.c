/*
 * bench.c: kvf-bench's load engine (see bench.h).
 *
 * Everything runs on one kvf_loop: requests go out through the pooled
 * non-blocking HTTP client (common/kvf_http_client.h), responses are read as
 * they arrive, and each SSE event is timed when its bytes are read, so TTFT
 * and inter-token latency are what a client sees, not what the server says.
 * One thread is plenty for the request rates an LLM cluster sustains and
 * keeps the measurement free of cross-thread noise.
 *
 * Workloads:
 *   shared-prefix  G groups, each with a long system prefix of prefix_words
 *                  words; every request picks a group and one of U users and
 *                  appends a fresh question of question_words words (llm-d's
 *                  prefix-aware routing benchmark);
 *   multi-turn     `concurrency` sessions; each turn resends the whole
 *                  conversation plus a new user message, with the session id
 *                  in x-kvf-session;
 *   random         prompts of prompt_words random words.
 * Arrivals: closed loop (each of `concurrency` clients sends its next request
 * when the previous one ends) or open loop (Poisson arrivals at `rate`/s,
 * independent of completions, up to max_inflight in flight).
 */
#include "tools/kvf-bench/bench.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_http_client.h"
#include "common/kvf_loop.h"
#include "common/kvf_time.h"

static const char *const WORDS[] = {
	"the", "model", "cache", "answer", "request", "token", "system", "prompt", "user", "question", "data",
	"memory", "layer", "block", "route", "worker", "server", "client", "time", "first", "value", "result",
	"number", "small", "large", "fast", "slow", "green", "blue", "river", "mountain", "city", "paper", "music",
	"light", "water", "story", "world", "people", "house", "school", "market", "window", "garden", "engine",
	"planet", "letter", "summer", "winter", "morning",
};
#define NWORDS (sizeof(WORDS) / sizeof(WORDS[0]))

void kb_opts_default(kb_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->target = "127.0.0.1:8080";
	o->model = NULL;
	o->endpoint = KB_EP_COMPLETIONS;
	o->workload = KB_WL_SHARED_PREFIX;
	o->arrival = KB_ARRIVAL_CLOSED;
	o->concurrency = 8;
	o->rate = 10;
	o->max_inflight = 1024;
	o->requests = 200;
	o->max_tokens = 16;
	o->stream = 1;
	o->seed = 1;
	o->groups = 8;
	o->users = 8;
	o->prefix_words = 1000;
	o->question_words = 30;
	o->turns = 4;
	o->turn_words = 40;
	o->prompt_words = 200;
	o->timeout_ms = 600000;
}

/* ---- run state ---- */

struct client {
	int id;
	int busy;
	int turn;
	kvf_buf history;   /* multi-turn, completions: the conversation so far */
	json_t *messages;  /* multi-turn, chat */
	char session[32];
};

struct run;

struct req {
	struct run *st;
	struct client *cl;
	kvf_http_creq *cr;
	kvf_buf in;        /* SSE bytes not yet split into events, or the whole JSON */
	kvf_buf answer;    /* generated text (multi-turn keeps it) */
	uint64_t t0_ns, t_first_ns, t_last_ns;
	uint32_t events;
	int measured;
	kb_sample smp;
	int usage_seen;
};

struct run {
	const kb_opts *o;
	kvf_loop *loop;
	kvf_http_client *http;
	uint64_t rng;
	int total;          /* warmup + measured, or -1 (by duration) */
	int issued, finished, inflight;
	int stop_issuing;
	uint64_t t0_ns;     /* run start */
	uint64_t t_measure0_ns, t_measure_end_ns;
	double next_arrival_s;
	kvf_timer arrival, deadline;
	struct client *clients;
	char **prefixes;    /* shared-prefix: one per group */
	kb_result *res;
	size_t s_cap, itl_cap, w_cap;
	int failed_rc;
};

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static void words(kvf_buf *b, uint64_t *rng, int n)
{
	for (int i = 0; i < n; i++) {
		if (b->len && b->data[b->len - 1] != ' ' && b->data[b->len - 1] != '\n')
			kvf_buf_putc(b, ' ');
		kvf_buf_puts(b, WORDS[rnd(rng) % NWORDS]);
	}
}

static void push_sample(struct run *st, const kb_sample *s)
{
	kb_result *r = st->res;
	if (kvf_grow((void **)&r->s, &st->s_cap, r->n + 1, sizeof(*r->s)) == 0)
		r->s[r->n++] = *s;
}

static void push_itl(struct run *st, double ms)
{
	kb_result *r = st->res;
	if (kvf_grow((void **)&r->itl_ms, &st->itl_cap, r->n_itl + 1, sizeof(double)) == 0)
		r->itl_ms[r->n_itl++] = ms;
}

static int worker_index(struct run *st, const char *p, size_t len)
{
	kb_result *r = st->res;
	for (size_t i = 0; i < r->n_workers; i++)
		if (strlen(r->workers[i]) == len && !memcmp(r->workers[i], p, len))
			return (int)i;
	if (kvf_grow((void **)&r->workers, &st->w_cap, r->n_workers + 1, sizeof(char *)))
		return -1;
	r->workers[r->n_workers] = kvf_strndup(p, len);
	return r->workers[r->n_workers] ? (int)r->n_workers++ : -1;
}

static void issue(struct run *st, struct client *cl);

/* ---- response parsing ---- */

static void take_usage(struct req *q, json_t *usage)
{
	if (!json_is_object(usage))
		return;
	q->usage_seen = 1;
	json_t *v = json_object_get(usage, "completion_tokens");
	if (json_is_integer(v))
		q->smp.out_tokens = (uint32_t)json_integer_value(v);
	v = json_object_get(usage, "prompt_tokens");
	if (json_is_integer(v))
		q->smp.prompt_tokens = (uint32_t)json_integer_value(v);
}

static void take_choice_text(struct req *q, json_t *choice)
{
	json_t *t = json_object_get(choice, "text");
	if (!json_is_string(t)) {
		json_t *m = json_object_get(choice, "delta");
		if (!m)
			m = json_object_get(choice, "message");
		t = json_object_get(m, "content");
	}
	if (json_is_string(t))
		kvf_buf_append(&q->answer, json_string_value(t), json_string_length(t));
}

/* One SSE event's data. */
static void sse_event(struct req *q, const char *data, size_t len, uint64_t now)
{
	if (len == 6 && !memcmp(data, "[DONE]", 6))
		return;
	json_t *j = json_loadb(data, len, 0, NULL);
	if (!j)
		return;
	json_t *ch = json_object_get(j, "choices");
	if (json_is_array(ch) && json_array_size(ch) > 0) {
		take_choice_text(q, json_array_get(ch, 0));
		if (!q->t_first_ns) {
			q->t_first_ns = now;
		} else if (q->measured) {
			push_itl(q->st, (double)(now - q->t_last_ns) / 1e6);
		}
		q->t_last_ns = now;
		q->events++;
	}
	take_usage(q, json_object_get(j, "usage"));
	json_decref(j);
}

static void on_head(kvf_http_creq *cr, const kvf_http_msg *m, void *ud)
{
	struct req *q = ud;
	q->smp.status = m->status;
	kvf_http_str v;
	if (kvf_http_msg_header(m, "x-kvf-decode", &v) == 0)
		q->smp.worker = worker_index(q->st, v.p, v.len);
	char tmp[24];
	if (kvf_http_msg_header(m, "x-kvf-cached-tokens", &v) == 0 && v.len < sizeof(tmp)) {
		snprintf(tmp, sizeof(tmp), "%.*s", (int)v.len, v.p);
		q->smp.cached_tokens = (uint32_t)strtoul(tmp, NULL, 10);
	}
	if (kvf_http_msg_header(m, "x-kvf-fetched-tokens", &v) == 0 && v.len < sizeof(tmp)) {
		snprintf(tmp, sizeof(tmp), "%.*s", (int)v.len, v.p);
		q->smp.fetched_tokens = (uint32_t)strtoul(tmp, NULL, 10);
	}
	if (kvf_http_msg_header(m, "x-kvf-computed-tokens", &v) == 0 && v.len < sizeof(tmp)) {
		snprintf(tmp, sizeof(tmp), "%.*s", (int)v.len, v.p);
		q->smp.computed_tokens = (uint32_t)strtoul(tmp, NULL, 10);
		q->smp.kvf_headers = 1;
	}
}

static void on_body(kvf_http_creq *cr, const char *data, size_t len, void *ud)
{
	struct req *q = ud;
	uint64_t now = kvf_now_ns();
	kvf_buf_append(&q->in, data, len);
	if (!q->st->o->stream || q->smp.status != 200)
		return;
	/* Split complete events ("...\n\n"); keep the tail. */
	for (;;) {
		char *b = kvf_buf_head(&q->in);
		size_t n = kvf_buf_avail(&q->in);
		char *end = NULL;
		for (size_t i = 0; i + 1 < n; i++)
			if (b[i] == '\n' && b[i + 1] == '\n') {
				end = b + i;
				break;
			}
		if (!end)
			break;
		/* data: lines of this event (one per event from OpenAI servers) */
		for (char *line = b; line < end;) {
			char *nl = memchr(line, '\n', (size_t)(end - line));
			char *le = nl ? nl : end;
			if (le - line > 6 && !memcmp(line, "data: ", 6))
				sse_event(q, line + 6, (size_t)(le - line - 6), now);
			line = le + 1;
		}
		kvf_buf_consume(&q->in, (size_t)(end - b) + 2);
	}
}

static void finish(struct req *q, int err)
{
	struct run *st = q->st;
	uint64_t now = kvf_now_ns();
	q->smp.err = err;
	if (!err && q->smp.status == 200 && !q->st->o->stream) {
		json_t *j = json_loadb(kvf_buf_head(&q->in), kvf_buf_avail(&q->in), 0, NULL);
		if (j) {
			json_t *ch = json_object_get(j, "choices");
			if (json_is_array(ch) && json_array_size(ch))
				take_choice_text(q, json_array_get(ch, 0));
			take_usage(q, json_object_get(j, "usage"));
			json_decref(j);
		}
		q->t_first_ns = now;
	}
	if (!q->usage_seen)
		q->smp.out_tokens = q->events;
	q->smp.e2e_ms = (double)(now - q->t0_ns) / 1e6;
	q->smp.ttft_ms = q->t_first_ns ? (double)(q->t_first_ns - q->t0_ns) / 1e6 : -1;
	if (q->measured) {
		push_sample(st, &q->smp);
		if (now > st->t_measure_end_ns)
			st->t_measure_end_ns = now;
	}
	struct client *cl = q->cl;
	if (cl)
		cl->busy = 0;
	if (cl && st->o->workload == KB_WL_MULTI_TURN && !err && q->smp.status == 200) {
		if (st->o->endpoint == KB_EP_CHAT) {
			json_array_append_new(cl->messages,
					      json_pack("{s:s,s:s%}", "role", "assistant", "content", q->answer.data ? q->answer.data : "",
							q->answer.len));
		} else {
			kvf_buf_append(&cl->history, q->answer.data ? q->answer.data : "", q->answer.len);
			kvf_buf_putc(&cl->history, '\n');
		}
		cl->turn++;
	}
	st->inflight--;
	st->finished++;
	kvf_buf_free(&q->in);
	kvf_buf_free(&q->answer);
	kvf_free(q);
	if (cl && st->o->arrival == KB_ARRIVAL_CLOSED && !st->stop_issuing && (st->total < 0 || st->issued < st->total))
		issue(st, cl);
	if (st->stop_issuing || (st->total >= 0 && st->issued >= st->total))
		if (st->inflight == 0)
			kvf_loop_stop(st->loop);
}

static void on_done(kvf_http_creq *cr, void *ud) { finish(ud, 0); }

static void on_error(kvf_http_creq *cr, const kvf_http_cerror *e, void *ud)
{
	struct req *q = ud;
	q->smp.status = 0;
	finish(q, e->err ? e->err : KVF_E_IO);
}

static const kvf_http_creq_cbs CBS = { on_head, on_body, on_done, on_error };

/* ---- requests ---- */

static json_t *chat_msgs(const char *system, const char *user)
{
	json_t *m = json_array();
	if (system)
		json_array_append_new(m, json_pack("{s:s,s:s}", "role", "system", "content", system));
	json_array_append_new(m, json_pack("{s:s,s:s}", "role", "user", "content", user));
	return m;
}

/* Builds the request body for the next request of client cl (NULL: an
 * open-loop arrival). */
static json_t *make_body(struct run *st, struct client *cl, int *group)
{
	const kb_opts *o = st->o;
	json_t *b = json_pack("{s:s,s:i,s:b}", "model", o->model, "max_tokens", o->max_tokens, "stream", o->stream);
	if (o->stream)
		json_object_set_new(b, "stream_options", json_pack("{s:b}", "include_usage", 1));
	if (o->ignore_eos)
		json_object_set_new(b, "ignore_eos", json_true());
	kvf_buf q = KVF_BUF_INIT;
	*group = -1;
	switch (o->workload) {
	case KB_WL_SHARED_PREFIX: {
		int g = (int)(rnd(&st->rng) % (uint64_t)o->groups);
		int u = (int)(rnd(&st->rng) % (uint64_t)o->users);
		*group = g;
		kvf_buf_printf(&q, "User %d asks:", u);
		words(&q, &st->rng, o->question_words);
		if (o->endpoint == KB_EP_CHAT) {
			json_object_set_new(b, "messages", chat_msgs(st->prefixes[g], q.data));
		} else {
			kvf_buf p = KVF_BUF_INIT;
			kvf_buf_printf(&p, "%s\n%s", st->prefixes[g], q.data);
			json_object_set_new(b, "prompt", json_stringn(p.data, p.len));
			kvf_buf_free(&p);
		}
		break;
	}
	case KB_WL_MULTI_TURN: {
		*group = cl->id;
		if (cl->turn >= o->turns) { /* conversation over: a new one */
			cl->turn = 0;
			kvf_buf_reset(&cl->history);
			json_array_clear(cl->messages);
		}
		words(&q, &st->rng, o->turn_words);
		if (o->endpoint == KB_EP_CHAT) {
			json_array_append_new(cl->messages, json_pack("{s:s,s:s}", "role", "user", "content", q.data));
			json_object_set(b, "messages", cl->messages);
		} else {
			kvf_buf_printf(&cl->history, "User: %s\nAssistant:", q.data);
			json_object_set_new(b, "prompt", json_stringn(cl->history.data, cl->history.len));
		}
		break;
	}
	default:
		words(&q, &st->rng, o->prompt_words);
		if (o->endpoint == KB_EP_CHAT)
			json_object_set_new(b, "messages", chat_msgs(NULL, q.data));
		else
			json_object_set_new(b, "prompt", json_stringn(q.data, q.len));
	}
	kvf_buf_free(&q);
	return b;
}

static void issue(struct run *st, struct client *cl)
{
	const kb_opts *o = st->o;
	struct req *q = kvf_calloc(1, sizeof(*q));
	if (!q)
		return;
	q->st = st;
	q->cl = cl;
	if (cl)
		cl->busy = 1;
	q->smp.worker = -1;
	int idx = st->issued++;
	q->measured = idx >= o->warmup;
	json_t *body = make_body(st, cl, &q->smp.group);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	char auth[300];
	const char *h[10];
	int k = 0;
	h[k++] = "Content-Type";
	h[k++] = "application/json";
	if (o->api_key) {
		snprintf(auth, sizeof(auth), "Bearer %s", o->api_key);
		h[k++] = "Authorization";
		h[k++] = auth;
	}
	if (cl && o->workload == KB_WL_MULTI_TURN) {
		h[k++] = "x-kvf-session";
		h[k++] = cl->session;
	}
	h[k] = NULL;
	kvf_http_creq_opts ro = {
		.method = "POST",
		.target = o->endpoint == KB_EP_CHAT ? "/v1/chat/completions" : "/v1/completions",
		.headers = h,
		.body = text,
		.body_len = text ? strlen(text) : 0,
		.first_byte_timeout_ms = o->timeout_ms,
		.read_timeout_ms = o->timeout_ms,
	};
	q->t0_ns = kvf_now_ns();
	q->smp.t_start_s = (double)(q->t0_ns - st->t0_ns) / 1e9;
	if (q->measured && !st->t_measure0_ns)
		st->t_measure0_ns = q->t0_ns;
	st->inflight++;
	int rc = kvf_http_client_request(st->http, o->target, &ro, &CBS, q, &q->cr);
	free(text);
	if (rc) {
		st->failed_rc = rc;
		st->inflight--;
		kvf_free(q);
		st->stop_issuing = 1;
		if (!st->inflight)
			kvf_loop_stop(st->loop);
	}
}

/* Poisson arrivals: exponential gaps, scheduled on absolute times so timer
 * granularity does not bias the rate. */
static void arrival_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct run *st = ud;
	double now_s = (double)(kvf_now_ns() - st->t0_ns) / 1e9;
	while (!st->stop_issuing && st->next_arrival_s <= now_s && (st->total < 0 || st->issued < st->total)) {
		if (st->o->workload == KB_WL_MULTI_TURN) {
			/* the next turn of an idle session, round robin */
			for (int i = 0; i < st->o->concurrency; i++) {
				struct client *cl = &st->clients[(st->issued + i) % st->o->concurrency];
				if (!cl->busy) {
					issue(st, cl);
					break;
				}
			}
		} else if (st->inflight < st->o->max_inflight) {
			issue(st, NULL);
		}
		double u = ((double)(rnd(&st->rng) >> 11) + 0.5) / 9007199254740992.0;
		st->next_arrival_s += -log(u) / st->o->rate;
	}
	if (st->stop_issuing || (st->total >= 0 && st->issued >= st->total)) {
		if (!st->inflight)
			kvf_loop_stop(loop);
		return;
	}
	double wait = st->next_arrival_s - now_s;
	kvf_loop_timer_start(loop, t, wait > 0 ? (uint64_t)(wait * 1000) : 0, 0, arrival_cb, st);
}

static void deadline_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct run *st = ud;
	st->stop_issuing = 1;
	if (!st->inflight)
		kvf_loop_stop(loop);
}

int kb_run(const kb_opts *o, kb_result *res)
{
	memset(res, 0, sizeof(*res));
	if (!o->model || !o->model[0])
		return kvf_errf(KVF_E_INVAL, "--model is required");
	struct run st = { 0 };
	st.o = o;
	st.res = res;
	st.rng = o->seed ? o->seed : 1;
	st.total = o->duration_s > 0 ? -1 : o->warmup + o->requests;
	int nclients = o->arrival == KB_ARRIVAL_CLOSED || o->workload == KB_WL_MULTI_TURN ? o->concurrency : 0;
	int rc = kvf_loop_new(&st.loop);
	if (rc)
		return rc;
	kvf_http_client_opts co = { 0 };
	co.max_conns_per_host = (uint32_t)(o->arrival == KB_ARRIVAL_CLOSED ? o->concurrency : o->max_inflight);
	co.max_idle_per_host = co.max_conns_per_host;
	co.max_queue_per_host = (uint32_t)o->max_inflight + 16;
	co.queue_timeout_ms = o->timeout_ms;
	co.connect_timeout_ms = 5000;
	if ((rc = kvf_http_client_new(st.loop, &co, &st.http)))
		goto out;
	if (o->workload == KB_WL_SHARED_PREFIX) {
		st.prefixes = kvf_calloc((size_t)o->groups, sizeof(char *));
		for (int g = 0; g < o->groups; g++) {
			uint64_t r = o->seed * 1000003u + (uint64_t)g + 1;
			kvf_buf b = KVF_BUF_INIT;
			kvf_buf_printf(&b, "You are assistant number %d. Follow these instructions:", g);
			words(&b, &r, o->prefix_words);
			st.prefixes[g] = b.data;
		}
	}
	st.clients = kvf_calloc((size_t)(nclients ? nclients : 1), sizeof(*st.clients));
	for (int i = 0; i < nclients; i++) {
		st.clients[i].id = i;
		snprintf(st.clients[i].session, sizeof(st.clients[i].session), "kvf-bench-%d", i);
		st.clients[i].messages = json_array();
	}
	st.t0_ns = kvf_now_ns();
	if (o->duration_s > 0)
		kvf_loop_timer_start(st.loop, &st.deadline, (uint64_t)(o->duration_s * 1000), 0, deadline_cb, &st);
	if (o->arrival == KB_ARRIVAL_CLOSED) {
		for (int i = 0; i < nclients && (st.total < 0 || st.issued < st.total); i++)
			issue(&st, &st.clients[i]);
	} else {
		kvf_loop_timer_start(st.loop, &st.arrival, 0, 0, arrival_cb, &st);
	}
	if (st.inflight || o->arrival == KB_ARRIVAL_POISSON)
		kvf_loop_run(st.loop);
	res->duration_s = st.t_measure_end_ns > st.t_measure0_ns ? (double)(st.t_measure_end_ns - st.t_measure0_ns) / 1e9 : 0;
	if (st.failed_rc && !res->n)
		rc = kvf_errf(st.failed_rc, "%s", kvf_errmsg());
out:
	kvf_loop_timer_stop(st.loop, &st.arrival);
	kvf_loop_timer_stop(st.loop, &st.deadline);
	kvf_http_client_destroy(st.http);
	for (int i = 0; st.clients && i < nclients; i++) {
		kvf_buf_free(&st.clients[i].history);
		json_decref(st.clients[i].messages);
	}
	kvf_free(st.clients);
	if (st.prefixes) {
		for (int g = 0; g < o->groups; g++)
			kvf_free(st.prefixes[g]);
		kvf_free(st.prefixes);
	}
	kvf_loop_destroy(st.loop);
	return rc;
}

void kb_result_free(kb_result *r)
{
	kvf_free(r->s);
	kvf_free(r->itl_ms);
	for (size_t i = 0; i < r->n_workers; i++)
		kvf_free(r->workers[i]);
	kvf_free(r->workers);
	memset(r, 0, sizeof(*r));
}

/* ---- reports ---- */

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v. */
static double pct(const double *v, size_t n, double p)
{
	if (!n)
		return NAN;
	size_t k = (size_t)ceil(p / 100.0 * (double)n);
	if (k < 1)
		k = 1;
	return v[k - 1];
}

struct summary {
	size_t ok, errors;
	double ttft[3], itl[3], e2e[3], ttft_mean, itl_mean, e2e_mean;
	uint64_t out_tokens, prompt_tokens, cached_tokens, fetched_tokens, computed_tokens, hdr_prompt;
	double req_s, tok_s, hit_ratio;
};

static double mean(const double *v, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += v[i];
	return n ? s / (double)n : NAN;
}

static void summarize(const kb_result *r, struct summary *s)
{
	memset(s, 0, sizeof(*s));
	double *tt = malloc((r->n + 1) * sizeof(double)), *ee = malloc((r->n + 1) * sizeof(double));
	size_t nt = 0, ne = 0;
	for (size_t i = 0; i < r->n; i++) {
		const kb_sample *x = &r->s[i];
		if (x->err || x->status != 200) {
			s->errors++;
			continue;
		}
		s->ok++;
		if (x->ttft_ms >= 0)
			tt[nt++] = x->ttft_ms;
		ee[ne++] = x->e2e_ms;
		s->out_tokens += x->out_tokens;
		s->prompt_tokens += x->prompt_tokens;
		s->cached_tokens += x->cached_tokens;
		s->fetched_tokens += x->fetched_tokens;
		if (x->kvf_headers) {
			s->computed_tokens += x->computed_tokens;
			s->hdr_prompt += (uint64_t)x->cached_tokens + x->fetched_tokens + x->computed_tokens;
		}
	}
	qsort(tt, nt, sizeof(double), cmp_d);
	qsort(ee, ne, sizeof(double), cmp_d);
	double *it = malloc((r->n_itl + 1) * sizeof(double));
	if (r->n_itl)
		memcpy(it, r->itl_ms, r->n_itl * sizeof(double));
	qsort(it, r->n_itl, sizeof(double), cmp_d);
	static const double ps[3] = { 50, 90, 99 };
	for (int i = 0; i < 3; i++) {
		s->ttft[i] = pct(tt, nt, ps[i]);
		s->e2e[i] = pct(ee, ne, ps[i]);
		s->itl[i] = pct(it, r->n_itl, ps[i]);
	}
	s->ttft_mean = mean(tt, nt);
	s->e2e_mean = mean(ee, ne);
	s->itl_mean = mean(it, r->n_itl);
	s->req_s = r->duration_s > 0 ? (double)s->ok / r->duration_s : 0;
	s->tok_s = r->duration_s > 0 ? (double)s->out_tokens / r->duration_s : 0;
	/* Hit ratio from the x-kvf-* headers when the server sends them (they
	 * add up to the prompt), else against usage.prompt_tokens. */
	uint64_t denom = s->hdr_prompt ? s->hdr_prompt : s->prompt_tokens;
	s->hit_ratio = denom ? (double)(s->cached_tokens + s->fetched_tokens) / (double)denom : 0;
	free(tt);
	free(ee);
	free(it);
}

static void jnum(kvf_buf *b, double v)
{
	if (isnan(v))
		kvf_buf_puts(b, "null");
	else
		kvf_buf_printf(b, "%.3f", v);
}

static void jpct(kvf_buf *b, const char *name, const double p[3], double m)
{
	kvf_buf_printf(b, "\"%s\":{\"p50\":", name);
	jnum(b, p[0]);
	kvf_buf_puts(b, ",\"p90\":");
	jnum(b, p[1]);
	kvf_buf_puts(b, ",\"p99\":");
	jnum(b, p[2]);
	kvf_buf_puts(b, ",\"mean\":");
	jnum(b, m);
	kvf_buf_putc(b, '}');
}

static const char *wl_name(int w)
{
	return w == KB_WL_SHARED_PREFIX ? "shared-prefix" : w == KB_WL_MULTI_TURN ? "multi-turn" : "random";
}

void kb_report_json(const kb_opts *o, const kb_result *r, kvf_buf *b)
{
	struct summary s;
	summarize(r, &s);
	kvf_buf_printf(b, "{\"config\":{\"target\":\"%s\",\"model\":\"%s\",\"endpoint\":\"%s\",\"workload\":\"%s\","
			  "\"arrival\":\"%s\",\"concurrency\":%d,\"rate\":%g,\"requests\":%d,\"warmup\":%d,\"max_tokens\":%d,"
			  "\"stream\":%s,\"groups\":%d,\"users\":%d,\"prefix_words\":%d,\"question_words\":%d,\"turns\":%d,"
			  "\"turn_words\":%d,\"prompt_words\":%d,\"seed\":%llu},",
		       o->target, o->model, o->endpoint == KB_EP_CHAT ? "chat" : "completions", wl_name(o->workload),
		       o->arrival == KB_ARRIVAL_CLOSED ? "closed" : "poisson", o->concurrency, o->rate, o->requests, o->warmup,
		       o->max_tokens, o->stream ? "true" : "false", o->groups, o->users, o->prefix_words, o->question_words,
		       o->turns, o->turn_words, o->prompt_words, (unsigned long long)o->seed);
	kvf_buf_printf(b, "\"completed\":%zu,\"errors\":%zu,\"duration_s\":%.3f,\"requests_per_s\":%.3f,"
			  "\"output_tokens\":%llu,\"output_tokens_per_s\":%.3f,\"prompt_tokens\":%llu,\"cached_tokens\":%llu,"
			  "\"fetched_tokens\":%llu,\"computed_tokens\":%llu,\"cache_hit_ratio\":%.4f,",
		       s.ok, s.errors, r->duration_s, s.req_s, (unsigned long long)s.out_tokens, s.tok_s,
		       (unsigned long long)s.prompt_tokens, (unsigned long long)s.cached_tokens,
		       (unsigned long long)s.fetched_tokens, (unsigned long long)s.computed_tokens, s.hit_ratio);
	jpct(b, "ttft_ms", s.ttft, s.ttft_mean);
	kvf_buf_putc(b, ',');
	jpct(b, "itl_ms", s.itl, s.itl_mean);
	kvf_buf_putc(b, ',');
	jpct(b, "e2e_ms", s.e2e, s.e2e_mean);
	kvf_buf_puts(b, ",\"workers\":{");
	for (size_t w = 0; w < r->n_workers; w++) {
		size_t c = 0;
		for (size_t i = 0; i < r->n; i++)
			c += r->s[i].worker == (int)w;
		kvf_buf_printf(b, "%s", w ? "," : "");
		kvf_buf_put_json_str(b, r->workers[w], strlen(r->workers[w]));
		kvf_buf_printf(b, ":%zu", c);
	}
	kvf_buf_puts(b, "},\"status\":{");
	int first = 1;
	for (int code = 0; code < 600; code++) {
		size_t c = 0;
		for (size_t i = 0; i < r->n; i++)
			c += r->s[i].status == code;
		if (c) {
			kvf_buf_printf(b, "%s\"%d\":%zu", first ? "" : ",", code, c);
			first = 0;
		}
	}
	kvf_buf_putc(b, '}');
	if (o->samples) {
		kvf_buf_puts(b, ",\"samples\":[");
		for (size_t i = 0; i < r->n; i++) {
			const kb_sample *x = &r->s[i];
			kvf_buf_printf(b, "%s{\"t\":%.4f,\"status\":%d,\"ttft_ms\":%.3f,\"e2e_ms\":%.3f,\"out\":%u,\"prompt\":%u,"
					  "\"cached\":%u,\"fetched\":%u,\"group\":%d,\"worker\":",
				       i ? "," : "", x->t_start_s, x->status, x->ttft_ms, x->e2e_ms, x->out_tokens, x->prompt_tokens,
				       x->cached_tokens, x->fetched_tokens, x->group);
			if (x->worker >= 0)
				kvf_buf_put_json_str(b, r->workers[x->worker], strlen(r->workers[x->worker]));
			else
				kvf_buf_puts(b, "null");
			kvf_buf_putc(b, '}');
		}
		kvf_buf_putc(b, ']');
	}
	kvf_buf_puts(b, "}\n");
}

void kb_report_text(const kb_opts *o, const kb_result *r, kvf_buf *b)
{
	struct summary s;
	summarize(r, &s);
	kvf_buf_printf(b, "workload %s, %s arrivals, %s, target %s, model %s\n", wl_name(o->workload),
		       o->arrival == KB_ARRIVAL_CLOSED ? "closed-loop" : "Poisson", o->stream ? "streaming" : "non-streaming",
		       o->target, o->model);
	kvf_buf_printf(b, "completed %zu, errors %zu in %.2f s: %.2f req/s, %.1f output tok/s\n", s.ok, s.errors,
		       r->duration_s, s.req_s, s.tok_s);
	kvf_buf_printf(b, "TTFT ms    p50 %8.2f  p90 %8.2f  p99 %8.2f  mean %8.2f\n", s.ttft[0], s.ttft[1], s.ttft[2],
		       s.ttft_mean);
	kvf_buf_printf(b, "ITL ms     p50 %8.2f  p90 %8.2f  p99 %8.2f  mean %8.2f\n", s.itl[0], s.itl[1], s.itl[2],
		       s.itl_mean);
	kvf_buf_printf(b, "e2e ms     p50 %8.2f  p90 %8.2f  p99 %8.2f  mean %8.2f\n", s.e2e[0], s.e2e[1], s.e2e[2],
		       s.e2e_mean);
	kvf_buf_printf(b, "tokens: prompt %llu, cached %llu, fetched %llu (hit ratio %.3f), output %llu\n",
		       (unsigned long long)s.prompt_tokens, (unsigned long long)s.cached_tokens,
		       (unsigned long long)s.fetched_tokens, s.hit_ratio, (unsigned long long)s.out_tokens);
	for (size_t w = 0; w < r->n_workers; w++) {
		size_t c = 0;
		for (size_t i = 0; i < r->n; i++)
			c += r->s[i].worker == (int)w;
		kvf_buf_printf(b, "  worker %-24s %zu requests\n", r->workers[w], c);
	}
}
