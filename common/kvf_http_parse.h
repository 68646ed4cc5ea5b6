/*
 * kvf_http_parse.h: socket-free HTTP/1.x message parser and writer.
 *
 * Nothing here touches a file descriptor: bytes come in through
 * kvf_http_parse() from whatever moves them (the epoll server in
 * common/http_server.c, the gateway's DPDK engine, an upstream client), and
 * responses are written into a kvf_buf that the caller sends however it likes.
 *
 * Parser model (picohttpparser's strictness, llhttp's incremental body):
 *   - The parser owns a copy of the message head. Head bytes are copied, line
 *     by line, into a per-parser buffer that grows up to the limits and is
 *     kept across messages, so the caller may feed arbitrary fragments and
 *     drop them once consumed. The slices in kvf_http_msg point into that
 *     buffer and stay valid until kvf_http_parser_reset() or _free().
 *   - Body bytes are never copied: each KVF_HTTP_EV_BODY event is a slice of
 *     the caller's input, valid as long as the caller keeps that input.
 *   - One event per call. The caller loops:
 *         while ((rc = kvf_http_parse(p, d, n, &used, &ev)) != KVF_E_AGAIN) {
 *                 d += used; n -= used;
 *                 if (rc < 0) -> answer p->status / p->reason, close;
 *                 HEAD -> p->msg is ready; BODY -> ev.data/ev.len;
 *                 DONE -> message complete: kvf_http_parser_reset(p) and
 *                         continue with the remaining bytes (pipelining).
 *         }
 *     KVF_E_AGAIN means every byte given was consumed and more are needed.
 *   - Allocation: kvf_http_parser_init() allocates the header arrays
 *     (max_headers slots); the head buffer grows on first use. Nothing is
 *     allocated per message after that.
 *
 * Framing follows RFC 9112 strictly (request smuggling is the threat model):
 * lines end in CRLF (a bare LF or CR is an error), exactly one SP between the
 * request-line parts, no whitespace before a header colon, obs-fold rejected
 * in requests (unfolded into SP in responses), Content-Length values must be
 * all-digits and agree, Transfer-Encoding together with Content-Length is
 * rejected in requests, chunked must be the final coding and appear once.
 * On an error the parser stops (every later call returns the same error) and
 * sets p->status (the status a server answers: 400, 413, 414, 431, 501, 505;
 * 502 for a bad response) and p->reason (a short static phrase).
 */
#ifndef KVF_HTTP_PARSE_H
#define KVF_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_buf.h"

/* ---- limits ---- */

#define KVF_HTTP_DEFAULT_MAX_LINE_BYTES   8192u        /* request line -> 414 */
#define KVF_HTTP_DEFAULT_MAX_HEADERS      100u         /* header fields -> 431 */
#define KVF_HTTP_DEFAULT_MAX_HEADER_BYTES 32768u       /* all header lines -> 431 */
#define KVF_HTTP_DEFAULT_MAX_BODY_BYTES   (16u << 20)  /* body -> 413 */
#define KVF_HTTP_MAX_CHUNK_LINE_BYTES     4096u        /* chunk-size line with extensions */

/* Zero fields take the defaults above. max_body_bytes = UINT64_MAX: no limit
 * (a proxy reading an upstream response it streams through). */
typedef struct kvf_http_limits {
	uint32_t max_line_bytes;   /* request/status line without CRLF */
	uint32_t max_headers;      /* header fields (also trailer fields) */
	uint32_t max_header_bytes; /* header lines after the first, CRLFs included */
	uint64_t max_body_bytes;   /* Content-Length, or the sum of chunk sizes */
} kvf_http_limits;

/* Copies *in (or zeros when NULL) with every zero field set to its default. */
kvf_http_limits kvf_http_limits_resolve(const kvf_http_limits *in);

/* ---- messages ---- */

enum kvf_http_kind { KVF_HTTP_REQUEST = 0, KVF_HTTP_RESPONSE = 1 };

enum kvf_http_method {
	KVF_HTTP_M_OTHER = 0, /* a valid token we do not know: see msg.method_name */
	KVF_HTTP_GET,
	KVF_HTTP_HEAD,
	KVF_HTTP_POST,
	KVF_HTTP_PUT,
	KVF_HTTP_DELETE,
	KVF_HTTP_OPTIONS,
	KVF_HTTP_PATCH,
	KVF_HTTP_CONNECT,
	KVF_HTTP_TRACE,
};

enum kvf_http_body_kind {
	KVF_HTTP_BODY_NONE = 0,    /* no body (or Content-Length: 0) */
	KVF_HTTP_BODY_LENGTH,      /* Content-Length bytes */
	KVF_HTTP_BODY_CHUNKED,     /* Transfer-Encoding: chunked */
	KVF_HTTP_BODY_UNTIL_CLOSE, /* responses only: until the connection closes */
};

/* A byte range; not NUL-terminated. */
typedef struct kvf_http_str {
	const char *p;
	size_t len;
} kvf_http_str;

typedef struct kvf_http_header {
	kvf_http_str name;  /* as received (case preserved) */
	kvf_http_str value; /* leading and trailing whitespace removed */
} kvf_http_header;

/* The parsed head; every slice points into the parser's head buffer. */
typedef struct kvf_http_msg {
	int version;                /* 10 or 11 (HTTP/1.2+ is read as 11) */
	/* requests */
	int method;                 /* enum kvf_http_method */
	kvf_http_str method_name;
	kvf_http_str target;        /* request-target as received */
	kvf_http_str path;          /* target up to '?' (absolute-form: the path part) */
	kvf_http_str query;         /* after '?', without it; len 0 when absent */
	/* responses */
	int status;
	kvf_http_str reason;
	/* both */
	const kvf_http_header *headers;
	size_t n_headers;
	int body_kind;              /* enum kvf_http_body_kind */
	uint64_t content_length;    /* KVF_HTTP_BODY_LENGTH only */
	int keep_alive;             /* the connection may carry another message */
	int expect_continue;        /* HTTP/1.1 request with Expect: 100-continue */
	int upgrade;                /* Connection: upgrade was present */
	size_t head_bytes;          /* wire bytes of the head (leading CRLFs excluded) */
} kvf_http_msg;

enum kvf_http_ev_type {
	KVF_HTTP_EV_HEAD = 1, /* p->msg is complete */
	KVF_HTTP_EV_BODY,     /* ev.data / ev.len: body bytes (de-chunked) */
	KVF_HTTP_EV_DONE,     /* the message is complete */
};

typedef struct kvf_http_event {
	int type;         /* enum kvf_http_ev_type */
	const char *data; /* BODY: points into the input given to kvf_http_parse() */
	size_t len;
} kvf_http_event;

/* Embeddable; every field below `msg`, `status` and `reason` is private. */
typedef struct kvf_http_parser {
	kvf_http_msg msg;   /* valid from EV_HEAD until reset */
	int status;         /* after an error: HTTP status to answer */
	const char *reason; /* after an error: short static reason */

	/* private */
	int kind_, state_, err_, req_method_;
	kvf_http_limits lim_;
	kvf_buf head_;
	size_t line_start_;
	size_t skipped_;          /* leading empty lines before the start line */
	size_t hdr_bytes_;        /* header-section bytes so far */
	struct kvf_http_hoff *hoff_;
	kvf_http_header *hdrs_;
	size_t nhdr_;
	uint32_t start_off_[6];   /* first-line slices: offsets and lengths */
	uint64_t body_left_, body_seen_;
	uint32_t chunk_line_, chunk_digits_, trailer_n_, trailer_bytes_;
	unsigned te_seen_ : 1, te_last_chunked_ : 1, te_other_ : 1, cl_seen_ : 1;
	unsigned conn_close_ : 1, conn_ka_ : 1, conn_upgrade_ : 1, expect_ : 1;
	unsigned te_chunked_n_ : 8, host_n_ : 8;
	uint64_t cl_;
} kvf_http_parser;

/* Sets up p for requests or responses (enum kvf_http_kind) with the given
 * limits (NULL: defaults). Allocates the header arrays. 0 or KVF_E_NOMEM. */
int kvf_http_parser_init(kvf_http_parser *p, int kind, const kvf_http_limits *lim);
/* Releases what init allocated. Safe on a zeroed parser; NULL is a no-op. */
void kvf_http_parser_free(kvf_http_parser *p);
/* Forgets the current message (its slices become invalid) and clears an error. */
void kvf_http_parser_reset(kvf_http_parser *p);
/* Response parsers: the method of the request being answered (HEAD and
 * CONNECT change framing). Call after reset, before the response's bytes. */
void kvf_http_parser_set_req_method(kvf_http_parser *p, int method);

/*
 * Consumes bytes from data[0..len) and reports one event.
 * Returns 0 with *ev filled and *consumed bytes used; KVF_E_AGAIN when all len
 * bytes were consumed (*consumed = len) and no event is ready; KVF_E_STATE
 * after DONE until reset; or an error (KVF_E_PARSE malformed, KVF_E_TOOBIG over
 * a limit, KVF_E_VERSION not HTTP/1.x, KVF_E_UNSUPPORTED transfer coding,
 * KVF_E_NOMEM) with p->status and p->reason set and *consumed meaningless.
 * HEAD and DONE may need no input: call with len 0 until KVF_E_AGAIN.
 */
int kvf_http_parse(kvf_http_parser *p, const void *data, size_t len, size_t *consumed,
		   kvf_http_event *ev);

/*
 * The connection reached end of input. Returns 0 with a DONE event when that
 * completes the message (a response read until close); KVF_E_CLOSED when no
 * byte of a new message had arrived (a clean close between messages);
 * KVF_E_PARSE (status 400, or 502 for responses) for a truncated message.
 */
int kvf_http_parser_eof(kvf_http_parser *p, kvf_http_event *ev);

/* Nonzero when the parser has seen at least one byte of the current message. */
int kvf_http_parser_started(const kvf_http_parser *p);
/* Nonzero once the head is parsed (EV_HEAD returned) and until reset. */
int kvf_http_parser_head_done(const kvf_http_parser *p);

/* ---- lookups ---- */

/* First header named `name` (ASCII case-insensitive): 0 with *out set, or
 * KVF_E_NOTFOUND. */
int kvf_http_msg_header(const kvf_http_msg *m, const char *name, kvf_http_str *out);
/* Iterates over every header named `name`: start with *pos = 0; returns 0
 * while one is found (and advances *pos), KVF_E_NOTFOUND at the end. */
int kvf_http_msg_header_next(const kvf_http_msg *m, const char *name, size_t *pos,
			     kvf_http_str *out);
/* Nonzero when the comma-separated list `value` holds `token`
 * (case-insensitive, whitespace around elements ignored). */
int kvf_http_list_has(kvf_http_str value, const char *token);

int kvf_http_str_eq(kvf_http_str s, const char *lit);  /* exact */
int kvf_http_str_ieq(kvf_http_str s, const char *lit); /* ASCII case-insensitive */

/* "GET" for KVF_HTTP_GET...; "OTHER" for KVF_HTTP_M_OTHER. */
const char *kvf_http_method_name(int method);
/* The method for a name (case-sensitive, as HTTP says); KVF_HTTP_M_OTHER. */
int kvf_http_method_from(const char *name, size_t len);

/*
 * Percent-decodes in[0..len) into out (cap bytes, NUL-terminated on success),
 * with '+' as space when plus_as_space. 0 and *out_len; KVF_E_PARSE on a bad
 * %XX; KVF_E_TOOBIG when out is too small (cap must exceed the result).
 */
int kvf_http_pct_decode(const char *in, size_t len, char *out, size_t cap, size_t *out_len,
			int plus_as_space);
/*
 * Finds `name` in an application/x-www-form-urlencoded query (as in
 * msg.query: "a=1&b=x%20y") and decodes its value into out. The name is
 * compared after decoding. A key without '=' has an empty value.
 * 0, KVF_E_NOTFOUND, KVF_E_PARSE or KVF_E_TOOBIG.
 */
int kvf_http_query_get(kvf_http_str query, const char *name, char *out, size_t cap,
		       size_t *out_len);

/* ---- writer: everything appends to a kvf_buf ---- */

/* "OK", "Not Found"...; "Unknown" for codes it does not know. */
const char *kvf_http_status_reason(int status);

/* "HTTP/1.1 <status> <reason>\r\n"; reason NULL -> kvf_http_status_reason(). */
int kvf_http_write_status_line(kvf_buf *b, int status, const char *reason);
/* "<METHOD> <target> HTTP/1.1\r\n" (for clients: proxies, tests, tools). */
int kvf_http_write_request_line(kvf_buf *b, const char *method, const char *target);
/* "Name: value\r\n". KVF_E_INVAL (nothing written) when the name is not a
 * token or the value holds CR, LF or NUL (header injection). */
int kvf_http_write_header(kvf_buf *b, const char *name, const char *value);
int kvf_http_write_header_n(kvf_buf *b, const char *name, size_t name_len, const char *value,
			    size_t value_len);
int kvf_http_write_headerf(kvf_buf *b, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* A NULL-terminated array of name, value pairs: {"x-a", "1", "x-b", "2", NULL}.
 * Validates all before writing any; NULL array writes nothing. */
int kvf_http_write_headers(kvf_buf *b, const char *const *kv);
/* Validates a header pair array without writing (same rules as above). */
int kvf_http_headers_valid(const char *const *kv);
/* The blank line that ends a head. */
int kvf_http_write_end_head(kvf_buf *b);

/*
 * One-shot response with Content-Length: status line, Content-Type (when
 * content_type is non-NULL), Content-Length (omitted for 1xx, 204, 304),
 * "Connection: close" unless keep_alive, the extra headers, then the body.
 */
int kvf_http_write_response(kvf_buf *b, int status, const char *content_type,
			    const char *const *headers, const void *body, size_t len,
			    int keep_alive);

/* Chunked transfer coding: "<hex len>\r\n<data>\r\n"; len 0 writes nothing
 * (it would end the body). */
int kvf_http_write_chunk(kvf_buf *b, const void *data, size_t len);
/* The last chunk "0\r\n\r\n" (no trailers). */
int kvf_http_write_last_chunk(kvf_buf *b);

/*
 * Server-Sent Events. An event is optional "event: <event>\n", optional
 * "id: <id>\n", then one "data: <line>\n" per line of data (lines split at
 * CRLF, LF or CR, so a browser's EventSource rebuilds data exactly), then a
 * blank line. event and id must not contain CR or LF (KVF_E_INVAL).
 * kvf_http_sse_size() gives the encoded size without writing.
 */
size_t kvf_http_sse_size(const char *event, const char *id, const char *data, size_t len);
int kvf_http_write_sse(kvf_buf *b, const char *event, const char *id, const char *data,
		       size_t len);
/* The same event framed as one chunk of a chunked body. */
int kvf_http_write_sse_chunk(kvf_buf *b, const char *event, const char *id, const char *data,
			     size_t len);
/* A comment ": <text>\n\n", ignored by clients: keep-alive pings. text may
 * be NULL; KVF_E_INVAL when it holds CR or LF. */
int kvf_http_write_sse_comment(kvf_buf *b, const char *text);

/*
 * OpenAI-style error body:
 *   {"error":{"message":"...","type":"...","param":null,"code":...}}
 * type NULL -> "invalid_request_error"; code NULL -> null.
 */
int kvf_http_write_json_error(kvf_buf *b, const char *message, const char *type,
			      const char *code);
/* The OpenAI error type that goes with a status: "invalid_request_error" for
 * 4xx, "authentication_error" 401, "permission_error" 403, "not_found_error"
 * 404, "rate_limit_error" 429, "server_error" for 5xx. */
const char *kvf_http_error_type(int status);

#endif
