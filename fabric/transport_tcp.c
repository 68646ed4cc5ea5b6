/*
 * transport_tcp.c: the tcp transport, our own protocol over kernel TCP
 * (tcp_proto.h, docs/fabric.md), and the control channel of every peer.
 *
 * Initiator: per peer, conns_per_peer non-blocking connections (one when
 * the peer is only reached over tcp for notifications and liveness). Ops are
 * cut into chunks of tcp_chunk_bytes and spread over the connections with
 * the fewest bytes outstanding, at most tcp_window chunks per connection.
 * Requests are pipelined behind the HELLO; replies come in order per
 * connection, so outstanding chunks are a FIFO matched by request id.
 * WRITE data is sent with sendmsg() straight from the caller's registered
 * memory; READ data is received straight into it once a body is large
 * (>= TCP_DIRECT_MIN), smaller bodies are copied out of a staging buffer
 * that batches many small frames per recv().
 *
 * Target: each accepted connection checks every request against the live
 * region (tcp_check_access: bounds, block, token) before touching memory;
 * a WRITE that fails the check has its data discarded. READ_DATA is sent
 * from the region itself, holding the region's in-flight count until the
 * bytes are in the kernel, so deregistration waits for it (KVF_E_BUSY).
 *
 * Errors found inside callbacks never free a connection on the spot: the
 * connection is marked dead and a zero-delay timer reaps it (and fails the
 * peer) from the top of the loop.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_net.h"
#include "fabric/fabric_int.h"
#include "fabric/tcp_proto.h"

#define TCP_STAGE (256u << 10)
#define TCP_DIRECT_MIN (32u << 10)
#define TCP_MAX_CONNS 16
#define TCP_SERVER_TX 1100       /* > the largest window a client may use */
#define TCP_IOV 64
#define TCP_RECV_BUDGET (16u << 20) /* bytes per readable event before yielding */

enum { ROLE_INIT = 0, ROLE_TARGET };
enum { C_CONNECTING = 0, C_OPEN, C_DEAD };

struct tcp_tx {
	uint8_t hdr[TCP_REQ_HDR_MAX]; /* request headers; control frames use big */
	uint8_t *big;                 /* kvf_malloc'd control frame, or NULL */
	uint32_t hlen;
	const uint8_t *data;
	uint64_t dlen;
	uint64_t off;        /* bytes of hdr+data already sent */
	fab_region *hold;    /* target: region pinned until sent */
	uint8_t close_after; /* target: close once this is sent (fatal ERROR) */
	uint8_t served_op;
};

struct tcp_chunk {
	struct fab_req *req; /* NULL: HELLO or ATTACH */
	struct fab_attach *att; /* ATTACH */
	uint32_t rid;
	uint8_t type;        /* TCP_READ, TCP_WRITE, TCP_NOTIFY, TCP_HELLO */
	uint8_t *local;
	uint64_t len;
};

struct tcp_tp;
struct tcp_peer;

struct tcp_conn {
	struct tcp_tp *tp;
	struct tcp_peer *tpeer; /* initiator */
	struct tcp_conn *next;  /* target list / reap list */
	int fd;
	int role;
	int state;
	int err;
	char why[160];
	unsigned ev;
	int reaping;
	struct tcp_rx rx;
	uint8_t *stage;
	/* tx ring */
	struct tcp_tx *tx;
	uint32_t tx_cap, tx_head, tx_n;
	/* initiator: outstanding chunks, FIFO */
	struct tcp_chunk *ch;
	uint32_t ch_cap, ch_head, ch_n;
	uint64_t ch_bytes;
	uint32_t next_rid;
	/* target: who is on the other side */
	int hello_done;
	uint8_t pnode[16];
	char pname[FAB_NAME_MAX];
	char addr[64];
	/* scratch for the current frame */
	struct tcp_access acc;
	int acc_rc;
	char acc_why[128];
	uint8_t *acc_dst;
	fab_region *acc_reg;
	int closing; /* target: a fatal error reply is queued; discard the rest */
	int big;     /* the last body was received directly: read only the next
		      * header, so the next large body is not half-staged and copied */
};

struct tcp_peer {
	struct fab_peer *p;
	struct tcp_conn *conns[TCP_MAX_CONNS];
	int want;            /* connections wanted: 1 (control) or conns_per_peer */
	struct fab_rq q;     /* data requests with ops left to issue */
	struct fab_rq nq;    /* notifies to send */
	struct fab_attach *aq_head, *aq_tail; /* ATTACHes to send */
	char hostport[KVF_NET_HOST_MAX + 8];
	int connected_once;
};

struct tcp_tp {
	kvf_fabric *f;
	int lfd;
	uint16_t port;
	char adv[KVF_NET_HOST_MAX + 8];
	struct tcp_conn *servers;
	struct tcp_conn *reap;
	kvf_timer reap_timer;
	uint64_t chunk;
	uint32_t window;
};

static void conn_update_events(struct tcp_conn *c);
static void conn_flush(struct tcp_conn *c);
static void tcp_pump(struct tcp_tp *tp, struct tcp_peer *tpp);
static void reap_cb(kvf_loop *loop, kvf_timer *t, void *ud);

/* ---- connection basics ---- */

static void conn_die(struct tcp_conn *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conn_die(struct tcp_conn *c, int err, const char *fmt, ...)
{
	if (c->state == C_DEAD)
		return;
	c->state = C_DEAD;
	c->err = err;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
	if (!c->reaping) {
		c->reaping = 1;
		if (c->role == ROLE_TARGET) { /* leave the servers list first: next is shared */
			for (struct tcp_conn **pp = &c->tp->servers; *pp; pp = &(*pp)->next) {
				if (*pp == c) {
					*pp = c->next;
					break;
				}
			}
		}
		c->next = c->tp->reap;
		c->tp->reap = c;
		if (!kvf_timer_armed(&c->tp->reap_timer))
			kvf_loop_timer_start(fab_loop(c->tp->f), &c->tp->reap_timer, 0, 0, reap_cb, c->tp);
	}
}

/* Takes c off the reap list (it is about to be freed elsewhere). */
static void reap_unlink(struct tcp_tp *tp, struct tcp_conn *c)
{
	if (!c->reaping)
		return;
	for (struct tcp_conn **pp = &tp->reap; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	c->reaping = 0;
}

static void tx_release(struct tcp_conn *c, struct tcp_tx *t, int sent)
{
	kvf_free(t->big);
	t->big = NULL;
	if (t->hold) {
		if (sent)
			fab_served(c->tp->f, KVF_FABRIC_TCP, t->served_op, t->dlen);
		atomic_fetch_sub_explicit(&t->hold->inflight, 1, memory_order_release);
		t->hold = NULL;
	}
}

/* Frees a connection; fails its chunks with err (initiator). */
static void conn_free(struct tcp_conn *c, int err, const char *why)
{
	if (c->fd >= 0) {
		kvf_loop_del_fd(fab_loop(c->tp->f), c->fd);
		close(c->fd);
		c->fd = -1;
	}
	while (c->tx_n) {
		tx_release(c, &c->tx[c->tx_head], 0);
		c->tx_head = (c->tx_head + 1) % c->tx_cap;
		c->tx_n--;
	}
	while (c->ch_n) {
		struct tcp_chunk *k = &c->ch[c->ch_head];
		c->ch_head = (c->ch_head + 1) % c->ch_cap;
		c->ch_n--;
		if (k->req)
			fab_req_unit_done(k->req, 0, err, why);
	}
	kvf_free(c->stage);
	kvf_free(c->tx);
	kvf_free(c->ch);
	kvf_free(c);
}

static struct tcp_conn *conn_new(struct tcp_tp *tp, int fd, int role)
{
	struct tcp_conn *c = kvf_calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->tp = tp;
	c->fd = fd;
	c->role = role;
	c->tx_cap = role == ROLE_TARGET ? TCP_SERVER_TX : tp->window + 8;
	c->ch_cap = role == ROLE_TARGET ? 1 : tp->window + 8;
	c->stage = kvf_malloc(TCP_STAGE);
	c->tx = kvf_calloc(c->tx_cap, sizeof(*c->tx));
	c->ch = kvf_calloc(c->ch_cap, sizeof(*c->ch));
	c->next_rid = 1;
	if (!c->stage || !c->tx || !c->ch) {
		kvf_free(c->stage);
		kvf_free(c->tx);
		kvf_free(c->ch);
		kvf_free(c);
		return NULL;
	}
	return c;
}

static struct tcp_tx *tx_push(struct tcp_conn *c)
{
	if (c->tx_n == c->tx_cap)
		return NULL;
	struct tcp_tx *t = &c->tx[(c->tx_head + c->tx_n) % c->tx_cap];
	c->tx_n++;
	t->hlen = 0;
	t->data = NULL;
	t->dlen = 0;
	t->off = 0;
	t->hold = NULL;
	t->big = NULL;
	t->close_after = 0;
	return t;
}

/* Room for a control frame (HELLO, ERROR, NOTIFY...) of up to
 * KVF_FRAME_HDR_LEN + TCP_CTRL_MAX bytes in t; NULL when out of memory. */
static uint8_t *tx_ctrl(struct tcp_tx *t, size_t *cap)
{
	t->big = kvf_malloc(KVF_FRAME_HDR_LEN + TCP_CTRL_MAX);
	*cap = KVF_FRAME_HDR_LEN + TCP_CTRL_MAX;
	return t->big;
}

/* Drops the item just pushed (its frame could not be built). */
static void tx_unpush(struct tcp_conn *c)
{
	struct tcp_tx *t = &c->tx[(c->tx_head + c->tx_n - 1) % c->tx_cap];
	kvf_free(t->big);
	t->big = NULL;
	c->tx_n--;
}

/* Writes as much of the tx ring as the socket takes. */
static void conn_flush(struct tcp_conn *c)
{
	while (c->tx_n && c->state == C_OPEN) {
		struct iovec iov[TCP_IOV];
		int n = 0;
		for (uint32_t i = 0; i < c->tx_n && n < TCP_IOV - 1; i++) {
			struct tcp_tx *t = &c->tx[(c->tx_head + i) % c->tx_cap];
			uint64_t off = t->off;
			if (off < t->hlen) {
				iov[n].iov_base = (t->big ? t->big : t->hdr) + off;
				iov[n].iov_len = t->hlen - off;
				n++;
				off = t->hlen;
			}
			if (t->dlen && off - t->hlen < t->dlen) {
				iov[n].iov_base = (void *)(t->data + (off - t->hlen));
				iov[n].iov_len = t->dlen - (off - t->hlen);
				n++;
			}
		}
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_die(c, KVF_E_PEERDEAD, "send to %s: %s", c->addr, strerror(errno));
			return;
		}
		if (c->tpeer && w > 0)
			fab_peer_progress(c->tpeer->p);
		uint64_t left = (uint64_t)w;
		while (left && c->tx_n) {
			struct tcp_tx *t = &c->tx[c->tx_head];
			uint64_t rest = t->hlen + t->dlen - t->off;
			uint64_t take = left < rest ? left : rest;
			t->off += take;
			left -= take;
			if (t->off == t->hlen + t->dlen) {
				int close_after = t->close_after;
				tx_release(c, t, 1);
				c->tx_head = (c->tx_head + 1) % c->tx_cap;
				c->tx_n--;
				if (close_after) {
					conn_die(c, KVF_E_PROTO, "closed after a fatal error reply");
					return;
				}
			}
		}
	}
	conn_update_events(c);
}

static void conn_update_events(struct tcp_conn *c)
{
	if (c->state == C_DEAD || c->fd < 0)
		return;
	unsigned ev = KVF_EV_READ;
	if (c->state == C_CONNECTING || c->tx_n)
		ev |= KVF_EV_WRITE;
	if (ev != c->ev) {
		kvf_loop_mod_fd(fab_loop(c->tp->f), c->fd, ev);
		c->ev = ev;
	}
}

/* ---- receiving ---- */

static void conn_recv(struct tcp_conn *c)
{
	size_t budget = TCP_RECV_BUDGET;
	while (c->state == C_OPEN && budget) {
		uint8_t *dst;
		uint64_t left;
		ssize_t n;
		if (tcp_rx_direct(&c->rx, &dst, &left) && left >= TCP_DIRECT_MIN) {
			size_t want = left < budget ? (size_t)left : budget;
			n = recv(c->fd, dst, want, MSG_DONTWAIT);
			if (n > 0) {
				c->big = 1;
				budget -= (size_t)n < budget ? (size_t)n : budget;
				if (c->tpeer)
					fab_peer_progress(c->tpeer->p);
				if (tcp_rx_commit(&c->rx, (size_t)n) < 0)
					break;
				continue;
			}
		} else {
			size_t want = c->big && tcp_rx_idle(&c->rx) ? KVF_FRAME_HDR_LEN : TCP_STAGE;
			n = recv(c->fd, c->stage, want, MSG_DONTWAIT);
			if (n > 0) {
				if (want == TCP_STAGE)
					c->big = 0;
				budget -= (size_t)n < budget ? (size_t)n : budget;
				if (c->tpeer)
					fab_peer_progress(c->tpeer->p);
				if (tcp_rx_feed(&c->rx, c->stage, (size_t)n) < 0)
					break;
				continue;
			}
		}
		if (n == 0) {
			conn_die(c, KVF_E_PEERDEAD, "%s closed the connection%s", c->addr,
				 tcp_rx_idle(&c->rx) ? "" : " mid-frame");
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		conn_die(c, KVF_E_PEERDEAD, "recv from %s: %s", c->addr, strerror(errno));
		return;
	}
	if (c->rx.err && c->state != C_DEAD) {
		int e = c->rx.err;
		conn_die(c, e == KVF_E_ACCESS || e == KVF_E_PEERDEAD ? e : KVF_E_PROTO, "protocol error from %s: %s",
			 c->addr, c->why[0] ? c->why : kvf_strerror(e));
	}
}

/* ---- target side ---- */

static void target_reply_error(struct tcp_conn *c, uint32_t rid, int code, const char *msg, int fatal)
{
	struct tcp_tx *t = tx_push(c);
	if (!t) {
		conn_die(c, KVF_E_PROTO, "%s exceeded the request window", c->addr);
		return;
	}
	size_t cap;
	uint8_t *b = tx_ctrl(t, &cap);
	t->hlen = b ? (uint32_t)tcp_enc_error(b, cap, rid, code, msg) : 0;
	if (!t->hlen) {
		tx_unpush(c);
		conn_die(c, KVF_E_NOMEM, "out of memory for an error reply");
		return;
	}
	t->close_after = (uint8_t)fatal;
}

static int t_on_hdr(void *ud, const kvf_frame_hdr *h, uint32_t *need)
{
	struct tcp_conn *c = ud;
	if (c->closing) {
		*need = 0;
		return 0;
	}
	switch (h->type) {
	case TCP_HELLO:
	case TCP_NOTIFY:
	case TCP_ATTACH:
		if (h->len > TCP_CTRL_MAX)
			return KVF_E_PROTO;
		*need = h->len;
		break;
	case TCP_READ:
		if (h->len != TCP_ACCESS_LEN)
			return KVF_E_PROTO;
		*need = TCP_ACCESS_LEN;
		break;
	case TCP_WRITE:
		if (h->len < TCP_ACCESS_LEN)
			return KVF_E_PROTO;
		*need = TCP_ACCESS_LEN;
		break;
	default:
		snprintf(c->why, sizeof(c->why), "unexpected message type 0x%02x", h->type);
		return KVF_E_PROTO;
	}
	if (h->type != TCP_HELLO && !c->hello_done)
		return KVF_E_PROTO;
	return 0;
}

static void check_request(struct tcp_conn *c, const uint8_t *prefix, uint32_t plen)
{
	c->acc_dst = NULL;
	c->acc_reg = NULL;
	c->acc_why[0] = 0;
	if (tcp_dec_access(prefix, plen, &c->acc) < 0) {
		c->acc_rc = KVF_E_PROTO;
		snprintf(c->acc_why, sizeof(c->acc_why), "malformed request");
		return;
	}
	fab_region *r = fab_region_by_id(c->tp->f, c->acc.region);
	if (!r || r->mem != KVF_FABRIC_MEM_HOST) {
		c->acc_rc = KVF_E_ACCESS;
		snprintf(c->acc_why, sizeof(c->acc_why), "region %u is not registered here", c->acc.region);
		return;
	}
	atomic_fetch_add(&r->inflight, 1);
	if (!atomic_load(&r->live)) {
		atomic_fetch_sub(&r->inflight, 1);
		c->acc_rc = KVF_E_ACCESS;
		snprintf(c->acc_why, sizeof(c->acc_why), "region %u is being deregistered", c->acc.region);
		return;
	}
	c->acc_rc = tcp_check_access(&c->acc, r->id, r->base, r->len, r->secret, &c->acc_dst, c->acc_why,
				     sizeof(c->acc_why));
	if (c->acc_rc < 0) {
		atomic_fetch_sub(&r->inflight, 1);
		c->acc_dst = NULL;
		return;
	}
	c->acc_reg = r;
}

static int t_on_prefix(void *ud, const kvf_frame_hdr *h, const uint8_t *p, uint32_t plen, uint8_t **dst)
{
	struct tcp_conn *c = ud;
	kvf_fabric *f = c->tp->f;
	if (c->closing)
		return 0; /* body discarded */
	switch (h->type) {
	case TCP_HELLO: {
		uint8_t expect[16], zero[16] = { 0 };
		if (tcp_dec_hello(p, plen, c->pnode, c->pname, sizeof(c->pname), expect) < 0)
			return KVF_E_PROTO;
		if (memcmp(expect, zero, 16) != 0 && memcmp(expect, fab_node(f), 16) != 0) {
			target_reply_error(c, h->request_id, KVF_E_NOTFOUND,
					   "this port now serves another fabric node (the descriptor is stale)", 1);
			c->closing = 1;
			return 0;
		}
		c->hello_done = 1;
		struct tcp_tx *t = tx_push(c);
		if (!t)
			return KVF_E_PROTO;
		size_t cap;
		uint8_t *b = tx_ctrl(t, &cap);
		t->hlen = b ? (uint32_t)tcp_enc_hello_ok(b, cap, h->request_id, fab_node(f), kvf_fabric_node_name(f)) : 0;
		if (!t->hlen) {
			tx_unpush(c);
			return KVF_E_NOMEM;
		}
		return 0;
	}
	case TCP_NOTIFY: {
		const uint8_t *msg;
		uint32_t len;
		if (tcp_dec_notify(p, plen, &msg, &len) < 0)
			return KVF_E_PROTO;
		fab_deliver_notif(f, c->pnode, c->pname, msg, len);
		struct tcp_tx *t = tx_push(c);
		if (!t)
			return KVF_E_PROTO;
		t->hlen = (uint32_t)tcp_enc_hdr(t->hdr, TCP_NOTIFY_OK, h->request_id, 0);
		return 0;
	}
	case TCP_ATTACH: {
		struct tcp_access a;
		if (tcp_dec_attach(p, plen, &a) < 0)
			return KVF_E_PROTO;
		fab_region *r = fab_region_by_id(f, a.region);
		char why[128] = "";
		uint8_t *where;
		int rc = KVF_E_ACCESS;
		if (!r)
			snprintf(why, sizeof(why), "region %u is not registered here", a.region);
		else
			rc = tcp_check_access(&a, r->id, r->base, r->len, r->secret, &where, why, sizeof(why));
		if (rc < 0) {
			target_reply_error(c, h->request_id, rc, why, 0);
			return 0;
		}
		struct tcp_attach_ok ok;
		memset(&ok, 0, sizeof(ok));
		ok.region = r->id;
		ok.mem = (uint8_t)r->mem;
		ok.base = (uint64_t)(uintptr_t)r->base;
		ok.len = r->len;
		memcpy(ok.secret, r->secret, 16);
		memcpy(ok.key, r->key, sizeof(ok.key));
		struct tcp_tx *t = tx_push(c);
		if (!t)
			return KVF_E_PROTO;
		size_t cap;
		uint8_t *b = tx_ctrl(t, &cap);
		t->hlen = b ? (uint32_t)tcp_enc_attach_ok(b, cap, h->request_id, &ok) : 0;
		if (!t->hlen) {
			tx_unpush(c);
			target_reply_error(c, h->request_id, KVF_E_NOMEM, "cannot encode ATTACH_OK", 0);
		}
		return 0;
	}
	case TCP_READ:
		check_request(c, p, plen);
		return c->acc_rc == KVF_E_PROTO ? KVF_E_PROTO : 0;
	case TCP_WRITE:
		check_request(c, p, plen);
		if (c->acc_rc == KVF_E_PROTO)
			return KVF_E_PROTO;
		if (c->acc_rc == 0 && c->acc.len != h->len - TCP_ACCESS_LEN) {
			atomic_fetch_sub(&c->acc_reg->inflight, 1);
			c->acc_reg = NULL;
			c->acc_dst = NULL;
			c->acc_rc = KVF_E_PROTO;
			return KVF_E_PROTO;
		}
		*dst = c->acc_dst; /* NULL after a failed check: the data is discarded */
		return 0;
	}
	return KVF_E_PROTO;
}

static int t_on_frame(void *ud, const kvf_frame_hdr *h)
{
	struct tcp_conn *c = ud;
	if (c->closing)
		return 0;
	if (h->type == TCP_READ) {
		if (c->acc_rc < 0) {
			target_reply_error(c, h->request_id, c->acc_rc, c->acc_why, 0);
			return 0;
		}
		if (c->acc.len > UINT32_MAX) {
			atomic_fetch_sub(&c->acc_reg->inflight, 1);
			target_reply_error(c, h->request_id, KVF_E_TOOBIG, "READ chunk over 4 GiB", 0);
			return 0;
		}
		struct tcp_tx *t = tx_push(c);
		if (!t) {
			atomic_fetch_sub(&c->acc_reg->inflight, 1);
			snprintf(c->why, sizeof(c->why), "peer exceeded the request window");
			return KVF_E_PROTO;
		}
		t->hlen = (uint32_t)tcp_enc_hdr(t->hdr, TCP_READ_DATA, h->request_id, (uint32_t)c->acc.len);
		t->data = c->acc_dst;
		t->dlen = c->acc.len;
		t->hold = c->acc_reg; /* released once sent */
		t->served_op = FAB_OP_READ;
		c->acc_reg = NULL;
		return 0;
	}
	if (h->type == TCP_WRITE) {
		if (c->acc_rc < 0) {
			target_reply_error(c, h->request_id, c->acc_rc, c->acc_why, 0);
			return 0;
		}
		fab_served(c->tp->f, KVF_FABRIC_TCP, FAB_OP_WRITE, c->acc.len);
		atomic_fetch_sub_explicit(&c->acc_reg->inflight, 1, memory_order_release);
		c->acc_reg = NULL;
		struct tcp_tx *t = tx_push(c);
		if (!t) {
			snprintf(c->why, sizeof(c->why), "peer exceeded the request window");
			return KVF_E_PROTO;
		}
		t->hlen = (uint32_t)tcp_enc_hdr(t->hdr, TCP_WRITE_OK, h->request_id, 0);
		return 0;
	}
	return 0;
}

static const struct tcp_rx_cb target_cb = { t_on_hdr, t_on_prefix, t_on_frame };

/* ---- initiator side ---- */

static struct tcp_chunk *ch_head(struct tcp_conn *c)
{
	return c->ch_n ? &c->ch[c->ch_head] : NULL;
}

static void ch_pop(struct tcp_conn *c)
{
	struct tcp_chunk *k = &c->ch[c->ch_head];
	c->ch_bytes -= k->len;
	c->ch_head = (c->ch_head + 1) % c->ch_cap;
	c->ch_n--;
}

static int i_on_hdr(void *ud, const kvf_frame_hdr *h, uint32_t *need)
{
	struct tcp_conn *c = ud;
	struct tcp_chunk *k = ch_head(c);
	if (h->type == TCP_ERROR || h->type == TCP_HELLO_OK) {
		if (h->len > TCP_CTRL_MAX)
			return KVF_E_PROTO;
		*need = h->len;
		return 0;
	}
	if (!k || k->rid != h->request_id) {
		snprintf(c->why, sizeof(c->why), "reply 0x%02x for request %u out of order", h->type, h->request_id);
		return KVF_E_PROTO;
	}
	switch (h->type) {
	case TCP_READ_DATA:
		if (k->type != TCP_READ || h->len != k->len)
			return KVF_E_PROTO;
		*need = 0;
		return 0;
	case TCP_WRITE_OK:
		if (k->type != TCP_WRITE || h->len != 0)
			return KVF_E_PROTO;
		*need = 0;
		return 0;
	case TCP_NOTIFY_OK:
		if (k->type != TCP_NOTIFY || h->len != 0)
			return KVF_E_PROTO;
		*need = 0;
		return 0;
	case TCP_ATTACH_OK:
		if (k->type != TCP_ATTACH || h->len > TCP_CTRL_MAX)
			return KVF_E_PROTO;
		*need = h->len;
		return 0;
	}
	snprintf(c->why, sizeof(c->why), "unexpected message type 0x%02x", h->type);
	return KVF_E_PROTO;
}

static int i_on_prefix(void *ud, const kvf_frame_hdr *h, const uint8_t *p, uint32_t plen, uint8_t **dst)
{
	struct tcp_conn *c = ud;
	struct tcp_peer *tpp = c->tpeer;
	if (h->type == TCP_READ_DATA) {
		*dst = ch_head(c)->local;
		return 0;
	}
	if (h->type == TCP_HELLO_OK) {
		uint8_t node[16];
		char name[FAB_NAME_MAX];
		struct tcp_chunk *k = ch_head(c);
		if (!k || k->type != TCP_HELLO || k->rid != h->request_id ||
		    tcp_dec_hello_ok(p, plen, node, name, sizeof(name)) < 0)
			return KVF_E_PROTO;
		ch_pop(c);
		if (memcmp(node, tpp->p->node, 16) != 0) {
			snprintf(c->why, sizeof(c->why), "%s is now another fabric node", c->addr);
			return KVF_E_PEERDEAD;
		}
		tpp->p->state = FAB_PEER_READY;
		return 0;
	}
	if (h->type == TCP_ATTACH_OK) {
		struct tcp_attach_ok ok;
		if (tcp_dec_attach_ok(p, plen, &ok) < 0)
			return KVF_E_PROTO;
		struct fab_attach *a = ch_head(c)->att;
		ch_pop(c);
		fab_attach_reply(tpp->p, a, 0, NULL, &ok);
		return 0;
	}
	if (h->type == TCP_ERROR) {
		int code;
		char msg[256];
		if (tcp_dec_error(p, plen, &code, msg, sizeof(msg)) < 0)
			return KVF_E_PROTO;
		struct tcp_chunk *k = ch_head(c);
		if (!k || k->rid != h->request_id)
			return KVF_E_PROTO;
		if (k->type == TCP_HELLO) {
			snprintf(c->why, sizeof(c->why), "%s refused the connection: %s", c->addr, msg);
			return code == KVF_E_NOTFOUND ? KVF_E_PEERDEAD : code;
		}
		if (k->type == TCP_ATTACH) {
			struct fab_attach *a = k->att;
			ch_pop(c);
			fab_attach_reply(tpp->p, a, code, msg, NULL);
			return 0;
		}
		struct fab_req *r = k->req;
		ch_pop(c);
		char det[200];
		snprintf(det, sizeof(det), "%s: %s", tpp->p->name, msg);
		fab_peer_progress(tpp->p);
		fab_req_unit_done(r, 0, code, det);
		return 0;
	}
	return 0;
}

static int i_on_frame(void *ud, const kvf_frame_hdr *h)
{
	struct tcp_conn *c = ud;
	if (h->type == TCP_ERROR || h->type == TCP_HELLO_OK || h->type == TCP_ATTACH_OK) {
		tcp_pump(c->tp, c->tpeer);
		return 0;
	}
	struct tcp_chunk *k = ch_head(c);
	struct fab_req *r = k->req;
	uint64_t len = k->len;
	int type = k->type;
	ch_pop(c);
	fab_req_unit_done(r, type == TCP_NOTIFY ? 0 : len, 0, NULL);
	tcp_pump(c->tp, c->tpeer);
	return 0;
}

static const struct tcp_rx_cb init_cb = { i_on_hdr, i_on_prefix, i_on_frame };

/* ---- events ---- */

static void on_conn_event(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct tcp_conn *c = ud;
	if (c->state == C_CONNECTING) {
		if (!(ev & (KVF_EV_WRITE | KVF_EV_ERROR)))
			return;
		int rc = kvf_net_connect_result(fd);
		if (rc < 0) {
			conn_die(c, rc == KVF_E_CONNREFUSED ? KVF_E_CONNREFUSED : KVF_E_PEERDEAD, "connect to %s: %s",
				 c->addr, kvf_errmsg());
			return;
		}
		c->state = C_OPEN;
		c->tpeer->connected_once = 1;
		fab_peer_progress(c->tpeer->p);
	}
	if (ev & (KVF_EV_READ | KVF_EV_ERROR))
		conn_recv(c);
	if (c->state == C_OPEN && c->tx_n)
		conn_flush(c);
	else
		conn_update_events(c);
}

static void on_accept(kvf_loop *loop, int lfd, unsigned ev, void *ud)
{
	struct tcp_tp *tp = ud;
	for (int i = 0; i < 16; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				KVF_LOG_RL(KVF_LOG_WARN, 5, 1000, FAB_LOG, "accept failed", "err=\"%s\"", strerror(errno));
			return;
		}
		kvf_net_set_nodelay(fd, 1);
		struct tcp_conn *c = conn_new(tp, fd, ROLE_TARGET);
		if (!c) {
			close(fd);
			continue;
		}
		c->state = C_OPEN;
		kvf_net_peer_name(fd, c->addr, sizeof(c->addr));
		tcp_rx_init(&c->rx, &target_cb, c);
		if (kvf_loop_add_fd(loop, fd, KVF_EV_READ, on_conn_event, c) < 0) {
			conn_free(c, KVF_E_IO, "loop");
			continue;
		}
		c->ev = KVF_EV_READ;
		c->next = tp->servers;
		tp->servers = c;
	}
}

/* Reaps dead connections from the top of the loop; an initiator connection
 * takes its peer down with it. */
static void reap_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct tcp_tp *tp = ud;
	while (tp->reap) {
		struct tcp_conn *c = tp->reap;
		tp->reap = c->next;
		if (c->role == ROLE_TARGET) {
			KVF_DEBUG(FAB_LOG, "tcp connection closed", "peer=%s reason=\"%s\"", c->addr, c->why);
			conn_free(c, c->err, c->why);
			continue;
		}
		c->reaping = 0;
		struct tcp_peer *tpp = c->tpeer;
		int attached = 0;
		for (int i = 0; i < TCP_MAX_CONNS; i++)
			attached |= tpp->conns[i] == c;
		if (attached) /* the peer goes down with it; peer_fail frees its conns */
			fab_peer_fail(tpp->p, c->err, "%s", c->why);
		else
			conn_free(c, c->err, c->why);
	}
}

/* ---- issuing ---- */

static struct tcp_tp *tp_of(void *v) { return v; }

static struct tcp_peer *tpeer_get(struct tcp_tp *tp, struct fab_peer *p)
{
	struct tcp_peer *tpp = p->tstate[KVF_FABRIC_TCP];
	if (tpp)
		return tpp;
	tpp = kvf_calloc(1, sizeof(*tpp));
	if (!tpp)
		return NULL;
	tpp->p = p;
	tpp->want = 1;
	p->tstate[KVF_FABRIC_TCP] = tpp;
	return tpp;
}

/* Non-blocking connect to "host:port" (own helper rather than
 * kvf_net_connect_tcp, which reads the addrinfo list after freeing it). */
static int connect_nb(const char *hostport, int *fd_out)
{
	char host[KVF_NET_HOST_MAX], port[8];
	uint16_t p;
	int rc = kvf_net_parse_hostport(hostport, host, sizeof(host), &p);
	if (rc < 0)
		return rc;
	snprintf(port, sizeof(port), "%u", p);
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res;
	int gai = getaddrinfo(host[0] ? host : "127.0.0.1", port, &hints, &res);
	if (gai != 0)
		return kvf_errf(KVF_E_NOTFOUND, "resolve %s: %s", hostport, gai_strerror(gai));
	int err = ECONNREFUSED;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
			freeaddrinfo(res);
			kvf_net_set_nodelay(fd, 1);
			*fd_out = fd;
			return 0;
		}
		err = errno;
		close(fd);
	}
	freeaddrinfo(res);
	return kvf_errf(kvf_err_from_errno(err), "connect to %s: %s", hostport, strerror(err));
}

static int conn_open(struct tcp_tp *tp, struct tcp_peer *tpp, int idx)
{
	struct fab_peer *p = tpp->p;
	if (!tpp->hostport[0] || p->addr[KVF_FABRIC_TCP].len) {
		if (fab_addr_tcp_parse(&p->addr[KVF_FABRIC_TCP], tpp->hostport, sizeof(tpp->hostport)) < 0)
			return kvf_errf(KVF_E_PROTO, "peer %s: bad tcp address", p->name);
	}
	int fd;
	int rc = connect_nb(tpp->hostport, &fd);
	struct tcp_conn *c = NULL;
	if (rc == 0)
		c = conn_new(tp, fd, ROLE_INIT);
	if (rc == 0 && !c) {
		close(fd);
		rc = KVF_E_NOMEM;
	}
	if (rc < 0) {
		/* report from the top of the loop, like any connection failure */
		c = conn_new(tp, -1, ROLE_INIT);
		if (!c)
			return KVF_E_NOMEM;
		c->tpeer = tpp;
		snprintf(c->addr, sizeof(c->addr), "%s", tpp->hostport);
		tpp->conns[idx] = c;
		conn_die(c, rc == KVF_E_CONNREFUSED ? rc : KVF_E_PEERDEAD, "connect to %s: %s", tpp->hostport,
			 kvf_errmsg());
		return 0;
	}
	c->tpeer = tpp;
	c->state = C_CONNECTING;
	snprintf(c->addr, sizeof(c->addr), "%s", tpp->hostport);
	tcp_rx_init(&c->rx, &init_cb, c);
	if (kvf_loop_add_fd(fab_loop(tp->f), fd, KVF_EV_READ | KVF_EV_WRITE, on_conn_event, c) < 0) {
		conn_free(c, KVF_E_IO, "loop");
		return KVF_E_IO;
	}
	c->ev = KVF_EV_READ | KVF_EV_WRITE;
	/* HELLO first; requests are pipelined behind it */
	struct tcp_tx *t = tx_push(c);
	size_t cap;
	uint8_t *b = tx_ctrl(t, &cap);
	t->hlen = b ? (uint32_t)tcp_enc_hello(b, cap, fab_node(tp->f), kvf_fabric_node_name(tp->f), p->node) : 0;
	if (!t->hlen) {
		tpp->conns[idx] = c;
		c->tpeer = tpp;
		conn_die(c, KVF_E_NOMEM, "out of memory for HELLO");
		return 0;
	}
	struct tcp_chunk *k = &c->ch[(c->ch_head + c->ch_n) % c->ch_cap];
	c->ch_n++;
	k->req = NULL;
	k->att = NULL;
	k->rid = 0;
	k->type = TCP_HELLO;
	k->local = NULL;
	k->len = 0;
	tpp->conns[idx] = c;
	if (p->state != FAB_PEER_READY)
		p->state = FAB_PEER_CONNECTING;
	p->connects++;
	return 0;
}

static void ensure_conns(struct tcp_tp *tp, struct tcp_peer *tpp)
{
	for (int i = 0; i < tpp->want; i++) {
		if (!tpp->conns[i] && conn_open(tp, tpp, i) < 0) {
			KVF_LOG_RL(KVF_LOG_WARN, 5, 1000, FAB_LOG, "tcp connect failed", "peer=%s err=\"%s\"",
				   tpp->p->name, kvf_errmsg());
			return;
		}
	}
}

static struct tcp_conn *pick_conn(struct tcp_peer *tpp, uint32_t window)
{
	struct tcp_conn *best = NULL;
	for (int i = 0; i < tpp->want; i++) {
		struct tcp_conn *c = tpp->conns[i];
		if (!c || c->state == C_DEAD || c->ch_n >= window || c->ch_n + 1 >= c->ch_cap ||
		    c->tx_n + 1 >= c->tx_cap)
			continue;
		if (!best || c->ch_bytes < best->ch_bytes)
			best = c;
	}
	return best;
}

static struct tcp_chunk *ch_push(struct tcp_conn *c)
{
	struct tcp_chunk *k = &c->ch[(c->ch_head + c->ch_n) % c->ch_cap];
	c->ch_n++;
	return k;
}

static void tcp_pump(struct tcp_tp *tp, struct tcp_peer *tpp)
{
	if (!tpp)
		return;
	unsigned touched = 0;
	/* attachments and notifies go on connection 0, in order */
	while (tpp->aq_head) {
		struct tcp_conn *c = tpp->conns[0];
		if (!c || c->state == C_DEAD || c->tx_n + 1 >= c->tx_cap || c->ch_n + 1 >= c->ch_cap)
			break;
		struct fab_attach *a = tpp->aq_head;
		struct tcp_tx *t = tx_push(c);
		uint32_t rid = c->next_rid++;
		size_t cap;
		uint8_t *b = tx_ctrl(t, &cap);
		t->hlen = b ? (uint32_t)tcp_enc_attach(b, cap, rid, a->region, a->blk.addr, a->blk.len, a->blk.token) : 0;
		if (!t->hlen) {
			tx_unpush(c);
			break; /* retried at the next pump; the hang timer bounds it */
		}
		tpp->aq_head = a->send_next;
		if (!tpp->aq_head)
			tpp->aq_tail = NULL;
		a->send_next = NULL;
		struct tcp_chunk *k = ch_push(c);
		k->req = NULL;
		k->att = a;
		k->rid = rid;
		k->type = TCP_ATTACH;
		k->local = NULL;
		k->len = 0;
		touched |= 1u;
	}
	while (tpp->nq.head) {
		struct tcp_conn *c = tpp->conns[0];
		if (!c || c->state == C_DEAD || c->tx_n + 1 >= c->tx_cap || c->ch_n >= c->ch_cap)
			break;
		struct fab_req *r = fab_rq_pop(&tpp->nq);
		struct tcp_tx *t = tx_push(c);
		uint32_t rid = c->next_rid++;
		size_t cap;
		uint8_t *b = tx_ctrl(t, &cap);
		t->hlen = b ? (uint32_t)tcp_enc_notify(b, cap, rid, r->msg, r->msg_len) : 0;
		if (!t->hlen) {
			tx_unpush(c);
			fab_req_stop(r, KVF_E_NOMEM, "tcp: out of memory for a notification");
			continue;
		}
		struct tcp_chunk *k = ch_push(c);
		k->req = r;
		k->att = NULL;
		k->rid = rid;
		k->type = TCP_NOTIFY;
		k->local = NULL;
		k->len = 0;
		fab_req_units_add(r, 1);
		fab_req_issued(r);
		touched |= 1u;
	}
	while (tpp->q.head) {
		struct fab_req *r = tpp->q.head;
		struct tcp_conn *c = pick_conn(tpp, tp->window);
		if (!c)
			break;
		const struct fab_op *op = &r->ops[r->cur_op];
		const struct fab_rblock *b = &r->rd->blocks[op->blk];
		uint64_t len = op->len - r->cur_off;
		if (len > tp->chunk)
			len = tp->chunk;
		struct tcp_access a = { r->rd->region, op->raddr + r->cur_off, len, b->addr, b->len, b->token };
		uint32_t rid = c->next_rid++;
		if (c->next_rid == 0)
			c->next_rid = 1;
		struct tcp_tx *t = tx_push(c);
		struct tcp_chunk *k = ch_push(c);
		k->req = r;
		k->att = NULL;
		k->rid = rid;
		k->local = op->local + r->cur_off;
		k->len = len;
		if (r->opcode == FAB_OP_READ) {
			k->type = TCP_READ;
			t->hlen = (uint32_t)tcp_enc_read(t->hdr, rid, &a);
		} else {
			k->type = TCP_WRITE;
			t->hlen = (uint32_t)tcp_enc_write(t->hdr, rid, &a);
			t->data = k->local;
			t->dlen = len;
		}
		c->ch_bytes += len;
		fab_req_units_add(r, 1);
		for (int i = 0; i < tpp->want; i++)
			if (tpp->conns[i] == c)
				touched |= 1u << i;
		r->cur_off += len;
		if (r->cur_off == op->len) {
			r->cur_off = 0;
			if (++r->cur_op == r->nops) {
				fab_rq_pop(&tpp->q);
				fab_req_issued(r);
			}
		}
	}
	for (int i = 0; i < TCP_MAX_CONNS; i++)
		if ((touched & (1u << i)) && tpp->conns[i] && tpp->conns[i]->state == C_OPEN)
			conn_flush(tpp->conns[i]);
		else if ((touched & (1u << i)) && tpp->conns[i])
			conn_update_events(tpp->conns[i]);
}

/* ---- vtable ---- */

static int tcp_open(kvf_fabric *f, void **out)
{
	struct tcp_tp *tp = kvf_calloc(1, sizeof(*tp));
	if (!tp)
		return kvf_errf(KVF_E_NOMEM, "tcp: open");
	tp->f = f;
	const kvf_fabric_opts *o = fab_opts(f);
	tp->chunk = o->tcp_chunk_bytes;
	if (tp->chunk > TCP_MAX_BODY)
		tp->chunk = TCP_MAX_BODY;
	tp->window = (uint32_t)o->tcp_window;
	int rc = kvf_net_listen_tcp(o->listen, 128, &tp->lfd);
	if (rc < 0) {
		kvf_free(tp);
		return kvf_errf(rc, "listen on %s: %s", o->listen, kvf_errmsg());
	}
	kvf_net_local_port(tp->lfd, &tp->port);
	fab_set_port(f, tp->port);
	snprintf(tp->adv, sizeof(tp->adv), strchr(fab_advertise_host(f), ':') ? "[%s]:%u" : "%s:%u",
		 fab_advertise_host(f), tp->port);
	if ((rc = kvf_loop_add_fd(fab_loop(f), tp->lfd, KVF_EV_READ, on_accept, tp)) < 0) {
		close(tp->lfd);
		kvf_free(tp);
		return rc;
	}
	*out = tp;
	return 0;
}

static void tcp_close(void *v)
{
	struct tcp_tp *tp = v;
	kvf_loop *loop = fab_loop(tp->f);
	kvf_loop_del_fd(loop, tp->lfd);
	close(tp->lfd);
	while (tp->servers) {
		struct tcp_conn *c = tp->servers;
		tp->servers = c->next;
		conn_free(c, KVF_E_CANCELED, "closing");
	}
	while (tp->reap) {
		struct tcp_conn *c = tp->reap;
		tp->reap = c->next;
		if (c->role == ROLE_TARGET)
			conn_free(c, KVF_E_CANCELED, "closing");
		/* initiator conns were freed with their peers */
	}
	if (kvf_timer_armed(&tp->reap_timer))
		kvf_loop_timer_stop(loop, &tp->reap_timer);
	kvf_free(tp);
}

static void tcp_export_addr(void *v, kvf_wire_writer *w)
{
	fab_addr_tcp_put(w, tp_of(v)->adv);
}

static int tcp_reachable(void *v, const kvf_fabric_rdesc *d, int lmem)
{
	return d->addr[KVF_FABRIC_TCP].len && d->mem == KVF_FABRIC_MEM_HOST && lmem == KVF_FABRIC_MEM_HOST;
}

static void tcp_submit(void *v, struct fab_peer *p, struct fab_req *r)
{
	struct tcp_tp *tp = v;
	struct tcp_peer *tpp = tpeer_get(tp, p);
	if (!tpp) {
		fab_req_stop(r, KVF_E_NOMEM, "tcp: out of memory");
		return;
	}
	if (tpp->want < fab_opts(tp->f)->conns_per_peer)
		tpp->want = (int)fab_opts(tp->f)->conns_per_peer;
	if (tpp->want > TCP_MAX_CONNS)
		tpp->want = TCP_MAX_CONNS;
	r->cur_op = 0;
	r->cur_off = 0;
	fab_rq_push(&tpp->q, r);
	ensure_conns(tp, tpp);
	tcp_pump(tp, tpp);
}

void fab_tcp_ensure_control(void *v, struct fab_peer *p)
{
	struct tcp_tp *tp = v;
	struct tcp_peer *tpp = tpeer_get(tp, p);
	if (!tpp)
		return;
	if (!tpp->conns[0] && conn_open(tp, tpp, 0) < 0)
		KVF_LOG_RL(KVF_LOG_WARN, 5, 1000, FAB_LOG, "tcp connect failed", "peer=%s err=\"%s\"", p->name,
			   kvf_errmsg());
}

void fab_tcp_send_notify(void *v, struct fab_peer *p, struct fab_req *r)
{
	struct tcp_tp *tp = v;
	struct tcp_peer *tpp = tpeer_get(tp, p);
	if (!tpp) {
		fab_req_stop(r, KVF_E_NOMEM, "tcp: out of memory");
		return;
	}
	fab_rq_push(&tpp->nq, r);
	if (!tpp->conns[0])
		conn_open(tp, tpp, 0);
	tcp_pump(tp, tpp);
}

void fab_tcp_send_attach(void *v, struct fab_peer *p, struct fab_attach *a)
{
	struct tcp_tp *tp = v;
	struct tcp_peer *tpp = tpeer_get(tp, p);
	if (!tpp) {
		fab_attach_reply(p, a, KVF_E_NOMEM, "tcp: out of memory", NULL);
		return;
	}
	a->send_next = NULL;
	if (tpp->aq_tail)
		tpp->aq_tail->send_next = a;
	else
		tpp->aq_head = a;
	tpp->aq_tail = a;
	if (!tpp->conns[0])
		conn_open(tp, tpp, 0);
	tcp_pump(tp, tpp);
}

static void tcp_cancel(void *v, struct fab_peer *p, struct fab_req *r)
{
	struct tcp_peer *tpp = p->tstate[KVF_FABRIC_TCP];
	if (!tpp)
		return;
	if (fab_rq_remove(&tpp->q, r) || fab_rq_remove(&tpp->nq, r))
		fab_req_stop(r, KVF_E_CANCELED, "canceled");
}

static void tcp_peer_fail(void *v, struct fab_peer *p, int err, const char *detail)
{
	struct tcp_peer *tpp = p->tstate[KVF_FABRIC_TCP];
	if (!tpp)
		return;
	struct tcp_conn *cs[TCP_MAX_CONNS];
	memcpy(cs, tpp->conns, sizeof(cs));
	memset(tpp->conns, 0, sizeof(tpp->conns));
	struct fab_req *r;
	while ((r = fab_rq_pop(&tpp->q)))
		fab_req_stop(r, err, detail);
	while ((r = fab_rq_pop(&tpp->nq)))
		fab_req_stop(r, err, detail);
	tpp->aq_head = tpp->aq_tail = NULL; /* the core drops the attachments */
	for (int i = 0; i < TCP_MAX_CONNS; i++) {
		if (!cs[i])
			continue;
		reap_unlink(v, cs[i]);
		conn_free(cs[i], err, detail);
	}
	tpp->want = 1;
}

static void tcp_peer_free(void *v, struct fab_peer *p)
{
	struct tcp_peer *tpp = p->tstate[KVF_FABRIC_TCP];
	if (!tpp)
		return;
	for (int i = 0; i < TCP_MAX_CONNS; i++) {
		if (tpp->conns[i]) {
			reap_unlink(v, tpp->conns[i]);
			conn_free(tpp->conns[i], KVF_E_CANCELED, "closing");
		}
	}
	kvf_free(tpp);
	p->tstate[KVF_FABRIC_TCP] = NULL;
}

static void tcp_peer_show(void *v, struct fab_peer *p, kvf_buf *out)
{
	struct tcp_peer *tpp = p->tstate[KVF_FABRIC_TCP];
	if (!tpp)
		return;
	int open = 0;
	uint32_t chunks = 0;
	for (int i = 0; i < tpp->want; i++) {
		if (tpp->conns[i] && tpp->conns[i]->state == C_OPEN)
			open++;
		if (tpp->conns[i])
			chunks += tpp->conns[i]->ch_n;
	}
	kvf_buf_printf(out, "tcp_addr=%s tcp_conns=%d/%d tcp_chunks=%u tcp_queued=%u", tpp->hostport, open, tpp->want,
		       chunks, tpp->q.n + tpp->nq.n);
}

const struct fab_transport fab_tcp_transport = {
	.name = "tcp",
	.kind = KVF_FABRIC_TCP,
	.open = tcp_open,
	.close = tcp_close,
	.export_addr = tcp_export_addr,
	.reachable = tcp_reachable,
	.submit = tcp_submit,
	.cancel = tcp_cancel,
	.peer_fail = tcp_peer_fail,
	.peer_free = tcp_peer_free,
	.peer_show = tcp_peer_show,
};
