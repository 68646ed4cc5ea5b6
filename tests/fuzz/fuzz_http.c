/*
 * libFuzzer target for the HTTP parser (common/http_parse.c) and writer.
 *
 * Input: one control byte, then the bytes of an HTTP/1.x stream.
 *   bit 0     0 = requests, 1 = responses
 *   bits 1-2  responses: the request method (GET, HEAD, CONNECT, POST)
 *   bit 3     tight limits (small line/header/body limits) instead of defaults
 *   bits 4-7  seed for how the stream is cut into fragments
 * Checks beyond "no crash, no leak, no UB":
 *   - the event transcript of a one-shot parse equals that of a fragmented
 *     parse (the head copy and the chunked state machine are split-proof);
 *   - consumed counts never exceed the input, body slices lie inside it;
 *   - lookups and percent-decoding on every parsed head stay in bounds;
 *   - the writer: kvf_http_sse_size() matches what kvf_http_write_sse()
 *     writes, and a response written with the body parses back to that body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_http_parse.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

static void use_head(const kvf_http_msg *m, int kind, kvf_buf *t)
{
	kvf_buf_printf(t, "H%d %d %d %d %llu %d %d %zu|", m->version, m->method, m->status,
		       m->body_kind, (unsigned long long)m->content_length, m->keep_alive,
		       m->expect_continue, m->n_headers);
	for (size_t i = 0; i < m->n_headers; i++) {
		kvf_buf_append(t, m->headers[i].name.p, m->headers[i].name.len);
		kvf_buf_putc(t, ':');
		kvf_buf_append(t, m->headers[i].value.p, m->headers[i].value.len);
		kvf_buf_putc(t, '|');
	}
	kvf_http_str v;
	(void)kvf_http_msg_header(m, "content-type", &v);
	size_t pos = 0;
	while (kvf_http_msg_header_next(m, "x-a", &pos, &v) == 0)
		(void)kvf_http_list_has(v, "chunked");
	if (kind == KVF_HTTP_REQUEST) {
		kvf_buf_append(t, m->target.p, m->target.len);
		check(m->path.len <= m->target.len || m->path.len == 1);
		char out[128];
		size_t n;
		(void)kvf_http_query_get(m->query, "a", out, sizeof(out), &n);
		(void)kvf_http_pct_decode(m->path.p, m->path.len, out, sizeof(out), &n, 0);
	}
}

/* Parses data cut at the given positions; writes a transcript into t. */
static void run(int kind, int req_method, const kvf_http_limits *lim, const uint8_t *data,
		size_t size, const size_t *cuts, size_t ncuts, kvf_buf *t)
{
	kvf_http_parser p;
	if (kvf_http_parser_init(&p, kind, lim) != 0)
		abort();
	kvf_http_parser_set_req_method(&p, req_method);
	size_t start = 0;
	int stop = 0;
	for (size_t k = 0; k <= ncuts && !stop; k++) {
		size_t end = k < ncuts ? cuts[k] : size;
		const char *d = (const char *)data + start;
		size_t n = end - start;
		for (int guard = 0; guard < 100000; guard++) {
			size_t used = 0;
			kvf_http_event ev;
			int rc = kvf_http_parse(&p, d, n, &used, &ev);
			if (rc == KVF_E_AGAIN) {
				check(used == n);
				break;
			}
			if (rc < 0) {
				check(p.status >= 400 && p.reason != NULL);
				kvf_buf_printf(t, "E%d %s", p.status, p.reason);
				stop = 1;
				break;
			}
			check(used <= n);
			if (ev.type == KVF_HTTP_EV_HEAD) {
				use_head(&p.msg, kind, t);
			} else if (ev.type == KVF_HTTP_EV_BODY) {
				check(ev.len > 0 && ev.data >= d && ev.data + ev.len <= d + used);
				kvf_buf_append(t, ev.data, ev.len);
			} else {
				check(ev.type == KVF_HTTP_EV_DONE);
				kvf_buf_puts(t, "|D|");
				kvf_http_parser_reset(&p);
				kvf_http_parser_set_req_method(&p, req_method);
			}
			d += used;
			n -= used;
		}
		start = end;
	}
	if (!stop) {
		kvf_http_event ev;
		int rc = kvf_http_parser_eof(&p, &ev);
		kvf_buf_printf(t, "EOF%d", rc);
	}
	kvf_http_parser_free(&p);
}

static void writer_checks(const uint8_t *data, size_t size)
{
	kvf_buf b = KVF_BUF_INIT;
	const char *d = (const char *)data;
	if (kvf_http_write_sse(&b, NULL, NULL, d, size) == 0)
		check(b.len == kvf_http_sse_size(NULL, NULL, d, size));
	kvf_buf_reset(&b);
	if (kvf_http_write_response(&b, 200, "application/octet-stream", NULL, d, size, 1) == 0) {
		kvf_http_parser p;
		kvf_http_limits lim = { .max_body_bytes = UINT64_MAX };
		if (kvf_http_parser_init(&p, KVF_HTTP_RESPONSE, &lim) != 0)
			abort();
		kvf_buf body = KVF_BUF_INIT;
		const char *in = b.data;
		size_t n = b.len;
		int done = 0;
		for (;;) {
			size_t used;
			kvf_http_event ev;
			int rc = kvf_http_parse(&p, in, n, &used, &ev);
			if (rc < 0)
				break;
			in += used;
			n -= used;
			if (ev.type == KVF_HTTP_EV_BODY)
				kvf_buf_append(&body, ev.data, ev.len);
			if (ev.type == KVF_HTTP_EV_DONE) {
				done = 1;
				break;
			}
		}
		check(done && body.len == size && (size == 0 || memcmp(body.data, d, size) == 0));
		kvf_buf_free(&body);
		kvf_http_parser_free(&p);
	}
	kvf_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	data++;
	size--;
	int kind = (ctl & 1) ? KVF_HTTP_RESPONSE : KVF_HTTP_REQUEST;
	static const int methods[4] = { KVF_HTTP_GET, KVF_HTTP_HEAD, KVF_HTTP_CONNECT, KVF_HTTP_POST };
	int req_method = methods[(ctl >> 1) & 3];
	kvf_http_limits tight = { .max_line_bytes = 40, .max_headers = 4, .max_header_bytes = 96,
				  .max_body_bytes = 64 };
	const kvf_http_limits *lim = (ctl & 8) ? &tight : NULL;

	kvf_buf one = KVF_BUF_INIT, frag = KVF_BUF_INIT;
	run(kind, req_method, lim, data, size, NULL, 0, &one);

	/* fragments: pseudo-random cut points from the seed and the size */
	size_t cuts[64], ncuts = 0;
	uint32_t x = 0x9e3779b9u ^ (uint32_t)(ctl >> 4) ^ (uint32_t)size * 2654435761u;
	size_t pos = 0;
	while (size > 1 && ncuts < 64) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		pos += 1 + x % (((ctl >> 4) & 3) == 0 ? 2 : 17);
		if (pos >= size)
			break;
		cuts[ncuts++] = pos;
	}
	run(kind, req_method, lim, data, size, cuts, ncuts, &frag);
	check(one.len == frag.len && (one.len == 0 || memcmp(one.data, frag.data, one.len) == 0));
	kvf_buf_free(&one);
	kvf_buf_free(&frag);

	writer_checks(data, size < 4096 ? size : 4096);
	return 0;
}
