/*
 * Unit tests for common/http_parse.c and common/http_write.c: every framing
 * rule, the limits and the status each one answers, pipelining, fragmentation
 * at every byte boundary, responses, the writer, Server-Sent Events and the
 * query helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_http_parse.h"

/* ---- transcript helper ----
 * Parses `data` fed in segments (cut positions) and writes a text transcript
 * of every message: head summary, de-chunked body, done, or the error. The
 * transcript of a fragmented feed must equal that of a single feed. */

static void put_str(kvf_buf *o, kvf_http_str s)
{
	kvf_buf_append(o, s.p, s.len);
}

static void transcript_head(kvf_buf *o, const kvf_http_msg *m, int kind)
{
	if (kind == KVF_HTTP_REQUEST) {
		kvf_buf_puts(o, "H ");
		put_str(o, m->method_name);
		kvf_buf_puts(o, " ");
		put_str(o, m->target);
		kvf_buf_puts(o, " p=");
		put_str(o, m->path);
		kvf_buf_puts(o, " q=");
		put_str(o, m->query);
	} else {
		kvf_buf_printf(o, "S %d ", m->status);
		put_str(o, m->reason);
	}
	kvf_buf_printf(o, " v=%d ka=%d b=%d cl=%llu ec=%d hb=%zu", m->version, m->keep_alive,
		       m->body_kind, (unsigned long long)m->content_length, m->expect_continue,
		       m->head_bytes);
	for (size_t i = 0; i < m->n_headers; i++) {
		kvf_buf_puts(o, " [");
		put_str(o, m->headers[i].name);
		kvf_buf_puts(o, "=");
		put_str(o, m->headers[i].value);
		kvf_buf_puts(o, "]");
	}
	kvf_buf_puts(o, "\n");
}

static void transcript(int kind, const kvf_http_limits *lim, const char *data, size_t len,
		       const size_t *cuts, size_t ncuts, int req_method, kvf_buf *o)
{
	kvf_http_parser p;
	assert_int_equal(kvf_http_parser_init(&p, kind, lim), 0);
	kvf_http_parser_set_req_method(&p, req_method);
	kvf_buf body = KVF_BUF_INIT;
	size_t seg_start = 0;
	int failed = 0;
	for (size_t k = 0; k <= ncuts && !failed; k++) {
		size_t seg_end = k < ncuts ? cuts[k] : len;
		const char *d = data + seg_start;
		size_t n = seg_end - seg_start;
		for (;;) {
			size_t used = 0;
			kvf_http_event ev;
			int rc = kvf_http_parse(&p, d, n, &used, &ev);
			if (rc == KVF_E_AGAIN)
				break;
			if (rc < 0) {
				kvf_buf_printf(o, "E %d %s\n", p.status, p.reason);
				failed = 1;
				break;
			}
			assert_true(used <= n);
			d += used;
			n -= used;
			if (ev.type == KVF_HTTP_EV_HEAD) {
				transcript_head(o, &p.msg, kind);
			} else if (ev.type == KVF_HTTP_EV_BODY) {
				assert_true(ev.len > 0);
				kvf_buf_append(&body, ev.data, ev.len);
			} else {
				assert_int_equal(ev.type, KVF_HTTP_EV_DONE);
				kvf_buf_printf(o, "B %zu ", body.len);
				kvf_buf_append(o, body.data, body.len);
				kvf_buf_puts(o, "\nD\n");
				kvf_buf_reset(&body);
				kvf_http_parser_reset(&p);
				kvf_http_parser_set_req_method(&p, req_method);
			}
		}
		seg_start = seg_end;
	}
	if (!failed) {
		kvf_http_event ev;
		int rc = kvf_http_parser_eof(&p, &ev);
		if (rc == 0) {
			kvf_buf_printf(o, "B %zu ", body.len);
			kvf_buf_append(o, body.data, body.len);
			kvf_buf_puts(o, "\nD(eof)\n");
		} else if (rc != KVF_E_CLOSED) {
			kvf_buf_printf(o, "E(eof) %d %s\n", p.status, p.reason);
		}
	}
	kvf_buf_free(&body);
	kvf_http_parser_free(&p);
}

/* One feed; returns the transcript in a static-lifetime buffer owned by the caller. */
static void parse_all(int kind, const kvf_http_limits *lim, const char *data, kvf_buf *o)
{
	kvf_buf_reset(o);
	transcript(kind, lim, data, strlen(data), NULL, 0, KVF_HTTP_GET, o);
}

/* Expects the first message to fail with `status`. */
static void expect_status(const kvf_http_limits *lim, const char *req, int status)
{
	kvf_http_parser p;
	assert_int_equal(kvf_http_parser_init(&p, KVF_HTTP_REQUEST, lim), 0);
	const char *d = req;
	size_t n = strlen(req);
	int rc;
	kvf_http_event ev;
	for (;;) {
		size_t used = 0;
		rc = kvf_http_parse(&p, d, n, &used, &ev);
		if (rc < 0 || ev.type == KVF_HTTP_EV_DONE)
			break;
		d += used;
		n -= used;
	}
	if (rc == KVF_E_AGAIN)
		rc = kvf_http_parser_eof(&p, &ev);
	if (status == 0) {
		if (rc != 0)
			fail_msg("'%s': expected success, got %d %s", req, p.status, p.reason);
	} else {
		if (rc >= 0)
			fail_msg("'%s': expected %d, got success", req, status);
		if (p.status != status)
			fail_msg("'%s': expected %d, got %d (%s)", req, status, p.status, p.reason);
		assert_non_null(p.reason);
		/* the error sticks */
		size_t used;
		assert_int_equal(kvf_http_parse(&p, "GET", 3, &used, &ev), rc);
	}
	kvf_http_parser_free(&p);
}

/* ---- requests ---- */

static void test_simple_get(void **state)
{
	kvf_http_parser p;
	assert_int_equal(kvf_http_parser_init(&p, KVF_HTTP_REQUEST, NULL), 0);
	const char *r = "GET /v1/models?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-Multi:  v1 \r\n"
			"x-multi: v2\r\nAccept:\r\n\r\nNEXT";
	size_t used;
	kvf_http_event ev;
	assert_int_equal(kvf_http_parse(&p, r, strlen(r), &used, &ev), 0);
	assert_int_equal(ev.type, KVF_HTTP_EV_HEAD);
	assert_int_equal(used, strlen(r) - 4);
	assert_int_equal(p.msg.head_bytes, strlen(r) - 4);
	assert_true(kvf_http_parser_head_done(&p));
	assert_int_equal(p.msg.method, KVF_HTTP_GET);
	assert_true(kvf_http_str_eq(p.msg.method_name, "GET"));
	assert_true(kvf_http_str_eq(p.msg.target, "/v1/models?x=1&y=2"));
	assert_true(kvf_http_str_eq(p.msg.path, "/v1/models"));
	assert_true(kvf_http_str_eq(p.msg.query, "x=1&y=2"));
	assert_int_equal(p.msg.version, 11);
	assert_int_equal(p.msg.keep_alive, 1);
	assert_int_equal(p.msg.body_kind, KVF_HTTP_BODY_NONE);
	assert_int_equal(p.msg.n_headers, 4);
	kvf_http_str v;
	assert_int_equal(kvf_http_msg_header(&p.msg, "HOST", &v), 0);
	assert_true(kvf_http_str_eq(v, "a"));
	assert_int_equal(kvf_http_msg_header(&p.msg, "accept", &v), 0);
	assert_int_equal(v.len, 0);
	assert_int_equal(kvf_http_msg_header(&p.msg, "missing", &v), KVF_E_NOTFOUND);
	size_t pos = 0;
	assert_int_equal(kvf_http_msg_header_next(&p.msg, "X-MULTI", &pos, &v), 0);
	assert_true(kvf_http_str_eq(v, "v1"));
	assert_int_equal(kvf_http_msg_header_next(&p.msg, "X-MULTI", &pos, &v), 0);
	assert_true(kvf_http_str_eq(v, "v2"));
	assert_int_equal(kvf_http_msg_header_next(&p.msg, "X-MULTI", &pos, &v), KVF_E_NOTFOUND);
	/* DONE needs no input */
	assert_int_equal(kvf_http_parse(&p, NULL, 0, &used, &ev), 0);
	assert_int_equal(ev.type, KVF_HTTP_EV_DONE);
	assert_int_equal(used, 0);
	assert_int_equal(kvf_http_parse(&p, "x", 1, &used, &ev), KVF_E_STATE);
	kvf_http_parser_reset(&p);
	assert_false(kvf_http_parser_started(&p));
	assert_int_equal(kvf_http_parse(&p, "NEXT", 4, &used, &ev), KVF_E_AGAIN);
	assert_int_equal(used, 4);
	assert_true(kvf_http_parser_started(&p));
	kvf_http_parser_free(&p);
	kvf_http_parser_free(NULL);
}

static void test_keep_alive_rules(void **state)
{
	kvf_buf o = KVF_BUF_INIT;
	struct { const char *req; int ka; } cases[] = {
		{ "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1 },
		{ "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 0 },
		{ "GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", 0 },
		{ "GET / HTTP/1.0\r\n\r\n", 0 },
		{ "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1 },
		{ "GET / HTTP/1.0\r\nConnection: upgrade,  Keep-Alive \r\n\r\n", 1 },
		{ "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 1 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		parse_all(KVF_HTTP_REQUEST, NULL, cases[i].req, &o);
		char want[16];
		snprintf(want, sizeof(want), " ka=%d ", cases[i].ka);
		if (!strstr(o.data, want))
			fail_msg("case %zu: %s", i, o.data);
	}
	parse_all(KVF_HTTP_REQUEST, NULL, "GET / HTTP/1.2\r\nHost: a\r\n\r\n", &o);
	assert_non_null(strstr(o.data, " v=11 "));
	kvf_buf_free(&o);
}

static void test_content_length_rules(void **state)
{
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", 0);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 0);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 0);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\na", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x1\r\n\r\na", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3,\r\n\r\nabc", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400);
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 400);
	/* fits in 63 bits but beyond the body limit */
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n", 413);
	kvf_http_limits lim = { .max_body_bytes = 10 };
	expect_status(&lim, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", 0);
	expect_status(&lim, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n01234567890", 413);
	/* truncated body */
	expect_status(NULL, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab", 400);

	kvf_buf o = KVF_BUF_INIT;
	parse_all(KVF_HTTP_REQUEST, NULL,
		  "POST /x HTTP/1.1\r\nHost: a\r\ncontent-length: 05\r\n\r\nhelloGET", &o);
	assert_non_null(strstr(o.data, "b=1 cl=5 "));
	assert_non_null(strstr(o.data, "B 5 hello\nD\n"));
	kvf_buf_free(&o);
}

static void test_transfer_encoding_rules(void **state)
{
	const char *body = "3\r\nabc\r\n0\r\n\r\n";
	char req[512];
	struct { const char *hdrs; int status; } cases[] = {
		{ "Transfer-Encoding: chunked\r\n", 0 },
		{ "Transfer-Encoding: CHUNKED\r\n", 0 },
		{ "Transfer-Encoding: chunked\r\nContent-Length: 14\r\n", 400 },
		{ "Content-Length: 14\r\nTransfer-Encoding: chunked\r\n", 400 },
		{ "Transfer-Encoding: gzip, chunked\r\n", 501 },
		{ "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 501 },
		{ "Transfer-Encoding: chunked, gzip\r\n", 400 },
		{ "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", 400 },
		{ "Transfer-Encoding: chunked, chunked\r\n", 400 },
		{ "Transfer-Encoding: chunked;q=1\r\n", 400 },
		{ "Transfer-Encoding: ,chunked\r\n", 400 },
		{ "Transfer-Encoding: \r\n", 400 },
		{ "Transfer-Encoding: identity\r\n", 400 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nHost: a\r\n%s\r\n%s", cases[i].hdrs, body);
		expect_status(NULL, req, cases[i].status);
	}
	/* HTTP/1.0 with Transfer-Encoding: faulty framing */
	snprintf(req, sizeof(req), "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n%s", body);
	expect_status(NULL, req, 400);
}

static void test_chunked_body(void **state)
{
	kvf_buf o = KVF_BUF_INIT;
	parse_all(KVF_HTTP_REQUEST, NULL,
		  "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
		  "5;name=value;other=\"q\"\r\nhello\r\n"
		  "6 ; x=y\r\n world\r\n"
		  "000A\r\n0123456789\r\n"
		  "0\r\nX-Trailer: yes\r\nOther: 1\r\n\r\n",
		  &o);
	assert_non_null(strstr(o.data, " b=2 "));
	assert_non_null(strstr(o.data, "B 21 hello world0123456789\nD\n"));

	const char *pre = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
	char req[512];
	struct { const char *body; int status; } cases[] = {
		{ "0\r\n\r\n", 0 },
		{ "g\r\nx\r\n0\r\n\r\n", 400 },           /* not hex */
		{ "\r\n", 400 },                          /* no size */
		{ "3\r\nabcX\r\n0\r\n\r\n", 400 },        /* data not followed by CRLF */
		{ "3\r\nabc\n0\r\n\r\n", 400 },           /* LF only after data */
		{ "3\nabc\r\n0\r\n\r\n", 400 },           /* bare LF after size */
		{ "3\rabc\r\n0\r\n\r\n", 400 },           /* bare CR after size */
		{ "3 x\r\nabc\r\n0\r\n\r\n", 400 },       /* garbage after BWS */
		{ "3;a\nb\r\nabc\r\n0\r\n\r\n", 400 },    /* LF inside an extension */
		{ "3;a\x01\r\nabc\r\n0\r\n\r\n", 400 },   /* CTL inside an extension */
		{ "11111111111111111\r\n", 400 },         /* 17 hex digits */
		{ "ffffffffffffffff\r\n", 413 },          /* over the body limit */
		{ "0\r\nX: 1\n\r\n", 400 },               /* bare LF in trailer */
		{ "0\r\n: 1\r\n\r\n", 400 },              /* trailer without a name */
		{ "0\r\nX: 1\r\n\n", 400 },               /* bare LF ending trailers */
		{ "0\r\n\n", 400 },
		{ "3\r\nab", 400 },                       /* truncated */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(req, sizeof(req), "%s%s", pre, cases[i].body);
		expect_status(NULL, req, cases[i].status);
	}
	/* extension length limit */
	char big[KVF_HTTP_MAX_CHUNK_LINE_BYTES + 200];
	memset(big, 'e', sizeof(big));
	int n = snprintf(req, sizeof(req), "%s1;", pre);
	kvf_buf r = KVF_BUF_INIT;
	kvf_buf_append(&r, req, (size_t)n);
	kvf_buf_append(&r, big, sizeof(big));
	kvf_buf_puts(&r, "\r\na\r\n0\r\n\r\n");
	expect_status(NULL, r.data, 400);
	/* chunked sum over the body limit */
	kvf_http_limits lim = { .max_body_bytes = 8 };
	snprintf(req, sizeof(req), "%s%s", pre, "5\r\nhello\r\n4\r\nabcd\r\n0\r\n\r\n");
	expect_status(&lim, req, 413);
	snprintf(req, sizeof(req), "%s%s", pre, "5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n");
	expect_status(&lim, req, 0);
	/* trailer limits */
	kvf_http_limits tl = { .max_headers = 2 };
	snprintf(req, sizeof(req), "%s%s", pre, "0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
	expect_status(&tl, req, 431);
	kvf_buf_free(&r);
	kvf_buf_free(&o);
}

static void test_expect_continue(void **state)
{
	kvf_buf o = KVF_BUF_INIT;
	parse_all(KVF_HTTP_REQUEST, NULL,
		  "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx", &o);
	assert_non_null(strstr(o.data, " ec=1 "));
	parse_all(KVF_HTTP_REQUEST, NULL,
		  "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx", &o);
	assert_non_null(strstr(o.data, " ec=0 "));
	parse_all(KVF_HTTP_REQUEST, NULL,
		  "POST / HTTP/1.1\r\nHost: a\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx", &o);
	assert_non_null(strstr(o.data, " ec=0 "));
	kvf_buf_free(&o);
}

static void test_limits(void **state)
{
	kvf_http_limits lim = { .max_line_bytes = 32, .max_headers = 3, .max_header_bytes = 64 };
	/* request line of exactly 32 bytes passes, 33 is 414 */
	expect_status(&lim, "GET /234567890123456789 HTTP/1.1\r\nHost: a\r\n\r\n", 0);
	expect_status(&lim, "GET /2345678901234567890 HTTP/1.1\r\nHost: a\r\n\r\n", 414);
	/* 414 detected before the line ends */
	expect_status(&lim, "GET /23456789012345678901234567890123456789", 414);
	/* header count */
	expect_status(&lim, "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", 0);
	expect_status(&lim, "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431);
	/* header bytes: "Host: a\r\n" (9) + "X: <48>\r\n" (53) + final CRLF = 64 passes */
	char req[256], v[64];
	memset(v, 'v', sizeof(v));
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX: %.48s\r\n\r\n", v);
	expect_status(&lim, req, 0);
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX: %.49s\r\n\r\n", v);
	expect_status(&lim, req, 431);
	/* an endless header line is cut at the limit */
	expect_status(&lim, "GET / HTTP/1.1\r\nX: 0123456789012345678901234567890123456789012345678901234567890123456789", 431);

	kvf_http_limits d = kvf_http_limits_resolve(NULL);
	assert_int_equal(d.max_line_bytes, KVF_HTTP_DEFAULT_MAX_LINE_BYTES);
	assert_int_equal(d.max_headers, KVF_HTTP_DEFAULT_MAX_HEADERS);
	assert_int_equal(d.max_header_bytes, KVF_HTTP_DEFAULT_MAX_HEADER_BYTES);
	assert_int_equal(d.max_body_bytes, KVF_HTTP_DEFAULT_MAX_BODY_BYTES);
	kvf_http_limits r = kvf_http_limits_resolve(&lim);
	assert_int_equal(r.max_line_bytes, 32);
	assert_int_equal(r.max_body_bytes, KVF_HTTP_DEFAULT_MAX_BODY_BYTES);
}

static void test_malformed(void **state)
{
	struct { const char *req; int status; } cases[] = {
		{ "GET / HTTP/1.1\nHost: a\r\n\r\n", 400 },        /* bare LF */
		{ "GET / HTTP/1.1\r\nHost: a\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: a\r\n\n", 400 },
		{ "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400 },      /* space before colon */
		{ "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400 },      /* fold without a field */
		{ "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  2\r\n\r\n", 400 }, /* obs-fold */
		{ "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400 },     /* bare CR */
		{ "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: a\r\nX\x01: a\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400 },
		{ "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },      /* two spaces */
		{ "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400 },
		{ "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
		{ "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
		{ "GET /\r\n\r\n", 400 },                            /* HTTP/0.9 */
		{ "GET / http/1.1\r\nHost: a\r\n\r\n", 400 },
		{ "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400 },
		{ "GET / HTTP/11\r\nHost: a\r\n\r\n", 400 },
		{ "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505 },
		{ "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505 },
		{ "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
		{ " GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\n\r\n", 400 },                   /* no Host */
		{ "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400 },
		{ "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
		{ "GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
		{ "GET http:/x HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
		{ "GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
		{ "GET / HTTP/1.0\r\n\r\n", 0 },                     /* 1.0 needs no Host */
		{ "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0 },  /* leading CRLFs ignored */
		{ "\n", 400 },
		{ "", 0 },                                           /* clean close: no message */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].req[0] == '\0') {
			kvf_http_parser p;
			kvf_http_event ev;
			assert_int_equal(kvf_http_parser_init(&p, KVF_HTTP_REQUEST, NULL), 0);
			assert_int_equal(kvf_http_parser_eof(&p, &ev), KVF_E_CLOSED);
			kvf_http_parser_free(&p);
			continue;
		}
		expect_status(NULL, cases[i].req, cases[i].status);
	}
	/* NUL inside a value (length-delimited input) */
	const char nulreq[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
	kvf_http_parser p;
	size_t used;
	kvf_http_event ev;
	assert_int_equal(kvf_http_parser_init(&p, KVF_HTTP_REQUEST, NULL), 0);
	assert_int_equal(kvf_http_parse(&p, nulreq, sizeof(nulreq) - 1, &used, &ev), KVF_E_PARSE);
	assert_int_equal(p.status, 400);
	assert_string_equal(p.reason, "invalid character in header value");
	kvf_http_parser_reset(&p);
	assert_int_equal(p.status, 0);
	assert_int_equal(kvf_http_parse(&p, "GET / HTTP/2.0\r\n", 16, &used, &ev), KVF_E_VERSION);
	kvf_http_parser_reset(&p);
	assert_int_equal(kvf_http_parse(&p, "GET /a\r\n", 8, &used, &ev), KVF_E_PARSE);
	kvf_http_parser_free(&p);
}

static void test_targets(void **state)
{
	kvf_buf o = KVF_BUF_INIT;
	parse_all(KVF_HTTP_REQUEST, NULL, "GET http://example.com:80/a/b?x=1 HTTP/1.1\r\nHost: e\r\n\r\n", &o);
	assert_non_null(strstr(o.data, "p=/a/b q=x=1 "));
	parse_all(KVF_HTTP_REQUEST, NULL, "GET HTTPS://example.com HTTP/1.1\r\nHost: e\r\n\r\n", &o);
	assert_non_null(strstr(o.data, "p=/ q= "));
	parse_all(KVF_HTTP_REQUEST, NULL, "GET http://example.com?q HTTP/1.1\r\nHost: e\r\n\r\n", &o);
	assert_non_null(strstr(o.data, "p=/ q=q "));
	parse_all(KVF_HTTP_REQUEST, NULL, "OPTIONS * HTTP/1.1\r\nHost: e\r\n\r\n", &o);
	assert_non_null(strstr(o.data, "H OPTIONS * p=* q= "));
	parse_all(KVF_HTTP_REQUEST, NULL, "CONNECT example.com:443 HTTP/1.1\r\nHost: e\r\n\r\n", &o);
	assert_non_null(strstr(o.data, "p=example.com:443 q= "));
	parse_all(KVF_HTTP_REQUEST, NULL, "PURGE /x? HTTP/1.1\r\nHost: e\r\n\r\n", &o);
	assert_non_null(strstr(o.data, "H PURGE /x? p=/x q= "));

	kvf_http_parser p;
	size_t used;
	kvf_http_event ev;
	assert_int_equal(kvf_http_parser_init(&p, KVF_HTTP_REQUEST, NULL), 0);
	const char *r = "PURGE / HTTP/1.1\r\nHost: e\r\n\r\n";
	assert_int_equal(kvf_http_parse(&p, r, strlen(r), &used, &ev), 0);
	assert_int_equal(p.msg.method, KVF_HTTP_M_OTHER);
	kvf_http_parser_free(&p);
	assert_int_equal(kvf_http_method_from("POST", 4), KVF_HTTP_POST);
	assert_int_equal(kvf_http_method_from("post", 4), KVF_HTTP_M_OTHER);
	assert_string_equal(kvf_http_method_name(KVF_HTTP_DELETE), "DELETE");
	assert_string_equal(kvf_http_method_name(99), "OTHER");
	kvf_buf_free(&o);
}

/* Several requests in one buffer; every fragmentation gives one transcript. */
static const char pipeline[] =
	"GET /a?x=%20 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\n\r\n"
	"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
	"\r\n" /* stray CRLF between messages, ignored */
	"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
	"4;ext\r\nabcd\r\n3\r\nefg\r\n0\r\nT: v\r\n\r\n"
	"DELETE /d HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nzz"
	"GET /e HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";

static void test_pipeline_splits(void **state)
{
	size_t len = sizeof(pipeline) - 1;
	kvf_buf ref = KVF_BUF_INIT, got = KVF_BUF_INIT;
	transcript(KVF_HTTP_REQUEST, NULL, pipeline, len, NULL, 0, KVF_HTTP_GET, &ref);
	/* 5 messages, no error */
	size_t done = 0;
	for (const char *s = ref.data; (s = strstr(s, "\nD\n")); s++)
		done++;
	assert_int_equal(done, 5);
	assert_null(strstr(ref.data, "\nE"));
	assert_true(ref.data[0] == 'H');
	assert_non_null(strstr(ref.data, "B 11 hello world\n"));
	assert_non_null(strstr(ref.data, "B 7 abcdefg\n"));
	assert_non_null(strstr(ref.data, "H DELETE /d p=/d q= v=10 ka=1 "));
	assert_non_null(strstr(ref.data, "H GET /e p=/e q= v=11 ka=0 "));

	/* two pieces, cut at every byte boundary */
	for (size_t cut = 1; cut < len; cut++) {
		kvf_buf_reset(&got);
		transcript(KVF_HTTP_REQUEST, NULL, pipeline, len, &cut, 1, KVF_HTTP_GET, &got);
		if (strcmp(got.data, ref.data) != 0)
			fail_msg("cut at %zu differs:\n%s\n--- vs ---\n%s", cut, got.data, ref.data);
	}
	/* one byte at a time */
	size_t *cuts = test_malloc(len * sizeof(size_t));
	for (size_t i = 0; i < len - 1; i++)
		cuts[i] = i + 1;
	kvf_buf_reset(&got);
	transcript(KVF_HTTP_REQUEST, NULL, pipeline, len, cuts, len - 1, KVF_HTTP_GET, &got);
	assert_string_equal(got.data, ref.data);
	/* three pieces at pseudo-random cuts */
	uint32_t seed = 12345;
	for (int round = 0; round < 2000; round++) {
		size_t c[3];
		for (int k = 0; k < 3; k++) {
			seed = seed * 1103515245u + 12345u;
			c[k] = 1 + (seed >> 8) % (len - 1);
		}
		/* sort */
		for (int a = 0; a < 3; a++)
			for (int b = a + 1; b < 3; b++)
				if (c[b] < c[a]) {
					size_t t = c[a];
					c[a] = c[b];
					c[b] = t;
				}
		kvf_buf_reset(&got);
		transcript(KVF_HTTP_REQUEST, NULL, pipeline, len, c, 3, KVF_HTTP_GET, &got);
		if (strcmp(got.data, ref.data) != 0)
			fail_msg("cuts %zu,%zu,%zu differ", c[0], c[1], c[2]);
	}
	test_free(cuts);
	kvf_buf_free(&ref);
	kvf_buf_free(&got);
}

/* Consumed counts let a caller walk a pipelined buffer message by message. */
static void test_pipeline_consumed(void **state)
{
	kvf_http_parser p;
	assert_int_equal(kvf_http_parser_init(&p, KVF_HTTP_REQUEST, NULL), 0);
	const char *d = pipeline;
	size_t n = sizeof(pipeline) - 1;
	const char *paths[] = { "/a", "/b", "/c", "/d", "/e" };
	int msgs = 0;
	for (;;) {
		size_t used;
		kvf_http_event ev;
		int rc = kvf_http_parse(&p, d, n, &used, &ev);
		if (rc == KVF_E_AGAIN)
			break;
		assert_true(rc == 0);
		d += used;
		n -= used;
		if (ev.type == KVF_HTTP_EV_HEAD)
			assert_true(kvf_http_str_eq(p.msg.path, paths[msgs]));
		if (ev.type == KVF_HTTP_EV_BODY)
			assert_true(ev.data >= pipeline && ev.data + ev.len <= pipeline + sizeof(pipeline));
		if (ev.type == KVF_HTTP_EV_DONE) {
			msgs++;
			kvf_http_parser_reset(&p);
		}
	}
	/* the last DONE needs a call with no input left */
	assert_int_equal(msgs, 5);
	assert_int_equal(n, 0);
	kvf_http_parser_free(&p);
}

/* ---- responses ---- */

static void test_responses(void **state)
{
	kvf_buf o = KVF_BUF_INIT;
	parse_all(KVF_HTTP_RESPONSE, NULL, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", &o);
	assert_non_null(strstr(o.data, "S 200 OK v=11 ka=1 b=1 cl=2"));
	assert_non_null(strstr(o.data, "B 2 hi\nD\n"));
	/* no body for 204 and 304 even with Content-Length, 1xx then final */
	parse_all(KVF_HTTP_RESPONSE, NULL,
		  "HTTP/1.1 204 No Content\r\n\r\n"
		  "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
		  "HTTP/1.1 100 Continue\r\n\r\n"
		  "HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		  &o);
	assert_non_null(strstr(o.data, "S 204 No Content v=11 ka=1 b=0"));
	assert_non_null(strstr(o.data, "S 304 Not Modified v=11 ka=1 b=0"));
	assert_non_null(strstr(o.data, "S 100 Continue v=11 ka=1 b=0"));
	assert_non_null(strstr(o.data, "S 200  v=11 ka=1 b=2"));
	assert_non_null(strstr(o.data, "B 2 ok\nD\n"));
	/* until close */
	parse_all(KVF_HTTP_RESPONSE, NULL, "HTTP/1.1 200 OK\r\nX: 1\r\n\r\nsome body", &o);
	assert_non_null(strstr(o.data, " ka=0 b=3 "));
	assert_non_null(strstr(o.data, "B 9 some body\nD(eof)\n"));
	parse_all(KVF_HTTP_RESPONSE, NULL, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", &o);
	assert_non_null(strstr(o.data, " ka=0 b=3 "));
	/* TE + CL: chunked wins, connection closes after */
	parse_all(KVF_HTTP_RESPONSE, NULL,
		  "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n", &o);
	assert_non_null(strstr(o.data, " ka=0 b=2 "));
	assert_non_null(strstr(o.data, "B 1 z\nD\n"));
	/* HTTP/1.0 keep-alive response */
	parse_all(KVF_HTTP_RESPONSE, NULL,
		  "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", &o);
	assert_non_null(strstr(o.data, " v=10 ka=1 b=0 "));
	/* obs-fold is unfolded in responses */
	parse_all(KVF_HTTP_RESPONSE, NULL,
		  "HTTP/1.1 200 OK\r\nX-Fold: a\r\n  b \r\n\tc\r\nX-Empty:\r\n d\r\nContent-Length: 0\r\n\r\n", &o);
	assert_non_null(strstr(o.data, "[X-Fold=a    b    c]"));
	assert_non_null(strstr(o.data, "[X-Empty=d]"));
	/* the answer to HEAD has no body */
	kvf_buf_reset(&o);
	const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nHTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n";
	transcript(KVF_HTTP_RESPONSE, NULL, h, strlen(h), NULL, 0, KVF_HTTP_HEAD, &o);
	assert_non_null(strstr(o.data, "S 200 OK v=11 ka=1 b=0 cl=0"));
	assert_non_null(strstr(o.data, "S 404 NF"));
	/* 2xx to CONNECT: no body */
	kvf_buf_reset(&o);
	h = "HTTP/1.1 200 Connection established\r\n\r\n";
	transcript(KVF_HTTP_RESPONSE, NULL, h, strlen(h), NULL, 0, KVF_HTTP_CONNECT, &o);
	assert_non_null(strstr(o.data, " b=0 "));
	/* errors answer 502 */
	const char *bad[] = {
		"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 099 X\r\n\r\n",
		"HTTP/2.0 200 OK\r\n\r\n", "HTTP/1.1  200 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 O\x01K\r\n\r\n", "HTTP/1.1 200x\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		parse_all(KVF_HTTP_RESPONSE, NULL, bad[i], &o);
		if (strncmp(o.data, "E 502 ", 6) != 0)
			fail_msg("'%s' -> %s", bad[i], o.data);
	}
	/* truncated response body */
	parse_all(KVF_HTTP_RESPONSE, NULL, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", &o);
	assert_non_null(strstr(o.data, "E(eof) 502 "));
	/* body limit for until-close responses */
	kvf_http_limits lim = { .max_body_bytes = 4 };
	kvf_buf_reset(&o);
	h = "HTTP/1.1 200 OK\r\n\r\n12345";
	transcript(KVF_HTTP_RESPONSE, &lim, h, strlen(h), NULL, 0, KVF_HTTP_GET, &o);
	assert_non_null(strstr(o.data, "E 502 response body too large"));
	/* unlimited */
	kvf_http_limits unl = { .max_body_bytes = UINT64_MAX };
	kvf_buf_reset(&o);
	h = "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\nab";
	transcript(KVF_HTTP_RESPONSE, &unl, h, strlen(h), NULL, 0, KVF_HTTP_GET, &o);
	assert_non_null(strstr(o.data, " b=1 cl=9223372036854775807 "));
	kvf_buf_free(&o);
}

static void test_response_splits(void **state)
{
	const char *r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			"7\r\ndata: a\r\n1a\r\n\nevent: x\ndata: bbbbbbbbb\n\r\n0\r\n\r\n"
			"HTTP/1.1 500 Err\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad";
	size_t len = strlen(r);
	kvf_buf ref = KVF_BUF_INIT, got = KVF_BUF_INIT;
	transcript(KVF_HTTP_RESPONSE, NULL, r, len, NULL, 0, KVF_HTTP_GET, &ref);
	assert_non_null(strstr(ref.data, "S 500 Err v=11 ka=0"));
	assert_non_null(strstr(ref.data, "B 33 data: a\nevent: x\ndata: bbbbbbbbb\n\n"));
	for (size_t cut = 1; cut < len; cut++) {
		kvf_buf_reset(&got);
		transcript(KVF_HTTP_RESPONSE, NULL, r, len, &cut, 1, KVF_HTTP_GET, &got);
		assert_string_equal(got.data, ref.data);
	}
	kvf_buf_free(&ref);
	kvf_buf_free(&got);
}

/* ---- helpers ---- */

static void test_query_and_decode(void **state)
{
	const char *qs = "a=1&b=x%20y+z&c&%64=4&e=%zz&f=%4&g=%41%42";
	kvf_http_str q = { qs, strlen(qs) };
	char out[32];
	size_t n;
	assert_int_equal(kvf_http_query_get(q, "a", out, sizeof(out), &n), 0);
	assert_string_equal(out, "1");
	assert_int_equal(kvf_http_query_get(q, "b", out, sizeof(out), &n), 0);
	assert_string_equal(out, "x y z");
	assert_int_equal(n, 5);
	assert_int_equal(kvf_http_query_get(q, "c", out, sizeof(out), &n), 0);
	assert_string_equal(out, "");
	assert_int_equal(kvf_http_query_get(q, "d", out, sizeof(out), &n), 0);
	assert_string_equal(out, "4");
	assert_int_equal(kvf_http_query_get(q, "e", out, sizeof(out), &n), KVF_E_PARSE);
	assert_int_equal(kvf_http_query_get(q, "f", out, sizeof(out), &n), KVF_E_PARSE);
	assert_int_equal(kvf_http_query_get(q, "g", out, sizeof(out), &n), 0);
	assert_string_equal(out, "AB");
	assert_int_equal(kvf_http_query_get(q, "h", out, sizeof(out), &n), KVF_E_NOTFOUND);
	assert_int_equal(kvf_http_query_get(q, "b", out, 5, &n), KVF_E_TOOBIG);
	assert_int_equal(kvf_http_query_get(q, "b", out, 6, &n), 0);
	kvf_http_str empty = { "", 0 };
	assert_int_equal(kvf_http_query_get(empty, "a", out, sizeof(out), &n), KVF_E_NOTFOUND);
	assert_int_equal(kvf_http_pct_decode("a%2Fb+c", 7, out, sizeof(out), &n, 0), 0);
	assert_string_equal(out, "a/b+c");
	assert_int_equal(kvf_http_pct_decode("%", 1, out, sizeof(out), &n, 0), KVF_E_PARSE);
	assert_int_equal(kvf_http_pct_decode("", 0, out, 0, &n, 0), KVF_E_TOOBIG);

	kvf_http_str v = { " gzip , Chunked,x ", 18 };
	assert_true(kvf_http_list_has(v, "chunked"));
	assert_true(kvf_http_list_has(v, "GZIP"));
	assert_true(kvf_http_list_has(v, "x"));
	assert_false(kvf_http_list_has(v, "chunk"));
	kvf_http_str s = { "Abc", 3 };
	assert_true(kvf_http_str_ieq(s, "aBC"));
	assert_false(kvf_http_str_eq(s, "abc"));
	assert_false(kvf_http_str_ieq(s, "abcd"));
}

/* ---- writer ---- */

static void parse_response_into(const char *data, size_t len, int req_method, kvf_buf *o)
{
	kvf_buf_reset(o);
	transcript(KVF_HTTP_RESPONSE, NULL, data, len, NULL, 0, req_method, o);
}

static void test_writer(void **state)
{
	kvf_buf b = KVF_BUF_INIT, o = KVF_BUF_INIT;
	assert_int_equal(kvf_http_write_status_line(&b, 404, NULL), 0);
	assert_string_equal(b.data, "HTTP/1.1 404 Not Found\r\n");
	assert_int_equal(kvf_http_write_status_line(&b, 99, NULL), KVF_E_INVAL);
	assert_int_equal(kvf_http_write_status_line(&b, 200, "A\r\nB"), KVF_E_INVAL);
	kvf_buf_reset(&b);
	assert_int_equal(kvf_http_write_header(&b, "X-A", "1"), 0);
	assert_int_equal(kvf_http_write_header(&b, "Bad Name", "1"), KVF_E_INVAL);
	assert_int_equal(kvf_http_write_header(&b, "X-B", "1\r\nInjected: yes"), KVF_E_INVAL);
	assert_int_equal(kvf_http_write_header(&b, "", "1"), KVF_E_INVAL);
	assert_int_equal(kvf_http_write_headerf(&b, "X-N", "%d-%s", 7, "z"), 0);
	char longv[1000];
	memset(longv, 'v', sizeof(longv) - 1);
	longv[sizeof(longv) - 1] = 0;
	assert_int_equal(kvf_http_write_headerf(&b, "X-L", "%s", longv), 0);
	assert_int_equal(b.len, strlen("X-A: 1\r\nX-N: 7-z\r\n") + 5 + 999 + 2);
	assert_int_equal(memcmp(b.data, "X-A: 1\r\nX-N: 7-z\r\nX-L: vvv", 26), 0);
	kvf_buf_reset(&b);
	const char *bad[] = { "x-ok", "1", "x-bad", "a\nb", NULL };
	assert_int_equal(kvf_http_write_headers(&b, bad), KVF_E_INVAL);
	assert_int_equal(b.len, 0); /* validated before writing */
	const char *odd[] = { "x-ok", NULL };
	assert_int_equal(kvf_http_headers_valid(odd), KVF_E_INVAL);
	assert_int_equal(kvf_http_write_headers(&b, NULL), 0);
	assert_int_equal(kvf_http_write_request_line(&b, "GET", "/x?y"), 0);
	assert_string_equal(b.data, "GET /x?y HTTP/1.1\r\n");
	assert_int_equal(kvf_http_write_request_line(&b, "GET", "/x y"), KVF_E_INVAL);
	assert_int_equal(kvf_http_write_request_line(&b, "G T", "/"), KVF_E_INVAL);
	assert_int_equal(kvf_http_write_request_line(&b, "GET", ""), KVF_E_INVAL);

	/* one-shot response, parsed back */
	kvf_buf_reset(&b);
	const char *hdrs[] = { "x-kvf-route", "prefix", NULL };
	assert_int_equal(kvf_http_write_response(&b, 200, "application/json", hdrs, "{}", 2, 1), 0);
	assert_string_equal(b.data, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				    "Content-Length: 2\r\nx-kvf-route: prefix\r\n\r\n{}");
	kvf_buf_reset(&b);
	assert_int_equal(kvf_http_write_response(&b, 204, NULL, NULL, "ignored", 7, 0), 0);
	assert_string_equal(b.data, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
	assert_int_equal(kvf_http_write_response(&b, 200, "a\rb", NULL, "", 0, 0), KVF_E_INVAL);

	/* chunked body, parsed back */
	kvf_buf_reset(&b);
	kvf_http_write_status_line(&b, 200, NULL);
	kvf_http_write_header(&b, "Transfer-Encoding", "chunked");
	kvf_http_write_end_head(&b);
	char big[5000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);
	assert_int_equal(kvf_http_write_chunk(&b, "hello", 5), 0);
	assert_int_equal(kvf_http_write_chunk(&b, "", 0), 0);
	assert_int_equal(kvf_http_write_chunk(&b, big, sizeof(big)), 0);
	assert_int_equal(kvf_http_write_last_chunk(&b), 0);
	assert_non_null(strstr(b.data, "\r\n5\r\nhello\r\n1388\r\nabc"));
	parse_response_into(b.data, b.len, KVF_HTTP_GET, &o);
	assert_non_null(strstr(o.data, "B 5005 helloabcdef"));
	assert_non_null(strstr(o.data, "\nD\n"));

	assert_string_equal(kvf_http_status_reason(431), "Request Header Fields Too Large");
	assert_string_equal(kvf_http_status_reason(799), "Unknown");
	assert_string_equal(kvf_http_error_type(429), "rate_limit_error");
	assert_string_equal(kvf_http_error_type(503), "server_error");
	assert_string_equal(kvf_http_error_type(400), "invalid_request_error");
	kvf_buf_free(&b);
	kvf_buf_free(&o);
}

/* Decodes SSE text the way EventSource does (fields per line, data joined
 * with LF) to check the writer round-trips. Returns events as "type|id|data;". */
static void sse_decode(const char *s, size_t n, kvf_buf *out)
{
	kvf_buf data = KVF_BUF_INIT;
	char ev[64] = "", id[64] = "";
	int have = 0;
	size_t i = 0;
	while (i < n) {
		size_t e = i;
		while (e < n && s[e] != '\n' && s[e] != '\r')
			e++;
		if (e == i) {
			if (have) {
				if (data.len && data.data[data.len - 1] == '\n')
					data.len--;
				kvf_buf_printf(out, "%s|%s|%.*s;", ev, id, (int)data.len, data.data ? data.data : "");
			}
			kvf_buf_reset(&data);
			ev[0] = 0;
			have = 0;
		} else if (s[i] != ':') {
			const char *colon = memchr(s + i, ':', e - i);
			size_t fl = colon ? (size_t)(colon - (s + i)) : e - i;
			const char *v = colon ? colon + 1 : s + e;
			if (v < s + e && *v == ' ')
				v++;
			size_t vl = (size_t)(s + e - v);
			if (fl == 4 && !memcmp(s + i, "data", 4)) {
				kvf_buf_append(&data, v, vl);
				kvf_buf_putc(&data, '\n');
				have = 1;
			} else if (fl == 5 && !memcmp(s + i, "event", 5)) {
				snprintf(ev, sizeof(ev), "%.*s", (int)vl, v);
			} else if (fl == 2 && !memcmp(s + i, "id", 2)) {
				snprintf(id, sizeof(id), "%.*s", (int)vl, v);
			}
		}
		if (e < n && s[e] == '\r' && e + 1 < n && s[e + 1] == '\n')
			e++;
		i = e + 1;
	}
	kvf_buf_free(&data);
}

static void test_sse(void **state)
{
	kvf_buf b = KVF_BUF_INIT, d = KVF_BUF_INIT, o = KVF_BUF_INIT;
	assert_int_equal(kvf_http_write_sse(&b, NULL, NULL, "{\"x\":1}", 7), 0);
	assert_string_equal(b.data, "data: {\"x\":1}\n\n");
	assert_int_equal(kvf_http_sse_size(NULL, NULL, "{\"x\":1}", 7), b.len);
	kvf_buf_reset(&b);
	const char *multi = "line1\nline2\r\nline3\rline4\n";
	assert_int_equal(kvf_http_write_sse(&b, "delta", "42", multi, strlen(multi)), 0);
	assert_string_equal(b.data, "event: delta\nid: 42\ndata: line1\ndata: line2\n"
				    "data: line3\ndata: line4\ndata: \n\n");
	assert_int_equal(kvf_http_sse_size("delta", "42", multi, strlen(multi)), b.len);
	sse_decode(b.data, b.len, &d);
	assert_string_equal(d.data, "delta|42|line1\nline2\nline3\nline4\n;");
	kvf_buf_reset(&b);
	assert_int_equal(kvf_http_write_sse(&b, NULL, NULL, "", 0), 0);
	assert_string_equal(b.data, "data: \n\n");
	assert_int_equal(kvf_http_write_sse(&b, "a\nb", NULL, "x", 1), KVF_E_INVAL);
	assert_int_equal(kvf_http_write_sse(&b, NULL, "1\r", "x", 1), KVF_E_INVAL);
	assert_int_equal(b.len, 8);
	kvf_buf_reset(&b);
	assert_int_equal(kvf_http_write_sse_comment(&b, "ping"), 0);
	assert_int_equal(kvf_http_write_sse_comment(&b, NULL), 0);
	assert_string_equal(b.data, ": ping\n\n:\n\n");
	assert_int_equal(kvf_http_write_sse_comment(&b, "a\nb"), KVF_E_INVAL);

	/* chunk-framed events inside a chunked response decode to the same stream */
	kvf_buf_reset(&b);
	kvf_http_write_status_line(&b, 200, NULL);
	kvf_http_write_header(&b, "Content-Type", "text/event-stream");
	kvf_http_write_header(&b, "Transfer-Encoding", "chunked");
	kvf_http_write_end_head(&b);
	assert_int_equal(kvf_http_write_sse_chunk(&b, NULL, NULL, "{\"t\":\"he\"}", 10), 0);
	assert_int_equal(kvf_http_write_sse_chunk(&b, "e", "7", "a\n\nb", 4), 0);
	assert_int_equal(kvf_http_write_sse_chunk(&b, NULL, NULL, "[DONE]", 6), 0);
	assert_int_equal(kvf_http_write_sse_chunk(&b, "x\n", NULL, "", 0), KVF_E_INVAL);
	kvf_http_write_last_chunk(&b);
	parse_response_into(b.data, b.len, KVF_HTTP_GET, &o);
	const char *bstart = strstr(o.data, "\nB ");
	assert_non_null(bstart);
	char *sp = strchr(bstart + 3, ' ');
	assert_non_null(sp);
	size_t blen = (size_t)strtoul(bstart + 3, NULL, 10);
	kvf_buf_reset(&d);
	sse_decode(sp + 1, blen, &d);
	assert_string_equal(d.data, "||{\"t\":\"he\"};e|7|a\n\nb;|7|[DONE];");
	kvf_buf_free(&b);
	kvf_buf_free(&d);
	kvf_buf_free(&o);
}

static void test_json_error(void **state)
{
	kvf_buf b = KVF_BUF_INIT;
	assert_int_equal(kvf_http_write_json_error(&b, "bad \"x\"\n", NULL, NULL), 0);
	assert_string_equal(b.data, "{\"error\":{\"message\":\"bad \\\"x\\\"\\n\","
				    "\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}");
	kvf_buf_reset(&b);
	assert_int_equal(kvf_http_write_json_error(&b, "slow down", "rate_limit_error", "rate_limited"), 0);
	assert_string_equal(b.data, "{\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\","
				    "\"param\":null,\"code\":\"rate_limited\"}}");
	kvf_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_keep_alive_rules),
		cmocka_unit_test(test_content_length_rules),
		cmocka_unit_test(test_transfer_encoding_rules),
		cmocka_unit_test(test_chunked_body),
		cmocka_unit_test(test_expect_continue),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_targets),
		cmocka_unit_test(test_pipeline_splits),
		cmocka_unit_test(test_pipeline_consumed),
		cmocka_unit_test(test_responses),
		cmocka_unit_test(test_response_splits),
		cmocka_unit_test(test_query_and_decode),
		cmocka_unit_test(test_writer),
		cmocka_unit_test(test_sse),
		cmocka_unit_test(test_json_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
