/*
 * Tests for common/http_client.c over loopback, against the kvf_http server
 * (well-behaved upstream) and a scripted raw socket server (misbehaving
 * upstream: closes, resets, partial answers, 1xx, garbage).
 *
 * Single-threaded: the test owns one kvf_loop that runs server and client,
 * and pumps it until a condition holds, so every callback and assertion runs
 * on one thread under cmocka's leak checker.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_http.h"
#include "common/kvf_http_client.h"
#include "common/kvf_log.h"
#include "common/kvf_loop.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"
#include <cmocka.h>

/* ---- the well-behaved upstream: kvf_http server ---- */

static struct {
	kvf_loop *loop;
	kvf_http_server *srv;
	char addr[64];
	int calls;
	kvf_http_req *held[16];
	int nheld;
	int server_closes;
	/* SSE from a timer */
	kvf_timer sse_timer;
	kvf_http_req *sse_req;
	int sse_sent, sse_total;
	/* big body with server-side backpressure */
	kvf_http_req *big;
	size_t big_total, big_sent;
	int big_stalls;
} S;

static void srv_on_close(kvf_http_req *req, void *ud)
{
	S.server_closes++;
	for (int i = 0; i < S.nheld; i++)
		if (S.held[i] == req)
			S.held[i] = NULL;
	if (S.sse_req == req) {
		S.sse_req = NULL;
		kvf_loop_timer_stop(S.loop, &S.sse_timer);
	}
	if (S.big == req)
		S.big = NULL;
	kvf_http_end(req);
}

static void sse_tick(kvf_loop *loop, kvf_timer *t, void *ud)
{
	char msg[48];
	int n = snprintf(msg, sizeof(msg), "{\"n\":%d}", ++S.sse_sent);
	kvf_http_send_sse(S.sse_req, NULL, NULL, msg, (size_t)n);
	if (S.sse_sent == S.sse_total) {
		kvf_http_send_sse(S.sse_req, NULL, NULL, "[DONE]", 6);
		kvf_http_end(S.sse_req);
		S.sse_req = NULL;
		kvf_loop_timer_stop(loop, t);
	}
}

static void big_produce(kvf_http_req *r, void *ud)
{
	static char chunk[65536];
	while (S.big_sent < S.big_total && kvf_http_req_pending(r) < (128u << 10)) {
		size_t n = S.big_total - S.big_sent;
		if (n > sizeof(chunk))
			n = sizeof(chunk);
		for (size_t i = 0; i < n; i++)
			chunk[i] = (char)((S.big_sent + i) % 251);
		kvf_http_send(r, chunk, n);
		S.big_sent += n;
	}
	if (S.big_sent == S.big_total) {
		kvf_http_end(r);
		S.big = NULL;
	} else {
		S.big_stalls++;
	}
}

static void srv_handler(kvf_http_req *req, void *ud)
{
	S.calls++;
	kvf_http_str path = kvf_http_req_path(req);
	char p[64];
	snprintf(p, sizeof(p), "%.*s", (int)path.len, path.p);
	char v[32];
	size_t vn;
	if (!strcmp(p, "/echo")) {
		size_t blen;
		const char *body = kvf_http_req_body(req, &blen);
		kvf_http_str xt = { "", 0 }, host = { "", 0 };
		kvf_http_req_header(req, "x-test", &xt);
		kvf_http_req_header(req, "host", &host);
		kvf_buf b = KVF_BUF_INIT;
		kvf_buf_printf(&b, "%s %.*s x=%.*s host=%.*s n=%d len=%zu:", kvf_http_method_name(kvf_http_req_method(req)),
			       (int)path.len, path.p, (int)xt.len, xt.p, (int)host.len, host.p, S.calls, blen);
		if (blen <= 64)
			kvf_buf_append(&b, body, blen);
		else {
			/* checksum of large bodies */
			uint64_t sum = 0;
			for (size_t i = 0; i < blen; i++)
				sum = sum * 31 + (unsigned char)body[i];
			kvf_buf_printf(&b, "sum=%llu", (unsigned long long)sum);
		}
		const char *hdrs[] = { "X-Upstream", "kvf", NULL };
		kvf_http_respond(req, 200, "text/plain", hdrs, b.data, b.len);
		kvf_buf_free(&b);
	} else if (!strcmp(p, "/hold")) {
		assert_true(S.nheld < 16);
		S.held[S.nheld++] = req;
		kvf_http_req_on_close(req, srv_on_close, NULL);
	} else if (!strcmp(p, "/sse")) {
		S.sse_req = req;
		S.sse_sent = 0;
		S.sse_total = 5;
		kvf_http_req_on_close(req, srv_on_close, NULL);
		kvf_http_begin_sse(req, NULL);
		kvf_loop_timer_start(S.loop, &S.sse_timer, 30, 30, sse_tick, NULL);
	} else if (!strcmp(p, "/big")) {
		assert_int_equal(kvf_http_query_get(kvf_http_req_query(req), "n", v, sizeof(v), &vn), 0);
		S.big_total = strtoul(v, NULL, 10);
		S.big_sent = 0;
		S.big_stalls = 0;
		S.big = req;
		kvf_http_req_on_close(req, srv_on_close, NULL);
		kvf_http_req_on_drain(req, big_produce, NULL);
		kvf_http_begin(req, 200, "application/octet-stream", NULL, -1);
		big_produce(req, NULL);
	} else if (!strcmp(p, "/status")) {
		assert_int_equal(kvf_http_query_get(kvf_http_req_query(req), "s", v, sizeof(v), &vn), 0);
		kvf_http_respond_error(req, atoi(v), "as asked");
	} else {
		kvf_http_respond_error(req, 404, "no such path");
	}
}

static void srv_start(const kvf_http_server_opts *opts)
{
	memset(&S, 0, sizeof(S));
	assert_int_equal(kvf_loop_new(&S.loop), 0);
	kvf_http_server_opts o = { .listen = "127.0.0.1:0" };
	if (opts)
		o = *opts;
	o.listen = "127.0.0.1:0";
	assert_int_equal(kvf_http_server_new(S.loop, &o, srv_handler, NULL, &S.srv), 0);
	snprintf(S.addr, sizeof(S.addr), "127.0.0.1:%u", kvf_http_server_port(S.srv));
}

static void srv_stop(void)
{
	kvf_loop_timer_stop(S.loop, &S.sse_timer);
	kvf_http_server_destroy(S.srv);
	kvf_loop_destroy(S.loop);
	S.loop = NULL;
}

/* ---- client side bookkeeping ---- */

typedef struct res {
	int head, done, error;
	int status;
	char xup[32];
	kvf_buf body;
	int nbody;          /* on_body calls */
	int err, stage;
	char msg[200];
	int sse_at_first;   /* server events sent when the first body piece arrived */
	int pause_after;    /* pause after this many body calls (0: never) */
	int cancel_in_body; /* cancel from inside on_body */
	kvf_http_creq *r;
	int reused;
} res;

static void on_head(kvf_http_creq *r, const kvf_http_msg *m, void *ud)
{
	res *x = ud;
	x->head++;
	x->status = m->status;
	x->reused = kvf_http_creq_reused(r);
	kvf_http_str v;
	if (kvf_http_msg_header(m, "x-upstream", &v) == 0)
		snprintf(x->xup, sizeof(x->xup), "%.*s", (int)v.len, v.p);
	assert_int_equal(kvf_http_creq_stage(r), KVF_HTTP_CS_BODY);
}

static void on_body(kvf_http_creq *r, const char *d, size_t n, void *ud)
{
	res *x = ud;
	if (x->nbody++ == 0)
		x->sse_at_first = S.sse_sent;
	kvf_buf_append(&x->body, d, n);
	if (x->pause_after && x->nbody == x->pause_after)
		kvf_http_creq_pause(r, 1);
	if (x->cancel_in_body) {
		kvf_http_creq_cancel(r);
		x->r = NULL;
	}
}

static void on_done(kvf_http_creq *r, void *ud)
{
	res *x = ud;
	x->done++;
	x->r = NULL;
}

static void on_error(kvf_http_creq *r, const kvf_http_cerror *e, void *ud)
{
	res *x = ud;
	x->error++;
	x->err = e->err;
	x->stage = e->stage;
	snprintf(x->msg, sizeof(x->msg), "%s", e->msg);
	x->r = NULL;
}

static const kvf_http_creq_cbs CBS = { on_head, on_body, on_done, on_error };

static int finished(res *x) { return x->done || x->error; }

/* Pumps the loop until all n results finished or ms passed. */
static void wait_all(res *xs, int n, int ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)ms;
	for (;;) {
		int all = 1;
		for (int i = 0; i < n; i++)
			all &= finished(&xs[i]);
		if (all || kvf_now_ms() > end)
			return;
		kvf_loop_run_once(S.loop, 5);
	}
}

static void pump(int ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)ms;
	while (kvf_now_ms() < end)
		kvf_loop_run_once(S.loop, 2);
}

static void res_init(res *x)
{
	memset(x, 0, sizeof(*x));
	kvf_buf_init(&x->body);
}

static void res_free(res *x)
{
	kvf_buf_free(&x->body);
}

static kvf_http_client_stats cstats(kvf_http_client *c)
{
	kvf_http_client_stats st;
	kvf_http_client_stats_get(c, &st);
	return st;
}

static void get(kvf_http_client *c, const char *addr, const char *target, res *x)
{
	kvf_http_creq_opts o = { .method = "GET", .target = target };
	assert_int_equal(kvf_http_client_request(c, addr, &o, &CBS, x, &x->r), 0);
}

/* ---- tests against the kvf_http server ---- */

static void test_get_post_keepalive(void **state)
{
	srv_start(NULL);
	kvf_http_client *c;
	assert_int_equal(kvf_http_client_new(S.loop, NULL, &c), 0);
	res a, b;
	res_init(&a);
	res_init(&b);
	const char *hdrs[] = { "X-Test", "one", NULL };
	kvf_http_creq_opts o = { .method = "POST", .target = "/echo", .headers = hdrs, .body = "hello", .body_len = 5 };
	assert_int_equal(kvf_http_client_request(c, S.addr, &o, &CBS, &a, &a.r), 0);
	/* No callback before the request call returns. */
	assert_int_equal(a.head + a.done + a.error, 0);
	wait_all(&a, 1, 3000);
	assert_int_equal(a.done, 1);
	assert_int_equal(a.status, 200);
	assert_string_equal(a.xup, "kvf");
	char want[128];
	snprintf(want, sizeof(want), "POST /echo x=one host=%s n=1 len=5:hello", S.addr);
	assert_string_equal(a.body.data, want);
	assert_int_equal(a.reused, 0);

	get(c, S.addr, "/echo", &b);
	wait_all(&b, 1, 3000);
	assert_int_equal(b.done, 1);
	assert_int_equal(b.reused, 1);
	kvf_http_client_stats st = cstats(c);
	assert_int_equal(st.connects, 1);
	assert_int_equal(st.reused, 1);
	assert_int_equal(st.completed, 2);
	assert_int_equal(st.idle_conns, 1);

	/* 404 is a normal response, not an error. */
	res d;
	res_init(&d);
	get(c, S.addr, "/nope", &d);
	wait_all(&d, 1, 3000);
	assert_int_equal(d.done, 1);
	assert_int_equal(d.status, 404);
	assert_non_null(strstr(d.body.data, "no such path"));
	res_free(&a);
	res_free(&b);
	res_free(&d);
	kvf_http_client_destroy(c);
	srv_stop();
}

static void test_conn_cap_and_queue(void **state)
{
	srv_start(NULL);
	kvf_http_client *c;
	kvf_http_client_opts co = { .max_conns_per_host = 2, .max_queue_per_host = 4 };
	assert_int_equal(kvf_http_client_new(S.loop, &co, &c), 0);
	res x[6];
	kvf_http_creq_opts o = { .target = "/hold" };
	for (int i = 0; i < 6; i++) {
		res_init(&x[i]);
		if (i == 4)
			pump(100); /* the first four: two go on the wire, two wait */
		assert_int_equal(kvf_http_client_request(c, S.addr, &o, &CBS, &x[i], &x[i].r), 0);
	}
	res extra;
	res_init(&extra);
	pump(100);
	/* Two on the wire, four queued; the queue is full. */
	assert_int_equal(S.nheld, 2);
	kvf_http_client_stats st = cstats(c);
	assert_int_equal(st.open_conns, 2);
	assert_int_equal(st.queued, 4);
	assert_int_equal(kvf_http_client_request(c, S.addr, &o, &CBS, &extra, NULL), KVF_E_OVERLOAD);
	/* Answer held requests one by one: each frees a slot for a queued one. */
	for (int round = 0; round < 6; round++) {
		uint64_t end = kvf_now_ms() + 3000;
		while (S.nheld <= round && kvf_now_ms() < end)
			kvf_loop_run_once(S.loop, 5);
		assert_true(S.nheld > round);
		kvf_http_respond(S.held[round], 200, "text/plain", NULL, "ok", 2);
		S.held[round] = NULL;
		pump(20);
		assert_true(cstats(c).open_conns <= 2);
	}
	wait_all(x, 6, 3000);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(x[i].done, 1);
		assert_string_equal(x[i].body.data, "ok");
		res_free(&x[i]);
	}
	st = cstats(c);
	assert_int_equal(st.connects, 2);
	assert_int_equal(st.reused, 4);
	res_free(&extra);
	kvf_http_client_destroy(c);
	srv_stop();
}

static void test_connect_refused(void **state)
{
	srv_start(NULL);
	/* A port nobody listens on: bind then close. */
	int fd;
	assert_int_equal(kvf_net_listen_tcp("127.0.0.1:0", 1, &fd), 0);
	uint16_t port;
	kvf_net_local_port(fd, &port);
	close(fd);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	kvf_http_client *c;
	assert_int_equal(kvf_http_client_new(S.loop, NULL, &c), 0);
	res x;
	res_init(&x);
	get(c, addr, "/", &x);
	wait_all(&x, 1, 3000);
	assert_int_equal(x.error, 1);
	assert_int_equal(x.err, KVF_E_CONNREFUSED);
	assert_int_equal(x.stage, KVF_HTTP_CS_CONNECT);
	assert_true(kvf_http_cstage_before_response(x.stage));
	assert_int_equal(cstats(c).connect_errors, 1);
	assert_int_equal(cstats(c).open_conns, 0);
	/* Bad addresses fail at once. */
	kvf_http_creq_opts o = { 0 };
	assert_int_equal(kvf_http_client_request(c, "nonsense", &o, &CBS, &x, NULL), KVF_E_INVAL);
	const char *bad[] = { "Content-Length", "3", NULL };
	o.headers = bad;
	assert_int_equal(kvf_http_client_request(c, S.addr, &o, &CBS, &x, NULL), KVF_E_INVAL);
	const char *inj[] = { "X-A", "1\r\nX-B: 2", NULL };
	o.headers = inj;
	assert_int_equal(kvf_http_client_request(c, S.addr, &o, &CBS, &x, NULL), KVF_E_INVAL);
	res_free(&x);
	kvf_http_client_destroy(c);
	srv_stop();
}

static void test_connect_timeout(void **state)
{
	srv_start(NULL);
	/* A listener with a full accept queue that never accepts: further SYNs
	 * are dropped, so connect() hangs until our timeout. */
	int lfd;
	assert_int_equal(kvf_net_listen_tcp("127.0.0.1:0", 0, &lfd), 0);
	uint16_t port;
	kvf_net_local_port(lfd, &port);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	int fillers[4];
	for (int i = 0; i < 4; i++)
		kvf_net_connect_tcp(addr, 1, &fillers[i]);
	usleep(50000);
	kvf_http_client *c;
	kvf_http_client_opts co = { .connect_timeout_ms = 150 };
	assert_int_equal(kvf_http_client_new(S.loop, &co, &c), 0);
	res x;
	res_init(&x);
	get(c, addr, "/", &x);
	wait_all(&x, 1, 3000);
	assert_int_equal(x.error, 1);
	assert_int_equal(x.err, KVF_E_TIMEOUT);
	assert_int_equal(x.stage, KVF_HTTP_CS_CONNECT);
	res_free(&x);
	kvf_http_client_destroy(c);
	for (int i = 0; i < 4; i++)
		close(fillers[i]);
	close(lfd);
	srv_stop();
}

static void test_first_byte_timeout(void **state)
{
	srv_start(NULL);
	kvf_http_client *c;
	assert_int_equal(kvf_http_client_new(S.loop, NULL, &c), 0);
	res x;
	res_init(&x);
	kvf_http_creq_opts o = { .target = "/hold", .first_byte_timeout_ms = 100 };
	assert_int_equal(kvf_http_client_request(c, S.addr, &o, &CBS, &x, NULL), 0);
	wait_all(&x, 1, 3000);
	assert_int_equal(x.error, 1);
	assert_int_equal(x.err, KVF_E_TIMEOUT);
	assert_int_equal(x.stage, KVF_HTTP_CS_WAIT);
	assert_non_null(strstr(x.msg, "first response byte"));
	/* The upstream saw its client go away. */
	pump(50);
	assert_int_equal(S.server_closes, 1);
	res_free(&x);
	kvf_http_client_destroy(c);
	srv_stop();
}

static void test_sse_incremental_and_cancel(void **state)
{
	srv_start(NULL);
	kvf_http_client *c;
	assert_int_equal(kvf_http_client_new(S.loop, NULL, &c), 0);
	res x;
	res_init(&x);
	get(c, S.addr, "/sse", &x);
	wait_all(&x, 1, 5000);
	assert_int_equal(x.done, 1);
	/* Pieces arrived while the server was still producing. */
	assert_true(x.nbody >= 5);
	assert_true(x.sse_at_first <= 1);
	assert_string_equal(x.body.data, "data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: {\"n\":3}\n\n"
					 "data: {\"n\":4}\n\ndata: {\"n\":5}\n\ndata: [DONE]\n\n");
	/* Cancel from inside on_body: the upstream connection closes. */
	res y;
	res_init(&y);
	y.cancel_in_body = 1;
	get(c, S.addr, "/sse", &y);
	uint64_t end = kvf_now_ms() + 3000;
	while (!S.server_closes && kvf_now_ms() < end)
		kvf_loop_run_once(S.loop, 5);
	assert_int_equal(S.server_closes, 1);
	assert_int_equal(y.nbody, 1);
	assert_int_equal(y.done + y.error, 0);
	/* Cancel from outside while waiting. */
	res z;
	res_init(&z);
	get(c, S.addr, "/hold", &z);
	pump(50);
	assert_int_equal(S.nheld, 1);
	kvf_http_creq_cancel(z.r);
	pump(50);
	assert_int_equal(S.server_closes, 2);
	assert_int_equal(z.done + z.error, 0);
	assert_int_equal(cstats(c).canceled, 2);
	res_free(&x);
	res_free(&y);
	res_free(&z);
	kvf_http_client_destroy(c);
	srv_stop();
}

static void test_pause_backpressure(void **state)
{
	srv_start(NULL);
	kvf_http_client *c;
	kvf_http_client_opts co = { .read_buffer_bytes = 4096 };
	assert_int_equal(kvf_http_client_new(S.loop, &co, &c), 0);
	res x;
	res_init(&x);
	x.pause_after = 1;
	size_t total = 8u << 20;
	char target[64];
	snprintf(target, sizeof(target), "/big?n=%zu", total);
	kvf_http_creq_opts o = { .target = target, .read_timeout_ms = 200 };
	assert_int_equal(kvf_http_client_request(c, S.addr, &o, &CBS, &x, &x.r), 0);
	pump(400); /* longer than the read timeout: paused requests do not time out */
	assert_int_equal(x.nbody, 1);
	assert_int_equal(x.error, 0);
	/* The server is held back by full socket buffers. */
	assert_true(S.big_sent < total);
	assert_true(S.big_stalls > 0);
	kvf_http_creq_pause(x.r, 0);
	wait_all(&x, 1, 10000);
	assert_int_equal(x.done, 1);
	assert_int_equal(x.body.len, total);
	for (size_t i = 0; i < total; i += 4093)
		assert_int_equal((unsigned char)x.body.data[i], i % 251);
	res_free(&x);
	kvf_http_client_destroy(c);
	srv_stop();
}

static void test_large_request_body(void **state)
{
	srv_start(NULL);
	kvf_http_client *c;
	assert_int_equal(kvf_http_client_new(S.loop, NULL, &c), 0);
	size_t n = 3u << 20;
	char *big = malloc(n);
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i++) {
		big[i] = (char)('a' + i % 26);
		sum = sum * 31 + (unsigned char)big[i];
	}
	res x;
	res_init(&x);
	kvf_http_creq_opts o = { .method = "POST", .target = "/echo", .body = big, .body_len = n };
	assert_int_equal(kvf_http_client_request(c, S.addr, &o, &CBS, &x, NULL), 0);
	free(big);
	wait_all(&x, 1, 10000);
	assert_int_equal(x.done, 1);
	char want[64];
	snprintf(want, sizeof(want), "len=%zu:sum=%llu", n, (unsigned long long)sum);
	assert_non_null(strstr(x.body.data, want));
	res_free(&x);
	kvf_http_client_destroy(c);
	srv_stop();
}

static void test_idle_closed_by_server(void **state)
{
	kvf_http_server_opts so = { .idle_timeout_ms = 100 };
	srv_start(&so);
	kvf_http_client *c;
	assert_int_equal(kvf_http_client_new(S.loop, NULL, &c), 0);
	res x;
	res_init(&x);
	get(c, S.addr, "/echo", &x);
	wait_all(&x, 1, 3000);
	assert_int_equal(x.done, 1);
	assert_int_equal(cstats(c).idle_conns, 1);
	pump(300);
	/* The server closed the idle connection; the pool noticed. */
	assert_int_equal(cstats(c).idle_conns, 0);
	assert_int_equal(cstats(c).open_conns, 0);
	res y;
	res_init(&y);
	get(c, S.addr, "/echo", &y);
	wait_all(&y, 1, 3000);
	assert_int_equal(y.done, 1);
	assert_int_equal(y.reused, 0);
	assert_int_equal(cstats(c).connects, 2);
	res_free(&x);
	res_free(&y);
	kvf_http_client_destroy(c);
	srv_stop();
}

/* ---- a scripted raw upstream ---- */

enum { RAW_ANSWER_ONCE_THEN_DROP = 1, RAW_DROP, RAW_PARTIAL, RAW_1XX_CHUNKED, RAW_GARBAGE, RAW_UNTIL_CLOSE };

static struct {
	int lfd;
	char addr[64];
	int mode;
	int conns;
	int fds[8];
	kvf_buf in[8];
	int answered[8];
} R;

static void raw_conn_cb(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	int i = (int)(intptr_t)ud;
	char *p = kvf_buf_space(&R.in[i], 4096);
	ssize_t n = recv(fd, p, 4096, 0);
	if (n <= 0) {
		kvf_loop_del_fd(loop, fd);
		close(fd);
		R.fds[i] = -1;
		return;
	}
	kvf_buf_commit(&R.in[i], (size_t)n);
	if (!strstr(R.in[i].data, "\r\n\r\n"))
		return;
	kvf_buf_reset(&R.in[i]);
	const char *ans = NULL;
	int close_after = 0;
	switch (R.mode) {
	case RAW_ANSWER_ONCE_THEN_DROP:
		/* First request on each connection answered (keep-alive), the
		 * second request on the first connection dropped unanswered. */
		if (i == 0 && R.answered[i] == 1) {
			close_after = 1;
			break;
		}
		ans = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
		break;
	case RAW_DROP:
		close_after = 1;
		break;
	case RAW_PARTIAL:
		ans = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial";
		close_after = 1;
		break;
	case RAW_1XX_CHUNKED:
		ans = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
		break;
	case RAW_GARBAGE:
		ans = "HTTP/1.1 2x0 Nope\r\n\r\n";
		break;
	case RAW_UNTIL_CLOSE:
		ans = "HTTP/1.1 200 OK\r\n\r\nall of it";
		close_after = 1;
		break;
	}
	if (ans) {
		ssize_t w = send(fd, ans, strlen(ans), MSG_NOSIGNAL);
		assert_int_equal((size_t)w, strlen(ans));
		R.answered[i]++;
	}
	if (close_after) {
		kvf_loop_del_fd(loop, fd);
		close(fd);
		R.fds[i] = -1;
	}
}

static void raw_accept_cb(kvf_loop *loop, int lfd, unsigned ev, void *ud)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	assert_true(R.conns < 8);
	int i = R.conns++;
	R.fds[i] = fd;
	kvf_buf_init(&R.in[i]);
	assert_int_equal(kvf_loop_add_fd(loop, fd, KVF_EV_READ, raw_conn_cb, (void *)(intptr_t)i), 0);
}

static void raw_start(int mode)
{
	srv_start(NULL);
	memset(&R, 0, sizeof(R));
	R.mode = mode;
	assert_int_equal(kvf_net_listen_tcp("127.0.0.1:0", 16, &R.lfd), 0);
	uint16_t port;
	kvf_net_local_port(R.lfd, &port);
	snprintf(R.addr, sizeof(R.addr), "127.0.0.1:%u", port);
	assert_int_equal(kvf_loop_add_fd(S.loop, R.lfd, KVF_EV_READ, raw_accept_cb, NULL), 0);
}

static void raw_stop(void)
{
	for (int i = 0; i < R.conns; i++) {
		if (R.fds[i] >= 0) {
			kvf_loop_del_fd(S.loop, R.fds[i]);
			close(R.fds[i]);
		}
		kvf_buf_free(&R.in[i]);
	}
	kvf_loop_del_fd(S.loop, R.lfd);
	close(R.lfd);
	srv_stop();
}

static void test_stale_connection_retried(void **state)
{
	raw_start(RAW_ANSWER_ONCE_THEN_DROP);
	kvf_http_client *c;
	assert_int_equal(kvf_http_client_new(S.loop, NULL, &c), 0);
	res a, b;
	res_init(&a);
	res_init(&b);
	get(c, R.addr, "/", &a);
	wait_all(&a, 1, 3000);
	assert_int_equal(a.done, 1);
	/* Reused connection closed without an answer: resent on a fresh one. */
	get(c, R.addr, "/", &b);
	wait_all(&b, 1, 3000);
	assert_int_equal(b.done, 1);
	assert_string_equal(b.body.data, "ok");
	assert_int_equal(b.reused, 0);
	kvf_http_client_stats st = cstats(c);
	assert_int_equal(st.stale_retries, 1);
	assert_int_equal(st.connects, 2);
	assert_int_equal(R.conns, 2);
	res_free(&a);
	res_free(&b);
	kvf_http_client_destroy(c);
	raw_stop();
}

static void test_reset_before_and_after_first_byte(void **state)
{
	raw_start(RAW_DROP);
	kvf_http_client *c;
	assert_int_equal(kvf_http_client_new(S.loop, NULL, &c), 0);
	res a;
	res_init(&a);
	get(c, R.addr, "/", &a);
	wait_all(&a, 1, 3000);
	assert_int_equal(a.error, 1);
	assert_int_equal(a.err, KVF_E_CLOSED);
	assert_int_equal(a.stage, KVF_HTTP_CS_WAIT);
	assert_true(kvf_http_cstage_before_response(a.stage));
	assert_int_equal(cstats(c).stale_retries, 0); /* fresh connection: reported */

	R.mode = RAW_PARTIAL;
	res b;
	res_init(&b);
	get(c, R.addr, "/", &b);
	wait_all(&b, 1, 3000);
	assert_int_equal(b.head, 1);
	assert_int_equal(b.error, 1);
	assert_int_equal(b.err, KVF_E_CLOSED);
	assert_int_equal(b.stage, KVF_HTTP_CS_BODY);
	assert_false(kvf_http_cstage_before_response(b.stage));
	assert_string_equal(b.body.data, "partial");
	res_free(&a);
	res_free(&b);
	kvf_http_client_destroy(c);
	raw_stop();
}

static void test_1xx_chunked_garbage_until_close(void **state)
{
	raw_start(RAW_1XX_CHUNKED);
	kvf_http_client *c;
	assert_int_equal(kvf_http_client_new(S.loop, NULL, &c), 0);
	res a;
	res_init(&a);
	get(c, R.addr, "/", &a);
	wait_all(&a, 1, 3000);
	assert_int_equal(a.done, 1);
	assert_int_equal(a.head, 1);
	assert_int_equal(a.status, 200);
	assert_string_equal(a.body.data, "hello world");

	R.mode = RAW_GARBAGE;
	res b;
	res_init(&b);
	get(c, R.addr, "/", &b);
	wait_all(&b, 1, 3000);
	assert_int_equal(b.error, 1);
	assert_int_equal(b.err, KVF_E_PARSE);

	R.mode = RAW_UNTIL_CLOSE;
	res d;
	res_init(&d);
	get(c, R.addr, "/", &d);
	wait_all(&d, 1, 3000);
	assert_int_equal(d.done, 1);
	assert_string_equal(d.body.data, "all of it");
	assert_int_equal(cstats(c).idle_conns, 0);
	res_free(&a);
	res_free(&b);
	res_free(&d);
	kvf_http_client_destroy(c);
	raw_stop();
}

static void test_destroy_with_pending(void **state)
{
	srv_start(NULL);
	kvf_http_client *c;
	kvf_http_client_opts co = { .max_conns_per_host = 1 };
	assert_int_equal(kvf_http_client_new(S.loop, &co, &c), 0);
	res x[3];
	for (int i = 0; i < 3; i++) {
		res_init(&x[i]);
		get(c, S.addr, "/hold", &x[i]);
	}
	pump(50);
	assert_int_equal(S.nheld, 1);
	kvf_http_client_destroy(c); /* one on the wire, two queued: no callbacks, no leaks */
	pump(50);
	assert_int_equal(S.server_closes, 1);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(x[i].done + x[i].error, 0);
		res_free(&x[i]);
	}
	srv_stop();
}

int main(void)
{
	kvf_log_set_level(KVF_LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_post_keepalive),
		cmocka_unit_test(test_conn_cap_and_queue),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_connect_timeout),
		cmocka_unit_test(test_first_byte_timeout),
		cmocka_unit_test(test_sse_incremental_and_cancel),
		cmocka_unit_test(test_pause_backpressure),
		cmocka_unit_test(test_large_request_body),
		cmocka_unit_test(test_idle_closed_by_server),
		cmocka_unit_test(test_stale_connection_retried),
		cmocka_unit_test(test_reset_before_and_after_first_byte),
		cmocka_unit_test(test_1xx_chunked_garbage_until_close),
		cmocka_unit_test(test_destroy_with_pending),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
