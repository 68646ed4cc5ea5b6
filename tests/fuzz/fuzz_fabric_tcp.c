/*
 * fuzz_fabric_tcp.c: arbitrary bytes as a tcp transport stream, through the
 * same receiver and checks the transport's target side runs (tcp_proto.c).
 *
 * Byte 0 seeds the chunking; the rest is the stream, fed in pseudo-random
 * chunks, with large bodies taken through tcp_rx_direct/_commit like the
 * transport does after a recv(). A consumer modelled on the target decodes
 * every prefix (READ/WRITE access, HELLO, NOTIFY, ATTACH, and the replies
 * ATTACH_OK and ERROR), checks access against a 64 KiB region with a known
 * secret, and lets WRITE bodies land only where the check allowed: ASan
 * catches any write outside the region, and a body that lands after a
 * refused check aborts. The stream is decoded a second time in one piece:
 * both passes must see the same frames.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_err.h"
#include "fabric/fabric_int.h"
#include "fabric/tcp_proto.h"

#define REGION 65536

static uint8_t region[REGION];
static const uint8_t secret[16] = { 's', 'e', 'c', 'r', 'e', 't' };
#define REGION_ID 0x10001u

/* Inputs name addresses as offsets into the region (the corpus cannot know
 * where the region lands in memory): shift them to real addresses, and
 * re-mint a token that is valid for the offsets so valid requests reach the
 * success path of the real check. */
static void relocate(struct tcp_access *a)
{
	uint64_t base = (uint64_t)(uintptr_t)region;
	int valid = a->token == fab_token(secret, a->region, a->blk_addr, a->blk_len);
	a->addr += base;
	a->blk_addr += base;
	if (valid)
		a->token = fab_token(secret, a->region, a->blk_addr, a->blk_len);
}

struct consumer {
	int frames;
	uint64_t sum;
	uint8_t *allowed;  /* where a WRITE body may land, or NULL */
	uint64_t allowed_len;
};

static int c_hdr(void *ud, const kvf_frame_hdr *h, uint32_t *need)
{
	switch (h->type) {
	case TCP_READ:
		if (h->len != TCP_ACCESS_LEN)
			return KVF_E_PROTO;
		*need = TCP_ACCESS_LEN;
		return 0;
	case TCP_WRITE:
		if (h->len < TCP_ACCESS_LEN)
			return KVF_E_PROTO;
		*need = TCP_ACCESS_LEN;
		return 0;
	case TCP_READ_DATA:
		*need = 0;
		return 0;
	case TCP_HELLO:
	case TCP_NOTIFY:
	case TCP_ATTACH:
	case TCP_ATTACH_OK:
	case TCP_HELLO_OK:
	case TCP_ERROR:
	case TCP_WRITE_OK:
	case TCP_NOTIFY_OK:
		if (h->len > TCP_CTRL_MAX)
			return KVF_E_PROTO;
		*need = h->len;
		return 0;
	}
	return KVF_E_PROTO;
}

static int c_prefix(void *ud, const kvf_frame_hdr *h, const uint8_t *p, uint32_t n, uint8_t **dst)
{
	struct consumer *c = ud;
	struct tcp_access a;
	uint8_t node[16], expect[16], *where;
	char name[64], why[128], msg[256];
	const uint8_t *m;
	uint32_t ml;
	int code;
	struct tcp_attach_ok ok;
	c->allowed = NULL;
	*dst = NULL;
	switch (h->type) {
	case TCP_READ:
	case TCP_WRITE:
		if (tcp_dec_access(p, n, &a) < 0)
			return KVF_E_PROTO;
		relocate(&a);
		if (tcp_check_access(&a, REGION_ID, region, REGION, secret, &where, why, sizeof(why)) == 0) {
			if (where < region || where + a.len > region + REGION)
				abort(); /* the check let a range out */
			if (h->type == TCP_WRITE && a.len == h->len - TCP_ACCESS_LEN) {
				*dst = where;
				c->allowed = where;
				c->allowed_len = a.len;
			}
		}
		return 0;
	case TCP_HELLO:
		(void)tcp_dec_hello(p, n, node, name, sizeof(name), expect);
		return 0;
	case TCP_HELLO_OK:
		(void)tcp_dec_hello_ok(p, n, node, name, sizeof(name));
		return 0;
	case TCP_NOTIFY:
		if (tcp_dec_notify(p, n, &m, &ml) == 0 && (m < p || m + ml > p + n))
			abort();
		return 0;
	case TCP_ATTACH:
		if (tcp_dec_attach(p, n, &a) == 0 && (relocate(&a), 1))
			(void)tcp_check_access(&a, REGION_ID, region, REGION, secret, &where, why, sizeof(why));
		return 0;
	case TCP_ATTACH_OK:
		(void)tcp_dec_attach_ok(p, n, &ok);
		return 0;
	case TCP_ERROR:
		if (tcp_dec_error(p, n, &code, msg, sizeof(msg)) == 0 && code >= 0)
			abort();
		return 0;
	}
	return 0;
}

static int c_frame(void *ud, const kvf_frame_hdr *h)
{
	struct consumer *c = ud;
	c->frames++;
	c->sum = c->sum * 31 + h->type + h->len + h->request_id;
	return 0;
}

static const struct tcp_rx_cb cb = { c_hdr, c_prefix, c_frame };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint32_t seed = data[0] | 1u;
	data++;
	size--;
	/* pass 1: pseudo-random chunks, direct receive for bodies */
	struct consumer c1 = { 0, 0, NULL, 0 };
	struct tcp_rx rx;
	tcp_rx_init(&rx, &cb, &c1);
	size_t off = 0;
	int rc1 = 0;
	while (off < size && rc1 == 0) {
		uint8_t *dst;
		uint64_t left;
		seed = seed * 1103515245u + 12345u;
		size_t chunk = 1 + (seed >> 16) % 97;
		if (chunk > size - off)
			chunk = size - off;
		if (tcp_rx_direct(&rx, &dst, &left)) {
			if (!c1.allowed || dst < c1.allowed || dst + left > c1.allowed + c1.allowed_len)
				abort(); /* a body headed somewhere the check did not allow */
			size_t n = left < chunk ? (size_t)left : chunk;
			memcpy(dst, data + off, n);
			rc1 = tcp_rx_commit(&rx, n);
			off += n;
		} else {
			rc1 = tcp_rx_feed(&rx, data + off, chunk);
			off += chunk;
		}
	}
	/* pass 2: in one piece */
	struct consumer c2 = { 0, 0, NULL, 0 };
	tcp_rx_init(&rx, &cb, &c2);
	int rc2 = tcp_rx_feed(&rx, data, size);
	if ((rc1 == 0) != (rc2 == 0) || c1.frames != c2.frames || c1.sum != c2.sum)
		abort();
	return 0;
}
