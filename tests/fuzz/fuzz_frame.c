/*
 * fuzz_frame.c: arbitrary bytes through the frame reassembler and the payload
 * reader.
 *
 * Input: byte 0 seeds the chunking, the rest is the stream. The stream is
 * decoded twice, fed whole and fed in pseudo-random chunks (through both
 * _feed and _space/_commit); both passes must yield the same frames and end
 * in the same state (chunking invariance). Every frame is re-encoded with
 * kvf_frame_begin/_end and must equal its bytes on the wire, and its payload
 * is walked with the kvf_wire reader as a little op program (the payload's own
 * bytes choose u8/u16/u32/u64/view/blob/str/strdup reads), exercising the
 * sticky error paths. Any disagreement aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_frame.h"
#include "common/kvf_wire.h"

#define MAX_FRAMES 256

struct summary {
	int n;
	int end_rc;
	size_t pending;
	struct {
		kvf_frame_hdr hdr;
		uint64_t sum;
	} f[MAX_FRAMES];
};

static uint64_t fnv(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

static void walk_payload(const kvf_frame *f)
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, f->payload, f->hdr.len);
	char small[8];
	uint32_t n;
	for (int step = 0; step < 64 && kvf_wire_reader_error(&r) == 0; step++) {
		size_t before = kvf_wire_remaining(&r);
		if (before == 0)
			break;
		switch (kvf_wire_get_u8(&r) % 9) {
		case 0: (void)kvf_wire_get_u16(&r); break;
		case 1: (void)kvf_wire_get_u32(&r); break;
		case 2: (void)kvf_wire_get_u64(&r); break;
		case 3: {
			size_t want = kvf_wire_get_u8(&r);
			const uint8_t *v = kvf_wire_get_view(&r, want);
			if (v && want)
				(void)fnv(v, want);
			break;
		}
		case 4: {
			const uint8_t *b = kvf_wire_get_blob(&r, &n);
			if (b && n)
				(void)fnv(b, n);
			if (!b && n != 0)
				abort();
			break;
		}
		case 5: {
			size_t len = kvf_wire_get_str(&r, small, sizeof(small));
			if (strlen(small) != len)
				abort();
			break;
		}
		case 6: {
			char *s = kvf_wire_get_strdup(&r);
			kvf_free(s);
			break;
		}
		case 7: {
			uint8_t tmp[5];
			kvf_wire_get_bytes(&r, tmp, sizeof(tmp));
			break;
		}
		default:
			(void)kvf_wire_reader_done(&r);
			break;
		}
		if (kvf_wire_reader_error(&r)) {
			/* sticky: nothing more comes out */
			if (kvf_wire_get_u8(&r) != 0 || kvf_wire_get_u64(&r) != 0 ||
			    kvf_wire_get_view(&r, 0) != NULL || kvf_wire_remaining(&r) != 0)
				abort();
		} else if (kvf_wire_remaining(&r) >= before) {
			abort(); /* every successful op consumed its tag at least */
		}
	}
}

static void check_reencode(const kvf_frame *f)
{
	kvf_wire_writer w;
	size_t st;
	kvf_wire_writer_init(&w, 0);
	kvf_frame_begin(&w, &f->hdr, &st);
	kvf_wire_put_bytes(&w, f->payload, f->hdr.len);
	if (kvf_frame_end(&w, st) == 0) {
		/* the header sits right before the payload in the reader's buffer */
		if (w.len != KVF_FRAME_HDR_LEN + (size_t)f->hdr.len ||
		    memcmp(w.buf, f->payload - KVF_FRAME_HDR_LEN, w.len) != 0)
			abort();
	}
	kvf_wire_writer_free(&w);
}

static void record(struct summary *s, const kvf_frame *f)
{
	if (s->n < MAX_FRAMES) {
		s->f[s->n].hdr = f->hdr;
		s->f[s->n].sum = fnv(f->payload, f->hdr.len);
	}
	s->n++;
}

static void run(const kvf_frame_decoder *d, const uint8_t *data, size_t size, unsigned seed,
		struct summary *s)
{
	kvf_frame_reader *r;
	memset(s, 0, sizeof(*s));
	if (kvf_frame_reader_new(d, &r) != 0)
		abort();
	uint32_t st = seed * 2654435761u + 1;
	size_t pos = 0;
	int rc = 0;
	kvf_frame f;
	while (pos < size) {
		size_t n = size - pos, taken = 0;
		if (seed) {
			st = st * 1664525u + 1013904223u;
			n = 1 + (st >> 16) % 97;
			if (n > size - pos)
				n = size - pos;
		}
		if (seed & 1) {
			rc = kvf_frame_reader_feed(r, data + pos, n, &taken);
		} else {
			void *b;
			size_t avail;
			rc = kvf_frame_reader_space(r, &b, &avail);
			if (rc == 0) {
				taken = n < avail ? n : avail;
				memcpy(b, data + pos, taken);
				kvf_frame_reader_commit(r, taken);
			}
		}
		if (rc < 0)
			break;
		pos += taken;
		while ((rc = kvf_frame_reader_next(r, &f)) == 0) {
			if (f.hdr.version < d->min_version || f.hdr.version > d->max_version ||
			    KVF_FRAME_HDR_LEN + (size_t)f.hdr.len > d->max_frame)
				abort();
			check_reencode(&f);
			walk_payload(&f);
			record(s, &f);
		}
		if (rc != KVF_E_AGAIN)
			break;
		if (taken == 0)
			abort(); /* no frame waiting, so there must have been room */
	}
	s->end_rc = rc;
	s->pending = rc == KVF_E_AGAIN || rc == 0 ? kvf_frame_reader_pending(r) : 0;
	kvf_frame_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 2);
	d.max_frame = 4096; /* small, so TOOBIG and buffer growth are reachable */
	static struct summary whole, chunked;
	unsigned seed = data[0] | 1u << 8; /* never 0: the chunked pass really chunks */
	run(&d, data + 1, size - 1, 0, &whole);
	run(&d, data + 1, size - 1, seed, &chunked);
	if (whole.n != chunked.n || whole.end_rc != chunked.end_rc || whole.pending != chunked.pending)
		abort();
	for (int i = 0; i < whole.n && i < MAX_FRAMES; i++) {
		const kvf_frame_hdr *a = &whole.f[i].hdr, *b = &chunked.f[i].hdr;
		if (a->version != b->version || a->type != b->type || a->flags != b->flags ||
		    a->request_id != b->request_id || a->len != b->len ||
		    whole.f[i].sum != chunked.f[i].sum)
			abort();
	}
	kvf_err_clear();
	return 0;
}
