/*
 * test_frame.c: frame header encoding and strict decoding, the stream
 * reassembler (byte-by-byte, random chunks, growth, limits, sticky errors)
 * and the kvf_wire payload codec (layout, bounds, sticky errors).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/kvf_err.h"
#include "common/kvf_frame.h"
#include "common/kvf_wire.h"

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
	rng_state = rng_state * 1664525u + 1013904223u;
	return rng_state >> 8;
}

/* ---- header ---- */

static void test_hdr_layout(void **state)
{
	(void)state;
	kvf_frame_hdr h = { .version = 1, .type = 0x42, .flags = 0xa1b2, .request_id = 0x01020304,
			    .len = 0x0a0b0c0d };
	uint8_t b[16];
	kvf_frame_hdr_encode(&h, b);
	const uint8_t want[16] = { 'K', 'F', 1, 0x42, 0xb2, 0xa1, 0, 0,
				   0x04, 0x03, 0x02, 0x01, 0x0d, 0x0c, 0x0b, 0x0a };
	assert_memory_equal(b, want, 16);

	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 1);
	assert_int_equal(d.max_frame, 16u << 20);
	d.max_frame = UINT32_MAX;
	kvf_frame_hdr o;
	assert_int_equal(kvf_frame_hdr_decode(&d, b, 16, &o), 0);
	assert_int_equal(o.version, 1);
	assert_int_equal(o.type, 0x42);
	assert_int_equal(o.flags, 0xa1b2);
	assert_int_equal(o.request_id, 0x01020304);
	assert_int_equal(o.len, 0x0a0b0c0d);
	/* trailing bytes after the header are the payload's business */
	uint8_t big[20] = { 0 };
	memcpy(big, b, 16);
	assert_int_equal(kvf_frame_hdr_decode(&d, big, 20, &o), 0);
}

static void test_hdr_strict(void **state)
{
	(void)state;
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 2, 4);
	d.max_frame = 1000;
	kvf_frame_hdr h = { .version = 3, .type = 1, .len = 1000 - 16 }, o;
	uint8_t b[16], x[16];
	kvf_frame_hdr_encode(&h, b);

	/* every proper prefix of a valid header: need more */
	for (size_t n = 0; n < 16; n++)
		assert_int_equal(kvf_frame_hdr_decode(&d, b, n, &o), KVF_E_AGAIN);
	assert_int_equal(kvf_frame_hdr_decode(&d, b, 16, &o), 0);
	assert_int_equal(o.len, 984);

	/* bad magic, refused from the first bad byte on */
	memcpy(x, b, 16);
	x[0] = 'G';
	assert_int_equal(kvf_frame_hdr_decode(&d, x, 1, &o), KVF_E_PROTO);
	assert_non_null(strstr(kvf_errmsg(), "magic"));
	memcpy(x, b, 16);
	x[1] = 'E';
	assert_int_equal(kvf_frame_hdr_decode(&d, x, 1, &o), KVF_E_AGAIN);
	assert_int_equal(kvf_frame_hdr_decode(&d, x, 2, &o), KVF_E_PROTO);
	assert_int_equal(kvf_frame_hdr_decode(&d, x, 16, &o), KVF_E_PROTO);

	/* versions outside [2,4] */
	for (int v = 0; v < 256; v++) {
		memcpy(x, b, 16);
		x[2] = (uint8_t)v;
		int want = v >= 2 && v <= 4 ? 0 : KVF_E_VERSION;
		assert_int_equal(kvf_frame_hdr_decode(&d, x, 16, &o), want);
		assert_int_equal(kvf_frame_hdr_decode(&d, x, 3, &o), want ? want : KVF_E_AGAIN);
	}
	assert_non_null(strstr(kvf_errmsg(), "2..4"));

	/* reserved bytes */
	for (int i = 6; i < 8; i++) {
		memcpy(x, b, 16);
		x[i] = 0x80;
		assert_int_equal(kvf_frame_hdr_decode(&d, x, 16, &o), KVF_E_PROTO);
		assert_int_equal(kvf_frame_hdr_decode(&d, x, (size_t)i + 1, &o), KVF_E_PROTO);
	}

	/* size: 16 + len == max is fine, one more is too big, no overflow at u32 max */
	h.len = 1000 - 16 + 1;
	kvf_frame_hdr_encode(&h, x);
	assert_int_equal(kvf_frame_hdr_decode(&d, x, 15, &o), KVF_E_AGAIN);
	assert_int_equal(kvf_frame_hdr_decode(&d, x, 16, &o), KVF_E_TOOBIG);
	h.len = UINT32_MAX;
	kvf_frame_hdr_encode(&h, x);
	d.max_frame = UINT32_MAX;
	assert_int_equal(kvf_frame_hdr_decode(&d, x, 16, &o), KVF_E_TOOBIG);
	h.len = UINT32_MAX - 16;
	kvf_frame_hdr_encode(&h, x);
	assert_int_equal(kvf_frame_hdr_decode(&d, x, 16, &o), 0);
}

/* ---- reassembler ---- */

#define NF 200

struct stream {
	uint8_t *bytes;
	size_t len;
	kvf_frame_hdr hdr[NF];
	size_t off[NF]; /* payload offsets in bytes */
};

/* NF frames with random headers and payload sizes up to max_payload (a few 0). */
static void make_stream(struct stream *s, size_t max_payload)
{
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	for (int i = 0; i < NF; i++) {
		kvf_frame_hdr h = { .version = (uint8_t)(1 + rnd() % 2), .type = (uint8_t)rnd(),
				    .flags = (uint16_t)rnd(), .request_id = rnd() };
		size_t start, n = i % 7 == 0 ? 0 : rnd() % (max_payload + 1);
		kvf_frame_begin(&w, &h, &start);
		uint8_t *p = kvf_wire_put_space(&w, n);
		for (size_t j = 0; j < n; j++)
			p[j] = (uint8_t)(i * 31 + j);
		assert_int_equal(kvf_frame_end(&w, start), 0);
		h.len = (uint32_t)n;
		s->hdr[i] = h;
		s->off[i] = start + 16;
	}
	s->bytes = w.buf;
	s->len = w.len;
}

static void check_frame(const struct stream *s, int i, const kvf_frame *f)
{
	assert_true(i < NF);
	assert_int_equal(f->hdr.version, s->hdr[i].version);
	assert_int_equal(f->hdr.type, s->hdr[i].type);
	assert_int_equal(f->hdr.flags, s->hdr[i].flags);
	assert_int_equal(f->hdr.request_id, s->hdr[i].request_id);
	assert_int_equal(f->hdr.len, s->hdr[i].len);
	if (f->hdr.len)
		assert_memory_equal(f->payload, s->bytes + s->off[i], f->hdr.len);
}

/* Feeds the stream in chunks (chunk 0: random sizes 1..max_chunk); returns frames seen. */
static int run_stream(const struct stream *s, kvf_frame_reader *r, size_t chunk, size_t max_chunk)
{
	size_t pos = 0;
	int seen = 0;
	kvf_frame f;
	while (pos < s->len) {
		size_t n = chunk ? chunk : 1 + rnd() % max_chunk;
		if (n > s->len - pos)
			n = s->len - pos;
		size_t taken;
		assert_int_equal(kvf_frame_reader_feed(r, s->bytes + pos, n, &taken), 0);
		pos += taken;
		int rc;
		while ((rc = kvf_frame_reader_next(r, &f)) == 0)
			check_frame(s, seen++, &f);
		assert_int_equal(rc, KVF_E_AGAIN);
		/* no complete frame waiting: there must be room for more */
		if (pos < s->len) {
			void *b;
			size_t avail;
			assert_int_equal(kvf_frame_reader_space(r, &b, &avail), 0);
			assert_true(avail > 0);
		}
	}
	return seen;
}

static void test_reader_chunkings(void **state)
{
	(void)state;
	struct stream s;
	make_stream(&s, 3000);
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 2);
	const size_t chunks[] = { 1, 2, 3, 15, 16, 17, 1000, 65536, 1 << 20 };
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		kvf_frame_reader *r;
		assert_int_equal(kvf_frame_reader_new(&d, &r), 0);
		assert_int_equal(run_stream(&s, r, chunks[c], 0), NF);
		assert_int_equal(kvf_frame_reader_pending(r), 0);
		kvf_frame_reader_free(r);
	}
	for (int k = 0; k < 20; k++) {
		kvf_frame_reader *r;
		assert_int_equal(kvf_frame_reader_new(&d, &r), 0);
		assert_int_equal(run_stream(&s, r, 0, 5000), NF);
		kvf_frame_reader_free(r);
	}
	/* small max: the buffer is exactly one max frame, feeds are taken partially */
	d.max_frame = 16 + 3000;
	kvf_frame_reader *r;
	assert_int_equal(kvf_frame_reader_new(&d, &r), 0);
	assert_int_equal(run_stream(&s, r, 100000, 0), NF);
	kvf_frame_reader_free(r);
	free(s.bytes);
}

static void test_reader_space_commit_and_truncation(void **state)
{
	(void)state;
	struct stream s;
	make_stream(&s, 500);
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 2);
	kvf_frame_reader *r;
	assert_int_equal(kvf_frame_reader_new(&d, &r), 0);
	/* read() style: copy into the reader's own buffer, stop 5 bytes short */
	size_t pos = 0, end = s.len - 5;
	int seen = 0, rc;
	kvf_frame f;
	while (pos < end) {
		void *b;
		size_t avail;
		assert_int_equal(kvf_frame_reader_space(r, &b, &avail), 0);
		size_t n = 1 + rnd() % 777;
		if (n > avail)
			n = avail;
		if (n > end - pos)
			n = end - pos;
		memcpy(b, s.bytes + pos, n);
		kvf_frame_reader_commit(r, n);
		pos += n;
		while ((rc = kvf_frame_reader_next(r, &f)) == 0)
			check_frame(&s, seen++, &f);
		assert_int_equal(rc, KVF_E_AGAIN);
	}
	/* the last frame is incomplete: not returned, and pending says so */
	assert_int_equal(seen, NF - 1);
	assert_int_equal(kvf_frame_reader_pending(r), 16 + s.hdr[NF - 1].len - 5);
	kvf_frame_reader_free(r);
	free(s.bytes);
}

static void test_reader_growth_and_limits(void **state)
{
	(void)state;
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 1);
	d.max_frame = 1 << 20;
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	kvf_frame_hdr h = { .version = 1, .type = 9, .request_id = 77 };
	size_t st;
	/* one frame of exactly max_frame bytes, far above the initial 64 KiB */
	kvf_frame_begin(&w, &h, &st);
	uint8_t *p = kvf_wire_put_space(&w, (1 << 20) - 16);
	for (size_t i = 0; i < (1 << 20) - 16; i++)
		p[i] = (uint8_t)(i * 7);
	assert_int_equal(kvf_frame_end(&w, st), 0);
	/* then a frame one byte over the limit */
	kvf_frame_begin(&w, &h, &st);
	kvf_wire_put_space(&w, (1 << 20) - 15);
	assert_int_equal(kvf_frame_end(&w, st), 0);

	kvf_frame_reader *r;
	assert_int_equal(kvf_frame_reader_new(&d, &r), 0);
	size_t pos = 0, taken;
	kvf_frame f;
	int got = 0, rc = 0;
	while (pos < w.len) {
		rc = kvf_frame_reader_feed(r, w.buf + pos, 4096, &taken);
		if (rc < 0)
			break;
		pos += taken;
		while ((rc = kvf_frame_reader_next(r, &f)) == 0) {
			assert_int_equal(f.hdr.len, (1 << 20) - 16);
			assert_int_equal(f.payload[12345], (uint8_t)(12345 * 7));
			assert_int_equal(f.payload[f.hdr.len - 1], (uint8_t)((f.hdr.len - 1) * 7));
			got++;
		}
		if (rc != KVF_E_AGAIN)
			break;
	}
	assert_int_equal(got, 1);
	assert_int_equal(rc, KVF_E_TOOBIG);
	/* sticky: every call reports it */
	assert_int_equal(kvf_frame_reader_next(r, &f), KVF_E_TOOBIG);
	void *b;
	size_t avail;
	assert_int_equal(kvf_frame_reader_space(r, &b, &avail), KVF_E_TOOBIG);
	assert_int_equal(avail, 0);
	assert_int_equal(kvf_frame_reader_feed(r, "KF", 2, &taken), KVF_E_TOOBIG);
	assert_int_equal(taken, 0);
	kvf_frame_reader_free(r);
	kvf_wire_writer_free(&w);
}

static void test_reader_garbage(void **state)
{
	(void)state;
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 1);
	kvf_frame_reader *r;
	kvf_frame f;
	size_t taken;
	/* an HTTP request on the port: refused at the first byte */
	assert_int_equal(kvf_frame_reader_new(&d, &r), 0);
	assert_int_equal(kvf_frame_reader_feed(r, "G", 1, &taken), 0);
	assert_int_equal(kvf_frame_reader_next(r, &f), KVF_E_PROTO);
	assert_int_equal(kvf_frame_reader_next(r, &f), KVF_E_PROTO);
	kvf_frame_reader_free(r);
	/* a good frame, then a frame of an unsupported version */
	uint8_t two[32];
	kvf_frame_hdr h = { .version = 1 };
	kvf_frame_hdr_encode(&h, two);
	h.version = 2;
	kvf_frame_hdr_encode(&h, two + 16);
	assert_int_equal(kvf_frame_reader_new(&d, &r), 0);
	assert_int_equal(kvf_frame_reader_feed(r, two, 19, &taken), 0);
	assert_int_equal(taken, 19);
	assert_int_equal(kvf_frame_reader_next(r, &f), 0);
	assert_int_equal(f.hdr.len, 0);
	assert_int_equal(kvf_frame_reader_next(r, &f), KVF_E_VERSION);
	kvf_frame_reader_free(r);
	kvf_frame_reader_free(NULL);
	/* bad decoders */
	d.max_frame = 15;
	r = (kvf_frame_reader *)1;
	assert_int_equal(kvf_frame_reader_new(&d, &r), KVF_E_INVAL);
	assert_null(r);
	kvf_frame_decoder_init(&d, 3, 2);
	assert_int_equal(kvf_frame_reader_new(&d, &r), KVF_E_INVAL);
}

/* ---- payload codec ---- */

static void test_wire_roundtrip_and_layout(void **state)
{
	(void)state;
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	kvf_wire_put_u8(&w, 0xab);
	kvf_wire_put_u16(&w, 0x1234);
	kvf_wire_put_u32(&w, 0xdeadbeef);
	kvf_wire_put_u64(&w, 0x0102030405060708ull);
	kvf_wire_put_bytes(&w, "xyz", 3);
	kvf_wire_put_blob(&w, "\0\1", 2);
	kvf_wire_put_str(&w, "hello");
	kvf_wire_put_str(&w, NULL);
	assert_int_equal(kvf_wire_writer_error(&w), 0);
	const uint8_t want[] = { 0xab, 0x34, 0x12, 0xef, 0xbe, 0xad, 0xde, 8, 7, 6, 5, 4, 3, 2, 1,
				 'x', 'y', 'z', 2, 0, 0, 0, 0, 1, 5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o',
				 0, 0, 0, 0 };
	assert_int_equal(w.len, sizeof(want));
	assert_memory_equal(w.buf, want, sizeof(want));

	kvf_wire_reader r;
	kvf_wire_reader_init(&r, w.buf, w.len);
	assert_int_equal(kvf_wire_get_u8(&r), 0xab);
	assert_int_equal(kvf_wire_get_u16(&r), 0x1234);
	assert_int_equal(kvf_wire_get_u32(&r), 0xdeadbeef);
	assert_true(kvf_wire_get_u64(&r) == 0x0102030405060708ull);
	char three[3];
	kvf_wire_get_bytes(&r, three, 3);
	assert_memory_equal(three, "xyz", 3);
	uint32_t bl;
	const uint8_t *blob = kvf_wire_get_blob(&r, &bl);
	assert_int_equal(bl, 2);
	assert_memory_equal(blob, "\0\1", 2);
	char *s = kvf_wire_get_strdup(&r);
	assert_string_equal(s, "hello");
	free(s); /* kvf_free under UNIT_TESTING is cmocka's test_free: same */
	char e[4] = "zzz";
	assert_int_equal(kvf_wire_get_str(&r, e, sizeof(e)), 0);
	assert_string_equal(e, "");
	assert_int_equal(kvf_wire_remaining(&r), 0);
	assert_int_equal(kvf_wire_reader_done(&r), 0);

	/* reset keeps the buffer; patch rewrites in place */
	uint8_t *old = w.buf;
	kvf_wire_writer_reset(&w);
	assert_int_equal(w.len, 0);
	kvf_wire_put_u32(&w, 0);
	kvf_wire_put_u8(&w, 9);
	kvf_wire_patch_u32(&w, 0, 0x11223344);
	assert_ptr_equal(w.buf, old);
	assert_memory_equal(w.buf, "\x44\x33\x22\x11\x09", 5);
	kvf_wire_patch_u32(&w, 2, 1); /* 2 + 4 > 5 */
	assert_int_equal(kvf_wire_writer_error(&w), KVF_E_RANGE);
	kvf_wire_writer_free(&w);
	kvf_wire_writer_free(NULL);
}

static void test_wire_sticky_errors(void **state)
{
	(void)state;
	const uint8_t buf[] = { 1, 2, 3, 4, 5, 6 };
	kvf_wire_reader r;

	/* a read past the end fails, consumes nothing, and poisons later reads */
	kvf_wire_reader_init(&r, buf, sizeof(buf));
	assert_int_equal(kvf_wire_get_u16(&r), 0x0201);
	assert_int_equal(kvf_wire_get_u64(&r), 0);
	assert_int_equal(kvf_wire_reader_error(&r), KVF_E_PROTO);
	assert_non_null(strstr(kvf_errmsg(), "8 bytes wanted at offset 2"));
	assert_int_equal(kvf_wire_get_u8(&r), 0); /* would fit, still 0 */
	assert_int_equal(kvf_wire_get_u16(&r), 0);
	assert_int_equal(kvf_wire_get_u32(&r), 0);
	assert_null(kvf_wire_get_view(&r, 0));
	uint8_t two[2] = { 9, 9 };
	kvf_wire_get_bytes(&r, two, 2);
	assert_int_equal(two[0], 0);
	assert_int_equal(two[1], 0);
	assert_int_equal(kvf_wire_remaining(&r), 0);
	assert_int_equal(kvf_wire_reader_done(&r), KVF_E_PROTO);

	/* over-long length prefix */
	const uint8_t pre[] = { 5, 0, 0, 0, 'a', 'b', 'c', 'd' };
	uint32_t n = 99;
	kvf_wire_reader_init(&r, pre, sizeof(pre));
	assert_null(kvf_wire_get_blob(&r, &n));
	assert_int_equal(n, 0);
	assert_int_equal(kvf_wire_reader_error(&r), KVF_E_PROTO);
	assert_non_null(strstr(kvf_errmsg(), "length prefix 5"));
	kvf_wire_reader_init(&r, pre, sizeof(pre));
	assert_null(kvf_wire_get_strdup(&r));
	assert_int_equal(kvf_wire_reader_error(&r), KVF_E_PROTO);
	/* a huge prefix does not overflow */
	const uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff, 'a' };
	kvf_wire_reader_init(&r, huge, sizeof(huge));
	char dst[8] = "zz";
	assert_int_equal(kvf_wire_get_str(&r, dst, sizeof(dst)), 0);
	assert_string_equal(dst, "");
	assert_int_equal(kvf_wire_reader_error(&r), KVF_E_PROTO);

	/* string longer than the destination, and embedded NUL */
	const uint8_t s4[] = { 4, 0, 0, 0, 'a', 'b', 'c', 'd' };
	kvf_wire_reader_init(&r, s4, sizeof(s4));
	assert_int_equal(kvf_wire_get_str(&r, dst, 4), 0);
	assert_int_equal(kvf_wire_reader_error(&r), KVF_E_PROTO);
	kvf_wire_reader_init(&r, s4, sizeof(s4));
	assert_int_equal(kvf_wire_get_str(&r, dst, 5), 4);
	assert_string_equal(dst, "abcd");
	const uint8_t snul[] = { 3, 0, 0, 0, 'a', 0, 'c' };
	kvf_wire_reader_init(&r, snul, sizeof(snul));
	assert_int_equal(kvf_wire_get_str(&r, dst, sizeof(dst)), 0);
	assert_int_equal(kvf_wire_reader_error(&r), KVF_E_PROTO);
	kvf_wire_reader_init(&r, snul, sizeof(snul));
	assert_null(kvf_wire_get_strdup(&r));
	assert_int_equal(kvf_wire_reader_error(&r), KVF_E_PROTO);

	/* trailing bytes */
	kvf_wire_reader_init(&r, buf, sizeof(buf));
	kvf_wire_get_u32(&r);
	assert_int_equal(kvf_wire_remaining(&r), 2);
	assert_int_equal(kvf_wire_reader_done(&r), KVF_E_PROTO);
	/* empty payload */
	kvf_wire_reader_init(&r, NULL, 0);
	assert_non_null(kvf_wire_get_view(&r, 0));
	assert_int_equal(kvf_wire_reader_done(&r), 0);

	/* writer limit: sticky TOOBIG, nothing past the limit written */
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 10);
	kvf_wire_put_u64(&w, 1);
	kvf_wire_put_u32(&w, 2);
	assert_int_equal(kvf_wire_writer_error(&w), KVF_E_TOOBIG);
	kvf_wire_put_u8(&w, 3);
	assert_int_equal(w.len, 8);
	assert_null(kvf_wire_put_space(&w, 0));
	size_t st;
	kvf_frame_hdr h = { .version = 1 };
	kvf_frame_begin(&w, &h, &st);
	assert_int_equal(kvf_frame_end(&w, st), KVF_E_TOOBIG);
	kvf_wire_writer_reset(&w);
	kvf_wire_put_u16(&w, 7);
	assert_int_equal(kvf_wire_writer_error(&w), 0);
	assert_int_equal(kvf_frame_end(&w, 0), KVF_E_RANGE); /* no header there */
	kvf_wire_writer_free(&w);
}

/* A small protocol message built with begin/put/end and parsed back. */
static void test_frame_build_parse(void **state)
{
	(void)state;
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	for (uint32_t i = 0; i < 3; i++) {
		kvf_frame_hdr h = { .version = 1, .type = 5, .flags = 1, .request_id = 100 + i };
		size_t st;
		kvf_frame_begin(&w, &h, &st);
		kvf_wire_put_str(&w, "llama");
		kvf_wire_put_u32(&w, i);
		for (uint32_t j = 0; j < i; j++)
			kvf_wire_put_u64(&w, j * 1000);
		assert_int_equal(kvf_frame_end(&w, st), 0);
	}
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 1);
	kvf_frame_reader *r;
	assert_int_equal(kvf_frame_reader_new(&d, &r), 0);
	size_t taken;
	assert_int_equal(kvf_frame_reader_feed(r, w.buf, w.len, &taken), 0);
	assert_int_equal(taken, w.len);
	kvf_frame f;
	for (uint32_t i = 0; i < 3; i++) {
		assert_int_equal(kvf_frame_reader_next(r, &f), 0);
		assert_int_equal(f.hdr.request_id, 100 + i);
		assert_int_equal(f.hdr.len, 4 + 5 + 4 + 8 * i);
		kvf_wire_reader p;
		kvf_wire_reader_init(&p, f.payload, f.hdr.len);
		char model[16];
		assert_int_equal(kvf_wire_get_str(&p, model, sizeof(model)), 5);
		assert_string_equal(model, "llama");
		uint32_t n = kvf_wire_get_u32(&p);
		assert_int_equal(n, i);
		for (uint32_t j = 0; j < n; j++)
			assert_true(kvf_wire_get_u64(&p) == j * 1000);
		assert_int_equal(kvf_wire_reader_done(&p), 0);
	}
	assert_int_equal(kvf_frame_reader_next(r, &f), KVF_E_AGAIN);
	kvf_frame_reader_free(r);
	kvf_wire_writer_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_layout),
		cmocka_unit_test(test_hdr_strict),
		cmocka_unit_test(test_reader_chunkings),
		cmocka_unit_test(test_reader_space_commit_and_truncation),
		cmocka_unit_test(test_reader_growth_and_limits),
		cmocka_unit_test(test_reader_garbage),
		cmocka_unit_test(test_wire_roundtrip_and_layout),
		cmocka_unit_test(test_wire_sticky_errors),
		cmocka_unit_test(test_frame_build_parse),
	};
	return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
