/*
 * http_write.c: HTTP/1.1 message writer into a kvf_buf.
 *
 * Socket-free like the parser, so the epoll server, the DPDK engine and HTTP
 * clients share it. Every function validates what could corrupt framing
 * (CR/LF in header values or SSE fields) before writing anything, so a bad
 * argument never leaves half a header in the buffer; allocation failures are
 * sticky in the kvf_buf (check once at the end).
 */
#include "common/kvf_http_parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/kvf_err.h"

const char *kvf_http_status_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 425: return "Too Early";
	case 426: return "Upgrade Required";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 499: return "Client Closed Request";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

const char *kvf_http_error_type(int status)
{
	switch (status) {
	case 401: return "authentication_error";
	case 403: return "permission_error";
	case 404: return "not_found_error";
	case 429: return "rate_limit_error";
	default: return status >= 500 ? "server_error" : "invalid_request_error";
	}
}

static int is_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int name_ok(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!is_tchar((unsigned char)s[i]))
			return 0;
	return 1;
}

static int value_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
			return 0;
	return 1;
}

int kvf_http_write_status_line(kvf_buf *b, int status, const char *reason)
{
	if (status < 100 || status > 999)
		return kvf_errf(KVF_E_INVAL, "http: status %d out of range", status);
	if (!reason)
		reason = kvf_http_status_reason(status);
	if (!value_ok(reason, strlen(reason)))
		return kvf_errf(KVF_E_INVAL, "http: CR/LF in reason phrase");
	return kvf_buf_printf(b, "HTTP/1.1 %d %s\r\n", status, reason);
}

int kvf_http_write_request_line(kvf_buf *b, const char *method, const char *target)
{
	if (!name_ok(method, strlen(method)))
		return kvf_errf(KVF_E_INVAL, "http: invalid method '%s'", method);
	for (const char *t = target; *t; t++)
		if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f)
			return kvf_errf(KVF_E_INVAL, "http: invalid character in request target");
	if (!*target)
		return kvf_errf(KVF_E_INVAL, "http: empty request target");
	return kvf_buf_printf(b, "%s %s HTTP/1.1\r\n", method, target);
}

int kvf_http_write_header_n(kvf_buf *b, const char *name, size_t name_len, const char *value,
			    size_t value_len)
{
	if (!name_ok(name, name_len))
		return kvf_errf(KVF_E_INVAL, "http: invalid header name '%.*s'", (int)name_len, name);
	if (!value_ok(value, value_len))
		return kvf_errf(KVF_E_INVAL, "http: CR, LF or NUL in header '%.*s'", (int)name_len,
				name);
	if (kvf_buf_reserve(b, name_len + value_len + 4) != 0)
		return KVF_E_NOMEM;
	kvf_buf_append(b, name, name_len);
	kvf_buf_append(b, ": ", 2);
	kvf_buf_append(b, value, value_len);
	return kvf_buf_append(b, "\r\n", 2);
}

int kvf_http_write_header(kvf_buf *b, const char *name, const char *value)
{
	return kvf_http_write_header_n(b, name, strlen(name), value, strlen(value));
}

int kvf_http_write_headerf(kvf_buf *b, const char *name, const char *fmt, ...)
{
	char small[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return kvf_errf(KVF_E_INVAL, "http: header format");
	if ((size_t)n < sizeof(small))
		return kvf_http_write_header_n(b, name, strlen(name), small, (size_t)n);
	kvf_buf tmp = KVF_BUF_INIT;
	va_start(ap, fmt);
	int rc = kvf_buf_vprintf(&tmp, fmt, ap);
	va_end(ap);
	if (rc == 0)
		rc = kvf_http_write_header_n(b, name, strlen(name), tmp.data, tmp.len);
	kvf_buf_free(&tmp);
	return rc;
}

int kvf_http_headers_valid(const char *const *kv)
{
	if (!kv)
		return 0;
	for (size_t i = 0; kv[i]; i += 2) {
		if (!kv[i + 1])
			return kvf_errf(KVF_E_INVAL, "http: header '%s' without a value", kv[i]);
		if (!name_ok(kv[i], strlen(kv[i])))
			return kvf_errf(KVF_E_INVAL, "http: invalid header name '%s'", kv[i]);
		if (!value_ok(kv[i + 1], strlen(kv[i + 1])))
			return kvf_errf(KVF_E_INVAL, "http: CR or LF in header '%s'", kv[i]);
	}
	return 0;
}

int kvf_http_write_headers(kvf_buf *b, const char *const *kv)
{
	int rc = kvf_http_headers_valid(kv);
	if (rc || !kv)
		return rc;
	for (size_t i = 0; kv[i]; i += 2) {
		kvf_buf_puts(b, kv[i]);
		kvf_buf_append(b, ": ", 2);
		kvf_buf_puts(b, kv[i + 1]);
		rc = kvf_buf_append(b, "\r\n", 2);
	}
	return rc;
}

int kvf_http_write_end_head(kvf_buf *b)
{
	return kvf_buf_append(b, "\r\n", 2);
}

static int status_has_body(int status)
{
	return !(status < 200 || status == 204 || status == 304);
}

int kvf_http_write_response(kvf_buf *b, int status, const char *content_type,
			    const char *const *headers, const void *body, size_t len,
			    int keep_alive)
{
	int rc = kvf_http_headers_valid(headers);
	if (rc)
		return rc;
	if (content_type && !value_ok(content_type, strlen(content_type)))
		return kvf_errf(KVF_E_INVAL, "http: CR or LF in content type");
	if ((rc = kvf_http_write_status_line(b, status, NULL)) != 0)
		return rc;
	if (content_type)
		kvf_http_write_header(b, "Content-Type", content_type);
	if (status_has_body(status))
		kvf_buf_printf(b, "Content-Length: %zu\r\n", len);
	if (!keep_alive)
		kvf_buf_puts(b, "Connection: close\r\n");
	kvf_http_write_headers(b, headers);
	kvf_buf_append(b, "\r\n", 2);
	if (status_has_body(status))
		kvf_buf_append(b, body, len);
	return b->oom ? KVF_E_NOMEM : 0;
}

int kvf_http_write_chunk(kvf_buf *b, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	if (kvf_buf_reserve(b, len + 24) != 0)
		return KVF_E_NOMEM;
	kvf_buf_printf(b, "%zx\r\n", len);
	kvf_buf_append(b, data, len);
	return kvf_buf_append(b, "\r\n", 2);
}

int kvf_http_write_last_chunk(kvf_buf *b)
{
	return kvf_buf_append(b, "0\r\n\r\n", 5);
}

/* ---- Server-Sent Events ---- */

static int field_ok(const char *s)
{
	for (; s && *s; s++)
		if (*s == '\r' || *s == '\n')
			return 0;
	return 1;
}

/* Writes (when b is non-NULL) one "data: " line per line of data, split at
 * CRLF, LF or CR; a trailing terminator yields a final empty data line, so
 * the client rebuilds the exact text. Returns the encoded size. */
static size_t sse_lines(const char *data, size_t len, kvf_buf *b)
{
	size_t total = 0, s = 0, i = 0;
	for (;;) {
		while (i < len && data[i] != '\n' && data[i] != '\r')
			i++;
		/* "data: " + line + "\n" */
		total += 6 + (i - s) + 1;
		if (b) {
			kvf_buf_append(b, "data: ", 6);
			kvf_buf_append(b, data + s, i - s);
			kvf_buf_putc(b, '\n');
		}
		if (i >= len)
			break;
		if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
			i++;
		s = ++i;
	}
	return total;
}

size_t kvf_http_sse_size(const char *event, const char *id, const char *data, size_t len)
{
	size_t n = 0;
	if (event)
		n += 7 + strlen(event) + 1; /* "event: " x "\n" */
	if (id)
		n += 4 + strlen(id) + 1;    /* "id: " x "\n" */
	return n + sse_lines(data, len, NULL) + 1;
}

static int sse_check(const char *event, const char *id)
{
	if (!field_ok(event) || !field_ok(id))
		return kvf_errf(KVF_E_INVAL, "http: CR or LF in an SSE event or id");
	return 0;
}

static void sse_emit(kvf_buf *b, const char *event, const char *id, const char *data, size_t len)
{
	if (event) {
		kvf_buf_append(b, "event: ", 7);
		kvf_buf_puts(b, event);
		kvf_buf_putc(b, '\n');
	}
	if (id) {
		kvf_buf_append(b, "id: ", 4);
		kvf_buf_puts(b, id);
		kvf_buf_putc(b, '\n');
	}
	sse_lines(data, len, b);
	kvf_buf_putc(b, '\n');
}

int kvf_http_write_sse(kvf_buf *b, const char *event, const char *id, const char *data,
		       size_t len)
{
	int rc = sse_check(event, id);
	if (rc)
		return rc;
	size_t n = kvf_http_sse_size(event, id, data, len);
	if (kvf_buf_reserve(b, n) != 0)
		return KVF_E_NOMEM;
	sse_emit(b, event, id, data, len);
	return b->oom ? KVF_E_NOMEM : 0;
}

int kvf_http_write_sse_chunk(kvf_buf *b, const char *event, const char *id, const char *data,
			     size_t len)
{
	int rc = sse_check(event, id);
	if (rc)
		return rc;
	size_t n = kvf_http_sse_size(event, id, data, len);
	if (kvf_buf_reserve(b, n + 24) != 0)
		return KVF_E_NOMEM;
	kvf_buf_printf(b, "%zx\r\n", n);
	sse_emit(b, event, id, data, len);
	kvf_buf_append(b, "\r\n", 2);
	return b->oom ? KVF_E_NOMEM : 0;
}

int kvf_http_write_sse_comment(kvf_buf *b, const char *text)
{
	if (!field_ok(text))
		return kvf_errf(KVF_E_INVAL, "http: CR or LF in an SSE comment");
	kvf_buf_putc(b, ':');
	if (text && *text) {
		kvf_buf_putc(b, ' ');
		kvf_buf_puts(b, text);
	}
	return kvf_buf_append(b, "\n\n", 2);
}

/* ---- JSON errors ---- */

int kvf_http_write_json_error(kvf_buf *b, const char *message, const char *type,
			      const char *code)
{
	if (!message)
		message = "";
	if (!type)
		type = "invalid_request_error";
	kvf_buf_puts(b, "{\"error\":{\"message\":");
	kvf_buf_put_json_str(b, message, strlen(message));
	kvf_buf_puts(b, ",\"type\":");
	kvf_buf_put_json_str(b, type, strlen(type));
	kvf_buf_puts(b, ",\"param\":null,\"code\":");
	if (code)
		kvf_buf_put_json_str(b, code, strlen(code));
	else
		kvf_buf_puts(b, "null");
	return kvf_buf_puts(b, "}}");
}
