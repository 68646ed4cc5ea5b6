/*
 * http_parse.c: incremental HTTP/1.x request and response parser.
 *
 * Shaped for two callers: the epoll server (contiguous input buffer) and the
 * gateway's DPDK engine (bytes arrive in mbuf segments that it wants to free
 * quickly). So the head is copied line by line into a parser-owned buffer
 * (memchr for the LF, one memcpy per line, then validation of the line in
 * place) and may arrive in any fragmentation; the body is never copied, only
 * sliced out of the input. Framing decisions are taken once, on the complete
 * head, from the header table, following RFC 9112 section 6 to the letter
 * because the gateway sits in front of other HTTP parsers (request smuggling).
 * The chunked decoder is a byte-level state machine over the framing bytes
 * and hands chunk data out in bulk.
 */
#include "common/kvf_http_parse.h"

#include <pthread.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

enum {
	ST_START = 0,     /* request/status line (leading empty lines skipped) */
	ST_HEADERS,       /* header lines up to the empty line */
	ST_EMPTY,         /* head done, no body: DONE comes next */
	ST_LENGTH,        /* Content-Length body */
	ST_CHUNK_SIZE,    /* hex digits */
	ST_CHUNK_WS,      /* BWS after the size, before ';' or CR */
	ST_CHUNK_EXT,     /* chunk extensions, ignored up to CR */
	ST_CHUNK_SIZE_LF, /* LF ending the size line */
	ST_CHUNK_DATA,
	ST_CHUNK_DATA_CR,
	ST_CHUNK_DATA_LF,
	ST_TRAILER_START, /* start of a trailer line, or CR of the final CRLF */
	ST_TRAILER_LINE,
	ST_TRAILER_LF,
	ST_TRAILER_END_LF,
	ST_UNTIL_CLOSE,
	ST_DONE,
	ST_ERROR,
};

/* Offsets of one header into the head buffer (slices are fixed at the end). */
struct kvf_http_hoff {
	uint32_t no, nl, vo, vl;
};

/* first-line slices in start_off_[]: A = method, B = target, C = reason */
enum { SO_A_OFF, SO_A_LEN, SO_B_OFF, SO_B_LEN, SO_C_OFF, SO_C_LEN };

/* ---- character classes ---- */

#define C_TCHAR 1  /* token character (RFC 9110 5.6.2) */
#define C_VALUE 2  /* field-value octet: HTAB, SP, VCHAR, obs-text */
#define C_TARGET 4 /* request-target octet: VCHAR */
#define C_HEX 8

static unsigned char ctab[256];
static signed char hexval[256];

static void build_tables(void)
{
	for (int c = 0; c < 256; c++) {
		unsigned char f = 0;
		if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c && strchr("!#$%&'*+-.^_`|~", c)))
			f |= C_TCHAR;
		if (c == '\t' || (c >= 0x20 && c != 0x7f))
			f |= C_VALUE;
		if (c > 0x20 && c < 0x7f)
			f |= C_TARGET;
		hexval[c] = -1;
		if (c >= '0' && c <= '9')
			hexval[c] = (signed char)(c - '0');
		else if (c >= 'a' && c <= 'f')
			hexval[c] = (signed char)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			hexval[c] = (signed char)(c - 'A' + 10);
		if (hexval[c] >= 0)
			f |= C_HEX;
		ctab[c] = f;
	}
}

static void init_tables(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, build_tables);
}

static inline int is_ows(char c) { return c == ' ' || c == '\t'; }

static inline unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int mem_ieq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return 0;
	return 1;
}

/* ---- limits, lifecycle ---- */

kvf_http_limits kvf_http_limits_resolve(const kvf_http_limits *in)
{
	kvf_http_limits l = {0};
	if (in)
		l = *in;
	if (!l.max_line_bytes)
		l.max_line_bytes = KVF_HTTP_DEFAULT_MAX_LINE_BYTES;
	if (!l.max_headers)
		l.max_headers = KVF_HTTP_DEFAULT_MAX_HEADERS;
	if (!l.max_header_bytes)
		l.max_header_bytes = KVF_HTTP_DEFAULT_MAX_HEADER_BYTES;
	if (!l.max_body_bytes)
		l.max_body_bytes = KVF_HTTP_DEFAULT_MAX_BODY_BYTES;
	return l;
}

int kvf_http_parser_init(kvf_http_parser *p, int kind, const kvf_http_limits *lim)
{
	init_tables();
	memset(p, 0, sizeof(*p));
	p->kind_ = kind == KVF_HTTP_RESPONSE ? KVF_HTTP_RESPONSE : KVF_HTTP_REQUEST;
	p->lim_ = kvf_http_limits_resolve(lim);
	p->hoff_ = kvf_calloc(p->lim_.max_headers, sizeof(*p->hoff_));
	p->hdrs_ = kvf_calloc(p->lim_.max_headers, sizeof(*p->hdrs_));
	if (!p->hoff_ || !p->hdrs_) {
		kvf_free(p->hoff_);
		kvf_free(p->hdrs_);
		p->hoff_ = NULL;
		p->hdrs_ = NULL;
		return kvf_errf(KVF_E_NOMEM, "http: parser header table (%u slots)",
				p->lim_.max_headers);
	}
	kvf_buf_init(&p->head_);
	kvf_http_parser_reset(p);
	return 0;
}

void kvf_http_parser_free(kvf_http_parser *p)
{
	if (!p)
		return;
	kvf_free(p->hoff_);
	kvf_free(p->hdrs_);
	kvf_buf_free(&p->head_);
	p->hoff_ = NULL;
	p->hdrs_ = NULL;
}

void kvf_http_parser_reset(kvf_http_parser *p)
{
	memset(&p->msg, 0, sizeof(p->msg));
	p->status = 0;
	p->reason = NULL;
	p->state_ = ST_START;
	p->err_ = 0;
	p->req_method_ = KVF_HTTP_GET;
	kvf_buf_reset(&p->head_);
	p->line_start_ = 0;
	p->skipped_ = 0;
	p->hdr_bytes_ = 0;
	p->nhdr_ = 0;
	memset(p->start_off_, 0, sizeof(p->start_off_));
	p->body_left_ = 0;
	p->body_seen_ = 0;
	p->chunk_line_ = 0;
	p->chunk_digits_ = 0;
	p->trailer_n_ = 0;
	p->trailer_bytes_ = 0;
	p->te_seen_ = p->te_last_chunked_ = p->te_other_ = p->cl_seen_ = 0;
	p->conn_close_ = p->conn_ka_ = p->conn_upgrade_ = p->expect_ = 0;
	p->te_chunked_n_ = 0;
	p->host_n_ = 0;
	p->cl_ = 0;
}

void kvf_http_parser_set_req_method(kvf_http_parser *p, int method)
{
	p->req_method_ = method;
}

int kvf_http_parser_started(const kvf_http_parser *p)
{
	return p->state_ != ST_START || p->head_.len > 0 || p->skipped_ > 0;
}

int kvf_http_parser_head_done(const kvf_http_parser *p)
{
	return p->state_ >= ST_EMPTY && p->state_ != ST_ERROR;
}

/* Records an error: every later call returns it until reset. */
static int fail(kvf_http_parser *p, int err, int status, const char *reason)
{
	p->state_ = ST_ERROR;
	p->err_ = err;
	p->status = p->kind_ == KVF_HTTP_RESPONSE ? 502 : status;
	p->reason = reason;
	return kvf_errf(err, "http: %s", reason);
}

/* ---- methods ---- */

static const char *const method_names[] = {
	"OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
};

const char *kvf_http_method_name(int method)
{
	if (method < 0 || method >= (int)(sizeof(method_names) / sizeof(method_names[0])))
		return "OTHER";
	return method_names[method];
}

int kvf_http_method_from(const char *name, size_t len)
{
	for (int m = 1; m < (int)(sizeof(method_names) / sizeof(method_names[0])); m++)
		if (strlen(method_names[m]) == len && memcmp(method_names[m], name, len) == 0)
			return m;
	return KVF_HTTP_M_OTHER;
}

/* ---- first line ---- */

/* "HTTP/d.d" -> 10/11, or a negative: -1 malformed, -2 unsupported major. */
static int parse_version(const char *s, size_t n)
{
	if (n != 8 || memcmp(s, "HTTP/", 5) != 0 || s[6] != '.' || s[5] < '0' || s[5] > '9' ||
	    s[7] < '0' || s[7] > '9')
		return -1;
	if (s[5] != '1')
		return -2;
	return s[7] == '0' ? 10 : 11;
}

static int parse_request_line(kvf_http_parser *p, const char *line, size_t n)
{
	size_t i = 0;
	while (i < n && (ctab[(unsigned char)line[i]] & C_TCHAR))
		i++;
	if (i == 0 || i == n || line[i] != ' ')
		return fail(p, KVF_E_PARSE, 400, "malformed request line");
	size_t mlen = i;
	size_t t0 = ++i;
	while (i < n && (ctab[(unsigned char)line[i]] & C_TARGET))
		i++;
	if (i == t0 || i == n || line[i] != ' ')
		return fail(p, KVF_E_PARSE, 400, "malformed request line");
	size_t tlen = i - t0;
	i++;
	int v = parse_version(line + i, n - i);
	if (v == -2)
		return fail(p, KVF_E_VERSION, 505, "HTTP version not supported");
	if (v < 0)
		return fail(p, KVF_E_PARSE, 400, "malformed HTTP version");
	p->msg.version = v;
	p->start_off_[SO_A_OFF] = 0;
	p->start_off_[SO_A_LEN] = (uint32_t)mlen;
	p->start_off_[SO_B_OFF] = (uint32_t)t0;
	p->start_off_[SO_B_LEN] = (uint32_t)tlen;
	p->msg.method = kvf_http_method_from(line, mlen);
	return 0;
}

static int parse_status_line(kvf_http_parser *p, const char *line, size_t n)
{
	if (n < 12 || line[8] != ' ')
		return fail(p, KVF_E_PARSE, 502, "malformed status line");
	int v = parse_version(line, 8);
	if (v == -2)
		return fail(p, KVF_E_VERSION, 502, "HTTP version not supported");
	if (v < 0)
		return fail(p, KVF_E_PARSE, 502, "malformed status line");
	int st = 0;
	for (int k = 9; k < 12; k++) {
		if (line[k] < '0' || line[k] > '9')
			return fail(p, KVF_E_PARSE, 502, "malformed status code");
		st = st * 10 + (line[k] - '0');
	}
	if (st < 100 || st > 599)
		return fail(p, KVF_E_PARSE, 502, "status code out of range");
	size_t r0 = 12;
	if (n > 12) {
		if (line[12] != ' ')
			return fail(p, KVF_E_PARSE, 502, "malformed status line");
		r0 = 13;
		for (size_t k = r0; k < n; k++)
			if (!(ctab[(unsigned char)line[k]] & C_VALUE))
				return fail(p, KVF_E_PARSE, 502, "invalid character in reason phrase");
	}
	p->msg.version = v;
	p->msg.status = st;
	p->start_off_[SO_C_OFF] = (uint32_t)r0;
	p->start_off_[SO_C_LEN] = (uint32_t)(n - r0);
	return 0;
}

/* ---- header lines ---- */

static int parse_header_line(kvf_http_parser *p, size_t off, size_t n)
{
	const char *line = p->head_.data + off;
	if (is_ows(line[0])) {
		/* obs-fold: forbidden in requests; in responses the continuation
		 * joins the previous value with SP (RFC 9112 5.2). */
		if (p->kind_ == KVF_HTTP_REQUEST || p->nhdr_ == 0)
			return fail(p, KVF_E_PARSE, 400, "obsolete line folding");
		size_t i = 0, e = n;
		while (i < n && is_ows(line[i]))
			i++;
		while (e > i && is_ows(line[e - 1]))
			e--;
		for (size_t k = i; k < e; k++)
			if (!(ctab[(unsigned char)line[k]] & C_VALUE))
				return fail(p, KVF_E_PARSE, 400, "invalid character in header value");
		if (e == i)
			return 0;
		struct kvf_http_hoff *h = &p->hoff_[p->nhdr_ - 1];
		size_t vend = h->vo + h->vl, cstart = off + i;
		if (h->vl == 0)
			h->vo = (uint32_t)cstart;
		else
			memset(p->head_.data + vend, ' ', cstart - vend);
		h->vl = (uint32_t)(off + e - h->vo);
		return 0;
	}
	size_t i = 0;
	while (i < n && (ctab[(unsigned char)line[i]] & C_TCHAR))
		i++;
	if (i == 0 || i == n || line[i] != ':')
		return fail(p, KVF_E_PARSE, 400, "invalid header name");
	size_t nl = i++;
	while (i < n && is_ows(line[i]))
		i++;
	size_t v0 = i, e = n;
	while (e > v0 && is_ows(line[e - 1]))
		e--;
	for (size_t k = v0; k < e; k++)
		if (!(ctab[(unsigned char)line[k]] & C_VALUE))
			return fail(p, KVF_E_PARSE, 400, "invalid character in header value");
	if (p->nhdr_ >= p->lim_.max_headers)
		return fail(p, KVF_E_TOOBIG, 431, "too many header fields");
	struct kvf_http_hoff *h = &p->hoff_[p->nhdr_++];
	h->no = (uint32_t)off;
	h->nl = (uint32_t)nl;
	h->vo = (uint32_t)(off + v0);
	h->vl = (uint32_t)(e - v0);
	return 0;
}

/* ---- framing headers, read once the head is complete ---- */

/* Content-Length: 1*DIGIT, or a list of identical values ("5, 5").
 * 0 with *out, -1 malformed or beyond 2^63-1. */
static int parse_content_length(const char *v, size_t n, uint64_t *out)
{
	size_t i = 0;
	int have = 0;
	uint64_t val = 0;
	for (;;) {
		while (i < n && is_ows(v[i]))
			i++;
		size_t s = i;
		uint64_t x = 0;
		while (i < n && v[i] >= '0' && v[i] <= '9') {
			unsigned d = (unsigned)(v[i] - '0');
			if (x > (UINT64_C(0x7fffffffffffffff) - d) / 10)
				return -1;
			x = x * 10 + d;
			i++;
		}
		if (i == s)
			return -1;
		while (i < n && is_ows(v[i]))
			i++;
		if (have && x != val)
			return -1;
		val = x;
		have = 1;
		if (i == n)
			break;
		if (v[i] != ',')
			return -1;
		i++;
	}
	*out = val;
	return 0;
}

/* Calls fn for each trimmed element of a comma list; empty elements are
 * passed too (len 0). Stops at fn's first nonzero return. */
static int each_list_elem(const char *v, size_t n, int (*fn)(kvf_http_parser *, const char *, size_t),
			  kvf_http_parser *p)
{
	size_t i = 0;
	for (;;) {
		while (i < n && is_ows(v[i]))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && is_ows(v[e - 1]))
			e--;
		int rc = fn(p, v + s, e - s);
		if (rc)
			return rc;
		if (i >= n)
			return 0;
		i++;
	}
}

static int te_elem(kvf_http_parser *p, const char *s, size_t n)
{
	if (n == 0)
		return fail(p, KVF_E_PARSE, 400, "empty transfer coding");
	if (n == 7 && mem_ieq(s, "chunked", 7)) {
		if (p->te_chunked_n_ < 255)
			p->te_chunked_n_++;
		p->te_last_chunked_ = 1;
	} else {
		p->te_other_ = 1;
		p->te_last_chunked_ = 0;
	}
	return 0;
}

static int conn_elem(kvf_http_parser *p, const char *s, size_t n)
{
	if (n == 5 && mem_ieq(s, "close", 5))
		p->conn_close_ = 1;
	else if (n == 10 && mem_ieq(s, "keep-alive", 10))
		p->conn_ka_ = 1;
	else if (n == 7 && mem_ieq(s, "upgrade", 7))
		p->conn_upgrade_ = 1;
	return 0;
}

static int scan_framing_headers(kvf_http_parser *p)
{
	const char *base = p->head_.data;
	for (size_t k = 0; k < p->nhdr_; k++) {
		const struct kvf_http_hoff *h = &p->hoff_[k];
		const char *name = base + h->no, *val = base + h->vo;
		int rc = 0;
		switch (h->nl) {
		case 4:
			if (mem_ieq(name, "host", 4) && p->host_n_ < 255)
				p->host_n_++;
			break;
		case 6:
			if (mem_ieq(name, "expect", 6) && h->vl == 12 && mem_ieq(val, "100-continue", 12))
				p->expect_ = 1;
			break;
		case 10:
			if (mem_ieq(name, "connection", 10))
				rc = each_list_elem(val, h->vl, conn_elem, p);
			break;
		case 14:
			if (mem_ieq(name, "content-length", 14)) {
				uint64_t v;
				if (parse_content_length(val, h->vl, &v) != 0 ||
				    (p->cl_seen_ && v != p->cl_))
					return fail(p, KVF_E_PARSE, 400, "invalid Content-Length");
				p->cl_seen_ = 1;
				p->cl_ = v;
			}
			break;
		case 17:
			if (mem_ieq(name, "transfer-encoding", 17)) {
				p->te_seen_ = 1;
				rc = each_list_elem(val, h->vl, te_elem, p);
			}
			break;
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int finish_request_head(kvf_http_parser *p)
{
	kvf_http_msg *m = &p->msg;
	if (m->version == 11 && p->host_n_ == 0)
		return fail(p, KVF_E_PARSE, 400, "missing Host header");
	if (p->host_n_ > 1)
		return fail(p, KVF_E_PARSE, 400, "duplicate Host header");
	if (p->te_seen_) {
		if (p->cl_seen_)
			return fail(p, KVF_E_PARSE, 400, "both Transfer-Encoding and Content-Length");
		if (m->version == 10)
			return fail(p, KVF_E_PARSE, 400, "Transfer-Encoding in an HTTP/1.0 request");
		if (!p->te_last_chunked_ || p->te_chunked_n_ != 1)
			return fail(p, KVF_E_PARSE, 400, "chunked must be the final transfer coding");
		if (p->te_other_)
			return fail(p, KVF_E_UNSUPPORTED, 501, "unsupported transfer coding");
		m->body_kind = KVF_HTTP_BODY_CHUNKED;
	} else if (p->cl_seen_ && p->cl_ > 0) {
		if (p->cl_ > p->lim_.max_body_bytes)
			return fail(p, KVF_E_TOOBIG, 413, "request body too large");
		m->body_kind = KVF_HTTP_BODY_LENGTH;
		m->content_length = p->cl_;
	} else {
		m->body_kind = KVF_HTTP_BODY_NONE;
	}
	m->keep_alive = m->version == 11 ? !p->conn_close_ : (p->conn_ka_ && !p->conn_close_);
	m->expect_continue = m->version == 11 && p->expect_;
	return 0;
}

static int finish_response_head(kvf_http_parser *p)
{
	kvf_http_msg *m = &p->msg;
	int st = m->status;
	m->keep_alive = m->version == 11 ? !p->conn_close_ : (p->conn_ka_ && !p->conn_close_);
	if ((st >= 100 && st < 200) || st == 204 || st == 304 || p->req_method_ == KVF_HTTP_HEAD ||
	    (p->req_method_ == KVF_HTTP_CONNECT && st >= 200 && st < 300)) {
		m->body_kind = KVF_HTTP_BODY_NONE;
	} else if (p->te_seen_) {
		if (m->version == 11 && p->te_last_chunked_ && p->te_chunked_n_ == 1)
			m->body_kind = KVF_HTTP_BODY_CHUNKED;
		else
			m->body_kind = KVF_HTTP_BODY_UNTIL_CLOSE;
		if (p->cl_seen_ || m->version == 10)
			m->keep_alive = 0; /* RFC 9112 6.3: close after such a message */
	} else if (p->cl_seen_) {
		if (p->cl_ > p->lim_.max_body_bytes)
			return fail(p, KVF_E_TOOBIG, 502, "response body too large");
		m->body_kind = p->cl_ ? KVF_HTTP_BODY_LENGTH : KVF_HTTP_BODY_NONE;
		m->content_length = p->cl_;
	} else {
		m->body_kind = KVF_HTTP_BODY_UNTIL_CLOSE;
	}
	if (m->body_kind == KVF_HTTP_BODY_UNTIL_CLOSE)
		m->keep_alive = 0;
	return 0;
}

/* Splits the request-target into path and query. */
static int split_target(kvf_http_parser *p)
{
	kvf_http_msg *m = &p->msg;
	const char *t = m->target.p;
	size_t n = m->target.len;
	const char *q = NULL;
	if (t[0] == '/') {
		m->path.p = t;
		q = memchr(t, '?', n);
		m->path.len = q ? (size_t)(q - t) : n;
	} else if (n == 1 && t[0] == '*') {
		if (m->method != KVF_HTTP_OPTIONS)
			return fail(p, KVF_E_PARSE, 400, "'*' target is for OPTIONS only");
		m->path = m->target;
	} else if (m->method == KVF_HTTP_CONNECT) {
		m->path = m->target; /* authority-form */
	} else {
		/* absolute-form: scheme "://" authority [path] ["?" query] */
		const char *sep = NULL;
		for (size_t i = 0; i + 2 < n; i++) {
			if (t[i] == ':' && t[i + 1] == '/' && t[i + 2] == '/') {
				sep = t + i;
				break;
			}
			if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
			      (i > 0 && ((t[i] >= '0' && t[i] <= '9') || t[i] == '+' || t[i] == '-' ||
					 t[i] == '.'))))
				break;
		}
		if (!sep || sep == t)
			return fail(p, KVF_E_PARSE, 400, "invalid request target");
		const char *a = sep + 3, *end = t + n;
		const char *s = a;
		while (s < end && *s != '/' && *s != '?')
			s++;
		if (s == a)
			return fail(p, KVF_E_PARSE, 400, "invalid request target");
		if (s < end && *s == '/') {
			q = memchr(s, '?', (size_t)(end - s));
			m->path.p = s;
			m->path.len = q ? (size_t)(q - s) : (size_t)(end - s);
		} else {
			m->path.p = "/";
			m->path.len = 1;
			q = s < end ? s : NULL;
		}
	}
	if (q) {
		m->query.p = q + 1;
		m->query.len = (size_t)(t + n - q - 1);
	} else {
		m->query.p = t + n;
		m->query.len = 0;
	}
	return 0;
}

/* The empty line arrived: slices, framing, next state. */
static int finish_head(kvf_http_parser *p)
{
	const char *base = p->head_.data;
	kvf_http_msg *m = &p->msg;
	for (size_t k = 0; k < p->nhdr_; k++) {
		p->hdrs_[k].name.p = base + p->hoff_[k].no;
		p->hdrs_[k].name.len = p->hoff_[k].nl;
		p->hdrs_[k].value.p = base + p->hoff_[k].vo;
		p->hdrs_[k].value.len = p->hoff_[k].vl;
	}
	m->headers = p->hdrs_;
	m->n_headers = p->nhdr_;
	m->head_bytes = p->head_.len;
	int rc = scan_framing_headers(p);
	if (rc)
		return rc;
	if (p->kind_ == KVF_HTTP_REQUEST) {
		m->method_name.p = base + p->start_off_[SO_A_OFF];
		m->method_name.len = p->start_off_[SO_A_LEN];
		m->target.p = base + p->start_off_[SO_B_OFF];
		m->target.len = p->start_off_[SO_B_LEN];
		rc = split_target(p);
		if (!rc)
			rc = finish_request_head(p);
	} else {
		m->reason.p = base + p->start_off_[SO_C_OFF];
		m->reason.len = p->start_off_[SO_C_LEN];
		rc = finish_response_head(p);
	}
	if (rc)
		return rc;
	m->upgrade = p->conn_upgrade_;
	switch (m->body_kind) {
	case KVF_HTTP_BODY_LENGTH:
		p->body_left_ = m->content_length;
		p->state_ = ST_LENGTH;
		break;
	case KVF_HTTP_BODY_CHUNKED:
		p->state_ = ST_CHUNK_SIZE;
		break;
	case KVF_HTTP_BODY_UNTIL_CLOSE:
		p->state_ = ST_UNTIL_CLOSE;
		break;
	default:
		p->state_ = ST_EMPTY;
	}
	return 0;
}

/* A complete line (LF included) sits at [line_start_, head_.len).
 * Returns 1 when the head is complete, 0 to continue, or an error. */
static int line_done(kvf_http_parser *p)
{
	size_t off = p->line_start_;
	size_t n = p->head_.len - off; /* with CRLF */
	char *line = p->head_.data + off;
	if (n < 2 || line[n - 2] != '\r')
		return fail(p, KVF_E_PARSE, 400, "bare LF line ending");
	n -= 2;
	if (p->state_ == ST_START) {
		if (n == 0) {
			/* RFC 9112 2.2: ignore empty lines before the start line. */
			p->skipped_ += 2;
			if (p->skipped_ > p->lim_.max_line_bytes)
				return fail(p, KVF_E_PARSE, 400, "too many empty lines");
			kvf_buf_reset(&p->head_);
			p->line_start_ = 0;
			return 0;
		}
		int rc = p->kind_ == KVF_HTTP_REQUEST ? parse_request_line(p, line, n)
						       : parse_status_line(p, line, n);
		if (rc)
			return rc;
		p->state_ = ST_HEADERS;
		p->line_start_ = p->head_.len;
		return 0;
	}
	p->hdr_bytes_ += n + 2;
	if (n == 0) {
		int rc = finish_head(p);
		return rc ? rc : 1;
	}
	int rc = parse_header_line(p, off, n);
	if (rc)
		return rc;
	p->line_start_ = p->head_.len;
	return 0;
}

/* Copies head bytes line by line. 0 when the head is complete, KVF_E_AGAIN
 * when the input ran out, or an error. */
static int head_feed(kvf_http_parser *p, const char *in, size_t len, size_t *pos)
{
	while (*pos < len) {
		size_t cur = p->head_.len - p->line_start_;
		size_t limit = p->state_ == ST_START ? (size_t)p->lim_.max_line_bytes + 2
						     : (size_t)p->lim_.max_header_bytes - p->hdr_bytes_;
		if (cur >= limit)
			goto too_long;
		size_t room = limit - cur, avail = len - *pos;
		size_t scan = avail < room ? avail : room;
		const char *lf = memchr(in + *pos, '\n', scan);
		size_t take = lf ? (size_t)(lf - (in + *pos)) + 1 : scan;
		if (kvf_buf_append(&p->head_, in + *pos, take) != 0)
			return fail(p, KVF_E_NOMEM, 503, "out of memory");
		*pos += take;
		if (!lf) {
			if (take == room)
				goto too_long;
			continue;
		}
		int rc = line_done(p);
		if (rc == 1)
			return 0;
		if (rc < 0)
			return rc;
	}
	return KVF_E_AGAIN;
too_long:
	if (p->state_ == ST_START)
		return p->kind_ == KVF_HTTP_REQUEST ? fail(p, KVF_E_TOOBIG, 414, "request line too long")
						    : fail(p, KVF_E_TOOBIG, 502, "status line too long");
	return fail(p, KVF_E_TOOBIG, 431, "request header fields too large");
}

/* ---- body ---- */

static int body_event(kvf_http_event *ev, const char *data, size_t n)
{
	ev->type = KVF_HTTP_EV_BODY;
	ev->data = data;
	ev->len = n;
	return 0;
}

static int done_event(kvf_http_parser *p, kvf_http_event *ev)
{
	p->state_ = ST_DONE;
	ev->type = KVF_HTTP_EV_DONE;
	return 0;
}

int kvf_http_parse(kvf_http_parser *p, const void *data, size_t len, size_t *consumed,
		   kvf_http_event *ev)
{
	const char *in = data;
	size_t pos = 0;
	int rc = KVF_E_AGAIN;
	ev->type = 0;
	ev->data = NULL;
	ev->len = 0;
	while (rc == KVF_E_AGAIN) {
		unsigned char c;
		switch (p->state_) {
		case ST_START:
		case ST_HEADERS:
			rc = head_feed(p, in, len, &pos);
			if (rc == 0)
				ev->type = KVF_HTTP_EV_HEAD;
			else if (rc == KVF_E_AGAIN)
				goto out;
			break;
		case ST_EMPTY:
			rc = done_event(p, ev);
			break;
		case ST_LENGTH: {
			if (p->body_left_ == 0) {
				rc = done_event(p, ev);
				break;
			}
			if (pos == len)
				goto out;
			size_t n = len - pos;
			if (n > p->body_left_)
				n = (size_t)p->body_left_;
			rc = body_event(ev, in + pos, n);
			p->body_left_ -= n;
			pos += n;
			break;
		}
		case ST_UNTIL_CLOSE: {
			/* Delivers up to the limit, then fails on the next byte, so
			 * the outcome does not depend on how input is fragmented. */
			if (pos == len)
				goto out;
			uint64_t room = p->lim_.max_body_bytes - p->body_seen_;
			if (room == 0) {
				rc = fail(p, KVF_E_TOOBIG, 502, "response body too large");
				break;
			}
			size_t n = len - pos;
			if (n > room)
				n = (size_t)room;
			p->body_seen_ += n;
			rc = body_event(ev, in + pos, n);
			pos += n;
			break;
		}
		case ST_CHUNK_SIZE:
			if (pos == len)
				goto out;
			c = (unsigned char)in[pos];
			if (hexval[c] >= 0) {
				if (p->chunk_digits_ >= 16) {
					rc = fail(p, KVF_E_PARSE, 400, "chunk size too large");
					break;
				}
				p->body_left_ = p->body_left_ * 16 + (uint64_t)hexval[c];
				p->chunk_digits_++;
				p->chunk_line_++;
				pos++;
			} else if (p->chunk_digits_ == 0) {
				rc = fail(p, KVF_E_PARSE, 400, "invalid chunk size");
			} else if (c == '\r') {
				p->state_ = ST_CHUNK_SIZE_LF;
				pos++;
			} else if (c == ';') {
				p->state_ = ST_CHUNK_EXT;
				p->chunk_line_++;
				pos++;
			} else if (c == ' ' || c == '\t') {
				p->state_ = ST_CHUNK_WS;
				p->chunk_line_++;
				pos++;
			} else {
				rc = fail(p, KVF_E_PARSE, 400, "invalid chunk size");
			}
			break;
		case ST_CHUNK_WS:
			if (pos == len)
				goto out;
			c = (unsigned char)in[pos];
			if (c == ' ' || c == '\t' || c == ';') {
				if (c == ';')
					p->state_ = ST_CHUNK_EXT;
				if (++p->chunk_line_ > KVF_HTTP_MAX_CHUNK_LINE_BYTES)
					rc = fail(p, KVF_E_PARSE, 400, "chunk extension too long");
				pos++;
			} else if (c == '\r') {
				p->state_ = ST_CHUNK_SIZE_LF;
				pos++;
			} else {
				rc = fail(p, KVF_E_PARSE, 400, "invalid chunk size line");
			}
			break;
		case ST_CHUNK_EXT:
			/* Extensions are ignored; only their bytes are checked. */
			while (pos < len) {
				c = (unsigned char)in[pos];
				if (c == '\r' || !(ctab[c] & C_VALUE))
					break;
				pos++;
				p->chunk_line_++;
			}
			if (p->chunk_line_ > KVF_HTTP_MAX_CHUNK_LINE_BYTES) {
				rc = fail(p, KVF_E_PARSE, 400, "chunk extension too long");
				break;
			}
			if (pos == len)
				goto out;
			if (in[pos] != '\r') {
				rc = fail(p, KVF_E_PARSE, 400, "invalid chunk extension");
				break;
			}
			p->state_ = ST_CHUNK_SIZE_LF;
			pos++;
			break;
		case ST_CHUNK_SIZE_LF:
			if (pos == len)
				goto out;
			if (in[pos++] != '\n') {
				rc = fail(p, KVF_E_PARSE, 400, "chunk size line without CRLF");
				break;
			}
			p->chunk_line_ = 0;
			p->chunk_digits_ = 0;
			if (p->body_left_ == 0) {
				p->state_ = ST_TRAILER_START;
			} else if (p->body_left_ > p->lim_.max_body_bytes - p->body_seen_) {
				rc = p->kind_ == KVF_HTTP_REQUEST
					     ? fail(p, KVF_E_TOOBIG, 413, "request body too large")
					     : fail(p, KVF_E_TOOBIG, 502, "response body too large");
			} else {
				p->body_seen_ += p->body_left_;
				p->state_ = ST_CHUNK_DATA;
			}
			break;
		case ST_CHUNK_DATA: {
			if (pos == len)
				goto out;
			size_t n = len - pos;
			if (n > p->body_left_)
				n = (size_t)p->body_left_;
			rc = body_event(ev, in + pos, n);
			p->body_left_ -= n;
			pos += n;
			if (p->body_left_ == 0)
				p->state_ = ST_CHUNK_DATA_CR;
			break;
		}
		case ST_CHUNK_DATA_CR:
		case ST_CHUNK_DATA_LF:
			if (pos == len)
				goto out;
			if (in[pos++] != (p->state_ == ST_CHUNK_DATA_CR ? '\r' : '\n')) {
				rc = fail(p, KVF_E_PARSE, 400, "chunk data without CRLF");
				break;
			}
			p->state_ = p->state_ == ST_CHUNK_DATA_CR ? ST_CHUNK_DATA_LF : ST_CHUNK_SIZE;
			break;
		case ST_TRAILER_START:
			if (pos == len)
				goto out;
			if (in[pos] == '\r') {
				p->state_ = ST_TRAILER_END_LF;
				pos++;
				break;
			}
			if (++p->trailer_n_ > p->lim_.max_headers) {
				rc = fail(p, KVF_E_TOOBIG, 431, "too many trailer fields");
				break;
			}
			if (!(ctab[(unsigned char)in[pos]] & C_TCHAR)) {
				rc = fail(p, KVF_E_PARSE, 400, "invalid trailer field");
				break;
			}
			p->state_ = ST_TRAILER_LINE;
			break;
		case ST_TRAILER_LINE: {
			/* Trailers are skipped (their bytes only checked). */
			size_t s = pos;
			while (pos < len) {
				c = (unsigned char)in[pos];
				if (c == '\r' || !(ctab[c] & C_VALUE))
					break;
				pos++;
			}
			p->trailer_bytes_ += (uint32_t)(pos - s);
			if (p->trailer_bytes_ > p->lim_.max_header_bytes) {
				rc = fail(p, KVF_E_TOOBIG, 431, "trailer fields too large");
				break;
			}
			if (pos == len)
				goto out;
			if (in[pos] != '\r') {
				rc = fail(p, KVF_E_PARSE, 400, "invalid character in trailer");
				break;
			}
			pos++;
			p->trailer_bytes_ += 2;
			p->state_ = ST_TRAILER_LF;
			break;
		}
		case ST_TRAILER_LF:
		case ST_TRAILER_END_LF:
			if (pos == len)
				goto out;
			if (in[pos++] != '\n') {
				rc = fail(p, KVF_E_PARSE, 400, "trailer line without CRLF");
				break;
			}
			if (p->state_ == ST_TRAILER_LF)
				p->state_ = ST_TRAILER_START;
			else
				rc = done_event(p, ev);
			break;
		case ST_DONE:
			return kvf_errf(KVF_E_STATE, "http: message complete; reset the parser");
		case ST_ERROR:
		default:
			return p->err_;
		}
	}
	if (rc < 0)
		return rc;
out:
	*consumed = pos;
	return rc;
}

int kvf_http_parser_eof(kvf_http_parser *p, kvf_http_event *ev)
{
	ev->type = 0;
	ev->data = NULL;
	ev->len = 0;
	switch (p->state_) {
	case ST_UNTIL_CLOSE:
		return done_event(p, ev);
	case ST_EMPTY:
		return done_event(p, ev);
	case ST_START:
		if (p->head_.len == 0 && p->skipped_ == 0)
			return kvf_errf(KVF_E_CLOSED, "http: connection closed");
		break;
	case ST_DONE:
		return kvf_errf(KVF_E_STATE, "http: message complete; reset the parser");
	case ST_ERROR:
		return p->err_;
	default:
		break;
	}
	return fail(p, KVF_E_PARSE, 400, "connection closed inside a message");
}

/* ---- lookups ---- */

static int name_eq(kvf_http_str s, const char *name, size_t n)
{
	return s.len == n && mem_ieq(s.p, name, n);
}

int kvf_http_msg_header_next(const kvf_http_msg *m, const char *name, size_t *pos,
			     kvf_http_str *out)
{
	size_t n = strlen(name);
	for (size_t i = *pos; i < m->n_headers; i++) {
		if (name_eq(m->headers[i].name, name, n)) {
			*out = m->headers[i].value;
			*pos = i + 1;
			return 0;
		}
	}
	*pos = m->n_headers;
	return KVF_E_NOTFOUND;
}

int kvf_http_msg_header(const kvf_http_msg *m, const char *name, kvf_http_str *out)
{
	size_t pos = 0;
	return kvf_http_msg_header_next(m, name, &pos, out);
}

int kvf_http_list_has(kvf_http_str value, const char *token)
{
	size_t tn = strlen(token), i = 0;
	const char *v = value.p;
	while (i < value.len) {
		while (i < value.len && (is_ows(v[i]) || v[i] == ','))
			i++;
		size_t s = i;
		while (i < value.len && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && is_ows(v[e - 1]))
			e--;
		if (e - s == tn && mem_ieq(v + s, token, tn))
			return 1;
	}
	return 0;
}

int kvf_http_str_eq(kvf_http_str s, const char *lit)
{
	size_t n = strlen(lit);
	return s.len == n && (n == 0 || memcmp(s.p, lit, n) == 0);
}

int kvf_http_str_ieq(kvf_http_str s, const char *lit)
{
	return name_eq(s, lit, strlen(lit));
}

/* ---- percent decoding ---- */

int kvf_http_pct_decode(const char *in, size_t len, char *out, size_t cap, size_t *out_len,
			int plus_as_space)
{
	init_tables();
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (c == '%') {
			if (i + 2 >= len)
				return kvf_errf(KVF_E_PARSE, "http: truncated %%-escape");
			int hi = hexval[(unsigned char)in[i + 1]], lo = hexval[(unsigned char)in[i + 2]];
			if (hi < 0 || lo < 0)
				return kvf_errf(KVF_E_PARSE, "http: invalid %%-escape");
			c = (char)(hi * 16 + lo);
			i += 2;
		} else if (c == '+' && plus_as_space) {
			c = ' ';
		}
		if (o + 1 >= cap)
			return kvf_errf(KVF_E_TOOBIG, "http: decoded value exceeds %zu bytes", cap);
		out[o++] = c;
	}
	if (cap == 0)
		return kvf_errf(KVF_E_TOOBIG, "http: no room for the decoded value");
	out[o] = '\0';
	*out_len = o;
	return 0;
}

int kvf_http_query_get(kvf_http_str query, const char *name, char *out, size_t cap,
		       size_t *out_len)
{
	const char *q = query.p, *end = query.p + query.len;
	size_t nlen = strlen(name);
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *pe = amp ? amp : end;
		const char *eq = memchr(q, '=', (size_t)(pe - q));
		const char *ke = eq ? eq : pe;
		char key[256];
		size_t klen;
		if ((size_t)(ke - q) < sizeof(key) &&
		    kvf_http_pct_decode(q, (size_t)(ke - q), key, sizeof(key), &klen, 1) == 0 &&
		    klen == nlen && memcmp(key, name, nlen) == 0) {
			if (!eq)
				return kvf_http_pct_decode("", 0, out, cap, out_len, 1);
			return kvf_http_pct_decode(eq + 1, (size_t)(pe - eq - 1), out, cap, out_len, 1);
		}
		q = amp ? amp + 1 : end;
	}
	kvf_err_clear();
	return KVF_E_NOTFOUND;
}
