/*
 * transport_shm.c: same-host transfers through shared memory.
 *
 * The target listens on an abstract Unix SOCK_SEQPACKET socket named after
 * its node id. An initiator attaches a region once per peer: it proves a
 * block token (ATTACH), the target checks it and answers with the region's
 * base and length and, when the region lies in kvf_fabric_mem_alloc()
 * memory, the memfd itself (SCM_RIGHTS). The initiator maps it
 * (MAP_POPULATE, so no page faults on the copy path) and from then on every
 * READ/WRITE is a memcpy on the fabric thread, in slices of shm_slice_bytes
 * so sockets and timers are served between slices. Regions not backed by a
 * memfd are reached with process_vm_readv/writev (same pid namespace,
 * ptrace permission; opts.shm_process_vm).
 *
 * Bounds are checked against the attached region before a request copies
 * anything, so a bad op touches no data. Deregistration revokes: the target
 * sends REVOKE to every peer that attached the region and waits for REVOKED
 * (the peer fails what still used it and unmaps) before the region goes.
 * A peer whose socket closes (process died) fails its requests with
 * PEERDEAD and its mappings are dropped.
 *
 * Security model: same host, the socket is reachable from the same network
 * namespace; tokens gate attachment, after which the peer can reach the
 * whole region (like an rkey). See docs/fabric.md.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_frame.h"
#include "common/kvf_log.h"
#include "common/kvf_wire.h"
#include "fabric/fabric_int.h"
#include "fabric/tcp_proto.h"

#define SHM_VERSION 1
#define SHM_MSG_MAX 512

enum {
	SHM_HELLO = 1,
	SHM_ATTACH = 2,
	SHM_REVOKED = 3,
	SHM_HELLO_OK = 0x81,
	SHM_ATTACH_OK = 0x82,
	SHM_REVOKE = 0x83,
	SHM_ERROR = 0x7f,
};

enum { A_PENDING = 0, A_READY, A_FAILED };

struct shm_attach {
	uint32_t region;
	uint32_t rid;         /* of the ATTACH that asked for it */
	int state;
	int err;
	char why[128];
	uint64_t base, len;   /* remote region */
	uint8_t secret[16];   /* its token secret: blocks are checked here */
	uint8_t *map;         /* local view of base (NULL: process_vm) */
	uint8_t *map_raw;
	size_t map_len;
	uint32_t users;       /* requests being copied */
};

struct shm_peer {
	struct fab_peer *p;
	struct shm_tp *tp;
	int fd;
	int open;             /* hello answered */
	uint32_t pid;
	char sock[108];
	struct shm_attach **att; /* stable pointers: jobs hold them */
	size_t natt, catt;
	struct fab_rq wait;   /* requests waiting for an attachment */
	uint32_t next_rid;
	struct shm_peer *next_dead;
};

/* A request being copied. */
struct shm_job {
	struct shm_job *next;
	struct fab_req *r;
	struct shm_peer *sp;
	struct shm_attach *a;
	uint32_t op;
	uint64_t off;
};

struct shm_srv {
	struct shm_srv *next;
	struct shm_tp *tp;
	int fd;
	uint8_t node[16];
	char name[FAB_NAME_MAX];
	uint32_t *att; /* regions this peer attached */
	size_t natt, catt;
	int revoke_pending;
};

struct shm_tp {
	kvf_fabric *f;
	int lfd;
	char name[108];
	uint32_t pid;
	int allow_pvm;
	uint64_t slice;
	struct shm_srv *srv;
	struct shm_job *jobs, *jobs_tail, *free_jobs;
	kvf_timer pump;          /* 0 ms: copy the next slices next iteration */
	/* revocation in progress */
	struct fab_dereg_wait *dw;
	uint32_t dw_region;
	int dw_waiting;
	kvf_timer dw_timer;
};

static void shm_kick(struct shm_tp *tp);
static void sp_fail_now(struct shm_peer *sp, int err, const char *why);

/* ---- messages ---- */

static int send_msg(int fd, uint8_t type, uint32_t rid, const uint8_t *payload, size_t n, int pass_fd)
{
	uint8_t buf[KVF_FRAME_HDR_LEN + SHM_MSG_MAX];
	if (n > SHM_MSG_MAX)
		return KVF_E_TOOBIG;
	kvf_frame_hdr h = { SHM_VERSION, type, 0, rid, (uint32_t)n };
	kvf_frame_hdr_encode(&h, buf);
	memcpy(buf + KVF_FRAME_HDR_LEN, payload, n);
	struct iovec iov = { buf, KVF_FRAME_HDR_LEN + n };
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cm;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (pass_fd >= 0) {
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.b;
		mh.msg_controllen = sizeof(cm.b);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	for (;;) {
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w >= 0)
			return 0;
		if (errno == EINTR)
			continue;
		/* control messages are tiny; a full socket buffer means a stuck peer */
		return kvf_errf(errno == EAGAIN ? KVF_E_TIMEOUT : KVF_E_PEERDEAD, "shm: send: %s", strerror(errno));
	}
}

/* One message: 1 and the header in *h, payload after it in buf;, 0 when none, <0 on EOF/error. */
static int recv_msg(int fd, uint8_t *buf, size_t cap, kvf_frame_hdr *h, int *got_fd)
{
	*got_fd = -1;
	struct iovec iov = { buf, cap };
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cm;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
	ssize_t n;
	do {
		n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : KVF_E_PEERDEAD;
	if (n == 0)
		return KVF_E_PEERDEAD;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(got_fd, CMSG_DATA(c), sizeof(int));
	kvf_frame_decoder dec;
	kvf_frame_decoder_init(&dec, SHM_VERSION, SHM_VERSION);
	dec.max_frame = KVF_FRAME_HDR_LEN + SHM_MSG_MAX;
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || kvf_frame_hdr_decode(&dec, buf, (size_t)n, h) < 0 ||
	    h->len != (size_t)n - KVF_FRAME_HDR_LEN) {
		if (*got_fd >= 0)
			close(*got_fd);
		*got_fd = -1;
		return KVF_E_PROTO;
	}
	return 1;
}

static size_t enc_error(uint8_t *out, int code, const char *msg)
{
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, SHM_MSG_MAX);
	kvf_wire_put_u32(&w, (uint32_t)code);
	char m[200];
	snprintf(m, sizeof(m), "%s", msg);
	kvf_wire_put_str(&w, m);
	size_t n = kvf_wire_writer_error(&w) ? 0 : w.len;
	if (n)
		memcpy(out, w.buf, n);
	kvf_wire_writer_free(&w);
	return n;
}

/* ---- target side ---- */

static void srv_free(struct shm_srv *s)
{
	struct shm_tp *tp = s->tp;
	kvf_loop_del_fd(fab_loop(tp->f), s->fd);
	close(s->fd);
	for (struct shm_srv **pp = &tp->srv; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	if (s->revoke_pending && tp->dw) {
		s->revoke_pending = 0;
		if (--tp->dw_waiting == 0) {
			kvf_loop_timer_stop(fab_loop(tp->f), &tp->dw_timer);
			struct fab_dereg_wait *w = tp->dw;
			tp->dw = NULL;
			fab_dereg_done(w, 0);
		}
	}
	kvf_free(s->att);
	kvf_free(s);
}

static void srv_handle(struct shm_srv *s, const kvf_frame_hdr *h, const uint8_t *p)
{
	struct shm_tp *tp = s->tp;
	kvf_fabric *f = tp->f;
	uint8_t out[SHM_MSG_MAX];
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, p, h->len);
	switch (h->type) {
	case SHM_HELLO: {
		kvf_wire_get_bytes(&r, s->node, 16);
		kvf_wire_get_str(&r, s->name, sizeof(s->name));
		if (kvf_wire_reader_done(&r) < 0)
			goto proto;
		kvf_wire_writer w;
		kvf_wire_writer_init(&w, SHM_MSG_MAX);
		kvf_wire_put_bytes(&w, fab_node(f), 16);
		kvf_wire_put_u32(&w, tp->pid);
		send_msg(s->fd, SHM_HELLO_OK, h->request_id, w.buf, w.len, -1);
		kvf_wire_writer_free(&w);
		return;
	}
	case SHM_ATTACH: {
		struct tcp_access a;
		a.region = kvf_wire_get_u32(&r);
		a.blk_addr = kvf_wire_get_u64(&r);
		a.blk_len = kvf_wire_get_u64(&r);
		a.token = kvf_wire_get_u64(&r);
		if (kvf_wire_reader_done(&r) < 0)
			goto proto;
		a.addr = a.blk_addr;
		a.len = a.blk_len;
		fab_region *reg = fab_region_by_id(f, a.region);
		char why[128] = "region not registered here";
		uint8_t *dst;
		int rc = KVF_E_ACCESS;
		if (reg && reg->mem == KVF_FABRIC_MEM_HOST)
			rc = tcp_check_access(&a, reg->id, reg->base, reg->len, reg->secret, &dst, why, sizeof(why));
		if (rc == 0 && tp->dw && tp->dw_region == a.region) {
			rc = KVF_E_ACCESS;
			snprintf(why, sizeof(why), "region %u is being deregistered", a.region);
		}
		if (rc < 0) {
			size_t n = enc_error(out, rc, why);
			send_msg(s->fd, SHM_ERROR, h->request_id, out, n, -1);
			return;
		}
		if (kvf_grow((void **)&s->att, &s->catt, s->natt + 1, sizeof(*s->att)) == 0)
			s->att[s->natt++] = reg->id;
		kvf_wire_writer w;
		kvf_wire_writer_init(&w, SHM_MSG_MAX);
		kvf_wire_put_u32(&w, reg->id);
		kvf_wire_put_u64(&w, (uint64_t)(uintptr_t)reg->base);
		kvf_wire_put_u64(&w, reg->len);
		kvf_wire_put_u64(&w, reg->memfd_off);
		kvf_wire_put_u8(&w, reg->memfd >= 0);
		kvf_wire_put_bytes(&w, reg->secret, 16);
		send_msg(s->fd, SHM_ATTACH_OK, h->request_id, w.buf, w.len, reg->memfd);
		kvf_wire_writer_free(&w);
		return;
	}
	case SHM_REVOKED: {
		uint32_t region = kvf_wire_get_u32(&r);
		if (kvf_wire_reader_done(&r) < 0)
			goto proto;
		for (uint32_t i = 0; i < s->natt; i++)
			if (s->att[i] == region)
				s->att[i--] = s->att[--s->natt];
		if (s->revoke_pending && tp->dw && tp->dw_region == region) {
			s->revoke_pending = 0;
			if (--tp->dw_waiting == 0) {
				kvf_loop_timer_stop(fab_loop(f), &tp->dw_timer);
				struct fab_dereg_wait *w = tp->dw;
				tp->dw = NULL;
				fab_dereg_done(w, 0);
			}
		}
		return;
	}
	}
proto:
	KVF_LOG_RL(KVF_LOG_WARN, 5, 1000, FAB_LOG, "shm: protocol error", "peer=%s type=0x%02x", s->name, h->type);
	srv_free(s);
}

static void on_srv_event(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct shm_srv *s = ud;
	uint8_t buf[KVF_FRAME_HDR_LEN + SHM_MSG_MAX];
	for (int i = 0; i < 64; i++) {
		kvf_frame_hdr h;
		int gfd;
		int rc = recv_msg(fd, buf, sizeof(buf), &h, &gfd);
		if (gfd >= 0)
			close(gfd); /* peers send no fds */
		if (rc == 0)
			return;
		if (rc < 0) {
			srv_free(s);
			return;
		}
		srv_handle(s, &h, buf + KVF_FRAME_HDR_LEN);
		/* srv_handle may have freed s on a protocol error */
		int alive = 0;
		for (struct shm_srv *x = ((struct shm_tp *)s->tp)->srv; x; x = x->next)
			alive |= x == s;
		if (!alive)
			return;
	}
}

static void on_accept(kvf_loop *loop, int lfd, unsigned ev, void *ud)
{
	struct shm_tp *tp = ud;
	for (int i = 0; i < 16; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct ucred cr;
		socklen_t cl = sizeof(cr);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0 || (cr.uid != getuid() && cr.uid != 0)) {
			close(fd); /* another user: not ours to serve memory to */
			continue;
		}
		struct shm_srv *s = kvf_calloc(1, sizeof(*s));
		if (!s) {
			close(fd);
			continue;
		}
		s->tp = tp;
		s->fd = fd;
		if (kvf_loop_add_fd(loop, fd, KVF_EV_READ, on_srv_event, s) < 0) {
			close(fd);
			kvf_free(s);
			continue;
		}
		s->next = tp->srv;
		tp->srv = s;
	}
}

static void on_dw_timeout(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct shm_tp *tp = ud;
	if (!tp->dw)
		return;
	for (struct shm_srv *s = tp->srv; s; s = s->next)
		s->revoke_pending = 0;
	struct fab_dereg_wait *w = tp->dw;
	tp->dw = NULL;
	tp->dw_waiting = 0;
	fab_dereg_done(w, kvf_errf(KVF_E_TIMEOUT, "shm: a same-host peer did not release region %u in time",
				   tp->dw_region));
}

/* ---- initiator side ---- */

static struct shm_peer *sp_get(struct shm_tp *tp, struct fab_peer *p)
{
	struct shm_peer *sp = p->tstate[KVF_FABRIC_SHM];
	if (sp)
		return sp;
	sp = kvf_calloc(1, sizeof(*sp));
	if (!sp)
		return NULL;
	sp->p = p;
	sp->tp = tp;
	sp->fd = -1;
	p->tstate[KVF_FABRIC_SHM] = sp;
	return sp;
}

/* Unmaps and frees attachment i (swap-removed from the array). */
static void att_remove(struct shm_peer *sp, uint32_t i)
{
	struct shm_attach *a = sp->att[i];
	if (a->map_raw)
		munmap(a->map_raw, a->map_len);
	kvf_free(a);
	sp->att[i] = sp->att[--sp->natt];
}

static struct shm_attach *att_find(struct shm_peer *sp, uint32_t region, uint32_t *idx)
{
	for (uint32_t i = 0; i < sp->natt; i++) {
		if (sp->att[i]->region == region) {
			if (idx)
				*idx = i;
			return sp->att[i];
		}
	}
	return NULL;
}

static void on_peer_event(kvf_loop *loop, int fd, unsigned ev, void *ud);

static int sp_connect(struct shm_peer *sp)
{
	uint32_t pid;
	if (fab_addr_shm_parse(&sp->p->addr[KVF_FABRIC_SHM], sp->sock, sizeof(sp->sock), &pid) < 0)
		return kvf_errf(KVF_E_PROTO, "shm: bad address of %s", sp->p->name);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kvf_errf(KVF_E_IO, "shm: socket: %s", strerror(errno));
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	size_t nl = strlen(sp->sock);
	if (nl + 1 > sizeof(sa.sun_path))
		nl = sizeof(sa.sun_path) - 1;
	memcpy(sa.sun_path + 1, sp->sock, nl); /* abstract namespace */
	if (connect(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + nl)) != 0) {
		int e = errno;
		close(fd);
		return kvf_errf(e == ECONNREFUSED || e == ENOENT ? KVF_E_CONNREFUSED : KVF_E_PEERDEAD,
				"shm: connect to %s (@%s): %s", sp->p->name, sp->sock, strerror(e));
	}
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, SHM_MSG_MAX);
	kvf_wire_put_bytes(&w, fab_node(sp->tp->f), 16);
	kvf_wire_put_str(&w, kvf_fabric_node_name(sp->tp->f));
	int rc = send_msg(fd, SHM_HELLO, 0, w.buf, w.len, -1);
	kvf_wire_writer_free(&w);
	if (rc == 0)
		rc = kvf_loop_add_fd(fab_loop(sp->tp->f), fd, KVF_EV_READ, on_peer_event, sp);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	sp->fd = fd;
	sp->open = 0;
	return 0;
}

static void job_start(struct shm_tp *tp, struct shm_peer *sp, struct shm_attach *a, struct fab_req *r)
{
	/* every op inside the attached region under a valid block token, or
	 * nothing moves */
	for (uint32_t i = 0; i < r->nops; i++) {
		const struct fab_op *op = &r->ops[i];
		const struct fab_rblock *b = &r->rd->blocks[op->blk];
		if (op->raddr < a->base || op->len > a->len || op->raddr - a->base > a->len - op->len ||
		    b->addr < a->base || b->len > a->len || b->addr - a->base > a->len - b->len) {
			fab_req_stop(r, KVF_E_ACCESS, "shm: op outside the attached region");
			return;
		}
		if (fab_token(a->secret, a->region, b->addr, b->len) != b->token) {
			fab_req_stop(r, KVF_E_ACCESS, "shm: bad access token");
			return;
		}
	}
	struct shm_job *j = tp->free_jobs;
	if (j)
		tp->free_jobs = j->next;
	else if (!(j = kvf_malloc(sizeof(*j)))) {
		fab_req_stop(r, KVF_E_NOMEM, "shm: out of memory");
		return;
	}
	j->next = NULL;
	j->r = r;
	j->sp = sp;
	j->a = a;
	j->op = 0;
	j->off = 0;
	a->users++;
	fab_req_units_add(r, 1);
	fab_req_issued(r);
	if (tp->jobs_tail)
		tp->jobs_tail->next = j;
	else
		tp->jobs = j;
	tp->jobs_tail = j;
	shm_kick(tp);
}

static void send_attach(struct shm_peer *sp, struct shm_attach *a, struct fab_req *r)
{
	const struct fab_rblock *b = &r->rd->blocks[r->ops[0].blk];
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, SHM_MSG_MAX);
	kvf_wire_put_u32(&w, r->rd->region);
	kvf_wire_put_u64(&w, b->addr);
	kvf_wire_put_u64(&w, b->len);
	kvf_wire_put_u64(&w, b->token);
	a->rid = ++sp->next_rid;
	int rc = send_msg(sp->fd, SHM_ATTACH, a->rid, w.buf, w.len, -1);
	kvf_wire_writer_free(&w);
	if (rc < 0)
		KVF_LOG_RL(KVF_LOG_WARN, 5, 1000, FAB_LOG, "shm: attach request failed", "peer=%s err=\"%s\"",
			   sp->p->name, kvf_errmsg());
}

/* Routes waiting requests whose attachment is settled. */
static void sp_dispatch(struct shm_peer *sp)
{
	if (!sp->open)
		return;
	struct fab_rq keep = { NULL, NULL, 0 };
	struct fab_req *r;
	while ((r = fab_rq_pop(&sp->wait))) {
		uint32_t idx;
		struct shm_attach *a = att_find(sp, r->rd->region, &idx);
		if (!a) {
			if (kvf_grow((void **)&sp->att, &sp->catt, sp->natt + 1, sizeof(*sp->att)) < 0 ||
			    !(a = kvf_calloc(1, sizeof(*a)))) {
				fab_req_stop(r, KVF_E_NOMEM, "shm: out of memory");
				continue;
			}
			idx = sp->natt;
			sp->att[sp->natt++] = a;
			a->region = r->rd->region;
			a->state = A_PENDING;
			send_attach(sp, a, r);
		}
		if (a->state == A_PENDING) {
			fab_rq_push(&keep, r);
		} else if (a->state == A_FAILED) {
			/* forget it: the next request asks again (tokens differ per block) */
			char why[160];
			snprintf(why, sizeof(why), "%s: %s", sp->p->name, a->why);
			int err = a->err;
			att_remove(sp, idx);
			fab_req_stop(r, err, why);
		} else {
			job_start(sp->tp, sp, a, r);
		}
	}
	sp->wait = keep;
}

static void sp_handle(struct shm_peer *sp, const kvf_frame_hdr *h, const uint8_t *p, int gfd)
{
	kvf_wire_reader r;
	kvf_wire_reader_init(&r, p, h->len);
	struct shm_tp *tp = sp->tp;
	switch (h->type) {
	case SHM_HELLO_OK: {
		uint8_t node[16];
		kvf_wire_get_bytes(&r, node, 16);
		sp->pid = kvf_wire_get_u32(&r);
		if (kvf_wire_reader_done(&r) < 0 || memcmp(node, sp->p->node, 16) != 0) {
			sp_fail_now(sp, KVF_E_PEERDEAD, "shm: the socket belongs to another node");
			return;
		}
		sp->open = 1;
		fab_peer_progress(sp->p);
		sp_dispatch(sp);
		return;
	}
	case SHM_ATTACH_OK:
	case SHM_ERROR: {
		struct shm_attach *a = NULL;
		for (uint32_t i = 0; i < sp->natt && !a; i++)
			if (sp->att[i]->state == A_PENDING && sp->att[i]->rid == h->request_id)
				a = sp->att[i];
		if (!a) {
			sp_fail_now(sp, KVF_E_PROTO, "shm: unexpected reply");
			return;
		}
		fab_peer_progress(sp->p);
		if (h->type == SHM_ERROR) {
			int32_t code = (int32_t)kvf_wire_get_u32(&r);
			kvf_wire_get_str(&r, a->why, sizeof(a->why));
			a->state = A_FAILED;
			a->err = code < 0 && strcmp(kvf_errname(code), "UNKNOWN") ? code : KVF_E_PROTO;
			sp_dispatch(sp);
			return;
		}
		uint32_t region = kvf_wire_get_u32(&r);
		uint64_t base = kvf_wire_get_u64(&r), len = kvf_wire_get_u64(&r), moff = kvf_wire_get_u64(&r);
		uint8_t has_fd = kvf_wire_get_u8(&r);
		kvf_wire_get_bytes(&r, a->secret, 16);
		if (kvf_wire_reader_done(&r) < 0 || region != a->region || (has_fd && gfd < 0) || len == 0) {
			sp_fail_now(sp, KVF_E_PROTO, "shm: malformed ATTACH_OK");
			return;
		}
		a->base = base;
		a->len = len;
		if (gfd >= 0) {
			size_t pg = (size_t)sysconf(_SC_PAGESIZE);
			uint64_t aoff = moff & ~(uint64_t)(pg - 1);
			size_t mlen = (size_t)(len + (moff - aoff));
			void *m = mmap(NULL, mlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, gfd, (off_t)aoff);
			if (m == MAP_FAILED) {
				a->state = A_FAILED;
				a->err = KVF_E_NOMEM;
				snprintf(a->why, sizeof(a->why), "mmap of the peer's region: %s", strerror(errno));
			} else {
				a->map_raw = m;
				a->map_len = mlen;
				a->map = (uint8_t *)m + (moff - aoff);
				a->state = A_READY;
			}
		} else if (tp->allow_pvm && sp->p->host.pidns == fab_hostid_self()->pidns && sp->pid) {
			a->state = A_READY; /* process_vm_readv/writev */
		} else {
			a->state = A_FAILED;
			a->err = KVF_E_UNSUPPORTED;
			snprintf(a->why, sizeof(a->why),
				 "region is not in kvf_fabric_mem_alloc memory and process_vm is %s",
				 tp->allow_pvm ? "not possible across pid namespaces" : "disabled (shm_process_vm)");
		}
		sp_dispatch(sp);
		return;
	}
	case SHM_REVOKE: {
		uint32_t region = kvf_wire_get_u32(&r);
		if (kvf_wire_reader_done(&r) < 0) {
			sp_fail_now(sp, KVF_E_PROTO, "shm: malformed REVOKE");
			return;
		}
		uint32_t idx;
		struct shm_attach *a = att_find(sp, region, &idx);
		if (a) {
			/* fail the copies still using it, then unmap */
			for (struct shm_job **pp = &tp->jobs, *prev = NULL; *pp;) {
				struct shm_job *j = *pp;
				if (j->a == a) {
					*pp = j->next;
					if (tp->jobs_tail == j)
						tp->jobs_tail = prev;
					j->next = tp->free_jobs;
					tp->free_jobs = j;
					fab_req_unit_done(j->r, 0, KVF_E_NOTFOUND, "shm: the peer deregistered the region");
				} else {
					prev = j;
					pp = &j->next;
				}
			}
			att_remove(sp, idx);
		}
		uint8_t out[4] = { (uint8_t)region, (uint8_t)(region >> 8), (uint8_t)(region >> 16),
				   (uint8_t)(region >> 24) };
		send_msg(sp->fd, SHM_REVOKED, h->request_id, out, 4, -1);
		return;
	}
	}
	sp_fail_now(sp, KVF_E_PROTO, "shm: unexpected message");
}

static void on_peer_event(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct shm_peer *sp = ud;
	uint8_t buf[KVF_FRAME_HDR_LEN + SHM_MSG_MAX];
	for (int i = 0; i < 64 && sp->fd == fd; i++) {
		kvf_frame_hdr h;
		int gfd;
		int rc = recv_msg(fd, buf, sizeof(buf), &h, &gfd);
		if (rc == 0)
			return;
		if (rc < 0) {
			fab_peer_fail(sp->p, rc == KVF_E_PROTO ? KVF_E_PROTO : KVF_E_PEERDEAD, "shm: %s %s",
				      sp->p->name, rc == KVF_E_PROTO ? "sent a malformed message" : "closed its socket");
			return;
		}
		sp_handle(sp, &h, buf + KVF_FRAME_HDR_LEN, gfd);
		if (gfd >= 0)
			close(gfd); /* the mapping keeps the memory */
	}
}

/* Fails the peer from inside a handler: every transport drops it. */
static void sp_fail_now(struct shm_peer *sp, int err, const char *why)
{
	fab_peer_fail(sp->p, err, "%s", why);
}

/* ---- the copy engine ---- */

static void job_finish(struct shm_tp *tp, struct shm_job *j, int err, const char *why)
{
	tp->jobs = j->next;
	if (!tp->jobs)
		tp->jobs_tail = NULL;
	j->a->users--;
	struct fab_req *r = j->r;
	uint64_t bytes = 0;
	if (!err)
		for (uint32_t i = 0; i < r->nops; i++)
			bytes += r->ops[i].len;
	j->next = tp->free_jobs;
	tp->free_jobs = j;
	fab_peer_progress(j->sp->p);
	fab_req_unit_done(r, bytes, err, why);
}

/* Copies up to budget bytes of the head job; returns bytes copied. */
static uint64_t job_step(struct shm_tp *tp, struct shm_job *j, uint64_t budget)
{
	struct fab_req *r = j->r;
	uint64_t done = 0;
	if (atomic_load_explicit(&r->cancel, memory_order_relaxed)) {
		job_finish(tp, j, KVF_E_CANCELED, "canceled");
		return 0;
	}
	while (done < budget && j->op < r->nops) {
		const struct fab_op *op = &r->ops[j->op];
		uint64_t n = op->len - j->off;
		if (n > budget - done)
			n = budget - done;
		uint64_t ro = op->raddr - j->a->base + j->off;
		if (j->a->map) {
			if (r->opcode == FAB_OP_READ)
				memcpy(op->local + j->off, j->a->map + ro, n);
			else
				memcpy(j->a->map + ro, op->local + j->off, n);
		} else {
			struct iovec l = { op->local + j->off, n };
			struct iovec rm = { (void *)(uintptr_t)(op->raddr + j->off), n };
			ssize_t x = r->opcode == FAB_OP_READ ? process_vm_readv((pid_t)j->sp->pid, &l, 1, &rm, 1, 0)
							     : process_vm_writev((pid_t)j->sp->pid, &l, 1, &rm, 1, 0);
			if (x <= 0) {
				int e = errno;
				char why[160];
				snprintf(why, sizeof(why), "shm: process_vm_%sv: %s", r->opcode == FAB_OP_READ ? "read" : "write",
					 x == 0 ? "no progress" : strerror(e));
				job_finish(tp, j, e == ESRCH ? KVF_E_PEERDEAD : KVF_E_ACCESS, why);
				return done;
			}
			n = (uint64_t)x;
		}
		done += n;
		j->off += n;
		if (j->off == op->len) {
			j->off = 0;
			j->op++;
		}
	}
	if (j->op == r->nops)
		job_finish(tp, j, 0, NULL);
	return done;
}

static void pump_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct shm_tp *tp = ud;
	uint64_t budget = tp->slice;
	while (tp->jobs && budget) {
		struct shm_job *j = tp->jobs;
		uint64_t n = job_step(tp, j, budget);
		budget -= n < budget ? n : budget;
		if (tp->jobs == j && budget == 0 && j->next) {
			/* rotate so one big request does not starve others */
			tp->jobs = j->next;
			j->next = NULL;
			tp->jobs_tail->next = j;
			tp->jobs_tail = j;
		}
	}
	if (tp->jobs)
		shm_kick(tp);
}

static void shm_kick(struct shm_tp *tp)
{
	if (!kvf_timer_armed(&tp->pump))
		kvf_loop_timer_start(fab_loop(tp->f), &tp->pump, 0, 0, pump_cb, tp);
}

/* ---- vtable ---- */

static int shmt_open(kvf_fabric *f, void **out)
{
	struct shm_tp *tp = kvf_calloc(1, sizeof(*tp));
	if (!tp)
		return kvf_errf(KVF_E_NOMEM, "shm: open");
	tp->f = f;
	tp->pid = (uint32_t)getpid();
	tp->allow_pvm = fab_opts(f)->shm_process_vm;
	tp->slice = fab_opts(f)->shm_slice_bytes ? fab_opts(f)->shm_slice_bytes : (1u << 20);
	const uint8_t *n = fab_node(f);
	int k = snprintf(tp->name, sizeof(tp->name), "kvf-fabric-");
	for (int i = 0; i < 16; i++)
		k += snprintf(tp->name + k, sizeof(tp->name) - (size_t)k, "%02x", n[i]);
	tp->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (tp->lfd < 0) {
		kvf_free(tp);
		return kvf_errf(KVF_E_IO, "unix socket: %s", strerror(errno));
	}
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	size_t nl = strlen(tp->name);
	memcpy(sa.sun_path + 1, tp->name, nl);
	if (bind(tp->lfd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + nl)) != 0 ||
	    listen(tp->lfd, 64) != 0) {
		int e = errno;
		close(tp->lfd);
		kvf_free(tp);
		return kvf_errf(KVF_E_IO, "bind @%s: %s", tp->name, strerror(e));
	}
	if (kvf_loop_add_fd(fab_loop(f), tp->lfd, KVF_EV_READ, on_accept, tp) < 0) {
		close(tp->lfd);
		kvf_free(tp);
		return kvf_errf(KVF_E_IO, "shm: loop");
	}
	*out = tp;
	return 0;
}

static void shm_close(void *v)
{
	struct shm_tp *tp = v;
	kvf_loop *loop = fab_loop(tp->f);
	while (tp->srv)
		srv_free(tp->srv);
	kvf_loop_del_fd(loop, tp->lfd);
	close(tp->lfd);
	if (kvf_timer_armed(&tp->dw_timer))
		kvf_loop_timer_stop(loop, &tp->dw_timer);
	if (kvf_timer_armed(&tp->pump))
		kvf_loop_timer_stop(loop, &tp->pump);
	while (tp->free_jobs) {
		struct shm_job *j = tp->free_jobs;
		tp->free_jobs = j->next;
		kvf_free(j);
	}
	kvf_free(tp);
}

static void shm_export_addr(void *v, kvf_wire_writer *w)
{
	struct shm_tp *tp = v;
	fab_addr_shm_put(w, tp->name, tp->pid);
}

static int shm_reg(void *v, fab_region *r)
{
	r->key[KVF_FABRIC_SHM].present = 1;
	r->key[KVF_FABRIC_SHM].key = r->memfd >= 0; /* 1: mappable, 0: process_vm only */
	return 0;
}

static int shm_dereg(void *v, fab_region *r, int force)
{
	struct shm_tp *tp = v;
	if (force)
		return 0;
	int n = 0;
	for (struct shm_srv *s = tp->srv; s; s = s->next) {
		for (uint32_t i = 0; i < s->natt; i++) {
			if (s->att[i] != r->id)
				continue;
			uint8_t out[4] = { (uint8_t)r->id, (uint8_t)(r->id >> 8), (uint8_t)(r->id >> 16),
					   (uint8_t)(r->id >> 24) };
			if (send_msg(s->fd, SHM_REVOKE, 0, out, 4, -1) == 0) {
				s->revoke_pending = 1;
				n++;
			}
			break;
		}
	}
	if (n == 0)
		return 0;
	tp->dw = fab_dereg_current(tp->f);
	tp->dw_region = r->id;
	tp->dw_waiting = n;
	kvf_loop_timer_start(fab_loop(tp->f), &tp->dw_timer, fab_opts(tp->f)->timeout_ms, 0, on_dw_timeout, tp);
	return KVF_E_AGAIN;
}

static int shm_reachable(void *v, const kvf_fabric_rdesc *d, int lmem)
{
	const struct fab_hostid *me = fab_hostid_self();
	return d->addr[KVF_FABRIC_SHM].len && d->mem == KVF_FABRIC_MEM_HOST && lmem == KVF_FABRIC_MEM_HOST &&
	       d->host.boot == me->boot && d->host.netns == me->netns;
}

static void shm_submit(void *v, struct fab_peer *p, struct fab_req *r)
{
	struct shm_tp *tp = v;
	struct shm_peer *sp = sp_get(tp, p);
	if (!sp) {
		fab_req_stop(r, KVF_E_NOMEM, "shm: out of memory");
		return;
	}
	if (sp->fd < 0) {
		int rc = sp_connect(sp);
		if (rc < 0) {
			fab_req_stop(r, rc, kvf_errmsg());
			return;
		}
	}
	fab_rq_push(&sp->wait, r);
	sp_dispatch(sp);
}

static void shm_cancel(void *v, struct fab_peer *p, struct fab_req *r)
{
	struct shm_peer *sp = p->tstate[KVF_FABRIC_SHM];
	if (sp && fab_rq_remove(&sp->wait, r))
		fab_req_stop(r, KVF_E_CANCELED, "canceled");
	/* a job in progress sees the cancel flag at its next slice */
}

static void shm_peer_fail(void *v, struct fab_peer *p, int err, const char *detail)
{
	struct shm_tp *tp = v;
	struct shm_peer *sp = p->tstate[KVF_FABRIC_SHM];
	if (!sp)
		return;
	for (struct shm_job **pp = &tp->jobs, *prev = NULL; *pp;) {
		struct shm_job *j = *pp;
		if (j->sp == sp) {
			*pp = j->next;
			if (tp->jobs_tail == j)
				tp->jobs_tail = prev;
			j->a->users--;
			j->next = tp->free_jobs;
			tp->free_jobs = j;
			fab_req_unit_done(j->r, 0, err, detail);
		} else {
			prev = j;
			pp = &j->next;
		}
	}
	struct fab_req *r;
	while ((r = fab_rq_pop(&sp->wait)))
		fab_req_stop(r, err, detail);
	while (sp->natt)
		att_remove(sp, sp->natt - 1);
	if (sp->fd >= 0) {
		kvf_loop_del_fd(fab_loop(tp->f), sp->fd);
		close(sp->fd);
		sp->fd = -1;
	}
	sp->open = 0;
}

static void shm_peer_free(void *v, struct fab_peer *p)
{
	struct shm_peer *sp = p->tstate[KVF_FABRIC_SHM];
	if (!sp)
		return;
	shm_peer_fail(v, p, KVF_E_CANCELED, "closing");
	kvf_free(sp->att);
	kvf_free(sp);
	p->tstate[KVF_FABRIC_SHM] = NULL;
}

static void shm_peer_show(void *v, struct fab_peer *p, kvf_buf *out)
{
	struct shm_peer *sp = p->tstate[KVF_FABRIC_SHM];
	if (!sp)
		return;
	uint32_t mapped = 0;
	for (uint32_t i = 0; i < sp->natt; i++)
		mapped += sp->att[i]->map != NULL;
	kvf_buf_printf(out, "shm=%s shm_attached=%zu shm_mapped=%u shm_waiting=%u", sp->fd >= 0 ? "open" : "closed",
		       sp->natt, mapped, sp->wait.n);
}

const struct fab_transport fab_shm_transport = {
	.name = "shm",
	.kind = KVF_FABRIC_SHM,
	.open = shmt_open,
	.close = shm_close,
	.export_addr = shm_export_addr,
	.reg = shm_reg,
	.dereg = shm_dereg,
	.reachable = shm_reachable,
	.submit = shm_submit,
	.cancel = shm_cancel,
	.peer_fail = shm_peer_fail,
	.peer_free = shm_peer_free,
	.peer_show = shm_peer_show,
};
