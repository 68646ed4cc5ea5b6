/*
 * Unit tests for the fabric's pure parts: SipHash tokens, descriptors and
 * transport address blobs, the config table, the tcp wire protocol (codecs,
 * access check, streaming receiver) and the verbs transport's hardware-free
 * logic (WR planning, completion demux, rdmacm state machine, striping,
 * rkeys). The running fabric is tested by test_fabric_loopback.c and the
 * two-process conformance suite.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/kvf_config.h"
#include "common/kvf_err.h"
#include "common/kvf_frame.h"
#include "common/kvf_wire.h"
#include "fabric/fabric_int.h"
#include "fabric/kvf_fabric.h"
#include "fabric/tcp_proto.h"
#include "fabric/verbs_plan.h"

#include <cmocka.h>

/* ---- tokens ---- */

static void test_siphash_vectors(void **state)
{
	/* Aumasson & Bernstein's reference: key 00..0f, message 00..len-1 */
	uint8_t key[16], msg[64];
	for (int i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 64; i++)
		msg[i] = (uint8_t)i;
	assert_true(fab_siphash(key, msg, 0) == 0x726fdb47dd0e0e31ull);
	assert_true(fab_siphash(key, msg, 1) == 0x74f839c593dc67fdull);
	assert_true(fab_siphash(key, msg, 7) == 0xab0200f58b01d137ull);
	assert_true(fab_siphash(key, msg, 8) == 0x93f5f5799a932462ull);
	assert_true(fab_siphash(key, msg, 15) == 0xa129ca6149be45e5ull);
	assert_true(fab_siphash(key, msg, 63) == 0x958a324ceb064572ull);
}

static void test_token_binds_everything(void **state)
{
	uint8_t s[16] = { 1, 2, 3 }, s2[16] = { 1, 2, 4 };
	uint64_t t = fab_token(s, 7, 0x1000, 4096);
	assert_true(t == fab_token(s, 7, 0x1000, 4096));
	assert_true(t != fab_token(s2, 7, 0x1000, 4096));
	assert_true(t != fab_token(s, 8, 0x1000, 4096));
	assert_true(t != fab_token(s, 7, 0x2000, 4096));
	assert_true(t != fab_token(s, 7, 0x1000, 8192));
}

/* ---- descriptors ---- */

static void make_desc(kvf_fabric_rdesc *d)
{
	memset(d, 0, sizeof(*d));
	for (int i = 0; i < 16; i++)
		d->node[i] = (uint8_t)(0xa0 + i);
	strcpy(d->name, "prefill-0");
	d->host.boot = 11;
	d->host.netns = 22;
	d->host.pidns = 33;
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	fab_addr_tcp_put(&w, "10.0.0.1:7800");
	d->addr[KVF_FABRIC_TCP].len = (uint16_t)(w.len - 4);
	memcpy(d->addr[KVF_FABRIC_TCP].b, w.buf + 4, w.len - 4);
	kvf_wire_writer_free(&w);
	d->region = 0x10005;
	d->mem = KVF_FABRIC_MEM_HOST;
	d->base = 0x7f0000000000ull;
	d->len = 1 << 20;
	d->key[KVF_FABRIC_OFI].present = 1;
	d->key[KVF_FABRIC_OFI].key = 0x1122334455667788ull;
	d->key[KVF_FABRIC_OFI].xlen = 3;
	memcpy(d->key[KVF_FABRIC_OFI].x, "abc", 3);
}

static void encode(const kvf_fabric_rdesc *d, uint32_t n, kvf_wire_writer *w)
{
	kvf_wire_writer_init(w, 0);
	fab_desc_put_head(w, d, n);
	for (uint32_t i = 0; i < n; i++)
		fab_desc_put_block(w, d->base + i * 4096, 4096, 1000 + i);
}

static void test_desc_roundtrip(void **state)
{
	kvf_fabric_rdesc d, e;
	make_desc(&d);
	kvf_wire_writer w;
	encode(&d, 3, &w);
	assert_int_equal(kvf_wire_writer_error(&w), 0);
	assert_int_equal(fab_desc_decode(w.buf, w.len, &e), 0);
	assert_memory_equal(e.node, d.node, 16);
	assert_string_equal(e.name, "prefill-0");
	assert_true(e.host.boot == 11 && e.host.netns == 22 && e.host.pidns == 33);
	assert_int_equal(e.region, 0x10005);
	assert_true(e.base == d.base && e.len == d.len);
	assert_int_equal(e.nblocks, 3);
	assert_true(e.blocks[2].addr == d.base + 8192 && e.blocks[2].len == 4096 && e.blocks[2].token == 1002);
	assert_true(e.key[KVF_FABRIC_OFI].present && e.key[KVF_FABRIC_OFI].key == 0x1122334455667788ull);
	assert_memory_equal(e.key[KVF_FABRIC_OFI].x, "abc", 3);
	assert_false(e.key[KVF_FABRIC_VERBS].present);
	char hp[64];
	assert_int_equal(fab_addr_tcp_parse(&e.addr[KVF_FABRIC_TCP], hp, sizeof(hp)), 0);
	assert_string_equal(hp, "10.0.0.1:7800");
	assert_int_equal(e.addr[KVF_FABRIC_SHM].len, 0);

	/* the public accessors over the same bytes */
	kvf_fabric_rdesc *p;
	assert_int_equal(kvf_fabric_desc_parse(w.buf, w.len, &p), 0);
	assert_int_equal(kvf_fabric_desc_nblocks(p), 3);
	assert_int_equal(kvf_fabric_desc_block_len(p, 1), 4096);
	assert_int_equal(kvf_fabric_desc_block_len(p, 3), 0);
	assert_string_equal(kvf_fabric_desc_node(p), "prefill-0");
	assert_int_equal(kvf_fabric_desc_mem(p), KVF_FABRIC_MEM_HOST);
	kvf_fabric_desc_free(p);
	kvf_fabric_desc_free(NULL);
	fab_desc_clear(&e);
	kvf_wire_writer_free(&w);
}

static void test_desc_rejects(void **state)
{
	kvf_fabric_rdesc d, e;
	make_desc(&d);
	kvf_wire_writer w;
	encode(&d, 2, &w);
	uint8_t *b = w.buf;
	size_t n = w.len;
	/* every truncation fails, never reads out of bounds */
	for (size_t k = 0; k < n; k++)
		assert_int_equal(fab_desc_decode(b, k, &e), KVF_E_PROTO);
	/* a trailing byte */
	uint8_t *x = test_malloc(n + 1);
	memcpy(x, b, n);
	x[n] = 0;
	assert_int_equal(fab_desc_decode(x, n + 1, &e), KVF_E_PROTO);
	/* magic, version */
	memcpy(x, b, n);
	x[0] = 'X';
	assert_int_equal(fab_desc_decode(x, n, &e), KVF_E_PROTO);
	memcpy(x, b, n);
	x[2] = 9;
	assert_int_equal(fab_desc_decode(x, n, &e), KVF_E_VERSION);
	test_free(x);
	kvf_wire_writer_free(&w);

	/* a block outside its region */
	kvf_wire_writer_init(&w, 0);
	fab_desc_put_head(&w, &d, 1);
	fab_desc_put_block(&w, d.base + d.len - 100, 200, 1);
	assert_int_equal(fab_desc_decode(w.buf, w.len, &e), KVF_E_PROTO);
	kvf_wire_writer_free(&w);
	/* wrapping block */
	kvf_wire_writer_init(&w, 0);
	fab_desc_put_head(&w, &d, 1);
	fab_desc_put_block(&w, UINT64_MAX - 10, 100, 1);
	assert_int_equal(fab_desc_decode(w.buf, w.len, &e), KVF_E_PROTO);
	kvf_wire_writer_free(&w);
	/* zero blocks */
	kvf_wire_writer_init(&w, 0);
	fab_desc_put_head(&w, &d, 0);
	assert_int_equal(fab_desc_decode(w.buf, w.len, &e), KVF_E_PROTO);
	kvf_wire_writer_free(&w);
	/* a count larger than the bytes that follow: refused before allocating */
	kvf_wire_writer_init(&w, 0);
	fab_desc_put_head(&w, &d, 1000000);
	fab_desc_put_block(&w, d.base, 10, 1);
	assert_int_equal(fab_desc_decode(w.buf, w.len, &e), KVF_E_PROTO);
	kvf_wire_writer_free(&w);
	/* unknown memory kind */
	d.mem = 7;
	encode(&d, 1, &w);
	assert_int_equal(fab_desc_decode(w.buf, w.len, &e), KVF_E_PROTO);
	kvf_wire_writer_free(&w);
}

static void test_addr_blobs(void **state)
{
	struct fab_taddr a;
	kvf_wire_writer w;
#define TAKE(w, a)                                                                 \
	do {                                                                       \
		(a).len = (uint16_t)((w).len - 4);                                   \
		memcpy((a).b, (w).buf + 4, (w).len - 4);                             \
		kvf_wire_writer_free(&(w));                                          \
	} while (0)
	char s[128];
	uint32_t pid;
	kvf_wire_writer_init(&w, 0);
	fab_addr_shm_put(&w, "kvf-fabric-00ff", 4242);
	TAKE(w, a);
	assert_int_equal(fab_addr_shm_parse(&a, s, sizeof(s), &pid), 0);
	assert_string_equal(s, "kvf-fabric-00ff");
	assert_int_equal(pid, 4242);
	a.len--;
	assert_int_equal(fab_addr_shm_parse(&a, s, sizeof(s), &pid), KVF_E_PROTO);

	kvf_wire_writer_init(&w, 0);
	fab_addr_ofi_put(&w, "tcp;ofi_rxm", 5, 1, "\x02\x00\x1f\x90", 4);
	TAKE(w, a);
	uint32_t fmt, alen;
	uint8_t virt;
	const uint8_t *raw;
	assert_int_equal(fab_addr_ofi_parse(&a, s, sizeof(s), &fmt, &virt, &raw, &alen), 0);
	assert_string_equal(s, "tcp;ofi_rxm");
	assert_int_equal(fmt, 5);
	assert_int_equal(virt, 1);
	assert_int_equal(alen, 4);
	assert_memory_equal(raw, "\x02\x00\x1f\x90", 4);

	struct fab_verbs_addr va = { 2, { "192.168.1.10:4791", "192.168.2.10:4792" } }, vb;
	kvf_wire_writer_init(&w, 0);
	fab_addr_verbs_put(&w, &va);
	TAKE(w, a);
	assert_int_equal(fab_addr_verbs_parse(&a, &vb), 0);
	assert_int_equal(vb.ndev, 2);
	assert_string_equal(vb.cm[1], "192.168.2.10:4792");
	a.b[0] = 0; /* zero devices */
	assert_int_equal(fab_addr_verbs_parse(&a, &vb), KVF_E_PROTO);
#undef TAKE
}

/* ---- config ---- */

static void test_config_defaults_match(void **state)
{
	kvf_config *cfg;
	kvf_fabric_opts a, b;
	memset(&a, 0, sizeof(a));
	kvf_fabric_opts_init(&b);
	assert_int_equal(kvf_config_new(&cfg), 0);
	assert_int_equal(kvf_config_add(cfg, &kvf_fabric_cfg_section, &a), 0);
	assert_int_equal(a.transport, b.transport);
	assert_true(a.timeout_ms == b.timeout_ms);
	assert_true(a.conns_per_peer == b.conns_per_peer);
	assert_true(a.tcp_chunk_bytes == b.tcp_chunk_bytes);
	assert_true(a.tcp_window == b.tcp_window);
	assert_true(a.cq_depth == b.cq_depth);
	assert_true(a.max_regions == b.max_regions);
	assert_int_equal(a.shm_process_vm, b.shm_process_vm);
	assert_true(a.shm_slice_bytes == b.shm_slice_bytes);
	assert_true(a.verbs_port == b.verbs_port);
	assert_true(a.verbs_sq_depth == b.verbs_sq_depth);
	assert_true(a.verbs_signal_every == b.verbs_signal_every);
	assert_true(a.verbs_max_chain == b.verbs_max_chain);
	assert_true(a.verbs_inline_bytes == b.verbs_inline_bytes);
	assert_true(a.cuda_device == b.cuda_device);
	assert_true(!a.ofi_provider || !a.ofi_provider[0]);

	assert_int_equal(kvf_config_load_string(cfg,
						"fabric = { transport = \"ofi\"; timeout_ms = \"250ms\"; "
						"conns_per_peer = 4; ofi_provider = \"tcp;ofi_rxm\"; };",
						"test"),
			 0);
	assert_int_equal(a.transport, KVF_FABRIC_OFI);
	assert_true(a.timeout_ms == 250);
	assert_true(a.conns_per_peer == 4);
	assert_string_equal(a.ofi_provider, "tcp;ofi_rxm");
	assert_int_equal(kvf_config_set(cfg, "fabric.transport=shm", "-o"), 0);
	assert_int_equal(a.transport, KVF_FABRIC_SHM);
	assert_true(kvf_config_set(cfg, "fabric.transport=carrier-pigeon", "-o") < 0);
	assert_true(kvf_config_set(cfg, "fabric.conns_per_peer=99", "-o") < 0);
	kvf_config_destroy(cfg);
	assert_string_equal(kvf_fabric_transport_name(KVF_FABRIC_CUDA_IPC), "cuda_ipc");
	assert_string_equal(kvf_fabric_transport_name(99), "?");
}

/* ---- tcp protocol ---- */

static void test_tcp_codecs(void **state)
{
	/* Field by field after a memset: the struct has padding after
	 * `region`, and the comparisons below are bytewise. */
	struct tcp_access a, b;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.region = 0x20003;
	a.addr = 0x7000;
	a.len = 512;
	a.blk_addr = 0x6000;
	a.blk_len = 8192;
	a.token = 0xdeadbeefcafef00dull;
	uint8_t buf[KVF_FRAME_HDR_LEN + TCP_CTRL_MAX];
	kvf_frame_decoder dec;
	kvf_frame_hdr h;
	kvf_frame_decoder_init(&dec, 1, 1);
	dec.max_frame = UINT32_MAX;

	assert_int_equal(tcp_enc_read(buf, 77, &a), TCP_REQ_HDR_MAX);
	assert_int_equal(kvf_frame_hdr_decode(&dec, buf, TCP_REQ_HDR_MAX, &h), 0);
	assert_int_equal(h.type, TCP_READ);
	assert_int_equal(h.request_id, 77);
	assert_int_equal(h.len, TCP_ACCESS_LEN);
	assert_int_equal(tcp_dec_access(buf + KVF_FRAME_HDR_LEN, TCP_ACCESS_LEN, &b), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(tcp_dec_access(buf + KVF_FRAME_HDR_LEN, TCP_ACCESS_LEN - 1, &b), KVF_E_PROTO);

	tcp_enc_write(buf, 78, &a);
	assert_int_equal(kvf_frame_hdr_decode(&dec, buf, TCP_REQ_HDR_MAX, &h), 0);
	assert_int_equal(h.type, TCP_WRITE);
	assert_int_equal(h.len, TCP_ACCESS_LEN + 512);

	uint8_t node[16] = { 9 }, expect[16] = { 8 }, n2[16], e2[16];
	char name[64];
	size_t n = tcp_enc_hello(buf, sizeof(buf), node, "decode-3", expect);
	assert_true(n > KVF_FRAME_HDR_LEN);
	assert_int_equal(tcp_dec_hello(buf + KVF_FRAME_HDR_LEN, n - KVF_FRAME_HDR_LEN, n2, name, sizeof(name), e2), 0);
	assert_memory_equal(n2, node, 16);
	assert_memory_equal(e2, expect, 16);
	assert_string_equal(name, "decode-3");

	n = tcp_enc_error(buf, sizeof(buf), 5, KVF_E_ACCESS, "bad access token");
	int code;
	char msg[64];
	assert_int_equal(tcp_dec_error(buf + KVF_FRAME_HDR_LEN, n - KVF_FRAME_HDR_LEN, &code, msg, sizeof(msg)), 0);
	assert_int_equal(code, KVF_E_ACCESS);
	assert_string_equal(msg, "bad access token");
	/* codes outside the table (or "success") come back as PROTO */
	n = tcp_enc_error(buf, sizeof(buf), 5, -12345, "x");
	assert_int_equal(tcp_dec_error(buf + KVF_FRAME_HDR_LEN, n - KVF_FRAME_HDR_LEN, &code, msg, sizeof(msg)), 0);
	assert_int_equal(code, KVF_E_PROTO);
	n = tcp_enc_error(buf, sizeof(buf), 5, 0, "x");
	assert_int_equal(tcp_dec_error(buf + KVF_FRAME_HDR_LEN, n - KVF_FRAME_HDR_LEN, &code, msg, sizeof(msg)), 0);
	assert_int_equal(code, KVF_E_PROTO);

	n = tcp_enc_notify(buf, sizeof(buf), 6, "done 42", 7);
	const uint8_t *m;
	uint32_t ml;
	assert_int_equal(tcp_dec_notify(buf + KVF_FRAME_HDR_LEN, n - KVF_FRAME_HDR_LEN, &m, &ml), 0);
	assert_int_equal(ml, 7);
	assert_memory_equal(m, "done 42", 7);

	struct tcp_attach_ok ok, ok2;
	memset(&ok, 0, sizeof(ok));
	ok.region = 3;
	ok.mem = KVF_FABRIC_MEM_HOST;
	ok.base = 0x1000;
	ok.len = 0x2000;
	memset(ok.secret, 0x5c, 16);
	ok.key[KVF_FABRIC_VERBS].present = 1;
	ok.key[KVF_FABRIC_VERBS].key = 77;
	ok.key[KVF_FABRIC_VERBS].xlen = 5;
	memcpy(ok.key[KVF_FABRIC_VERBS].x, "\x01\x4d\x00\x00\x00", 5);
	n = tcp_enc_attach_ok(buf, sizeof(buf), 9, &ok);
	assert_true(n > 0);
	assert_int_equal(tcp_dec_attach_ok(buf + KVF_FRAME_HDR_LEN, n - KVF_FRAME_HDR_LEN, &ok2), 0);
	assert_memory_equal(&ok.secret, &ok2.secret, 16);
	assert_true(ok2.base == 0x1000 && ok2.len == 0x2000 && ok2.region == 3);
	assert_true(ok2.key[KVF_FABRIC_VERBS].present && ok2.key[KVF_FABRIC_VERBS].key == 77);
	assert_false(ok2.key[KVF_FABRIC_OFI].present);
	n = tcp_enc_attach(buf, sizeof(buf), 10, 3, 0x1000, 4096, 99);
	assert_int_equal(tcp_dec_attach(buf + KVF_FRAME_HDR_LEN, n - KVF_FRAME_HDR_LEN, &b), 0);
	assert_true(b.region == 3 && b.blk_addr == 0x1000 && b.blk_len == 4096 && b.token == 99 && b.addr == 0x1000);
}

static void test_tcp_check_access(void **state)
{
	static uint8_t region[65536];
	uint8_t secret[16] = { 42 };
	uint64_t base = (uint64_t)(uintptr_t)region;
	uint32_t id = 0x10001;
	struct tcp_access a = { id, base + 4096 + 100, 200, base + 4096, 4096, fab_token(secret, id, base + 4096, 4096) };
	uint8_t *dst = NULL;
	char why[128];
	assert_int_equal(tcp_check_access(&a, id, region, sizeof(region), secret, &dst, why, sizeof(why)), 0);
	assert_ptr_equal(dst, region + 4096 + 100);

	struct tcp_access b = a;
	b.region = id + 1; /* another (or stale) region */
	assert_int_equal(tcp_check_access(&b, id, region, sizeof(region), secret, &dst, why, sizeof(why)), KVF_E_ACCESS);
	b = a;
	b.token ^= 1;
	assert_int_equal(tcp_check_access(&b, id, region, sizeof(region), secret, &dst, why, sizeof(why)), KVF_E_ACCESS);
	assert_non_null(strstr(why, "token"));
	b = a;
	b.len = 4000; /* past the block */
	assert_int_equal(tcp_check_access(&b, id, region, sizeof(region), secret, &dst, why, sizeof(why)), KVF_E_ACCESS);
	b = a;
	b.addr = base; /* before the block */
	assert_int_equal(tcp_check_access(&b, id, region, sizeof(region), secret, &dst, why, sizeof(why)), KVF_E_ACCESS);
	/* a block past the region, even with a token minted for it */
	b.blk_addr = base + 65536 - 1024;
	b.blk_len = 4096;
	b.addr = b.blk_addr;
	b.len = 100;
	b.token = fab_token(secret, id, b.blk_addr, b.blk_len);
	assert_int_equal(tcp_check_access(&b, id, region, sizeof(region), secret, &dst, why, sizeof(why)), KVF_E_ACCESS);
	/* values built to overflow 64-bit sums */
	b.blk_addr = UINT64_MAX - 10;
	b.blk_len = 100;
	b.addr = UINT64_MAX - 5;
	b.len = 50;
	assert_int_equal(tcp_check_access(&b, id, region, sizeof(region), secret, &dst, why, sizeof(why)), KVF_E_ACCESS);
	b = a;
	b.len = 0;
	assert_int_equal(tcp_check_access(&b, id, region, sizeof(region), secret, &dst, why, sizeof(why)), KVF_E_ACCESS);
}

/* A receiver that collects what it sees. */
struct rxlog {
	int hdrs, frames;
	uint8_t last_type;
	uint32_t last_prefix;
	uint8_t prefix[TCP_CTRL_MAX];
	uint8_t body[8192];
	int body_to_null;
};

static int lg_hdr(void *ud, const kvf_frame_hdr *h, uint32_t *need)
{
	struct rxlog *l = ud;
	l->hdrs++;
	if (h->type == 0x66)
		return KVF_E_PROTO;
	*need = h->type == TCP_WRITE ? TCP_ACCESS_LEN : (h->type == TCP_READ_DATA ? 0 : h->len);
	return 0;
}

static int lg_prefix(void *ud, const kvf_frame_hdr *h, const uint8_t *p, uint32_t n, uint8_t **dst)
{
	struct rxlog *l = ud;
	l->last_prefix = n;
	memcpy(l->prefix, p, n);
	*dst = l->body_to_null ? NULL : l->body;
	return 0;
}

static int lg_frame(void *ud, const kvf_frame_hdr *h)
{
	struct rxlog *l = ud;
	l->frames++;
	l->last_type = h->type;
	return 0;
}

static const struct tcp_rx_cb lg_cb = { lg_hdr, lg_prefix, lg_frame };

static void test_tcp_rx_stream(void **state)
{
	/* a WRITE with 3000 data bytes, then a NOTIFY, fed byte by byte */
	static uint8_t stream[4096];
	struct tcp_access a = { 1, 2, 3000, 2, 3000, 4 };
	size_t n = tcp_enc_write(stream, 1, &a);
	for (int i = 0; i < 3000; i++)
		stream[n + i] = (uint8_t)(i * 7);
	n += 3000;
	n += tcp_enc_notify(stream + n, sizeof(stream) - n, 2, "hi", 2);
	struct rxlog *l = test_calloc(1, sizeof(*l));
	struct tcp_rx rx;
	tcp_rx_init(&rx, &lg_cb, l);
	assert_true(tcp_rx_idle(&rx));
	for (size_t i = 0; i < n; i++)
		assert_int_equal(tcp_rx_feed(&rx, stream + i, 1), 0);
	assert_int_equal(l->frames, 2);
	assert_int_equal(l->last_type, TCP_NOTIFY);
	for (int i = 0; i < 3000; i++)
		assert_int_equal(l->body[i], (uint8_t)(i * 7));
	assert_true(tcp_rx_idle(&rx));

	/* direct receive: the body's remainder goes where tcp_rx_direct says */
	memset(l, 0, sizeof(*l));
	tcp_rx_init(&rx, &lg_cb, l);
	size_t hl = tcp_enc_write(stream, 1, &a);
	assert_int_equal(tcp_rx_feed(&rx, stream, hl + 1000), 0);
	uint8_t *dst;
	uint64_t left;
	assert_int_equal(tcp_rx_direct(&rx, &dst, &left), 1);
	assert_ptr_equal(dst, l->body + 1000);
	assert_true(left == 2000);
	memcpy(dst, stream + hl + 1000, 2000);
	assert_int_equal(tcp_rx_commit(&rx, 2000), 0);
	assert_int_equal(l->frames, 1);
	assert_int_equal(tcp_rx_direct(&rx, &dst, &left), 0);
	assert_int_equal(l->body[2999], (uint8_t)(2999 * 7));

	/* a discarded body (dst NULL) is consumed without being stored */
	memset(l, 0, sizeof(*l));
	l->body_to_null = 1;
	tcp_rx_init(&rx, &lg_cb, l);
	assert_int_equal(tcp_rx_feed(&rx, stream, hl + 3000), 0);
	assert_int_equal(l->frames, 1);
	assert_int_equal(l->body[0], 0);
	assert_int_equal(tcp_rx_direct(&rx, &dst, &left), 0);

	/* errors stick: bad magic, callback refusal, oversized prefix */
	tcp_rx_init(&rx, &lg_cb, l);
	assert_int_equal(tcp_rx_feed(&rx, (const uint8_t *)"GET / HTTP/1.1\r\n", 16), KVF_E_PROTO);
	assert_int_equal(tcp_rx_feed(&rx, stream, hl), KVF_E_PROTO);
	uint8_t hb[16];
	tcp_enc_hdr(hb, 0x66, 1, 0);
	tcp_rx_init(&rx, &lg_cb, l);
	assert_int_equal(tcp_rx_feed(&rx, hb, 16), KVF_E_PROTO);
	tcp_enc_hdr(hb, TCP_HELLO, 1, TCP_CTRL_MAX + 1);
	tcp_rx_init(&rx, &lg_cb, l);
	assert_int_equal(tcp_rx_feed(&rx, hb, 16), KVF_E_PROTO);
	test_free(l);
}

/* ---- verbs logic ---- */

static void test_vp_plan_signalling(void **state)
{
	struct vp_cfg c = { 1u << 20, 4, 3, 64, 0 };
	uint64_t lens[10];
	for (int i = 0; i < 10; i++)
		lens[i] = 4096;
	struct vp_cursor cur = { 0, 0, 0 };
	struct vp_wr w[32];
	size_t n = vp_plan(&c, lens, 10, &cur, w, 32);
	assert_int_equal(n, 10);
	assert_true(vp_done(&cur, 10));
	/* every third WR signaled, and the last one */
	for (size_t i = 0; i < n; i++)
		assert_int_equal(w[i].signaled, (i % 3 == 2) || i == 9);
	/* chains of 4 */
	for (size_t i = 0; i < n; i++)
		assert_int_equal(w[i].chain_end, (i % 4 == 3) || i == 9);
	/* reads are never inline */
	for (size_t i = 0; i < n; i++)
		assert_int_equal(w[i].inl, 0);
	assert_int_equal(vp_plan(&c, lens, 10, &cur, w, 32), 0);

	/* writes: inline up to the limit */
	c.is_write = 1;
	uint64_t l2[3] = { 64, 65, 10 };
	cur = (struct vp_cursor){ 0, 0, 0 };
	n = vp_plan(&c, l2, 3, &cur, w, 32);
	assert_int_equal(n, 3);
	assert_int_equal(w[0].inl, 1);
	assert_int_equal(w[1].inl, 0);
	assert_int_equal(w[2].inl, 1);

	/* splitting by max_msg, continuing across calls; every batch ends
	 * signaled so its send-queue slots come back */
	c.max_msg = 1000;
	c.is_write = 0;
	uint64_t l3[2] = { 2500, 1000 };
	cur = (struct vp_cursor){ 0, 0, 0 };
	n = vp_plan(&c, l3, 2, &cur, w, 2);
	assert_int_equal(n, 2);
	assert_true(w[0].op == 0 && w[0].off == 0 && w[0].len == 1000);
	assert_true(w[1].op == 0 && w[1].off == 1000 && w[1].len == 1000);
	assert_int_equal(w[1].signaled, 1);
	assert_int_equal(w[1].chain_end, 1);
	assert_false(vp_done(&cur, 2));
	n = vp_plan(&c, l3, 2, &cur, w, 8);
	assert_int_equal(n, 2);
	assert_true(w[0].op == 0 && w[0].off == 2000 && w[0].len == 500);
	assert_true(w[1].op == 1 && w[1].len == 1000 && w[1].signaled);
	assert_true(vp_done(&cur, 2));
	assert_int_equal(vp_plan(&c, l3, 2, &cur, w, 0), 0);
}

struct tagset {
	uint64_t tags[4];
	int n;
};

static void record_tag(void *ud, uint64_t tag)
{
	struct tagset *s = ud;
	s->tags[s->n++] = tag;
}

static void test_vp_ring_demux(void **state)
{
	struct vp_rec recs[8];
	struct vp_ring r;
	assert_int_equal(vp_ring_init(&r, 6, recs), -1); /* not a power of two */
	assert_int_equal(vp_ring_init(&r, 8, recs), 0);
	r.epoch = 5;
	/* request A: two groups of 3 WRs; request B: one group of 2 */
	int64_t a1 = vp_ring_open(&r, 0xA);
	for (int i = 0; i < 3; i++)
		vp_ring_add(&r, (uint32_t)a1, 100);
	vp_ring_close(&r, (uint32_t)a1);
	int64_t a2 = vp_ring_open(&r, 0xA);
	for (int i = 0; i < 3; i++)
		vp_ring_add(&r, (uint32_t)a2, 10);
	vp_ring_close(&r, (uint32_t)a2);
	int64_t b1 = vp_ring_open(&r, 0xB);
	vp_ring_add(&r, (uint32_t)b1, 7);
	vp_ring_add(&r, (uint32_t)b1, 7);
	vp_ring_close(&r, (uint32_t)b1);
	assert_int_equal(r.wrs, 8);

	struct vp_event e;
	assert_int_equal(vp_demux(&r, vp_wrid(&r, (uint32_t)a1), 1, &e), 1);
	assert_true(e.tag == 0xA && e.bytes == 300 && e.ok);
	assert_int_equal(r.wrs, 5); /* the group's slots came back */
	assert_int_equal(vp_demux(&r, vp_wrid(&r, (uint32_t)a2), 1, &e), 1);
	assert_true(e.bytes == 30);
	/* B fails: reported once, its other flushed WR adds nothing */
	assert_int_equal(vp_demux(&r, vp_wrid(&r, (uint32_t)b1), 0, &e), 1);
	assert_true(e.tag == 0xB && !e.ok);
	assert_int_equal(vp_demux(&r, vp_wrid(&r, (uint32_t)b1), 0, &e), -1); /* released */
	assert_int_equal(r.wrs, 0);
	/* completions of an older QP incarnation are not ours */
	assert_int_equal(vp_demux(&r, ((uint64_t)4 << 32) | 0, 1, &e), -1);

	/* fail_all: orphans posted groups, later completions report nothing */
	int64_t c1 = vp_ring_open(&r, 0xC);
	vp_ring_add(&r, (uint32_t)c1, 1);
	vp_ring_close(&r, (uint32_t)c1);
	int64_t d1 = vp_ring_open(&r, 0xD);
	vp_ring_add(&r, (uint32_t)d1, 1);
	vp_ring_close(&r, (uint32_t)d1);
	struct tagset seen = { { 0 }, 0 };
	vp_ring_fail_all(&r, record_tag, &seen);
	assert_int_equal(seen.n, 2);
	assert_true(seen.tags[0] == 0xC && seen.tags[1] == 0xD);
	assert_int_equal(vp_demux(&r, vp_wrid(&r, (uint32_t)c1), 0, &e), 0);
	assert_int_equal(vp_demux(&r, vp_wrid(&r, (uint32_t)d1), 1, &e), 0);
	assert_int_equal(r.wrs, 0);
	/* a full ring refuses to open */
	for (int i = 0; i < 8; i++)
		assert_true(vp_ring_open(&r, 1) >= 0);
	assert_int_equal(vp_ring_open(&r, 1), -1);
}

static void test_vcm_transitions(void **state)
{
	int a, s = VCM_IDLE;
	s = vcm_next(s, VCM_EV_START, &a);
	assert_int_equal(s, VCM_ADDR);
	assert_int_equal(a, VCM_DO_RESOLVE_ADDR);
	s = vcm_next(s, VCM_EV_START, &a); /* already under way */
	assert_int_equal(s, VCM_ADDR);
	assert_int_equal(a, VCM_DO_NOTHING);
	s = vcm_next(s, VCM_EV_ADDR_RESOLVED, &a);
	assert_int_equal(s, VCM_ROUTE);
	assert_int_equal(a, VCM_DO_RESOLVE_ROUTE);
	s = vcm_next(s, VCM_EV_ROUTE_RESOLVED, &a);
	assert_int_equal(s, VCM_CONNECTING);
	assert_int_equal(a, VCM_DO_CONNECT);
	s = vcm_next(s, VCM_EV_ESTABLISHED, &a);
	assert_int_equal(s, VCM_READY);
	assert_int_equal(a, VCM_DO_POST);
	s = vcm_next(s, VCM_EV_DISCONNECTED, &a);
	assert_int_equal(s, VCM_ERROR);
	assert_int_equal(a, VCM_DO_FAIL);
	s = vcm_next(s, VCM_EV_DISCONNECTED, &a); /* no double failure */
	assert_int_equal(a, VCM_DO_NOTHING);
	s = vcm_next(s, VCM_EV_START, &a); /* the next use reconnects */
	assert_int_equal(s, VCM_ADDR);
	assert_int_equal(a, VCM_DO_RESOLVE_ADDR);
	/* every failure event of every setup state fails the connection */
	int setup[] = { VCM_ADDR, VCM_ROUTE, VCM_CONNECTING };
	int bad[] = { VCM_EV_ADDR_ERROR, VCM_EV_ROUTE_ERROR, VCM_EV_UNREACHABLE, VCM_EV_REJECTED,
		      VCM_EV_CONNECT_ERROR, VCM_EV_TIMEOUT, VCM_EV_WC_ERROR };
	for (size_t i = 0; i < 3; i++)
		for (size_t j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
			assert_int_equal(vcm_next(setup[i], bad[j], &a), VCM_ERROR);
			assert_int_equal(a, VCM_DO_FAIL);
		}
	/* an out-of-order success is a failure too */
	assert_int_equal(vcm_next(VCM_ADDR, VCM_EV_ESTABLISHED, &a), VCM_ERROR);
	assert_int_equal(vcm_next(VCM_READY, VCM_EV_CLOSE, &a), VCM_CLOSED);
	assert_int_equal(a, VCM_DO_DESTROY);
	assert_int_equal(vcm_next(VCM_CLOSED, VCM_EV_START, &a), VCM_CLOSED);
	assert_string_equal(vcm_state_name(VCM_READY), "ready");
}

static void test_vp_stripe(void **state)
{
	uint64_t lens[9] = { 8, 1, 1, 1, 1, 1, 1, 1, 1 };
	uint32_t dev[9], scratch[9];
	vp_stripe(lens, 9, 2, dev, scratch);
	uint64_t load[2] = { 0, 0 };
	for (int i = 0; i < 9; i++) {
		assert_true(dev[i] < 2);
		load[dev[i]] += lens[i];
	}
	assert_true(load[0] == 8 && load[1] == 8);
	uint64_t eq[8] = { 4, 4, 4, 4, 4, 4, 4, 4 };
	vp_stripe(eq, 8, 4, dev, scratch);
	uint32_t cnt[4] = { 0 };
	for (int i = 0; i < 8; i++)
		cnt[dev[i]]++;
	for (int d = 0; d < 4; d++)
		assert_int_equal(cnt[d], 2);
	vp_stripe(eq, 8, 1, dev, scratch);
	for (int i = 0; i < 8; i++)
		assert_int_equal(dev[i], 0);
}

static void test_vp_rkeys(void **state)
{
	uint32_t k[3] = { 0x11223344, 0xdeadbeef, 7 }, o[8], n;
	uint8_t buf[32];
	size_t len = vp_pack_rkeys(k, 3, buf, sizeof(buf));
	assert_int_equal(len, 13);
	assert_int_equal(buf[1], 0x44); /* little-endian */
	assert_int_equal(vp_unpack_rkeys(buf, len, o, 8, &n), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(o, k, sizeof(k));
	assert_int_equal(vp_unpack_rkeys(buf, len - 1, o, 8, &n), -1);
	assert_int_equal(vp_unpack_rkeys(buf, len, o, 2, &n), -1);
	assert_int_equal(vp_pack_rkeys(k, 3, buf, 12), 0);
	assert_int_equal(vp_pack_rkeys(k, 0, buf, 32), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_siphash_vectors),	   cmocka_unit_test(test_token_binds_everything),
		cmocka_unit_test(test_desc_roundtrip),	   cmocka_unit_test(test_desc_rejects),
		cmocka_unit_test(test_addr_blobs),	   cmocka_unit_test(test_config_defaults_match),
		cmocka_unit_test(test_tcp_codecs),	   cmocka_unit_test(test_tcp_check_access),
		cmocka_unit_test(test_tcp_rx_stream),	   cmocka_unit_test(test_vp_plan_signalling),
		cmocka_unit_test(test_vp_ring_demux),	   cmocka_unit_test(test_vcm_transitions),
		cmocka_unit_test(test_vp_stripe),	   cmocka_unit_test(test_vp_rkeys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
