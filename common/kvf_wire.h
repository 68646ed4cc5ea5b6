/*
 * kvf_wire.h: payload codec for kvfabric's binary protocols (the payload of a
 * kvf_frame, see kvf_frame.h and docs/protocol-framing.md).
 *
 * Every integer is little-endian; byte strings and text strings carry a u32
 * length prefix. Both sides keep a sticky error so a protocol encoder or
 * parser is a straight list of put/get calls with one check at the end:
 *
 *   kvf_wire_reader r;
 *   kvf_wire_reader_init(&r, f.payload, f.hdr.len);
 *   uint64_t id = kvf_wire_get_u64(&r);
 *   uint32_t n = kvf_wire_get_u32(&r);
 *   const uint8_t *keys = kvf_wire_get_view(&r, (size_t)n * 16);
 *   if (kvf_wire_reader_done(&r) < 0) return ...;   (KVF_E_PROTO)
 *
 * After the first failure (a read past the end, an over-long length prefix)
 * every later get returns 0 / NULL / "" and consumes nothing, so a parser never
 * reads out of bounds whatever the input. The structs are public so callers
 * keep them on the stack; treat the fields as private.
 */
#ifndef KVF_WIRE_H
#define KVF_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* ---- writer: appends to a growable buffer ---- */

typedef struct kvf_wire_writer {
	uint8_t *buf; /* owned, kvf_malloc'd; NULL until the first put */
	size_t len;   /* bytes written */
	size_t cap;
	size_t max; /* len never exceeds this (KVF_E_TOOBIG) */
	int err;    /* sticky: 0, KVF_E_NOMEM or KVF_E_TOOBIG */
} kvf_wire_writer;

/* An empty writer whose output may not exceed max_bytes (0: no limit). */
void kvf_wire_writer_init(kvf_wire_writer *w, size_t max_bytes);

/* Frees the buffer; the writer may be initialized again. NULL is a no-op. */
void kvf_wire_writer_free(kvf_wire_writer *w);

/* Forgets the content and the error, keeps the buffer for reuse. */
void kvf_wire_writer_reset(kvf_wire_writer *w);

/*
 * Appends n uninitialized bytes and returns them for the caller to fill, or
 * NULL once the writer has failed (the pointer is valid until the next put).
 */
uint8_t *kvf_wire_put_space(kvf_wire_writer *w, size_t n);

void kvf_wire_put_u8(kvf_wire_writer *w, uint8_t v);
void kvf_wire_put_u16(kvf_wire_writer *w, uint16_t v);
void kvf_wire_put_u32(kvf_wire_writer *w, uint32_t v);
void kvf_wire_put_u64(kvf_wire_writer *w, uint64_t v);
/* n raw bytes, no prefix. */
void kvf_wire_put_bytes(kvf_wire_writer *w, const void *p, size_t n);
/* u32 length, then n bytes (n > UINT32_MAX fails with KVF_E_TOOBIG). */
void kvf_wire_put_blob(kvf_wire_writer *w, const void *p, size_t n);
/* u32 length, then the string's bytes without the NUL; NULL writes "". */
void kvf_wire_put_str(kvf_wire_writer *w, const char *s);
/* Overwrites 4 bytes at off (< len) with v: for lengths known at the end. */
void kvf_wire_patch_u32(kvf_wire_writer *w, size_t off, uint32_t v);

/* 0, or the first failure (KVF_E_NOMEM, KVF_E_TOOBIG). */
static inline int kvf_wire_writer_error(const kvf_wire_writer *w)
{
	return w->err;
}

/* ---- reader: a bounds-checked cursor over a borrowed buffer ---- */

typedef struct kvf_wire_reader {
	const uint8_t *p; /* borrowed */
	size_t len;
	size_t off;
	int err; /* sticky: 0, KVF_E_PROTO (or KVF_E_NOMEM from get_strdup) */
} kvf_wire_reader;

void kvf_wire_reader_init(kvf_wire_reader *r, const void *p, size_t len);

uint8_t kvf_wire_get_u8(kvf_wire_reader *r);
uint16_t kvf_wire_get_u16(kvf_wire_reader *r);
uint32_t kvf_wire_get_u32(kvf_wire_reader *r);
uint64_t kvf_wire_get_u64(kvf_wire_reader *r);

/* Copies n bytes into dst; on failure dst is zeroed. */
void kvf_wire_get_bytes(kvf_wire_reader *r, void *dst, size_t n);

/* The next n bytes in place (no copy), or NULL on failure. */
const uint8_t *kvf_wire_get_view(kvf_wire_reader *r, size_t n);

/* A u32-length-prefixed byte string in place: sets *len, NULL (and *len 0) on failure. */
const uint8_t *kvf_wire_get_blob(kvf_wire_reader *r, uint32_t *len);

/*
 * A u32-length-prefixed string copied into dst with a NUL; returns its length.
 * Fails (KVF_E_PROTO, dst "") when it does not fit dst_size with the NUL or
 * contains a NUL byte.
 */
size_t kvf_wire_get_str(kvf_wire_reader *r, char *dst, size_t dst_size);

/*
 * A u32-length-prefixed string as a new NUL-terminated copy (kvf_free it),
 * or NULL on failure (an embedded NUL is KVF_E_PROTO, no memory KVF_E_NOMEM).
 */
char *kvf_wire_get_strdup(kvf_wire_reader *r);

/* Bytes not consumed yet (0 after a failure). */
size_t kvf_wire_remaining(const kvf_wire_reader *r);

/* 0, or the first failure. */
static inline int kvf_wire_reader_error(const kvf_wire_reader *r)
{
	return r->err;
}

/*
 * Call after the last get: 0 when every read succeeded and the whole buffer
 * was consumed; the first failure, or KVF_E_PROTO for trailing bytes.
 */
int kvf_wire_reader_done(kvf_wire_reader *r);

#endif
