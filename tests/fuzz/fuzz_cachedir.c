/*
 * fuzz_cachedir.c: arbitrary bytes through the cachedir protocol decoder, and
 * what it accepts through the index.
 *
 * The input is a byte stream of frames (version 1, max frame 1 MiB), fed to
 * the reassembler in chunks chosen by the first byte. Every frame the
 * decoder accepts must re-encode (cd_proto_encode) to exactly its bytes on
 * the wire, and its list iterators must walk exactly the counted records.
 * Accepted worker events and lookups are then applied to a small index with
 * two workers (as the server would), whose counters must stay consistent
 * with a walk of every worker's blocks. Any disagreement aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cachedir/cd_index.h"
#include "cachedir/cd_proto.h"
#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_frame.h"
#include "common/kvf_wire.h"

static uint64_t walked;
static void count_key(void *ud, kvf_blockkey key, uint8_t tiers)
{
	(void)ud;
	(void)key;
	if (tiers == 0 || tiers > 7)
		abort();
	walked++;
}

static void check_index(cd_index *ix, cd_worker **w, int nw)
{
	cd_index_stats st;
	cd_index_stats_get(ix, &st);
	uint64_t held = 0;
	for (int i = 0; i < nw; i++) {
		walked = 0;
		if (cd_index_foreach(ix, w[i], count_key, NULL) != w[i]->nheld || walked != w[i]->nheld)
			abort();
		held += w[i]->nheld;
		if (w[i]->blocks[0] > w[i]->nheld || w[i]->blocks[1] > w[i]->nheld || w[i]->blocks[2] > w[i]->nheld)
			abort();
	}
	if (st.holders != held || st.keys > held)
		abort();
}

static void apply(cd_index *ix, cd_worker **w, const cd_msg *m)
{
	/* The request id picks the worker, as a connection would. */
	cd_worker *wk = w[m->hdr.request_id & 1];
	switch (m->hdr.type) {
	case CD_STORED:
		for (uint32_t i = 0; i < m->u.stored.keys.n; i++)
			cd_index_store(ix, wk, cd_keys_get(&m->u.stored.keys, i), m->u.stored.tier, 1000);
		break;
	case CD_REMOVED: {
		uint8_t mask = m->u.removed.tier == CD_TIER_ALL ? 7 : (uint8_t)(1u << m->u.removed.tier);
		for (uint32_t i = 0; i < m->u.removed.keys.n; i++)
			cd_index_remove(ix, wk, cd_keys_get(&m->u.removed.keys, i), mask);
		break;
	}
	case CD_CLEARED:
		cd_index_clear(ix, wk);
		break;
	case CD_SYNC_BEGIN:
		cd_index_sync_begin(ix, wk);
		break;
	case CD_SYNC_END:
		cd_index_sync_end(ix, wk, NULL, NULL);
		break;
	case CD_LOOKUP: {
		const cd_match *mt;
		size_t n;
		uint32_t nm;
		if (cd_index_lookup_wire(ix, wk->model, &m->u.lookup.keys, 0, &mt, &n, &nm))
			break;
		for (size_t i = 0; i < n; i++)
			if (mt[i].prefix[0] > mt[i].prefix[1] || mt[i].prefix[1] > mt[i].prefix[2] ||
			    mt[i].prefix[2] > nm || mt[i].prefix[2] == 0)
				abort();
		break;
	}
	default:
		break;
	}
}

static void check_lists(const cd_msg *m)
{
	if (m->hdr.type == CD_LOOKUP_REPLY) {
		cd_lookup_reply r = m->u.lookup_reply;
		uint32_t n = r.nholders, k = 0;
		cd_holder h;
		while (cd_lookup_reply_next(&r, &h))
			k++;
		if (k != n || kvf_wire_remaining(&r.items) != 0)
			abort();
	} else if (m->hdr.type == CD_WORKERS_REPLY) {
		cd_workers_reply r = m->u.workers_reply;
		uint32_t n = r.n, k = 0;
		cd_worker_info wi;
		while (cd_workers_reply_next(&r, &wi))
			k++;
		if (k != n || kvf_wire_remaining(&r.items) != 0)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned chunk = 1u + data[0] * 7u;
	data++;
	size--;

	kvf_frame_decoder dec;
	kvf_frame_decoder_init(&dec, CD_PROTO_MIN_VERSION, CD_PROTO_MAX_VERSION);
	dec.max_frame = 1u << 20;
	kvf_frame_reader *rd;
	if (kvf_frame_reader_new(&dec, &rd))
		return 0;
	cd_index *ix;
	if (cd_index_new(0, &ix)) {
		kvf_frame_reader_free(rd);
		return 0;
	}
	cd_worker *w[2];
	cd_register reg;
	memset(&reg, 0, sizeof(reg));
	strcpy(reg.model, "m");
	reg.role = CD_ROLE_BOTH;
	reg.tiers = 7;
	reg.block_size = 16;
	strcpy(reg.worker_id, "w0");
	cd_index_worker_add(ix, &reg, 0, &w[0]);
	strcpy(reg.worker_id, "w1");
	cd_index_worker_add(ix, &reg, 0, &w[1]);

	kvf_wire_writer out;
	kvf_wire_writer_init(&out, 0);
	cd_msg *m = kvf_malloc(sizeof(*m));
	size_t off = 0;
	int rc = 0;
	while (m && off < size && rc == 0) {
		size_t n = size - off < chunk ? size - off : chunk, taken;
		rc = kvf_frame_reader_feed(rd, data + off, n, &taken);
		off += taken;
		kvf_frame f;
		while (rc == 0 && (rc = kvf_frame_reader_next(rd, &f)) == 0) {
			if (cd_proto_decode(&f, 65536, m) != 0)
				continue;
			check_lists(m);
			kvf_wire_writer_reset(&out);
			if (cd_proto_encode(&out, m) != 0)
				abort();
			uint8_t hdr[KVF_FRAME_HDR_LEN];
			kvf_frame_hdr_encode(&f.hdr, hdr);
			if (out.len != KVF_FRAME_HDR_LEN + f.hdr.len || memcmp(out.buf, hdr, KVF_FRAME_HDR_LEN) ||
			    memcmp(out.buf + KVF_FRAME_HDR_LEN, f.payload, f.hdr.len))
				abort();
			apply(ix, w, m);
		}
		if (rc == KVF_E_AGAIN)
			rc = 0;
	}
	check_index(ix, w, 2);
	kvf_free(m);
	kvf_wire_writer_free(&out);
	cd_index_destroy(ix);
	kvf_frame_reader_free(rd);
	return 0;
}
