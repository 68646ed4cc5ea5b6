/*
 * kvf-upstream-fixture: a stand-in OpenAI worker for the gateway's
 * integration tests and benchmarks, until the real decode/prefill workers
 * exist (and afterwards for failure modes they cannot produce on demand).
 *
 * It answers POST /v1/completions and /v1/chat/completions in OpenAI's
 * response shapes, non-streaming or SSE (one event per "token" every
 * --interval-ms, usage at the end when stream_options.include_usage), and
 * says who answered: the text is "worker=<name> ..." and the header
 * x-fixture-worker names it. What the gateway sent along comes back in
 * x-fixture-prefill / x-fixture-salt / x-fixture-tenant / x-fixture-session.
 * GET /v1/models lists --model; GET /fixture/stats counts requests.
 * POST /fixture/mode?status=503 makes every answer that status from then on
 * (0 restores), ?stall=1 holds requests without answering.
 *
 *   kvf-upstream-fixture --name d1 --listen 127.0.0.1:0 [--model M]
 *                        [--interval-ms 5] [--tokens 4] [--body-bytes N]
 * Prints "port N" once listening. SIGTERM/SIGINT exit.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_http.h"
#include "common/kvf_json.h"
#include "common/kvf_log.h"
#include "common/kvf_loop.h"
#include "common/kvf_time.h"

#define MAX_STREAMS 4096

struct stream {
	kvf_timer t;
	kvf_http_req *req;
	int chat, left, sent, usage, in_use;
	int64_t prompt_tokens;
	char id[32];
};

static struct {
	kvf_loop *loop;
	kvf_http_server *srv;
	const char *name, *model;
	int interval_ms, tokens, fail_status, stall;
	size_t body_bytes;
	uint64_t requests, streams_done, streams_canceled;
	struct stream streams[MAX_STREAMS];
	kvf_http_req *held[MAX_STREAMS];
	int nheld;
} F;

static void add_seen(kvf_http_req *req, const char **h, int *k, char bufs[][160], const char *in, const char *out)
{
	kvf_http_str v;
	if (kvf_http_req_header(req, in, &v) == 0 && v.len < 160) {
		snprintf(bufs[*k / 2], 160, "%.*s", (int)v.len, v.p);
		h[(*k)++] = out;
		h[*k] = bufs[(*k - 1) / 2];
		(*k)++;
	}
}

static int fixture_headers(kvf_http_req *req, const char **h, char bufs[][160])
{
	int k = 0;
	h[k++] = "x-fixture-worker";
	h[k++] = F.name;
	add_seen(req, h, &k, bufs, "x-kvf-prefill", "x-fixture-prefill");
	add_seen(req, h, &k, bufs, "x-kvf-cache-salt", "x-fixture-salt");
	add_seen(req, h, &k, bufs, "x-kvf-tenant", "x-fixture-tenant");
	add_seen(req, h, &k, bufs, "x-kvf-session", "x-fixture-session");
	h[k] = NULL;
	return k;
}

static void stream_close(kvf_http_req *req, void *ud)
{
	struct stream *s = ud;
	kvf_loop_timer_stop(F.loop, &s->t);
	kvf_http_end(req);
	s->in_use = 0;
	F.streams_canceled++;
}

static void stream_tick(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct stream *s = ud;
	char buf[512];
	int n;
	if (s->left > 0) {
		s->left--;
		s->sent++;
		const char *fin = s->left == 0 ? "\"length\"" : "null";
		char piece[160];
		if (s->sent == 1)
			snprintf(piece, sizeof(piece), "worker=%s ", F.name);
		else
			snprintf(piece, sizeof(piece), "tok%d ", s->sent);
		if (s->chat)
			n = snprintf(buf, sizeof(buf),
				     "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%" PRIu64
				     ",\"model\":\"%s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},"
				     "\"finish_reason\":%s}]}",
				     s->id, kvf_wall_s(), F.model, piece, fin);
		else
			n = snprintf(buf, sizeof(buf),
				     "{\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%" PRIu64
				     ",\"model\":\"%s\",\"choices\":[{\"index\":0,\"text\":\"%s\",\"finish_reason\":%s}]}",
				     s->id, kvf_wall_s(), F.model, piece, fin);
		kvf_http_send_sse(s->req, NULL, NULL, buf, (size_t)n);
		return;
	}
	if (s->usage) {
		n = snprintf(buf, sizeof(buf),
			     "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%" PRIu64 ",\"model\":\"%s\",\"choices\":[],"
			     "\"usage\":{\"prompt_tokens\":%" PRId64 ",\"completion_tokens\":%d,\"total_tokens\":%" PRId64 "}}",
			     s->id, s->chat ? "chat.completion.chunk" : "text_completion", kvf_wall_s(), F.model,
			     s->prompt_tokens, s->sent, s->prompt_tokens + s->sent);
		kvf_http_send_sse(s->req, NULL, NULL, buf, (size_t)n);
	}
	kvf_http_send_sse(s->req, NULL, NULL, "[DONE]", 6);
	kvf_http_end(s->req);
	kvf_loop_timer_stop(loop, t);
	s->in_use = 0;
	F.streams_done++;
}

static void api(kvf_http_req *req, int chat)
{
	size_t blen;
	const char *body = kvf_http_req_body(req, &blen);
	json_t *root;
	if (kvf_json_parse_object(body, blen, &root)) {
		kvf_http_respond_error(req, 400, kvf_errmsg());
		return;
	}
	int stream = 0;
	int64_t max_tokens = F.tokens;
	kvf_json_opt_bool(root, "stream", &stream);
	kvf_json_opt_int(root, "max_tokens", 0, 1 << 20, &max_tokens);
	const json_t *so = NULL;
	int usage = 0;
	if (kvf_json_opt_object(root, "stream_options", &so) == 0 && so)
		kvf_json_opt_bool(so, "include_usage", &usage);
	json_decref(root);
	const char *h[16];
	char bufs[8][160];
	fixture_headers(req, h, bufs);
	int64_t prompt_tokens = (int64_t)(blen / 4);
	if (!stream) {
		kvf_buf b = KVF_BUF_INIT;
		kvf_buf_printf(&b, "{\"id\":\"cmpl-%" PRIu64 "\",\"object\":\"%s\",\"created\":%" PRIu64 ",\"model\":\"%s\","
				   "\"choices\":[{\"index\":0,",
			       F.requests, chat ? "chat.completion" : "text_completion", kvf_wall_s(), F.model);
		if (chat)
			kvf_buf_printf(&b, "\"message\":{\"role\":\"assistant\",\"content\":\"worker=%s\"},", F.name);
		else
			kvf_buf_printf(&b, "\"text\":\"worker=%s\",\"logprobs\":null,", F.name);
		kvf_buf_printf(&b, "\"finish_reason\":\"length\"}],\"pad\":\"");
		for (size_t i = 0; i < F.body_bytes; i++)
			kvf_buf_putc(&b, 'x');
		kvf_buf_printf(&b, "\",\"usage\":{\"prompt_tokens\":%" PRId64 ",\"completion_tokens\":%" PRId64
				   ",\"total_tokens\":%" PRId64 "}}\n",
			       prompt_tokens, max_tokens, prompt_tokens + max_tokens);
		kvf_http_respond(req, 200, "application/json", h, b.data, b.len);
		kvf_buf_free(&b);
		return;
	}
	for (int i = 0; i < MAX_STREAMS; i++) {
		struct stream *s = &F.streams[i];
		if (s->in_use)
			continue;
		memset(s, 0, sizeof(*s));
		s->in_use = 1;
		s->req = req;
		s->chat = chat;
		s->left = (int)max_tokens;
		s->usage = usage;
		s->prompt_tokens = prompt_tokens;
		snprintf(s->id, sizeof(s->id), "cmpl-%" PRIu64, F.requests);
		kvf_http_req_on_close(req, stream_close, s);
		kvf_http_begin_sse(req, h);
		kvf_loop_timer_start(F.loop, &s->t, (uint64_t)F.interval_ms, (uint64_t)(F.interval_ms ? F.interval_ms : 1),
				     stream_tick, s);
		return;
	}
	kvf_http_respond_error(req, 503, "fixture: too many streams");
}

static void held_close(kvf_http_req *req, void *ud)
{
	for (int i = 0; i < F.nheld; i++)
		if (F.held[i] == req)
			F.held[i] = NULL;
	kvf_http_end(req);
}

static void handler(kvf_http_req *req, void *ud)
{
	kvf_http_str p = kvf_http_req_path(req);
	if (kvf_http_str_eq(p, "/fixture/stats")) {
		char b[160];
		int n = snprintf(b, sizeof(b),
				 "{\"requests\":%" PRIu64 ",\"streams_done\":%" PRIu64 ",\"streams_canceled\":%" PRIu64 "}\n",
				 F.requests, F.streams_done, F.streams_canceled);
		kvf_http_respond(req, 200, "application/json", NULL, b, (size_t)n);
		return;
	}
	if (kvf_http_str_eq(p, "/fixture/mode")) {
		char v[16];
		size_t n;
		if (kvf_http_query_get(kvf_http_req_query(req), "status", v, sizeof(v), &n) == 0)
			F.fail_status = atoi(v);
		if (kvf_http_query_get(kvf_http_req_query(req), "stall", v, sizeof(v), &n) == 0)
			F.stall = atoi(v);
		kvf_http_respond(req, 200, "text/plain", NULL, "ok\n", 3);
		return;
	}
	if (kvf_http_str_eq(p, "/v1/models")) {
		char b[256];
		int n = snprintf(b, sizeof(b), "{\"object\":\"list\",\"data\":[{\"id\":\"%s\",\"object\":\"model\"}]}\n", F.model);
		kvf_http_respond(req, 200, "application/json", NULL, b, (size_t)n);
		return;
	}
	int chat = kvf_http_str_eq(p, "/v1/chat/completions");
	if (!chat && !kvf_http_str_eq(p, "/v1/completions")) {
		kvf_http_respond_error(req, 404, "fixture: no such path");
		return;
	}
	F.requests++;
	if (F.stall && F.nheld < MAX_STREAMS) {
		F.held[F.nheld++] = req;
		kvf_http_req_on_close(req, held_close, NULL);
		return;
	}
	if (F.fail_status) {
		const char *h[16];
		char bufs[8][160];
		fixture_headers(req, h, bufs);
		kvf_http_respond(req, F.fail_status, "application/json", h, "{\"error\":{\"message\":\"fixture failure\"}}\n",
				 40);
		return;
	}
	api(req, chat);
}

static void on_signal(kvf_loop *loop, int signo, void *ud)
{
	kvf_loop_stop(loop);
}

int main(int argc, char **argv)
{
	const char *listen = "127.0.0.1:0";
	F.name = "fixture";
	F.model = "test-model";
	F.interval_ms = 5;
	F.tokens = 4;
	static const struct option opts[] = {
		{ "name", required_argument, 0, 'n' },     { "listen", required_argument, 0, 'l' },
		{ "model", required_argument, 0, 'm' },    { "interval-ms", required_argument, 0, 'i' },
		{ "tokens", required_argument, 0, 't' },   { "body-bytes", required_argument, 0, 'b' },
		{ "fail-status", required_argument, 0, 'f' }, { 0, 0, 0, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "n:l:m:i:t:b:f:", opts, NULL)) != -1) {
		switch (c) {
		case 'n': F.name = optarg; break;
		case 'l': listen = optarg; break;
		case 'm': F.model = optarg; break;
		case 'i': F.interval_ms = atoi(optarg); break;
		case 't': F.tokens = atoi(optarg); break;
		case 'b': F.body_bytes = strtoul(optarg, NULL, 10); break;
		case 'f': F.fail_status = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: kvf-upstream-fixture --name N --listen HOST:PORT [--model M] [--interval-ms MS] "
					"[--tokens N] [--body-bytes N] [--fail-status S]\n");
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	kvf_log_set_level(KVF_LOG_WARN);
	if (kvf_loop_new(&F.loop))
		return 1;
	kvf_loop_add_signal(F.loop, SIGTERM, on_signal, NULL);
	kvf_loop_add_signal(F.loop, SIGINT, on_signal, NULL);
	kvf_http_server_opts o = { .listen = listen, .max_conns = 8192, .max_pipeline = 64 };
	if (kvf_http_server_new(F.loop, &o, handler, NULL, &F.srv)) {
		fprintf(stderr, "kvf-upstream-fixture: %s\n", kvf_errmsg());
		return 1;
	}
	printf("port %u\n", kvf_http_server_port(F.srv));
	fflush(stdout);
	kvf_loop_run(F.loop);
	for (int i = 0; i < MAX_STREAMS; i++)
		kvf_loop_timer_stop(F.loop, &F.streams[i].t);
	kvf_http_server_destroy(F.srv);
	kvf_loop_destroy(F.loop);
	return 0;
}
