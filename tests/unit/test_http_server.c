/*
 * Tests for common/http_server.c over real loopback sockets.
 *
 * Single-threaded on purpose: the test owns the kvf_loop and pumps it while
 * its client sockets (non-blocking) wait for bytes, so handler state and
 * assertions live on one thread and cmocka's leak checker sees every
 * allocation. Clients read responses with the library's own response parser.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_http.h"
#include "common/kvf_log.h"
#include "common/kvf_loop.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"

/* ---- server side ---- */

static struct {
	kvf_loop *loop;
	kvf_http_server *srv;
	int calls;
	kvf_http_req *held[8];
	int nheld;
	int closes;
	int close_end_rc;
	int respond_rc, bad_rc;
	char peer[64];
	kvf_timer later;
	kvf_http_req *later_req;
	/* backpressure producer */
	kvf_http_req *big;
	size_t big_total, big_sent, big_max_pending;
	int big_drains, big_paused;
	int done_calls;
	/* SSE produced from a periodic timer */
	kvf_timer sse_timer;
	kvf_http_req *sse_req;
	int sse_n;
} T;

extern char **environ;

static void on_close_end(kvf_http_req *req, void *ud)
{
	T.closes++;
	assert_true(kvf_http_req_closed(req));
	for (int i = 0; i < T.nheld; i++)
		if (T.held[i] == req)
			T.held[i] = NULL;
	T.close_end_rc = kvf_http_end(req);
}

static void on_later(kvf_loop *loop, kvf_timer *t, void *ud)
{
	kvf_http_req *r = T.later_req;
	T.later_req = NULL;
	T.respond_rc = kvf_http_respond(r, 201, "text/plain", NULL, "later", 5);
}

static void on_sse_tick(kvf_loop *loop, kvf_timer *t, void *ud)
{
	char msg[32];
	int n = snprintf(msg, sizeof(msg), "{\"n\":%d}", ++T.sse_n);
	assert_int_equal(kvf_http_send_sse(T.sse_req, NULL, NULL, msg, (size_t)n), 0);
	if (T.sse_n == 3) {
		assert_int_equal(kvf_http_send_sse(T.sse_req, NULL, NULL, "[DONE]", 6), 0);
		assert_int_equal(kvf_http_end(T.sse_req), 0);
		T.sse_req = NULL;
		kvf_loop_timer_stop(loop, t);
	}
}

static void big_produce(kvf_http_req *r, void *ud)
{
	static char chunk[65536];
	T.big_drains++;
	while (T.big_sent < T.big_total && kvf_http_req_pending(r) < (256u << 10)) {
		size_t n = T.big_total - T.big_sent;
		if (n > sizeof(chunk))
			n = sizeof(chunk);
		for (size_t i = 0; i < n; i++)
			chunk[i] = (char)((T.big_sent + i) % 251);
		assert_int_equal(kvf_http_send(r, chunk, n), 0);
		T.big_sent += n;
		if (kvf_http_req_pending(r) > T.big_max_pending)
			T.big_max_pending = kvf_http_req_pending(r);
	}
	if (T.big_sent == T.big_total) {
		assert_int_equal(kvf_http_end(r), 0);
		T.big = NULL;
	} else {
		T.big_paused++;
	}
}

static void handler(kvf_http_req *req, void *ud)
{
	T.calls++;
	kvf_http_str path = kvf_http_req_path(req);
	char p[64];
	snprintf(p, sizeof(p), "%.*s", (int)path.len, path.p);
	if (!strcmp(p, "/echo")) {
		kvf_buf b = KVF_BUF_INIT;
		const kvf_http_msg *m = kvf_http_req_msg(req);
		size_t blen;
		const char *body = kvf_http_req_body(req, &blen);
		kvf_http_str q = kvf_http_req_query(req), xt = { "", 0 };
		kvf_http_req_header(req, "x-test", &xt);
		snprintf(T.peer, sizeof(T.peer), "%s", kvf_http_req_peer(req));
		assert_ptr_equal(kvf_http_req_server(req), T.srv);
		kvf_buf_printf(&b, "%s %.*s q=%.*s x=%.*s n=%d body=", kvf_http_method_name(m->method),
			       (int)path.len, path.p, (int)q.len, q.p, (int)xt.len, xt.p, T.calls);
		kvf_buf_append(&b, body, blen);
		const char *hdrs[] = { "X-Kvf-Route", "echo", NULL };
		T.respond_rc = kvf_http_respond(req, 200, "text/plain", hdrs, b.data, b.len);
		kvf_buf_free(&b);
	} else if (!strcmp(p, "/hold") || !strcmp(p, "/sse") || !strcmp(p, "/sse10")) {
		assert_true(T.nheld < 8);
		T.held[T.nheld++] = req;
		kvf_http_req_on_close(req, on_close_end, NULL);
		if (p[1] == 's')
			assert_int_equal(kvf_http_begin_sse(req, NULL), 0);
	} else if (!strcmp(p, "/ssetimer")) {
		T.sse_req = req;
		assert_int_equal(kvf_http_begin_sse(req, NULL), 0);
		kvf_loop_timer_start(T.loop, &T.sse_timer, 20, 20, on_sse_tick, NULL);
	} else if (!strcmp(p, "/later")) {
		T.later_req = req;
		kvf_loop_timer_start(T.loop, &T.later, 30, 0, on_later, NULL);
	} else if (!strcmp(p, "/big")) {
		char v[32];
		size_t n;
		assert_int_equal(kvf_http_query_get(kvf_http_req_query(req), "n", v, sizeof(v), &n), 0);
		T.big_total = strtoul(v, NULL, 10);
		T.big_sent = 0;
		T.big = req;
		kvf_http_req_on_drain(req, big_produce, NULL);
		assert_int_equal(kvf_http_begin(req, 200, "application/octet-stream", NULL, -1), 0);
		big_produce(req, NULL);
	} else if (!strcmp(p, "/blob")) {
		char v[32];
		size_t n;
		assert_int_equal(kvf_http_query_get(kvf_http_req_query(req), "n", v, sizeof(v), &n), 0);
		size_t len = strtoul(v, NULL, 10);
		char *blob = malloc(len);
		memset(blob, 'z', len);
		T.respond_rc = kvf_http_respond(req, 200, NULL, NULL, blob, len);
		free(blob);
	} else if (!strcmp(p, "/close")) {
		kvf_http_req_set_close(req);
		T.respond_rc = kvf_http_respond(req, 200, NULL, NULL, "bye", 3);
	} else if (!strcmp(p, "/bad")) {
		const char *hdrs[] = { "Content-Length", "5", NULL };
		T.bad_rc = kvf_http_respond(req, 200, "text/plain", hdrs, "hello", 5);
	} else if (!strcmp(p, "/nocontent")) {
		T.respond_rc = kvf_http_respond(req, 204, NULL, NULL, NULL, 0);
	} else if (!strcmp(p, "/sized")) {
		T.respond_rc = kvf_http_begin(req, 200, "text/plain", NULL, 10);
		assert_int_equal(kvf_http_send(req, "0123", 4), 0);
		assert_int_equal(kvf_http_send(req, "456789x", 7), KVF_E_RANGE);
		assert_int_equal(kvf_http_send(req, "456789", 6), 0);
		assert_int_equal(kvf_http_end(req), 0);
	} else if (!strcmp(p, "/short")) {
		assert_int_equal(kvf_http_begin(req, 200, "text/plain", NULL, 10), 0);
		assert_int_equal(kvf_http_send(req, "0123", 4), 0);
		T.respond_rc = kvf_http_end(req);
	} else if (!strcmp(p, "/error")) {
		T.respond_rc = kvf_http_respond_error(req, 429, "slow \"down\"");
	} else {
		T.respond_rc = kvf_http_respond_error(req, 404, "no such path");
	}
}

static void srv_start(const kvf_http_server_opts *opts)
{
	memset(&T, 0, sizeof(T));
	assert_int_equal(kvf_loop_new(&T.loop), 0);
	kvf_http_server_opts o = { .listen = "127.0.0.1:0" };
	if (opts)
		o = *opts;
	if (!o.listen)
		o.listen = "127.0.0.1:0";
	assert_int_equal(kvf_http_server_new(T.loop, &o, handler, NULL, &T.srv), 0);
	assert_true(kvf_http_server_port(T.srv) > 0);
}

static void srv_stop(void)
{
	kvf_loop_timer_stop(T.loop, &T.later);
	kvf_loop_timer_stop(T.loop, &T.sse_timer);
	kvf_http_server_destroy(T.srv);
	T.srv = NULL;
	kvf_loop_destroy(T.loop);
	T.loop = NULL;
}

static kvf_http_server_stats stats(void)
{
	kvf_http_server_stats st;
	kvf_http_server_stats_get(T.srv, &st);
	return st;
}

static void pump(int ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)ms;
	while (kvf_now_ms() < end)
		kvf_loop_run_once(T.loop, 2);
}

/* ---- client side ---- */

typedef struct cli {
	int fd;
	kvf_buf in;
	int eof;
	int reset;
} cli;

/* Raw connect to the server's port (blocking, then non-blocking I/O). Returns
 * the connect() errno, 0 on success. */
static int raw_connect(int *fd_out, int rcvbuf)
{
	uint16_t port = kvf_http_server_port(T.srv);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (rcvbuf)
		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(0x7f000001) };
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;
		close(fd);
		return e;
	}
	*fd_out = fd;
	return 0;
}

static void cli_open_rcvbuf(cli *c, int rcvbuf)
{
	memset(c, 0, sizeof(*c));
	kvf_buf_init(&c->in);
	assert_int_equal(raw_connect(&c->fd, rcvbuf), 0);
	assert_int_equal(kvf_net_set_nonblock(c->fd, 1), 0);
}

static void cli_open(cli *c)
{
	cli_open_rcvbuf(c, 0);
}

static void cli_close(cli *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	kvf_buf_free(&c->in);
}

static void cli_send(cli *c, const char *s)
{
	size_t n = strlen(s), off = 0;
	uint64_t end = kvf_now_ms() + 5000;
	while (off < n) {
		ssize_t w = send(c->fd, s + off, n - off, MSG_NOSIGNAL);
		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		assert_true(w < 0 && errno == EAGAIN);
		assert_true(kvf_now_ms() < end);
		kvf_loop_run_once(T.loop, 2);
	}
}

static void cli_poll(cli *c)
{
	for (;;) {
		char *p = kvf_buf_space(&c->in, 65536);
		assert_non_null(p);
		ssize_t n = recv(c->fd, p, 65536, 0);
		if (n > 0) {
			kvf_buf_commit(&c->in, (size_t)n);
			continue;
		}
		if (n == 0)
			c->eof = 1;
		else if (errno == ECONNRESET)
			c->eof = c->reset = 1;
		return;
	}
}

/* Parsed responses found in a client's input. */
typedef struct resps {
	int n;
	int status[16];
	int keep_alive[16];
	kvf_buf body[16];
	int partial_head;   /* the next response's head arrived, not its end */
	size_t partial_body; /* body bytes of that response so far */
} resps;

static void resps_free(resps *r)
{
	for (int i = 0; i < 16; i++)
		kvf_buf_free(&r->body[i]);
}

static void parse_resps(const cli *c, int head_method, resps *out)
{
	memset(out, 0, sizeof(*out));
	kvf_http_parser p;
	kvf_http_limits lim = { .max_body_bytes = UINT64_MAX };
	assert_int_equal(kvf_http_parser_init(&p, KVF_HTTP_RESPONSE, &lim), 0);
	kvf_http_parser_set_req_method(&p, head_method);
	const char *d = c->in.data ? kvf_buf_head(&c->in) : "";
	size_t n = kvf_buf_avail(&c->in);
	for (;;) {
		size_t used;
		kvf_http_event ev;
		int rc = kvf_http_parse(&p, d, n, &used, &ev);
		if (rc == KVF_E_AGAIN && c->eof)
			rc = kvf_http_parser_eof(&p, &ev);
		if (rc < 0)
			break;
		d += used;
		n -= used;
		assert_true(out->n < 16);
		if (ev.type == KVF_HTTP_EV_HEAD) {
			out->status[out->n] = p.msg.status;
			out->keep_alive[out->n] = p.msg.keep_alive;
			out->partial_head = 1;
		} else if (ev.type == KVF_HTTP_EV_BODY) {
			kvf_buf_append(&out->body[out->n], ev.data, ev.len);
			out->partial_body += ev.len;
		} else if (ev.type == KVF_HTTP_EV_DONE) {
			if (p.msg.status == 100) {
				out->status[out->n] = 0;
			} else {
				kvf_buf_putc(&out->body[out->n], 0);
				out->body[out->n].len--;
				out->n++;
			}
			out->partial_head = 0;
			out->partial_body = 0;
			kvf_http_parser_reset(&p);
			kvf_http_parser_set_req_method(&p, head_method);
		}
	}
	kvf_http_parser_free(&p);
}

static const char *body_of(const resps *r, int i)
{
	return r->body[i].data ? r->body[i].data : "";
}

/* Pumps the loop until the client holds n complete responses (or EOF when
 * n < 0), up to ms. */
static int wait_resps(cli *c, int n, int ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)ms;
	for (;;) {
		kvf_loop_run_once(T.loop, 2);
		cli_poll(c);
		if (n < 0 && c->eof)
			return 1;
		if (n >= 0) {
			resps r;
			parse_resps(c, KVF_HTTP_GET, &r);
			int got = r.n;
			resps_free(&r);
			if (got >= n)
				return 1;
		}
		if (kvf_now_ms() > end)
			return 0;
	}
}

static int wait_text(cli *c, const char *needle, int ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)ms;
	for (;;) {
		kvf_loop_run_once(T.loop, 2);
		cli_poll(c);
		if (c->in.data && memmem(kvf_buf_head(&c->in), kvf_buf_avail(&c->in), needle, strlen(needle)))
			return 1;
		if (kvf_now_ms() > end)
			return 0;
	}
}

static int has_text(const cli *c, const char *needle)
{
	return c->in.data &&
	       memmem(kvf_buf_head(&c->in), kvf_buf_avail(&c->in), needle, strlen(needle)) != NULL;
}

/* Waits until the client's input ends with `tail` (cheap on big bodies). */
static int wait_tail(cli *c, const char *tail, int ms)
{
	size_t n = strlen(tail);
	uint64_t end = kvf_now_ms() + (uint64_t)ms;
	for (;;) {
		kvf_loop_run_once(T.loop, 2);
		cli_poll(c);
		size_t a = kvf_buf_avail(&c->in);
		if (a >= n && memcmp(kvf_buf_head(&c->in) + a - n, tail, n) == 0)
			return 1;
		if (kvf_now_ms() > end)
			return 0;
	}
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

/* ---- tests ---- */

static void test_keep_alive(void **state)
{
	srv_start(NULL);
	cli c;
	cli_open(&c);
	cli_send(&c, "GET /echo?a=1 HTTP/1.1\r\nHost: t\r\nX-Test: v\r\n\r\n");
	assert_true(wait_resps(&c, 1, 2000));
	resps r;
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_int_equal(r.status[0], 200);
	assert_int_equal(r.keep_alive[0], 1);
	assert_string_equal(body_of(&r, 0), "GET /echo q=a=1 x=v n=1 body=");
	assert_true(has_text(&c, "\r\nDate: "));
	assert_true(has_text(&c, "\r\nX-Kvf-Route: echo\r\n"));
	assert_true(has_text(&c, "\r\nContent-Length: 29\r\n"));
	assert_false(has_text(&c, "Connection:"));
	resps_free(&r);
	/* second request, same connection */
	cli_send(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
	assert_true(wait_resps(&c, 2, 2000));
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_string_equal(body_of(&r, 1), "POST /echo q= x= n=2 body=hello");
	assert_false(c.eof);
	resps_free(&r);
	kvf_http_server_stats st = stats();
	assert_int_equal(st.accepted, 1);
	assert_int_equal(st.requests, 2);
	assert_int_equal(st.responses[2], 2);
	assert_int_equal(st.open_conns, 1);
	assert_int_equal(st.active_reqs, 0);
	assert_true(st.bytes_in > 0 && st.bytes_out > 0);
	assert_int_equal(T.respond_rc, 0);
	/* a response that asks to close */
	cli_send(&c, GET("/close"));
	assert_true(wait_resps(&c, -1, 2000));
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 3);
	assert_string_equal(body_of(&r, 2), "bye");
	assert_int_equal(r.keep_alive[2], 0);
	resps_free(&r);
	cli_close(&c);
	srv_stop();
}

static void test_http10(void **state)
{
	srv_start(NULL);
	cli c;
	cli_open(&c);
	cli_send(&c, "GET /echo HTTP/1.0\r\n\r\n");
	assert_true(wait_resps(&c, -1, 2000)); /* closed after the answer */
	assert_true(has_text(&c, "Connection: close\r\n"));
	resps r;
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 1);
	resps_free(&r);
	cli_close(&c);

	cli_open(&c);
	cli_send(&c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	assert_true(wait_resps(&c, 1, 2000));
	assert_true(has_text(&c, "Connection: keep-alive\r\n"));
	cli_send(&c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	assert_true(wait_resps(&c, 2, 2000));
	assert_false(c.eof);
	cli_close(&c);

	/* streaming to an HTTP/1.0 client: raw body, ends with the close */
	cli_open(&c);
	cli_send(&c, "GET /sse10 HTTP/1.0\r\n\r\n");
	pump(30);
	assert_int_equal(T.nheld, 1);
	assert_int_equal(kvf_http_send_sse(T.held[0], NULL, NULL, "x", 1), 0);
	kvf_http_req_on_close(T.held[0], NULL, NULL);
	assert_int_equal(kvf_http_end(T.held[0]), 0);
	assert_true(wait_resps(&c, -1, 2000));
	assert_false(has_text(&c, "chunked"));
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 1);
	assert_string_equal(body_of(&r, 0), "data: x\n\n");
	resps_free(&r);
	cli_close(&c);
	srv_stop();
}

static void test_pipelining_order(void **state)
{
	srv_start(NULL);
	cli c;
	cli_open(&c);
	/* an async request first, two quick ones behind it, in one write */
	cli_send(&c, GET("/hold") GET("/echo?i=2") "POST /echo?i=3 HTTP/1.1\r\nHost: t\r\n"
		 "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
	pump(50);
	cli_poll(&c);
	assert_int_equal(kvf_buf_avail(&c.in), 0);
	assert_int_equal(T.calls, 1);     /* the others wait their turn */
	assert_int_equal(T.nheld, 1);
	kvf_http_req *h = T.held[0];
	assert_int_equal(kvf_http_req_pending(h), 0);
	assert_false(kvf_http_req_closed(h));
	assert_int_equal(kvf_http_respond(h, 200, "text/plain", NULL, "first", 5), 0);
	T.held[0] = NULL;
	assert_true(wait_resps(&c, 3, 2000));
	resps r;
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_string_equal(body_of(&r, 0), "first");
	assert_string_equal(body_of(&r, 1), "GET /echo q=i=2 x= n=2 body=");
	assert_string_equal(body_of(&r, 2), "POST /echo q=i=3 x= n=3 body=abc");
	resps_free(&r);
	assert_int_equal(stats().requests, 3);

	/* a large synchronous answer ahead of a pipelined one: the second waits
	 * for the output to drain, then still gets dispatched */
	cli_send(&c, GET("/blob?n=400000") GET("/echo?i=after"));
	assert_true(wait_resps(&c, 5, 3000));
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_int_equal(r.body[3].len, 400000);
	assert_string_equal(body_of(&r, 4), "GET /echo q=i=after x= n=5 body=");
	resps_free(&r);
	kvf_buf_reset(&c.in);

	/* a request split over many writes, chunked body arriving in pieces */
	const char *parts[] = { "POST /echo HTTP/1.1\r\nHo", "st: t\r\nTransfer-Enc", "oding: chunked\r\n\r",
				"\n5;x=1\r\nhel", "lo\r\n6\r\n worl", "d\r\n0\r\n", "\r\n" };
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		cli_send(&c, parts[i]);
		pump(5);
	}
	assert_true(wait_resps(&c, 1, 2000));
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_string_equal(body_of(&r, 0), "POST /echo q= x= n=6 body=hello world");
	resps_free(&r);
	cli_close(&c);
	srv_stop();
}

static void test_expect_continue(void **state)
{
	kvf_http_server_opts o = { .limits = { .max_body_bytes = 100 } };
	srv_start(&o);
	cli c;
	cli_open(&c);
	cli_send(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
	assert_true(wait_text(&c, "HTTP/1.1 100 Continue\r\n\r\n", 2000));
	assert_int_equal(T.calls, 0);
	cli_send(&c, "12345");
	assert_true(wait_resps(&c, 1, 2000));
	resps r;
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_int_equal(r.status[0], 200);
	assert_string_equal(body_of(&r, 0), "POST /echo q= x= n=1 body=12345");
	resps_free(&r);
	assert_int_equal(stats().continues, 1);
	/* too large: 413 at once, no 100, connection closed */
	cli c2;
	cli_open(&c2);
	cli_send(&c2, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 101\r\n\r\n");
	assert_true(wait_resps(&c2, -1, 2000));
	assert_false(has_text(&c2, "100 Continue"));
	parse_resps(&c2, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.status[0], 413);
	assert_int_equal(r.keep_alive[0], 0);
	assert_non_null(strstr(body_of(&r, 0), "\"message\":\"request body too large\""));
	resps_free(&r);
	/* a body that comes anyway makes the 100 unnecessary */
	cli_send(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok");
	assert_true(wait_resps(&c, 2, 2000));
	assert_int_equal(stats().continues, 1);
	assert_int_equal(stats().err_413, 1);
	cli_close(&c);
	cli_close(&c2);
	srv_stop();
}

static void test_timeouts(void **state)
{
	kvf_http_server_opts o = { .header_timeout_ms = 150, .idle_timeout_ms = 150, .linger_ms = 100 };
	srv_start(&o);
	cli slow, silent, idle;
	cli_open(&slow);
	cli_open(&silent);
	cli_open(&idle);
	cli_send(&slow, "GET /echo HT");
	cli_send(&idle, GET("/echo"));
	assert_true(wait_resps(&idle, 1, 2000));
	/* all three get closed */
	assert_true(wait_resps(&slow, -1, 3000));
	assert_true(wait_resps(&silent, -1, 3000));
	assert_true(wait_resps(&idle, -1, 3000));
	resps r;
	parse_resps(&slow, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.status[0], 408);
	assert_non_null(strstr(body_of(&r, 0), "request header timeout"));
	resps_free(&r);
	assert_int_equal(kvf_buf_avail(&silent.in), 0);
	parse_resps(&idle, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 1); /* only its answer, nothing more */
	resps_free(&r);
	cli_close(&slow); /* ends the lingering close */
	pump(50);
	kvf_http_server_stats st = stats();
	assert_int_equal(st.timeouts, 3);
	assert_int_equal(st.err_408, 1);
	assert_int_equal(st.parse_errors, 0);
	assert_int_equal(st.open_conns, 0);
	cli_close(&slow);
	cli_close(&silent);
	cli_close(&idle);
	srv_stop();
}

static void test_malformed_isolated(void **state)
{
	kvf_http_server_opts o = { .limits = { .max_line_bytes = 64, .max_headers = 4 } };
	srv_start(&o);
	cli good, bad, longline, many, piped;
	cli_open(&good);
	cli_send(&good, GET("/echo"));
	assert_true(wait_resps(&good, 1, 2000));

	cli_open(&bad);
	cli_send(&bad, "GET /echo HTTP/1.1\r\nHost : t\r\n\r\n");
	assert_true(wait_resps(&bad, -1, 2000));
	resps r;
	parse_resps(&bad, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.status[0], 400);
	assert_string_equal(body_of(&r, 0), "{\"error\":{\"message\":\"invalid header name\","
					    "\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}");
	assert_true(has_text(&bad, "Content-Type: application/json\r\n"));
	assert_true(has_text(&bad, "Connection: close\r\n"));
	resps_free(&r);

	cli_open(&longline);
	cli_send(&longline, "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n");
	assert_true(wait_resps(&longline, -1, 2000));
	parse_resps(&longline, KVF_HTTP_GET, &r);
	assert_int_equal(r.status[0], 414);
	resps_free(&r);

	cli_open(&many);
	cli_send(&many, "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n");
	assert_true(wait_resps(&many, -1, 2000));
	parse_resps(&many, KVF_HTTP_GET, &r);
	assert_int_equal(r.status[0], 431);
	resps_free(&r);

	/* valid request, then garbage, in one write: 200, then 400, then close */
	cli_open(&piped);
	cli_send(&piped, GET("/echo") "BLAH\r\n\r\n");
	assert_true(wait_resps(&piped, -1, 2000));
	parse_resps(&piped, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.status[0], 200);
	assert_int_equal(r.keep_alive[0], 0); /* it knew the connection would close */
	assert_int_equal(r.status[1], 400);
	resps_free(&r);

	/* the first connection is unaffected */
	cli_send(&good, GET("/echo"));
	assert_true(wait_resps(&good, 2, 2000));
	assert_false(good.eof);
	kvf_http_server_stats st = stats();
	assert_int_equal(st.err_400, 2);
	assert_int_equal(st.err_414, 1);
	assert_int_equal(st.err_431, 1);
	assert_int_equal(st.parse_errors, 4);
	assert_int_equal(st.responses[4], 4);
	cli_close(&good);
	cli_close(&bad);
	cli_close(&longline);
	cli_close(&many);
	cli_close(&piped);
	srv_stop();
}

static void test_async_and_errors(void **state)
{
	srv_start(NULL);
	cli c;
	cli_open(&c);
	cli_send(&c, GET("/later") GET("/error") GET("/nope") GET("/bad") GET("/nocontent")
		 GET("/sized") "HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\n");
	pump(10);
	cli_poll(&c);
	assert_int_equal(kvf_buf_avail(&c.in), 0); /* /later answers from a timer */
	assert_true(wait_resps(&c, 6, 2000));
	resps r;
	parse_resps(&c, KVF_HTTP_GET, &r); /* the HEAD answer is parsed separately */
	assert_int_equal(r.status[0], 201);
	assert_string_equal(body_of(&r, 0), "later");
	assert_int_equal(r.status[1], 429);
	assert_non_null(strstr(body_of(&r, 1), "\"message\":\"slow \\\"down\\\"\",\"type\":\"rate_limit_error\""));
	assert_int_equal(r.status[2], 404);
	assert_int_equal(r.status[3], 500); /* the handler tried to set Content-Length */
	assert_non_null(strstr(body_of(&r, 3), "server_error"));
	assert_int_equal(r.status[4], 204);
	assert_int_equal(r.status[5], 200);
	assert_string_equal(body_of(&r, 5), "0123456789");
	resps_free(&r);
	assert_false(has_text(&c, "204 No Content\r\nContent-Length"));
	/* the HEAD answer: a Content-Length, no body; the connection stays usable */
	assert_true(wait_text(&c, "HTTP/1.1 200 OK\r\nDate", 2000));
	const char *last = NULL;
	for (const char *p = kvf_buf_head(&c.in); (p = strstr(p, "HTTP/1.1 ")); p++)
		last = p;
	assert_non_null(strstr(last, "Content-Length: 26\r\n")); /* "HEAD /echo q= x= n=7 body=" */
	assert_true(last[strlen(last) - 1] == '\n' && last[strlen(last) - 3] == '\n');
	cli_send(&c, GET("/echo"));
	assert_true(wait_text(&c, "body=", 2000));
	assert_int_equal(T.respond_rc, 0);
	assert_int_equal(T.bad_rc, KVF_E_INVAL);
	cli_close(&c);

	/* a Content-Length stream that ends short closes the connection */
	cli_open(&c);
	cli_send(&c, GET("/short"));
	assert_true(wait_resps(&c, -1, 2000));
	assert_int_equal(T.respond_rc, KVF_E_RANGE);
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 0); /* truncated */
	resps_free(&r);
	cli_close(&c);
	srv_stop();
}

static void test_sse_streaming(void **state)
{
	srv_start(NULL);
	cli c;
	cli_open(&c);
	cli_send(&c, GET("/sse"));
	assert_true(wait_text(&c, "\r\n\r\n", 2000));
	assert_true(has_text(&c, "Content-Type: text/event-stream\r\n"));
	assert_true(has_text(&c, "Cache-Control: no-cache\r\n"));
	assert_true(has_text(&c, "Transfer-Encoding: chunked\r\n"));
	kvf_http_req *s = T.held[0];
	assert_non_null(s);
	const char *toks[] = { "{\"t\":\"Hel\"}", "{\"t\":\"lo\"}", "[DONE]" };
	char want[64];
	for (int i = 0; i < 3; i++) {
		assert_int_equal(kvf_http_send_sse(s, NULL, NULL, toks[i], strlen(toks[i])), 0);
		snprintf(want, sizeof(want), "data: %s\n\n", toks[i]);
		/* each event arrives before the next is produced */
		assert_true(wait_text(&c, want, 2000));
		resps r;
		parse_resps(&c, KVF_HTTP_GET, &r);
		assert_int_equal(r.n, 0);
		assert_int_equal(r.partial_head, 1);
		resps_free(&r);
		if (i == 0) {
			assert_int_equal(kvf_http_send_sse_comment(s, "ping"), 0);
			assert_int_equal(kvf_http_send_sse(s, "bad\n", NULL, "x", 1), KVF_E_INVAL);
		}
	}
	kvf_http_req_on_close(s, NULL, NULL);
	assert_int_equal(kvf_http_end(s), 0);
	assert_true(wait_resps(&c, 1, 2000));
	resps r;
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_string_equal(body_of(&r, 0), "data: {\"t\":\"Hel\"}\n\n: ping\n\ndata: {\"t\":\"lo\"}\n\ndata: [DONE]\n\n");
	resps_free(&r);
	cli_close(&c);
	srv_stop();
}

static void test_client_disconnect(void **state)
{
	srv_start(NULL);
	cli a, b;
	cli_open(&a);
	cli_open(&b);
	cli_send(&a, GET("/hold"));
	cli_send(&b, GET("/sse"));
	pump(30);
	assert_int_equal(T.nheld, 2);
	assert_int_equal(stats().active_reqs, 2);
	/* a waits for a backend; b is streaming */
	assert_int_equal(kvf_http_send_sse(T.held[1], NULL, NULL, "one", 3), 0);
	assert_true(wait_text(&b, "data: one", 2000));
	cli_close(&a);
	cli_close(&b);
	uint64_t end = kvf_now_ms() + 2000;
	while (T.closes < 2 && kvf_now_ms() < end)
		kvf_loop_run_once(T.loop, 5);
	assert_int_equal(T.closes, 2);
	assert_int_equal(T.close_end_rc, KVF_E_CLOSED);
	pump(10);
	kvf_http_server_stats st = stats();
	assert_int_equal(st.client_aborts, 2);
	assert_int_equal(st.active_reqs, 0);
	assert_int_equal(st.open_conns, 0);
	srv_stop();
}

static void test_backpressure(void **state)
{
	srv_start(NULL);
	cli c;
	cli_open_rcvbuf(&c, 32 << 10);
	cli_send(&c, GET("/big?n=16777216"));
	pump(100); /* the client reads nothing meanwhile */
	assert_true(T.big_paused >= 1);
	assert_true(T.big_sent < T.big_total); /* the producer waited */
	assert_true(T.big_max_pending >= (256u << 10));
	assert_true(T.big_max_pending < (512u << 10));
	assert_non_null(T.big);
	assert_true(kvf_http_req_pending(T.big) > 0);
	/* now read it all */
	assert_true(wait_tail(&c, "\r\n0\r\n\r\n", 10000));
	assert_null(T.big);
	assert_int_equal(T.big_sent, 16777216);
	assert_true(T.big_drains > 2);
	resps r;
	parse_resps(&c, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.body[0].len, 16777216);
	const unsigned char *d = (const unsigned char *)r.body[0].data;
	for (size_t i = 0; i < r.body[0].len; i++)
		if (d[i] != i % 251)
			fail_msg("byte %zu is %u", i, d[i]);
	resps_free(&r);
	cli_close(&c);
	srv_stop();
}

static void on_done(kvf_http_server *s, void *ud)
{
	T.done_calls++;
}

static void test_graceful_shutdown(void **state)
{
	srv_start(NULL);
	cli busy, idle, partial;
	cli_open(&busy);
	cli_open(&idle);
	cli_open(&partial);
	cli_send(&busy, GET("/hold") GET("/echo"));
	cli_send(&idle, GET("/echo"));
	cli_send(&partial, "GET /echo HTTP/1.1\r\nHo");
	assert_true(wait_resps(&idle, 1, 2000));
	pump(20);
	assert_int_equal(T.nheld, 1);
	kvf_http_server_shutdown(T.srv, on_done, NULL);
	assert_true(wait_resps(&idle, -1, 2000));
	assert_true(wait_resps(&partial, -1, 2000));
	assert_int_equal(kvf_buf_avail(&partial.in), 0);
	/* no new connections */
	int fd;
	assert_int_equal(raw_connect(&fd, 0), ECONNREFUSED);
	pump(20);
	assert_int_equal(T.done_calls, 0);
	assert_false(busy.eof);
	/* the in-flight request finishes, then its connection closes */
	assert_int_equal(kvf_http_respond(T.held[0], 200, "text/plain", NULL, "done", 4), 0);
	assert_true(wait_resps(&busy, -1, 2000));
	resps r;
	parse_resps(&busy, KVF_HTTP_GET, &r);
	assert_int_equal(r.n, 1); /* the pipelined /echo was dropped */
	assert_string_equal(body_of(&r, 0), "done");
	assert_int_equal(r.keep_alive[0], 0);
	resps_free(&r);
	cli_close(&busy); /* ends the lingering close */
	pump(30);
	assert_int_equal(T.done_calls, 1);
	assert_int_equal(stats().open_conns, 0);
	cli_close(&busy);
	cli_close(&idle);
	cli_close(&partial);
	srv_stop();
}

static void test_max_conns(void **state)
{
	kvf_http_server_opts o = { .max_conns = 2 };
	srv_start(&o);
	cli a, b, c;
	cli_open(&a);
	cli_send(&a, GET("/echo"));
	assert_true(wait_resps(&a, 1, 2000));
	cli_open(&b);
	cli_send(&b, GET("/echo"));
	assert_true(wait_resps(&b, 1, 2000));
	cli_open(&c); /* completes in the kernel backlog */
	cli_send(&c, GET("/echo"));
	pump(50);
	cli_poll(&c);
	assert_int_equal(kvf_buf_avail(&c.in), 0);
	assert_int_equal(stats().accepted, 2);
	cli_close(&a);
	assert_true(wait_resps(&c, 1, 2000));
	assert_int_equal(stats().accepted, 3);
	cli_close(&b);
	cli_close(&c);
	srv_stop();
}

static void test_destroy_with_active(void **state)
{
	srv_start(NULL);
	cli c;
	cli_open(&c);
	cli_send(&c, GET("/hold"));
	pump(30);
	assert_int_equal(T.nheld, 1);
	/* destroy while the handler holds a request: on_close runs, all freed */
	kvf_http_server_destroy(T.srv);
	T.srv = NULL;
	assert_int_equal(T.closes, 1);
	kvf_loop_destroy(T.loop);
	cli_poll(&c);
	assert_true(c.eof);
	cli_close(&c);
	kvf_http_server_destroy(NULL);

	/* a listening socket made by the daemon */
	int lfd;
	assert_int_equal(kvf_net_listen_tcp("127.0.0.1:0", 16, &lfd), 0);
	uint16_t lport;
	assert_int_equal(kvf_net_local_port(lfd, &lport), 0);
	kvf_http_server_opts fo = { .listen_fd = lfd };
	srv_start(&fo);
	assert_int_equal(kvf_http_server_port(T.srv), lport);
	cli_open(&c);
	cli_send(&c, GET("/echo"));
	assert_true(wait_resps(&c, 1, 2000));
	assert_int_equal(strncmp(T.peer, "127.0.0.1:", 10), 0);
	cli_close(&c);
	srv_stop(); /* closes lfd */

	/* bad arguments */
	kvf_loop *loop;
	kvf_http_server *s;
	assert_int_equal(kvf_loop_new(&loop), 0);
	kvf_http_server_opts o = { .listen = "nonsense" };
	assert_int_equal(kvf_http_server_new(loop, &o, handler, NULL, &s), KVF_E_INVAL);
	kvf_http_server_opts none = { 0 };
	assert_int_equal(kvf_http_server_new(loop, &none, handler, NULL, &s), KVF_E_INVAL);
	kvf_loop_destroy(loop);
}

/* Runs curl with args while pumping the loop; its stdout lands in out.
 * Returns the exit status, or -1 when curl cannot be started. */
static int run_curl(const char *const *args, kvf_buf *out)
{
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addclose(&fa, pfd[0]);
	pid_t pid;
	int rc = posix_spawnp(&pid, "curl", &fa, NULL, (char *const *)args, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	if (rc != 0) {
		close(pfd[0]);
		return -1;
	}
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	int status = 0, exited = 0;
	uint64_t end = kvf_now_ms() + 10000;
	while (kvf_now_ms() < end) {
		kvf_loop_run_once(T.loop, 2);
		char buf[4096];
		ssize_t n;
		while ((n = read(pfd[0], buf, sizeof(buf))) > 0)
			kvf_buf_append(out, buf, (size_t)n);
		if (!exited && waitpid(pid, &status, WNOHANG) == pid)
			exited = 1;
		if (exited && n == 0)
			break;
	}
	if (!exited) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	close(pfd[0]);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* A real client: curl reuses the connection, waits for 100 Continue,
 * uploads chunked, and reads SSE as it streams. */
static void test_curl_interop(void **state)
{
	srv_start(NULL);
	char u1[96], u2[96], ue[96], us[96], port[8];
	uint16_t p = kvf_http_server_port(T.srv);
	snprintf(port, sizeof(port), "%u", p);
	snprintf(u1, sizeof(u1), "http://127.0.0.1:%u/echo?a=1", p);
	snprintf(u2, sizeof(u2), "http://127.0.0.1:%u/echo?b=2", p);
	snprintf(ue, sizeof(ue), "http://127.0.0.1:%u/echo", p);
	snprintf(us, sizeof(us), "http://127.0.0.1:%u/ssetimer", p);
	char path[] = "/tmp/kvf-http-body.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	char body[3000];
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)('a' + i % 26);
	assert_int_equal(write(fd, body, sizeof(body)), (ssize_t)sizeof(body));
	close(fd);
	char at[64];
	snprintf(at, sizeof(at), "@%s", path);

	kvf_buf out = KVF_BUF_INIT;
	const char *a1[] = { "curl", "-sS", "--http1.1", "-H", "X-Test: c", u1, u2, NULL };
	int rc = run_curl(a1, &out);
	if (rc == -1) {
		unlink(path);
		kvf_buf_free(&out);
		srv_stop();
		print_message("SKIP: curl could not be started (not installed?)\n");
		skip();
	}
	assert_int_equal(rc, 0);
	assert_string_equal(out.data, "GET /echo q=a=1 x=c n=1 body=GET /echo q=b=2 x=c n=2 body=");
	assert_int_equal(stats().accepted, 1); /* one connection, kept alive */

	kvf_buf_reset(&out);
	const char *a2[] = { "curl", "-sS", "--http1.1", "-H", "Expect: 100-continue", "--data-binary", at, ue, NULL };
	assert_int_equal(run_curl(a2, &out), 0);
	assert_true(out.len == 26 + sizeof(body) && !memcmp(out.data + 26, body, sizeof(body)));
	assert_int_equal(stats().continues, 1);

	kvf_buf_reset(&out);
	const char *a3[] = { "curl", "-sS", "--http1.1", "-H", "Transfer-Encoding: chunked", "--data-binary", at, ue, NULL };
	assert_int_equal(run_curl(a3, &out), 0);
	assert_true(out.len == 26 + sizeof(body) && !memcmp(out.data + 26, body, sizeof(body)));

	kvf_buf_reset(&out);
	const char *a4[] = { "curl", "-sSN", "--http1.1", us, NULL };
	assert_int_equal(run_curl(a4, &out), 0);
	assert_string_equal(out.data, "data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: {\"n\":3}\n\ndata: [DONE]\n\n");
	assert_int_equal(stats().parse_errors, 0);
	unlink(path);
	kvf_buf_free(&out);
	srv_stop();
}

int main(void)
{
	kvf_log_set_level(KVF_LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keep_alive),
		cmocka_unit_test(test_http10),
		cmocka_unit_test(test_pipelining_order),
		cmocka_unit_test(test_expect_continue),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_malformed_isolated),
		cmocka_unit_test(test_async_and_errors),
		cmocka_unit_test(test_sse_streaming),
		cmocka_unit_test(test_client_disconnect),
		cmocka_unit_test(test_backpressure),
		cmocka_unit_test(test_graceful_shutdown),
		cmocka_unit_test(test_max_conns),
		cmocka_unit_test(test_destroy_with_active),
		cmocka_unit_test(test_curl_interop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
