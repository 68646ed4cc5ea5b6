/*
 * fuzz_fabric_desc.c: arbitrary bytes through the fabric descriptor parser
 * (descriptors arrive from peers inside the P/D protocol).
 *
 * Every input is parsed; a descriptor that parses is re-encoded, which
 * must parse again to the same fields (the encoding is canonical up to the
 * order of transport entries), and its transport address and key blobs are
 * run through their own parsers (tcp, shm, ofi, verbs addresses; verbs
 * rkeys). Blocks must lie inside the region. Any disagreement aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_wire.h"
#include "fabric/fabric_int.h"
#include "fabric/verbs_plan.h"

static void same(const kvf_fabric_rdesc *a, const kvf_fabric_rdesc *b)
{
	if (memcmp(a->node, b->node, 16) || strcmp(a->name, b->name) || a->region != b->region || a->mem != b->mem ||
	    a->base != b->base || a->len != b->len || a->nblocks != b->nblocks ||
	    memcmp(&a->host, &b->host, sizeof(a->host)))
		abort();
	for (int t = 0; t < FAB_NT; t++) {
		if (a->addr[t].len != b->addr[t].len || memcmp(a->addr[t].b, b->addr[t].b, a->addr[t].len))
			abort();
		if (a->key[t].present != b->key[t].present || a->key[t].key != b->key[t].key ||
		    a->key[t].xlen != b->key[t].xlen || memcmp(a->key[t].x, b->key[t].x, a->key[t].xlen))
			abort();
	}
	if (memcmp(a->blocks, b->blocks, a->nblocks * sizeof(*a->blocks)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	kvf_fabric_rdesc d, e;
	if (fab_desc_decode(data, size, &d) != 0)
		return 0;
	for (uint32_t i = 0; i < d.nblocks; i++) {
		const struct fab_rblock *b = &d.blocks[i];
		if (b->len == 0 || b->addr < d.base || b->addr + b->len > d.base + d.len)
			abort();
	}
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	fab_desc_put_head(&w, &d, d.nblocks);
	for (uint32_t i = 0; i < d.nblocks; i++)
		fab_desc_put_block(&w, d.blocks[i].addr, d.blocks[i].len, d.blocks[i].token);
	if (kvf_wire_writer_error(&w) || fab_desc_decode(w.buf, w.len, &e) != 0)
		abort();
	same(&d, &e);
	fab_desc_clear(&e);
	kvf_wire_writer_free(&w);

	char s[600];
	uint32_t u, alen;
	uint8_t virt;
	const uint8_t *raw;
	struct fab_verbs_addr va;
	if (d.addr[KVF_FABRIC_TCP].len)
		(void)fab_addr_tcp_parse(&d.addr[KVF_FABRIC_TCP], s, sizeof(s));
	if (d.addr[KVF_FABRIC_SHM].len)
		(void)fab_addr_shm_parse(&d.addr[KVF_FABRIC_SHM], s, sizeof(s), &u);
	if (d.addr[KVF_FABRIC_OFI].len &&
	    fab_addr_ofi_parse(&d.addr[KVF_FABRIC_OFI], s, sizeof(s), &u, &virt, &raw, &alen) == 0 &&
	    (raw < d.addr[KVF_FABRIC_OFI].b || raw + alen > d.addr[KVF_FABRIC_OFI].b + d.addr[KVF_FABRIC_OFI].len))
		abort();
	if (d.addr[KVF_FABRIC_VERBS].len && fab_addr_verbs_parse(&d.addr[KVF_FABRIC_VERBS], &va) == 0 &&
	    (va.ndev == 0 || va.ndev > FAB_VERBS_MAX_DEV))
		abort();
	uint32_t rk[FAB_VERBS_MAX_DEV], n;
	if (d.key[KVF_FABRIC_VERBS].present)
		(void)vp_unpack_rkeys(d.key[KVF_FABRIC_VERBS].x, d.key[KVF_FABRIC_VERBS].xlen, rk, FAB_VERBS_MAX_DEV, &n);
	fab_desc_clear(&d);
	return 0;
}
