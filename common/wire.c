/*
 * wire.c: the little-endian payload codec of kvf_wire.h.
 *
 * Integers are assembled byte by byte (no unaligned loads, any host byte
 * order); the compiler folds these into plain moves on little-endian hosts.
 * Errors are sticky and recorded once with a detail message (kvf_errf), so
 * a parser checks a single code at the end and a log line can still say
 * which read failed.
 */
#include "common/kvf_wire.h"

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

#include <stdint.h>
#include <string.h>

/* ---- writer ---- */

void kvf_wire_writer_init(kvf_wire_writer *w, size_t max_bytes)
{
	w->buf = NULL;
	w->len = 0;
	w->cap = 0;
	w->max = max_bytes ? max_bytes : SIZE_MAX;
	w->err = 0;
}

void kvf_wire_writer_free(kvf_wire_writer *w)
{
	if (!w)
		return;
	kvf_free(w->buf);
	w->buf = NULL;
	w->len = w->cap = 0;
}

void kvf_wire_writer_reset(kvf_wire_writer *w)
{
	w->len = 0;
	w->err = 0;
}

uint8_t *kvf_wire_put_space(kvf_wire_writer *w, size_t n)
{
	if (w->err)
		return NULL;
	if (n > w->max - w->len) {
		w->err = kvf_errf(KVF_E_TOOBIG, "payload: %zu + %zu bytes exceed the limit of %zu",
				  w->len, n, w->max);
		return NULL;
	}
	size_t need = w->len + n;
	if (need > w->cap) {
		size_t ncap = w->cap ? w->cap : 256;
		while (ncap < need)
			ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
		uint8_t *nb = kvf_realloc(w->buf, ncap);
		if (!nb) {
			w->err = kvf_errf(KVF_E_NOMEM, "payload: cannot grow the buffer to %zu bytes", ncap);
			return NULL;
		}
		w->buf = nb;
		w->cap = ncap;
	}
	uint8_t *p = w->buf + w->len;
	w->len = need;
	return p;
}

static void le_store(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le(kvf_wire_writer *w, uint64_t v, int n)
{
	uint8_t *p = kvf_wire_put_space(w, (size_t)n);
	if (p)
		le_store(p, v, n);
}

void kvf_wire_put_u8(kvf_wire_writer *w, uint8_t v)
{
	put_le(w, v, 1);
}

void kvf_wire_put_u16(kvf_wire_writer *w, uint16_t v)
{
	put_le(w, v, 2);
}

void kvf_wire_put_u32(kvf_wire_writer *w, uint32_t v)
{
	put_le(w, v, 4);
}

void kvf_wire_put_u64(kvf_wire_writer *w, uint64_t v)
{
	put_le(w, v, 8);
}

void kvf_wire_put_bytes(kvf_wire_writer *w, const void *p, size_t n)
{
	uint8_t *d = kvf_wire_put_space(w, n);
	if (d && n)
		memcpy(d, p, n);
}

void kvf_wire_put_blob(kvf_wire_writer *w, const void *p, size_t n)
{
	if (w->err)
		return;
	if (n > UINT32_MAX) {
		w->err = kvf_errf(KVF_E_TOOBIG, "payload: blob of %zu bytes exceeds the u32 length", n);
		return;
	}
	kvf_wire_put_u32(w, (uint32_t)n);
	kvf_wire_put_bytes(w, p, n);
}

void kvf_wire_put_str(kvf_wire_writer *w, const char *s)
{
	kvf_wire_put_blob(w, s ? s : "", s ? strlen(s) : 0);
}

void kvf_wire_patch_u32(kvf_wire_writer *w, size_t off, uint32_t v)
{
	if (w->err)
		return;
	if (off > w->len || w->len - off < 4) {
		w->err = kvf_errf(KVF_E_RANGE, "payload: patch at %zu outside the %zu bytes written",
				  off, w->len);
		return;
	}
	le_store(w->buf + off, v, 4);
}

/* ---- reader ---- */

void kvf_wire_reader_init(kvf_wire_reader *r, const void *p, size_t len)
{
	r->p = p;
	r->len = p ? len : 0;
	r->off = 0;
	r->err = 0;
}

/* Claims n bytes; NULL (and the sticky error) when fewer remain. */
static const uint8_t *take(kvf_wire_reader *r, size_t n)
{
	if (r->err)
		return NULL;
	if (n > r->len - r->off) {
		r->err = kvf_errf(KVF_E_PROTO, "payload: %zu bytes wanted at offset %zu, %zu left",
				  n, r->off, r->len - r->off);
		return NULL;
	}
	/* never NULL on success, even for an empty buffer */
	const uint8_t *p = r->p ? r->p + r->off : (const uint8_t *)"";
	r->off += n;
	return p;
}

static uint64_t get_le(kvf_wire_reader *r, int n)
{
	const uint8_t *p = take(r, (size_t)n);
	uint64_t v = 0;
	if (p)
		for (int i = n - 1; i >= 0; i--)
			v = (v << 8) | p[i];
	return v;
}

uint8_t kvf_wire_get_u8(kvf_wire_reader *r)
{
	return (uint8_t)get_le(r, 1);
}

uint16_t kvf_wire_get_u16(kvf_wire_reader *r)
{
	return (uint16_t)get_le(r, 2);
}

uint32_t kvf_wire_get_u32(kvf_wire_reader *r)
{
	return (uint32_t)get_le(r, 4);
}

uint64_t kvf_wire_get_u64(kvf_wire_reader *r)
{
	return get_le(r, 8);
}

void kvf_wire_get_bytes(kvf_wire_reader *r, void *dst, size_t n)
{
	const uint8_t *p = take(r, n);
	if (p) {
		if (n)
			memcpy(dst, p, n);
	} else if (n) {
		memset(dst, 0, n);
	}
}

const uint8_t *kvf_wire_get_view(kvf_wire_reader *r, size_t n)
{
	return take(r, n);
}

/* The u32 prefix of a blob, checked against what remains before anything is
 * consumed past it. */
static const uint8_t *take_prefixed(kvf_wire_reader *r, uint32_t *len)
{
	*len = 0;
	uint32_t n = kvf_wire_get_u32(r);
	if (r->err)
		return NULL;
	if (n > r->len - r->off) {
		r->err = kvf_errf(KVF_E_PROTO,
				  "payload: length prefix %u at offset %zu exceeds the %zu bytes left",
				  n, r->off - 4, r->len - r->off);
		return NULL;
	}
	*len = n;
	return take(r, n);
}

const uint8_t *kvf_wire_get_blob(kvf_wire_reader *r, uint32_t *len)
{
	return take_prefixed(r, len);
}

size_t kvf_wire_get_str(kvf_wire_reader *r, char *dst, size_t dst_size)
{
	uint32_t n;
	size_t start = r->off;
	const uint8_t *p = take_prefixed(r, &n);
	if (dst_size)
		dst[0] = '\0';
	if (!p)
		return 0;
	if ((size_t)n >= dst_size) {
		r->err = kvf_errf(KVF_E_PROTO, "payload: string of %u bytes at offset %zu exceeds %zu",
				  n, start, dst_size ? dst_size - 1 : 0);
		return 0;
	}
	if (n && memchr(p, '\0', n)) {
		r->err = kvf_errf(KVF_E_PROTO, "payload: string at offset %zu contains a NUL byte", start);
		return 0;
	}
	memcpy(dst, p, n);
	dst[n] = '\0';
	return n;
}

char *kvf_wire_get_strdup(kvf_wire_reader *r)
{
	uint32_t n;
	size_t start = r->off;
	const uint8_t *p = take_prefixed(r, &n);
	if (!p)
		return NULL;
	if (n && memchr(p, '\0', n)) {
		r->err = kvf_errf(KVF_E_PROTO, "payload: string at offset %zu contains a NUL byte", start);
		return NULL;
	}
	char *s = kvf_strndup((const char *)p, n);
	if (!s)
		r->err = kvf_errf(KVF_E_NOMEM, "payload: cannot copy a string of %u bytes", n);
	return s;
}

size_t kvf_wire_remaining(const kvf_wire_reader *r)
{
	return r->err ? 0 : r->len - r->off;
}

int kvf_wire_reader_done(kvf_wire_reader *r)
{
	if (r->err)
		return r->err;
	if (r->off != r->len)
		return r->err = kvf_errf(KVF_E_PROTO, "payload: %zu trailing bytes after offset %zu",
					 r->len - r->off, r->off);
	return 0;
}
