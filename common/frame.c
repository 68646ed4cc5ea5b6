/*
 * frame.c: the 16-byte frame header, strict decoding, and the stream
 * reassembler of kvf_frame.h.
 *
 * The reassembler owns one buffer that starts small (64 KiB or max_frame) and
 * grows, at most to max_frame, only when a header announces a bigger frame:
 * steady state has no allocation and frames are handed out as views into it.
 * Bytes of a partial frame are moved to the front before each refill, so the
 * buffer never needs more than one frame's room. A bad header poisons the
 * reader (sticky error): after a framing error a stream cannot be resynced.
 */
#include "common/kvf_frame.h"

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

#include <string.h>

/* Fuzzing starts tiny so that small inputs reach the growth path. */
#ifdef KVF_FUZZING
#define READER_INITIAL_CAP 64u
#else
#define READER_INITIAL_CAP (64u << 10)
#endif

/* Field offsets in the header. */
enum { OFF_MAGIC = 0, OFF_VERSION = 2, OFF_TYPE = 3, OFF_FLAGS = 4, OFF_RESERVED = 6,
       OFF_REQID = 8, OFF_LEN = 12 };

void kvf_frame_decoder_init(kvf_frame_decoder *d, uint8_t min_version, uint8_t max_version)
{
	d->min_version = min_version;
	d->max_version = max_version;
	d->max_frame = KVF_FRAME_MAX_DEFAULT;
}

static void st16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void st32(uint8_t *p, uint32_t v)
{
	st16(p, (uint16_t)v);
	st16(p + 2, (uint16_t)(v >> 16));
}

static uint16_t ld16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t ld32(const uint8_t *p)
{
	return (uint32_t)ld16(p) | (uint32_t)ld16(p + 2) << 16;
}

void kvf_frame_hdr_encode(const kvf_frame_hdr *h, uint8_t out[KVF_FRAME_HDR_LEN])
{
	out[OFF_MAGIC] = KVF_FRAME_MAGIC0;
	out[OFF_MAGIC + 1] = KVF_FRAME_MAGIC1;
	out[OFF_VERSION] = h->version;
	out[OFF_TYPE] = h->type;
	st16(out + OFF_FLAGS, h->flags);
	st16(out + OFF_RESERVED, 0);
	st32(out + OFF_REQID, h->request_id);
	st32(out + OFF_LEN, h->len);
}

int kvf_frame_hdr_decode(const kvf_frame_decoder *d, const void *buf, size_t len,
			 kvf_frame_hdr *out)
{
	const uint8_t *p = buf;

	if ((len > 0 && p[0] != KVF_FRAME_MAGIC0) || (len > 1 && p[1] != KVF_FRAME_MAGIC1))
		return kvf_errf(KVF_E_PROTO, "frame: bad magic 0x%02x%02x (want 'KF'): not a kvfabric stream",
				p[0], len > 1 ? p[1] : 0);
	if (len > OFF_VERSION && (p[OFF_VERSION] < d->min_version || p[OFF_VERSION] > d->max_version))
		return kvf_errf(KVF_E_VERSION, "frame: protocol version %u, this end speaks %u..%u",
				p[OFF_VERSION], d->min_version, d->max_version);
	if ((len > OFF_RESERVED && p[OFF_RESERVED] != 0) ||
	    (len > OFF_RESERVED + 1 && p[OFF_RESERVED + 1] != 0))
		return kvf_errf(KVF_E_PROTO, "frame: reserved header bytes are not zero");
	if (len < KVF_FRAME_HDR_LEN)
		return KVF_E_AGAIN;
	uint32_t plen = ld32(p + OFF_LEN);
	if ((uint64_t)KVF_FRAME_HDR_LEN + plen > d->max_frame)
		return kvf_errf(KVF_E_TOOBIG, "frame: %u-byte payload exceeds the %u-byte frame limit",
				plen, d->max_frame);
	out->version = p[OFF_VERSION];
	out->type = p[OFF_TYPE];
	out->flags = ld16(p + OFF_FLAGS);
	out->request_id = ld32(p + OFF_REQID);
	out->len = plen;
	return 0;
}

/* ---- reassembler ---- */

struct kvf_frame_reader {
	kvf_frame_decoder dec;
	uint8_t *buf;
	size_t cap;
	size_t rpos; /* start of the first byte not handed out */
	size_t wpos; /* end of the bytes received */
	int err;     /* sticky decoding error */
};

int kvf_frame_reader_new(const kvf_frame_decoder *d, kvf_frame_reader **out)
{
	*out = NULL;
	if (d->max_frame < KVF_FRAME_HDR_LEN || d->min_version > d->max_version)
		return kvf_errf(KVF_E_INVAL, "frame reader: max_frame %u (min %d), versions %u..%u",
				d->max_frame, KVF_FRAME_HDR_LEN, d->min_version, d->max_version);
	kvf_frame_reader *r = kvf_calloc(1, sizeof(*r));
	if (!r)
		goto err_nomem;
	r->dec = *d;
	r->cap = d->max_frame < READER_INITIAL_CAP ? d->max_frame : READER_INITIAL_CAP;
	r->buf = kvf_malloc(r->cap);
	if (!r->buf)
		goto err_free_reader;
	*out = r;
	return 0;

err_free_reader:
	kvf_free(r);
err_nomem:
	return kvf_errf(KVF_E_NOMEM, "frame reader: out of memory");
}

void kvf_frame_reader_free(kvf_frame_reader *r)
{
	if (!r)
		return;
	kvf_free(r->buf);
	kvf_free(r);
}

/* Bytes the frame starting at rpos needs in all (16 until its header is in),
 * or the decoding error. */
static int pending_need(kvf_frame_reader *r, size_t *need)
{
	kvf_frame_hdr h;
	int rc = kvf_frame_hdr_decode(&r->dec, r->buf + r->rpos, r->wpos - r->rpos, &h);
	if (rc == KVF_E_AGAIN) {
		*need = KVF_FRAME_HDR_LEN;
		return 0;
	}
	if (rc < 0)
		return r->err = rc;
	*need = KVF_FRAME_HDR_LEN + (size_t)h.len;
	return 0;
}

int kvf_frame_reader_space(kvf_frame_reader *r, void **buf, size_t *avail)
{
	*buf = NULL;
	*avail = 0;
	if (r->err)
		return r->err;
	if (r->rpos > 0) {
		size_t n = r->wpos - r->rpos;
		if (n)
			memmove(r->buf, r->buf + r->rpos, n);
		r->rpos = 0;
		r->wpos = n;
	}
	size_t need;
	int rc = pending_need(r, &need);
	if (rc < 0)
		return rc;
	if (need > r->cap) { /* need <= max_frame: the header was checked */
		size_t ncap = r->cap;
		while (ncap < need)
			ncap *= 2;
		if (ncap > r->dec.max_frame)
			ncap = r->dec.max_frame;
		uint8_t *nb = kvf_realloc(r->buf, ncap);
		if (!nb)
			return kvf_errf(KVF_E_NOMEM, "frame reader: cannot grow to %zu bytes", ncap);
		r->buf = nb;
		r->cap = ncap;
	}
	*buf = r->buf + r->wpos;
	*avail = r->cap - r->wpos;
	return 0;
}

void kvf_frame_reader_commit(kvf_frame_reader *r, size_t n)
{
	r->wpos += n;
}

int kvf_frame_reader_feed(kvf_frame_reader *r, const void *data, size_t len, size_t *taken)
{
	void *dst;
	size_t avail;
	*taken = 0;
	int rc = kvf_frame_reader_space(r, &dst, &avail);
	if (rc < 0)
		return rc;
	size_t n = len < avail ? len : avail;
	if (n)
		memcpy(dst, data, n);
	r->wpos += n;
	*taken = n;
	return 0;
}

int kvf_frame_reader_next(kvf_frame_reader *r, kvf_frame *out)
{
	if (r->err)
		return r->err;
	size_t have = r->wpos - r->rpos;
	int rc = kvf_frame_hdr_decode(&r->dec, r->buf + r->rpos, have, &out->hdr);
	if (rc == KVF_E_AGAIN)
		return rc;
	if (rc < 0)
		return r->err = rc;
	size_t total = KVF_FRAME_HDR_LEN + (size_t)out->hdr.len;
	if (have < total)
		return KVF_E_AGAIN;
	out->payload = r->buf + r->rpos + KVF_FRAME_HDR_LEN;
	r->rpos += total;
	return 0;
}

size_t kvf_frame_reader_pending(const kvf_frame_reader *r)
{
	return r->wpos - r->rpos;
}

/* ---- building ---- */

void kvf_frame_begin(kvf_wire_writer *w, const kvf_frame_hdr *h, size_t *start)
{
	*start = w->len;
	uint8_t *p = kvf_wire_put_space(w, KVF_FRAME_HDR_LEN);
	if (p) {
		kvf_frame_hdr z = *h;
		z.len = 0;
		kvf_frame_hdr_encode(&z, p);
	}
}

int kvf_frame_end(kvf_wire_writer *w, size_t start)
{
	if (w->err)
		return w->err;
	if (start > w->len || w->len - start < KVF_FRAME_HDR_LEN)
		return w->err = kvf_errf(KVF_E_RANGE, "frame: end at %zu without a header begun there", start);
	size_t plen = w->len - start - KVF_FRAME_HDR_LEN;
	if (plen > UINT32_MAX)
		return w->err = kvf_errf(KVF_E_TOOBIG, "frame: payload of %zu bytes exceeds u32", plen);
	kvf_wire_patch_u32(w, start + OFF_LEN, (uint32_t)plen);
	return w->err;
}
