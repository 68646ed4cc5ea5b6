/*
 * desc.c: remote descriptors and access tokens, as pure functions.
 *
 * A descriptor is what a holder hands a puller so it can move blocks
 * one-sided: who (node id, name, host identity), how to reach it (one
 * address blob per transport), what (region id, memory kind, base, length,
 * one key blob per transport) and which blocks (address, length, token).
 * The format is a kvf_wire payload (docs/fabric.md); the parser is strict
 * and fuzzed (tests/fuzz/fuzz_fabric_desc.c), because descriptors arrive
 * from the network inside the P/D protocol.
 *
 * Tokens are SipHash-2-4 MACs of (region id, block address, block length)
 * keyed with the region's random 128-bit secret: the target recomputes them
 * per op, so a token grants exactly its block and nothing is stored per
 * exported descriptor.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "fabric/fabric_int.h"

/* ---- SipHash-2-4 (Aumasson & Bernstein reference, little-endian) ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
	do {                                                                   \
		v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);      \
		v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                         \
		v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                         \
		v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);      \
	} while (0)

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

uint64_t fab_siphash(const uint8_t key[16], const void *msg, size_t len)
{
	const uint8_t *in = msg;
	uint64_t k0 = le64(key), k1 = le64(key + 8);
	uint64_t v0 = 0x736f6d6570736575ull ^ k0;
	uint64_t v1 = 0x646f72616e646f6dull ^ k1;
	uint64_t v2 = 0x6c7967656e657261ull ^ k0;
	uint64_t v3 = 0x7465646279746573ull ^ k1;
	uint64_t b = (uint64_t)len << 56;
	const uint8_t *end = in + len - (len % 8);

	for (; in != end; in += 8) {
		uint64_t m = le64(in);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	switch (len & 7) {
	case 7: b |= (uint64_t)in[6] << 48; /* fall through */
	case 6: b |= (uint64_t)in[5] << 40; /* fall through */
	case 5: b |= (uint64_t)in[4] << 32; /* fall through */
	case 4: b |= (uint64_t)in[3] << 24; /* fall through */
	case 3: b |= (uint64_t)in[2] << 16; /* fall through */
	case 2: b |= (uint64_t)in[1] << 8;  /* fall through */
	case 1: b |= (uint64_t)in[0]; break;
	case 0: break;
	}
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t fab_token(const uint8_t secret[16], uint32_t region, uint64_t addr, uint64_t len)
{
	uint8_t m[20];
	for (int i = 0; i < 4; i++)
		m[i] = (uint8_t)(region >> (8 * i));
	for (int i = 0; i < 8; i++) {
		m[4 + i] = (uint8_t)(addr >> (8 * i));
		m[12 + i] = (uint8_t)(len >> (8 * i));
	}
	return fab_siphash(secret, m, sizeof(m));
}

/* ---- descriptor ---- */

void fab_desc_put_head(kvf_wire_writer *w, const kvf_fabric_rdesc *d, uint32_t nblocks)
{
	kvf_wire_put_u8(w, 'K');
	kvf_wire_put_u8(w, 'D');
	kvf_wire_put_u8(w, FAB_DESC_VERSION);
	kvf_wire_put_bytes(w, d->node, 16);
	kvf_wire_put_str(w, d->name);
	kvf_wire_put_u64(w, d->host.boot);
	kvf_wire_put_u64(w, d->host.netns);
	kvf_wire_put_u64(w, d->host.pidns);
	uint8_t naddr = 0;
	for (int t = 1; t < FAB_NT; t++)
		naddr += d->addr[t].len > 0;
	kvf_wire_put_u8(w, naddr);
	for (int t = 1; t < FAB_NT; t++) {
		if (!d->addr[t].len)
			continue;
		kvf_wire_put_u8(w, (uint8_t)t);
		kvf_wire_put_blob(w, d->addr[t].b, d->addr[t].len);
	}
	kvf_wire_put_u32(w, d->region);
	kvf_wire_put_u8(w, d->mem);
	kvf_wire_put_u64(w, d->base);
	kvf_wire_put_u64(w, d->len);
	uint8_t nkeys = 0;
	for (int t = 1; t < FAB_NT; t++)
		nkeys += d->key[t].present;
	kvf_wire_put_u8(w, nkeys);
	for (int t = 1; t < FAB_NT; t++) {
		if (!d->key[t].present)
			continue;
		kvf_wire_put_u8(w, (uint8_t)t);
		kvf_wire_put_u64(w, d->key[t].key);
		kvf_wire_put_blob(w, d->key[t].x, d->key[t].xlen);
	}
	kvf_wire_put_u32(w, nblocks);
}

void fab_desc_put_block(kvf_wire_writer *w, uint64_t addr, uint64_t len, uint64_t token)
{
	kvf_wire_put_u64(w, addr);
	kvf_wire_put_u64(w, len);
	kvf_wire_put_u64(w, token);
}

void fab_desc_clear(kvf_fabric_rdesc *d)
{
	if (!d)
		return;
	kvf_free(d->blocks);
	d->blocks = NULL;
	d->nblocks = 0;
}

static int bad(const char *what)
{
	return kvf_errf(KVF_E_PROTO, "fabric descriptor: %s", what);
}

int fab_desc_decode(const void *buf, size_t len, kvf_fabric_rdesc *d)
{
	kvf_wire_reader r;
	memset(d, 0, sizeof(*d));
	kvf_wire_reader_init(&r, buf, len);
	uint8_t m0 = kvf_wire_get_u8(&r), m1 = kvf_wire_get_u8(&r);
	if (kvf_wire_reader_error(&r) || m0 != 'K' || m1 != 'D')
		return bad("bad magic (not a kvfabric descriptor)");
	uint8_t ver = kvf_wire_get_u8(&r);
	if (kvf_wire_reader_error(&r))
		return bad("truncated");
	if (ver != FAB_DESC_VERSION)
		return kvf_errf(KVF_E_VERSION, "fabric descriptor: format version %u, this end reads %u",
				ver, FAB_DESC_VERSION);
	kvf_wire_get_bytes(&r, d->node, 16);
	kvf_wire_get_str(&r, d->name, sizeof(d->name));
	d->host.boot = kvf_wire_get_u64(&r);
	d->host.netns = kvf_wire_get_u64(&r);
	d->host.pidns = kvf_wire_get_u64(&r);
	uint8_t naddr = kvf_wire_get_u8(&r);
	for (unsigned i = 0; i < naddr && !kvf_wire_reader_error(&r); i++) {
		uint8_t t = kvf_wire_get_u8(&r);
		uint32_t blen;
		const uint8_t *b = kvf_wire_get_blob(&r, &blen);
		if (kvf_wire_reader_error(&r))
			break;
		if (t == 0 || t >= FAB_NT)
			return bad("unknown transport in address list");
		if (d->addr[t].len)
			return bad("duplicate transport address");
		if (blen == 0 || blen > FAB_ADDR_MAX)
			return bad("transport address length out of range");
		memcpy(d->addr[t].b, b, blen);
		d->addr[t].len = (uint16_t)blen;
	}
	d->region = kvf_wire_get_u32(&r);
	d->mem = kvf_wire_get_u8(&r);
	d->base = kvf_wire_get_u64(&r);
	d->len = kvf_wire_get_u64(&r);
	uint8_t nkeys = kvf_wire_get_u8(&r);
	for (unsigned i = 0; i < nkeys && !kvf_wire_reader_error(&r); i++) {
		uint8_t t = kvf_wire_get_u8(&r);
		uint64_t key = kvf_wire_get_u64(&r);
		uint32_t xlen;
		const uint8_t *x = kvf_wire_get_blob(&r, &xlen);
		if (kvf_wire_reader_error(&r))
			break;
		if (t == 0 || t >= FAB_NT)
			return bad("unknown transport in key list");
		if (d->key[t].present)
			return bad("duplicate transport key");
		if (xlen > FAB_KEYX_MAX)
			return bad("transport key too long");
		d->key[t].present = 1;
		d->key[t].key = key;
		memcpy(d->key[t].x, x, xlen);
		d->key[t].xlen = (uint16_t)xlen;
	}
	uint32_t nb = kvf_wire_get_u32(&r);
	if (kvf_wire_reader_error(&r))
		return bad("truncated header");
	if (d->mem != KVF_FABRIC_MEM_HOST && d->mem != KVF_FABRIC_MEM_CUDA)
		return bad("unknown memory kind");
	if (d->len == 0 || d->base + d->len < d->base)
		return bad("region length zero or wrapping");
	if (nb == 0 || nb > FAB_DESC_MAX_BLOCKS)
		return bad("block count out of range");
	if (kvf_wire_remaining(&r) != (size_t)nb * 24)
		return bad("block list length does not match its count");
	d->blocks = kvf_malloc((size_t)nb * sizeof(*d->blocks));
	if (!d->blocks)
		return kvf_errf(KVF_E_NOMEM, "fabric descriptor: %u blocks", nb);
	d->nblocks = nb;
	for (uint32_t i = 0; i < nb; i++) {
		struct fab_rblock *b = &d->blocks[i];
		b->addr = kvf_wire_get_u64(&r);
		b->len = kvf_wire_get_u64(&r);
		b->token = kvf_wire_get_u64(&r);
		if (b->len == 0 || b->addr < d->base || b->addr + b->len < b->addr ||
		    b->addr + b->len > d->base + d->len) {
			fab_desc_clear(d);
			return bad("block outside its region");
		}
	}
	int rc = kvf_wire_reader_done(&r);
	if (rc < 0) {
		fab_desc_clear(d);
		return bad("trailing bytes");
	}
	return 0;
}

/* ---- transport address blobs ---- */

static void put_blob_of(kvf_wire_writer *w, kvf_wire_writer *inner)
{
	if (kvf_wire_writer_error(inner) && !w->err)
		w->err = kvf_wire_writer_error(inner);
	kvf_wire_put_blob(w, inner->buf, inner->len);
	kvf_wire_writer_free(inner);
}

void fab_addr_tcp_put(kvf_wire_writer *w, const char *hostport)
{
	kvf_wire_writer in;
	kvf_wire_writer_init(&in, FAB_ADDR_MAX);
	kvf_wire_put_str(&in, hostport);
	put_blob_of(w, &in);
}

int fab_addr_tcp_parse(const struct fab_taddr *a, char *hostport, size_t cap)
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, a->b, a->len);
	kvf_wire_get_str(&r, hostport, cap);
	if (kvf_wire_reader_done(&r) < 0 || !hostport[0])
		return bad("tcp address");
	return 0;
}

void fab_addr_shm_put(kvf_wire_writer *w, const char *sock_name, uint32_t pid)
{
	kvf_wire_writer in;
	kvf_wire_writer_init(&in, FAB_ADDR_MAX);
	kvf_wire_put_str(&in, sock_name);
	kvf_wire_put_u32(&in, pid);
	put_blob_of(w, &in);
}

int fab_addr_shm_parse(const struct fab_taddr *a, char *sock_name, size_t cap, uint32_t *pid)
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, a->b, a->len);
	kvf_wire_get_str(&r, sock_name, cap);
	*pid = kvf_wire_get_u32(&r);
	if (kvf_wire_reader_done(&r) < 0 || !sock_name[0])
		return bad("shm address");
	return 0;
}

void fab_addr_ofi_put(kvf_wire_writer *w, const char *prov, uint32_t addr_format, uint8_t virt_addr,
		      const void *addr, size_t len)
{
	kvf_wire_writer in;
	kvf_wire_writer_init(&in, FAB_ADDR_MAX);
	kvf_wire_put_str(&in, prov);
	kvf_wire_put_u32(&in, addr_format);
	kvf_wire_put_u8(&in, virt_addr);
	kvf_wire_put_blob(&in, addr, len);
	put_blob_of(w, &in);
}

int fab_addr_ofi_parse(const struct fab_taddr *a, char *prov, size_t cap, uint32_t *addr_format,
		       uint8_t *virt_addr, const uint8_t **addr, uint32_t *len)
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, a->b, a->len);
	kvf_wire_get_str(&r, prov, cap);
	*addr_format = kvf_wire_get_u32(&r);
	*virt_addr = kvf_wire_get_u8(&r);
	*addr = kvf_wire_get_blob(&r, len);
	if (kvf_wire_reader_done(&r) < 0 || !prov[0] || *len == 0 || *virt_addr > 1)
		return bad("ofi address");
	return 0;
}

void fab_addr_verbs_put(kvf_wire_writer *w, const struct fab_verbs_addr *a)
{
	kvf_wire_writer in;
	kvf_wire_writer_init(&in, FAB_ADDR_MAX);
	kvf_wire_put_u8(&in, (uint8_t)a->ndev);
	for (uint32_t i = 0; i < a->ndev; i++)
		kvf_wire_put_str(&in, a->cm[i]);
	put_blob_of(w, &in);
}

int fab_addr_verbs_parse(const struct fab_taddr *a, struct fab_verbs_addr *out)
{
	kvf_wire_reader r;
	memset(out, 0, sizeof(*out));
	kvf_wire_reader_init(&r, a->b, a->len);
	out->ndev = kvf_wire_get_u8(&r);
	if (out->ndev == 0 || out->ndev > FAB_VERBS_MAX_DEV)
		return bad("verbs address: device count");
	for (uint32_t i = 0; i < out->ndev; i++)
		kvf_wire_get_str(&r, out->cm[i], sizeof(out->cm[i]));
	if (kvf_wire_reader_done(&r) < 0)
		return bad("verbs address");
	for (uint32_t i = 0; i < out->ndev; i++)
		if (!out->cm[i][0])
			return bad("verbs address: empty endpoint");
	return 0;
}

/* ---- host identity ---- */

const struct fab_hostid *fab_hostid_self(void)
{
	static struct fab_hostid id;
	static _Atomic int done;
	if (atomic_load(&done))
		return &id;
	struct fab_hostid h = { 0, 0, 0 };
	char boot[64] = "";
	FILE *fp = fopen("/proc/sys/kernel/random/boot_id", "r");
	if (fp) {
		if (!fgets(boot, sizeof(boot), fp))
			boot[0] = 0;
		fclose(fp);
	}
	static const uint8_t k[16] = { 'k', 'v', 'f', '-', 'h', 'o', 's', 't' };
	h.boot = fab_siphash(k, boot, strlen(boot));
	struct stat st;
	if (stat("/proc/self/ns/net", &st) == 0)
		h.netns = (uint64_t)st.st_ino;
	if (stat("/proc/self/ns/pid", &st) == 0)
		h.pidns = (uint64_t)st.st_ino;
	id = h; /* racing first callers write identical values */
	atomic_store(&done, 1);
	return &id;
}

/* ---- public descriptor accessors ---- */

int kvf_fabric_desc_parse(const void *buf, size_t len, kvf_fabric_rdesc **out)
{
	if (!buf || !out)
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_desc_parse: NULL argument");
	kvf_fabric_rdesc *d = kvf_malloc(sizeof(*d));
	if (!d)
		return kvf_errf(KVF_E_NOMEM, "fabric: descriptor");
	int rc = fab_desc_decode(buf, len, d);
	if (rc < 0) {
		kvf_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

void kvf_fabric_desc_free(kvf_fabric_rdesc *d)
{
	if (!d)
		return;
	fab_desc_clear(d);
	kvf_free(d);
}

size_t kvf_fabric_desc_nblocks(const kvf_fabric_rdesc *d)
{
	return d ? d->nblocks : 0;
}

uint64_t kvf_fabric_desc_block_len(const kvf_fabric_rdesc *d, size_t i)
{
	return d && i < d->nblocks ? d->blocks[i].len : 0;
}

const char *kvf_fabric_desc_node(const kvf_fabric_rdesc *d)
{
	return d ? d->name : "";
}

int kvf_fabric_desc_mem(const kvf_fabric_rdesc *d)
{
	return d ? d->mem : KVF_FABRIC_MEM_HOST;
}
