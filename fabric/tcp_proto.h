/*
 * tcp_proto.h: the tcp transport's wire protocol as pure functions: message
 * encoders and decoders, the target's access check, and a streaming
 * receiver that lets bodies land directly in their destination.
 * Private to fabric/ (transport_tcp.c, tests/fuzz/fuzz_fabric_tcp.c,
 * tests/unit/test_fabric.c). Wire format in docs/fabric.md.
 *
 * Frames are kvf_frame (16-byte header, version 1). A READ or WRITE request
 * carries a 44-byte access prefix; a WRITE's data follows the prefix inside
 * the same frame, a READ's data comes back as the whole payload of a
 * READ_DATA frame. Replies come in request order on each connection.
 */
#ifndef KVF_FABRIC_TCP_PROTO_H
#define KVF_FABRIC_TCP_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_frame.h"
#include "fabric/fabric_int.h"

#define TCP_PROTO_VERSION 1

enum tcp_msg {
	TCP_HELLO = 0x01,
	TCP_READ = 0x02,
	TCP_WRITE = 0x03,
	TCP_NOTIFY = 0x04,
	TCP_ATTACH = 0x05,
	TCP_HELLO_OK = 0x81,
	TCP_READ_DATA = 0x82,
	TCP_WRITE_OK = 0x83,
	TCP_NOTIFY_OK = 0x84,
	TCP_ATTACH_OK = 0x85,
	TCP_ERROR = 0x7f,
};

#define TCP_ACCESS_LEN 44          /* region u32, addr, len, blk_addr, blk_len, token u64 */
#define TCP_CTRL_MAX 2048          /* payload limit of control messages (HELLO, ATTACH_OK, ...) */
#define TCP_REQ_HDR_MAX (KVF_FRAME_HDR_LEN + TCP_ACCESS_LEN)
#define TCP_MAX_BODY (1ull << 30)  /* largest READ/WRITE chunk on the wire */

/* What a READ or WRITE asks for: [addr, addr+len) inside block
 * [blk_addr, blk_addr+blk_len) of region, whose token proves the block. */
struct tcp_access {
	uint32_t region;
	uint64_t addr, len;
	uint64_t blk_addr, blk_len;
	uint64_t token;
};

/* A READ request (header + prefix): returns the bytes written (60). */
size_t tcp_enc_read(uint8_t out[TCP_REQ_HDR_MAX], uint32_t rid, const struct tcp_access *a);
/* A WRITE request's header + prefix; a->len data bytes must follow. */
size_t tcp_enc_write(uint8_t out[TCP_REQ_HDR_MAX], uint32_t rid, const struct tcp_access *a);
/* A bare header (READ_DATA, WRITE_OK, NOTIFY_OK). */
size_t tcp_enc_hdr(uint8_t out[KVF_FRAME_HDR_LEN], uint8_t type, uint32_t rid, uint32_t len);
/* HELLO {node, name, expected target node (zeros: any)} */
size_t tcp_enc_hello(uint8_t *out, size_t cap, const uint8_t node[16], const char *name,
		     const uint8_t expect[16]);
/* HELLO_OK {node, name} */
size_t tcp_enc_hello_ok(uint8_t *out, size_t cap, uint32_t rid, const uint8_t node[16], const char *name);
/* NOTIFY {blob} */
size_t tcp_enc_notify(uint8_t *out, size_t cap, uint32_t rid, const void *msg, uint32_t len);
/* ERROR {i32 code, str message (truncated to fit)} */
size_t tcp_enc_error(uint8_t *out, size_t cap, uint32_t rid, int code, const char *msg);

/* ATTACH {u32 region, u64 blk_addr, u64 blk_len, u64 token}: asks the target
 * to vouch for a region (one-sided transports), proving one block's token. */
size_t tcp_enc_attach(uint8_t *out, size_t cap, uint32_t rid, uint32_t region, uint64_t blk_addr,
		      uint64_t blk_len, uint64_t token);

/* ATTACH_OK: what the target vouches for. */
struct tcp_attach_ok {
	uint32_t region;
	uint8_t mem;
	uint64_t base, len;
	uint8_t secret[16];          /* token secret: the initiator checks blocks with it */
	struct fab_tkey key[KVF_FABRIC_NTRANSPORTS]; /* the region's transport keys */
};
size_t tcp_enc_attach_ok(uint8_t *out, size_t cap, uint32_t rid, const struct tcp_attach_ok *a);

/* Decoders of the prefixes/payloads above; 0 or KVF_E_PROTO. */
int tcp_dec_attach(const uint8_t *p, size_t n, struct tcp_access *a);
int tcp_dec_attach_ok(const uint8_t *p, size_t n, struct tcp_attach_ok *a);
int tcp_dec_access(const uint8_t *p, size_t n, struct tcp_access *a);
int tcp_dec_hello(const uint8_t *p, size_t n, uint8_t node[16], char *name, size_t cap, uint8_t expect[16]);
int tcp_dec_hello_ok(const uint8_t *p, size_t n, uint8_t node[16], char *name, size_t cap);
int tcp_dec_notify(const uint8_t *p, size_t n, const uint8_t **msg, uint32_t *len);
/* *code is a negative KVF_E_* (codes outside the table become KVF_E_PROTO). */
int tcp_dec_error(const uint8_t *p, size_t n, int *code, char *msg, size_t cap);

/*
 * The target's check of a request against a live region (base, rlen, id,
 * secret): the block lies in the region, the range in the block, the token
 * matches the block. Returns 0 and *dst (where the range starts in memory),
 * or KVF_E_ACCESS with a reason in why.
 */
int tcp_check_access(const struct tcp_access *a, uint32_t region_id, const uint8_t *base, uint64_t rlen,
		     const uint8_t secret[16], uint8_t **dst, char *why, size_t cap);

/* ---- streaming receiver ---- */

struct tcp_rx_cb {
	/* Header decoded: how many payload bytes to collect as a prefix
	 * (<= TCP_CTRL_MAX, <= h->len); the rest is the body. <0 aborts. */
	int (*on_hdr)(void *ud, const kvf_frame_hdr *h, uint32_t *prefix_len);
	/* Prefix collected: *dst receives the body (NULL: discard it). <0 aborts. */
	int (*on_prefix)(void *ud, const kvf_frame_hdr *h, const uint8_t *prefix, uint32_t plen, uint8_t **dst);
	/* Frame complete. <0 aborts. */
	int (*on_frame)(void *ud, const kvf_frame_hdr *h);
};

enum { TCP_RX_HDR = 0, TCP_RX_PREFIX, TCP_RX_BODY };

struct tcp_rx {
	const struct tcp_rx_cb *cb;
	void *ud;
	kvf_frame_decoder dec;
	int state;
	int err; /* sticky */
	uint8_t hbuf[KVF_FRAME_HDR_LEN];
	uint32_t hgot;
	kvf_frame_hdr hdr;
	uint8_t pbuf[TCP_CTRL_MAX];
	uint32_t pneed, pgot;
	uint8_t *dst;
	uint64_t left;
};

void tcp_rx_init(struct tcp_rx *rx, const struct tcp_rx_cb *cb, void *ud);
/* Consumes all n bytes: 0, or the sticky error (the stream is dead). */
int tcp_rx_feed(struct tcp_rx *rx, const uint8_t *p, size_t n);
/* While a body with a destination is being received: 1 and where the
 * remaining *left bytes go (recv() there directly, then _commit). */
int tcp_rx_direct(const struct tcp_rx *rx, uint8_t **dst, uint64_t *left);
int tcp_rx_commit(struct tcp_rx *rx, size_t n);
/* Whether the stream stands between frames (a clean place for EOF). */
static inline int tcp_rx_idle(const struct tcp_rx *rx)
{
	return rx->state == TCP_RX_HDR && rx->hgot == 0;
}

#endif
