/*
 * tcp_proto.c: encoders, decoders, access check and streaming receiver of
 * the tcp transport (see tcp_proto.h). Pure: no sockets, no fabric state,
 * so the fuzz target drives exactly the code the transport runs.
 *
 * The receiver is a small state machine (header, prefix, body). Headers and
 * prefixes are copied into the receiver (at most 16 + 512 bytes); bodies go
 * straight to the destination the callback chose, either copied from the
 * caller's staging buffer or received there directly (tcp_rx_direct), so a
 * large block crosses user space once.
 */
#include "fabric/tcp_proto.h"

#include <stdio.h>
#include <string.h>

#include "common/kvf_err.h"
#include "common/kvf_wire.h"
#include "fabric/fabric_int.h"

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 4;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 8;
}

size_t tcp_enc_hdr(uint8_t out[KVF_FRAME_HDR_LEN], uint8_t type, uint32_t rid, uint32_t len)
{
	kvf_frame_hdr h = { TCP_PROTO_VERSION, type, 0, rid, len };
	kvf_frame_hdr_encode(&h, out);
	return KVF_FRAME_HDR_LEN;
}

static size_t enc_req(uint8_t *out, uint8_t type, uint32_t rid, const struct tcp_access *a, uint64_t plen)
{
	tcp_enc_hdr(out, type, rid, (uint32_t)plen);
	uint8_t *p = out + KVF_FRAME_HDR_LEN;
	p = put32(p, a->region);
	p = put64(p, a->addr);
	p = put64(p, a->len);
	p = put64(p, a->blk_addr);
	p = put64(p, a->blk_len);
	put64(p, a->token);
	return TCP_REQ_HDR_MAX;
}

size_t tcp_enc_read(uint8_t out[TCP_REQ_HDR_MAX], uint32_t rid, const struct tcp_access *a)
{
	return enc_req(out, TCP_READ, rid, a, TCP_ACCESS_LEN);
}

size_t tcp_enc_write(uint8_t out[TCP_REQ_HDR_MAX], uint32_t rid, const struct tcp_access *a)
{
	return enc_req(out, TCP_WRITE, rid, a, TCP_ACCESS_LEN + a->len);
}

/* Builds a control frame in a writer and copies it out (0 if it does not fit). */
static size_t finish_ctrl(kvf_wire_writer *w, size_t start, uint8_t *out, size_t cap)
{
	size_t n = 0;
	if (kvf_frame_end(w, start) == 0 && w->len <= cap && w->len - KVF_FRAME_HDR_LEN <= TCP_CTRL_MAX) {
		memcpy(out, w->buf, w->len);
		n = w->len;
	}
	kvf_wire_writer_free(w);
	return n;
}

size_t tcp_enc_hello(uint8_t *out, size_t cap, const uint8_t node[16], const char *name, const uint8_t expect[16])
{
	kvf_wire_writer w;
	size_t start;
	kvf_wire_writer_init(&w, KVF_FRAME_HDR_LEN + TCP_CTRL_MAX);
	kvf_frame_begin(&w, &(kvf_frame_hdr){ .version = TCP_PROTO_VERSION, .type = TCP_HELLO }, &start);
	kvf_wire_put_bytes(&w, node, 16);
	kvf_wire_put_str(&w, name);
	kvf_wire_put_bytes(&w, expect, 16);
	return finish_ctrl(&w, start, out, cap);
}

size_t tcp_enc_hello_ok(uint8_t *out, size_t cap, uint32_t rid, const uint8_t node[16], const char *name)
{
	kvf_wire_writer w;
	size_t start;
	kvf_wire_writer_init(&w, KVF_FRAME_HDR_LEN + TCP_CTRL_MAX);
	kvf_frame_begin(&w, &(kvf_frame_hdr){ .version = TCP_PROTO_VERSION, .type = TCP_HELLO_OK, .request_id = rid },
			&start);
	kvf_wire_put_bytes(&w, node, 16);
	kvf_wire_put_str(&w, name);
	return finish_ctrl(&w, start, out, cap);
}

size_t tcp_enc_notify(uint8_t *out, size_t cap, uint32_t rid, const void *msg, uint32_t len)
{
	kvf_wire_writer w;
	size_t start;
	kvf_wire_writer_init(&w, KVF_FRAME_HDR_LEN + TCP_CTRL_MAX);
	kvf_frame_begin(&w, &(kvf_frame_hdr){ .version = TCP_PROTO_VERSION, .type = TCP_NOTIFY, .request_id = rid },
			&start);
	kvf_wire_put_blob(&w, msg, len);
	return finish_ctrl(&w, start, out, cap);
}

size_t tcp_enc_error(uint8_t *out, size_t cap, uint32_t rid, int code, const char *msg)
{
	char m[256];
	snprintf(m, sizeof(m), "%s", msg ? msg : "");
	kvf_wire_writer w;
	size_t start;
	kvf_wire_writer_init(&w, KVF_FRAME_HDR_LEN + TCP_CTRL_MAX);
	kvf_frame_begin(&w, &(kvf_frame_hdr){ .version = TCP_PROTO_VERSION, .type = TCP_ERROR, .request_id = rid },
			&start);
	kvf_wire_put_u32(&w, (uint32_t)code);
	kvf_wire_put_str(&w, m);
	return finish_ctrl(&w, start, out, cap);
}

size_t tcp_enc_attach(uint8_t *out, size_t cap, uint32_t rid, uint32_t region, uint64_t blk_addr,
		      uint64_t blk_len, uint64_t token)
{
	kvf_wire_writer w;
	size_t start;
	kvf_wire_writer_init(&w, KVF_FRAME_HDR_LEN + TCP_CTRL_MAX);
	kvf_frame_begin(&w, &(kvf_frame_hdr){ .version = TCP_PROTO_VERSION, .type = TCP_ATTACH, .request_id = rid },
			&start);
	kvf_wire_put_u32(&w, region);
	kvf_wire_put_u64(&w, blk_addr);
	kvf_wire_put_u64(&w, blk_len);
	kvf_wire_put_u64(&w, token);
	return finish_ctrl(&w, start, out, cap);
}

size_t tcp_enc_attach_ok(uint8_t *out, size_t cap, uint32_t rid, const struct tcp_attach_ok *a)
{
	kvf_wire_writer w;
	size_t start;
	kvf_wire_writer_init(&w, KVF_FRAME_HDR_LEN + TCP_CTRL_MAX);
	kvf_frame_begin(&w, &(kvf_frame_hdr){ .version = TCP_PROTO_VERSION, .type = TCP_ATTACH_OK, .request_id = rid },
			&start);
	kvf_wire_put_u32(&w, a->region);
	kvf_wire_put_u8(&w, a->mem);
	kvf_wire_put_u64(&w, a->base);
	kvf_wire_put_u64(&w, a->len);
	kvf_wire_put_bytes(&w, a->secret, 16);
	uint8_t n = 0;
	for (int t = 1; t < KVF_FABRIC_NTRANSPORTS; t++)
		n += a->key[t].present;
	kvf_wire_put_u8(&w, n);
	for (int t = 1; t < KVF_FABRIC_NTRANSPORTS; t++) {
		if (!a->key[t].present)
			continue;
		kvf_wire_put_u8(&w, (uint8_t)t);
		kvf_wire_put_u64(&w, a->key[t].key);
		kvf_wire_put_blob(&w, a->key[t].x, a->key[t].xlen);
	}
	return finish_ctrl(&w, start, out, cap);
}

int tcp_dec_attach(const uint8_t *p, size_t n, struct tcp_access *a)
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, p, n);
	a->region = kvf_wire_get_u32(&r);
	a->blk_addr = kvf_wire_get_u64(&r);
	a->blk_len = kvf_wire_get_u64(&r);
	a->token = kvf_wire_get_u64(&r);
	a->addr = a->blk_addr;
	a->len = a->blk_len;
	return kvf_wire_reader_done(&r) < 0 ? KVF_E_PROTO : 0;
}

int tcp_dec_attach_ok(const uint8_t *p, size_t n, struct tcp_attach_ok *a)
{
	kvf_wire_reader r;
	memset(a, 0, sizeof(*a));
	kvf_wire_reader_init(&r, p, n);
	a->region = kvf_wire_get_u32(&r);
	a->mem = kvf_wire_get_u8(&r);
	a->base = kvf_wire_get_u64(&r);
	a->len = kvf_wire_get_u64(&r);
	kvf_wire_get_bytes(&r, a->secret, 16);
	uint8_t nk = kvf_wire_get_u8(&r);
	for (unsigned i = 0; i < nk && !kvf_wire_reader_error(&r); i++) {
		uint8_t t = kvf_wire_get_u8(&r);
		uint64_t key = kvf_wire_get_u64(&r);
		uint32_t xlen;
		const uint8_t *x = kvf_wire_get_blob(&r, &xlen);
		if (kvf_wire_reader_error(&r))
			break;
		if (t == 0 || t >= KVF_FABRIC_NTRANSPORTS || a->key[t].present || xlen > FAB_KEYX_MAX)
			return KVF_E_PROTO;
		a->key[t].present = 1;
		a->key[t].key = key;
		a->key[t].xlen = (uint16_t)xlen;
		memcpy(a->key[t].x, x, xlen);
	}
	if (kvf_wire_reader_done(&r) < 0 || a->len == 0 || a->base + a->len < a->base ||
	    (a->mem != KVF_FABRIC_MEM_HOST && a->mem != KVF_FABRIC_MEM_CUDA))
		return KVF_E_PROTO;
	return 0;
}

int tcp_dec_access(const uint8_t *p, size_t n, struct tcp_access *a)
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, p, n);
	a->region = kvf_wire_get_u32(&r);
	a->addr = kvf_wire_get_u64(&r);
	a->len = kvf_wire_get_u64(&r);
	a->blk_addr = kvf_wire_get_u64(&r);
	a->blk_len = kvf_wire_get_u64(&r);
	a->token = kvf_wire_get_u64(&r);
	return kvf_wire_reader_done(&r) < 0 ? KVF_E_PROTO : 0;
}

int tcp_dec_hello(const uint8_t *p, size_t n, uint8_t node[16], char *name, size_t cap, uint8_t expect[16])
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, p, n);
	kvf_wire_get_bytes(&r, node, 16);
	kvf_wire_get_str(&r, name, cap);
	kvf_wire_get_bytes(&r, expect, 16);
	return kvf_wire_reader_done(&r) < 0 ? KVF_E_PROTO : 0;
}

int tcp_dec_hello_ok(const uint8_t *p, size_t n, uint8_t node[16], char *name, size_t cap)
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, p, n);
	kvf_wire_get_bytes(&r, node, 16);
	kvf_wire_get_str(&r, name, cap);
	return kvf_wire_reader_done(&r) < 0 ? KVF_E_PROTO : 0;
}

int tcp_dec_notify(const uint8_t *p, size_t n, const uint8_t **msg, uint32_t *len)
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, p, n);
	*msg = kvf_wire_get_blob(&r, len);
	if (kvf_wire_reader_done(&r) < 0 || *len > KVF_FABRIC_NOTIF_MAX)
		return KVF_E_PROTO;
	return 0;
}

int tcp_dec_error(const uint8_t *p, size_t n, int *code, char *msg, size_t cap)
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, p, n);
	int32_t c = (int32_t)kvf_wire_get_u32(&r);
	kvf_wire_get_str(&r, msg, cap);
	if (kvf_wire_reader_done(&r) < 0)
		return KVF_E_PROTO;
	/* only codes of the table, and never "success" */
	*code = (c < 0 && strcmp(kvf_errname(c), "UNKNOWN") != 0) ? c : KVF_E_PROTO;
	return 0;
}

int tcp_check_access(const struct tcp_access *a, uint32_t region_id, const uint8_t *base, uint64_t rlen,
		     const uint8_t secret[16], uint8_t **dst, char *why, size_t cap)
{
	uint64_t b = (uint64_t)(uintptr_t)base;
	if (a->region != region_id) {
		snprintf(why, cap, "region %u is not registered", a->region);
		return KVF_E_ACCESS;
	}
	if (a->blk_len == 0 || a->blk_addr < b || a->blk_len > rlen || a->blk_addr - b > rlen - a->blk_len) {
		snprintf(why, cap, "block outside region %u", a->region);
		return KVF_E_ACCESS;
	}
	if (a->len == 0 || a->addr < a->blk_addr || a->len > a->blk_len ||
	    a->addr - a->blk_addr > a->blk_len - a->len) {
		snprintf(why, cap, "range outside its block");
		return KVF_E_ACCESS;
	}
	if (fab_token(secret, region_id, a->blk_addr, a->blk_len) != a->token) {
		snprintf(why, cap, "bad access token for region %u", a->region);
		return KVF_E_ACCESS;
	}
	*dst = (uint8_t *)base + (a->addr - b);
	return 0;
}

/* ---- receiver ---- */

void tcp_rx_init(struct tcp_rx *rx, const struct tcp_rx_cb *cb, void *ud)
{
	memset(rx, 0, sizeof(*rx));
	rx->cb = cb;
	rx->ud = ud;
	kvf_frame_decoder_init(&rx->dec, TCP_PROTO_VERSION, TCP_PROTO_VERSION);
	rx->dec.max_frame = UINT32_MAX;
}

static int rx_fail(struct tcp_rx *rx, int rc)
{
	if (!rx->err)
		rx->err = rc < 0 ? rc : KVF_E_PROTO;
	return rx->err;
}

/* Body finished (or empty): back to headers. */
static int rx_end_frame(struct tcp_rx *rx)
{
	rx->state = TCP_RX_HDR;
	rx->hgot = 0;
	int rc = rx->cb->on_frame(rx->ud, &rx->hdr);
	return rc < 0 ? rx_fail(rx, rc) : 0;
}

static int rx_start_body(struct tcp_rx *rx)
{
	uint8_t *dst = NULL;
	int rc = rx->cb->on_prefix(rx->ud, &rx->hdr, rx->pbuf, rx->pneed, &dst);
	if (rc < 0)
		return rx_fail(rx, rc);
	rx->dst = dst;
	rx->left = (uint64_t)rx->hdr.len - rx->pneed;
	rx->state = TCP_RX_BODY;
	if (rx->left == 0)
		return rx_end_frame(rx);
	return 0;
}

int tcp_rx_feed(struct tcp_rx *rx, const uint8_t *p, size_t n)
{
	while (n > 0 && !rx->err) {
		switch (rx->state) {
		case TCP_RX_HDR: {
			size_t take = KVF_FRAME_HDR_LEN - rx->hgot;
			if (take > n)
				take = n;
			memcpy(rx->hbuf + rx->hgot, p, take);
			rx->hgot += (uint32_t)take;
			p += take;
			n -= take;
			int rc = kvf_frame_hdr_decode(&rx->dec, rx->hbuf, rx->hgot, &rx->hdr);
			if (rc == KVF_E_AGAIN)
				break;
			if (rc < 0)
				return rx_fail(rx, rc);
			uint32_t need = 0;
			rc = rx->cb->on_hdr(rx->ud, &rx->hdr, &need);
			if (rc < 0)
				return rx_fail(rx, rc);
			if (need > TCP_CTRL_MAX || need > rx->hdr.len)
				return rx_fail(rx, KVF_E_PROTO);
			rx->pneed = need;
			rx->pgot = 0;
			rx->state = TCP_RX_PREFIX;
			if (need == 0 && rx_start_body(rx) < 0)
				return rx->err;
			break;
		}
		case TCP_RX_PREFIX: {
			size_t take = rx->pneed - rx->pgot;
			if (take > n)
				take = n;
			memcpy(rx->pbuf + rx->pgot, p, take);
			rx->pgot += (uint32_t)take;
			p += take;
			n -= take;
			if (rx->pgot == rx->pneed && rx_start_body(rx) < 0)
				return rx->err;
			break;
		}
		case TCP_RX_BODY: {
			size_t take = rx->left < n ? (size_t)rx->left : n;
			if (rx->dst) {
				memcpy(rx->dst, p, take);
				rx->dst += take;
			}
			rx->left -= take;
			p += take;
			n -= take;
			if (rx->left == 0 && rx_end_frame(rx) < 0)
				return rx->err;
			break;
		}
		}
	}
	return rx->err;
}

int tcp_rx_direct(const struct tcp_rx *rx, uint8_t **dst, uint64_t *left)
{
	if (rx->err || rx->state != TCP_RX_BODY || !rx->dst || rx->left == 0)
		return 0;
	*dst = rx->dst;
	*left = rx->left;
	return 1;
}

int tcp_rx_commit(struct tcp_rx *rx, size_t n)
{
	if (rx->err)
		return rx->err;
	if (rx->state != TCP_RX_BODY || n > rx->left)
		return rx_fail(rx, KVF_E_INTERNAL);
	rx->dst += n;
	rx->left -= n;
	if (rx->left == 0)
		return rx_end_frame(rx);
	return 0;
}
