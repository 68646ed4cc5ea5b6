/*
 * buf.c: growable byte buffer with a consumable front, so one structure serves
 * both as an output builder and as a connection's input queue.
 */
#include "common/kvf_buf.h"

#include <stdio.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

void kvf_buf_init(kvf_buf *b)
{
	memset(b, 0, sizeof(*b));
}

void kvf_buf_free(kvf_buf *b)
{
	if (!b)
		return;
	kvf_free(b->data);
	memset(b, 0, sizeof(*b));
}

void kvf_buf_reset(kvf_buf *b)
{
	b->len = 0;
	b->off = 0;
	b->oom = 0;
	if (b->data)
		b->data[0] = '\0';
}

int kvf_buf_reserve(kvf_buf *b, size_t extra)
{
	if (b->oom)
		return KVF_E_NOMEM;
	if (b->len + extra + 1 <= b->cap)
		return 0;
	/* Reclaim the consumed front before growing. */
	if (b->off) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		if (b->len + extra + 1 <= b->cap)
			return 0;
	}
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap < b->len + extra + 1) {
		if (ncap > ((size_t)-1) / 2) {
			b->oom = 1;
			return KVF_E_NOMEM;
		}
		ncap *= 2;
	}
	char *p = kvf_realloc(b->data, ncap);
	if (!p) {
		b->oom = 1;
		return KVF_E_NOMEM;
	}
	b->data = p;
	b->cap = ncap;
	return 0;
}

int kvf_buf_append(kvf_buf *b, const void *data, size_t len)
{
	if (kvf_buf_reserve(b, len) != 0)
		return KVF_E_NOMEM;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int kvf_buf_puts(kvf_buf *b, const char *s)
{
	return kvf_buf_append(b, s, strlen(s));
}

int kvf_buf_putc(kvf_buf *b, char c)
{
	return kvf_buf_append(b, &c, 1);
}

int kvf_buf_vprintf(kvf_buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	char small[256];
	int n = vsnprintf(small, sizeof(small), fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return KVF_E_INVAL;
	if ((size_t)n < sizeof(small))
		return kvf_buf_append(b, small, (size_t)n);
	if (kvf_buf_reserve(b, (size_t)n) != 0)
		return KVF_E_NOMEM;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int kvf_buf_printf(kvf_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = kvf_buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

int kvf_buf_put_json_str(kvf_buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	if (kvf_buf_reserve(b, len + 2) != 0)
		return KVF_E_NOMEM;
	kvf_buf_putc(b, '"');
	size_t run = 0; /* bytes copied verbatim in one append */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		char u[7];
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		default:
			if (c < 0x20) {
				u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
				u[4] = hex[c >> 4]; u[5] = hex[c & 15]; u[6] = '\0';
				esc = u;
			}
		}
		if (esc) {
			kvf_buf_append(b, s + i - run, run);
			run = 0;
			kvf_buf_puts(b, esc);
		} else {
			run++;
		}
	}
	kvf_buf_append(b, s + len - run, run);
	return kvf_buf_putc(b, '"');
}

void kvf_buf_consume(kvf_buf *b, size_t n)
{
	if (n >= b->len - b->off) {
		b->off = 0;
		b->len = 0;
		if (b->data)
			b->data[0] = '\0';
		return;
	}
	b->off += n;
	/* Compact when the dead front dominates, to keep the buffer bounded. */
	if (b->off > 4096 && b->off > (b->len - b->off)) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		b->data[b->len] = '\0';
	}
}

char *kvf_buf_space(kvf_buf *b, size_t want)
{
	if (kvf_buf_reserve(b, want) != 0)
		return NULL;
	return b->data + b->len;
}

void kvf_buf_commit(kvf_buf *b, size_t n)
{
	b->len += n;
	b->data[b->len] = '\0';
}
