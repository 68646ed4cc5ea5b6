/*
 * transport_verbs.c: one-sided RDMA READ/WRITE over rdma-core RC QPs,
 * connected with rdmacm (rping / rc_pingpong style).
 *
 * Per device (all RDMA devices, or opts.verbs_devices): a PD, a completion
 * channel + CQ whose fd sits in the fabric loop, and an rdmacm listener on
 * the device's IPv4 address (ephemeral port, carried in descriptors). A
 * region is registered once per device (ibv_reg_mr; GPU memory through
 * ibv_reg_dmabuf_mr on a dma-buf from cuMemGetHandleForAddressRange, which
 * needs 64 KiB-aligned, exactly-sized allocations); descriptors carry one
 * rkey per device. Per peer one RC QP per device pair (local i <-> remote i),
 * so a large batch is striped over NICs by bytes (vp_stripe).
 *
 * Posting uses verbs_plan.c: WRs of at most the port's max message size,
 * chained max_chain per ibv_post_send, one signaled WR per signal_every and
 * at every request's end, inline WRITEs up to inline_bytes; per-QP records
 * map signaled completions back to requests (vp_demux) and bound the send
 * queue. A WC error moves the QP to error: its groups fail (access errors as
 * KVF_E_ACCESS), the QP is torn down and rebuilt on the next request. A
 * failed or hung peer (core timeout) gets rdma_disconnect(): the QP flushes,
 * its records are orphaned so late flush completions are ignored.
 *
 * This machine has no RDMA device (ibv_get_device_list returns NULL,
 * ENOSYS): the transport then refuses to open with that reason and the
 * fabric runs without it. Everything below the device check is the code
 * path for real NICs; its device-free logic is unit-tested via verbs_plan.
 */
#include "kvf_features.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "fabric/fabric_int.h"
#include "fabric/verbs_plan.h"

#if KVF_HAVE_VERBS

#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <infiniband/verbs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <rdma/rdma_cma.h>
#include <unistd.h>

#include "common/kvf_net.h"

#define V_MAX_DEV FAB_VERBS_MAX_DEV
#define V_PLAN 64
#define V_CQ_BATCH 32
#define V_RESOLVE_MS 2000

struct v_tp;

struct v_dev {
	struct v_tp *tp;
	int idx;
	char name[64];
	char ip[64];
	struct rdma_cm_id *listen;
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_comp_channel *ch;
	struct ibv_cq *cq;
	uint16_t port;
	uint64_t max_msg;
	int max_cqe;
};

struct v_mr {
	struct ibv_mr *mr[V_MAX_DEV];
	int dmabuf_fd;
};

struct v_peer;

/* A request's share on one QP. */
struct v_sub {
	struct fab_req *r;
	struct v_sub *next;  /* QP queue */
	uint32_t n;          /* ops on this QP */
	uint32_t *idx;       /* their indices in r->ops */
	uint64_t *lens;      /* their lengths */
	struct vp_cursor cur;
	uint32_t groups;     /* records outstanding */
	int planned;
	uint32_t qi;         /* its QP */
	struct v_req *vr;
};

/* Per request: its subs (one allocation). */
struct v_req {
	uint32_t nsub, subs_planned;
	struct v_sub sub[];
};

struct v_qp {
	struct v_tp *tp;
	struct v_peer *vp;       /* NULL on the target side */
	struct v_qp *next;       /* tp list (qp_num lookup) */
	struct rdma_cm_id *id;
	struct ibv_qp *qp;
	struct v_dev *dev;
	int state;               /* vcm */
	int rdev;
	struct vp_ring ring;
	struct vp_rec *recs;
	uint32_t sq_depth;
	struct v_sub *qhead, *qtail;
	char why[128];
};

struct v_peer {
	struct fab_peer *p;
	struct fab_verbs_addr ra;
	struct v_qp *qp[V_MAX_DEV];
	int nqp;
};

struct v_tp {
	kvf_fabric *f;
	struct v_dev dev[V_MAX_DEV];
	int ndev;
	struct rdma_event_channel *cm;
	struct v_qp *qps;
	struct vp_cfg cfg;
	uint32_t sq_depth;
	uint32_t epoch;
};

static void qp_post(struct v_qp *q);

/* ---- helpers ---- */

/* The IPv4 address of the netdev behind RDMA device name (sysfs). */
static int dev_ipv4(const char *name, char *ip, size_t cap)
{
	char path[256];
	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/device/net", name);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	char netdev[64] = "";
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.') {
			snprintf(netdev, sizeof(netdev), "%s", e->d_name);
			break;
		}
	closedir(d);
	if (!netdev[0])
		return -1;
	struct ifaddrs *ifa;
	if (getifaddrs(&ifa) != 0)
		return -1;
	int rc = -1;
	for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || strcmp(i->ifa_name, netdev))
			continue;
		inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, ip, (socklen_t)cap);
		rc = 0;
		break;
	}
	freeifaddrs(ifa);
	return rc;
}

static int wanted(const char *list, const char *name)
{
	if (!list || !list[0])
		return 1;
	size_t n = strlen(name);
	for (const char *p = list; (p = strstr(p, name)); p += n)
		if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
			return 1;
	return 0;
}

static int parse_sockaddr(const char *hostport, struct sockaddr_storage *ss)
{
	char host[64];
	const char *colon = strrchr(hostport, ':');
	if (!colon || (size_t)(colon - hostport) >= sizeof(host))
		return -1;
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = 0;
	struct addrinfo hints = { .ai_family = AF_INET, .ai_flags = AI_NUMERICHOST }, *res;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

static int wc_err(enum ibv_wc_status s)
{
	switch (s) {
	case IBV_WC_REM_ACCESS_ERR:
	case IBV_WC_LOC_PROT_ERR:
	case IBV_WC_LOC_ACCESS_ERR:
	case IBV_WC_REM_INV_REQ_ERR:
	case IBV_WC_MW_BIND_ERR:
		return KVF_E_ACCESS;
	case IBV_WC_RETRY_EXC_ERR:
	case IBV_WC_RNR_RETRY_EXC_ERR:
	case IBV_WC_REM_ABORT_ERR:
	case IBV_WC_FATAL_ERR:
	case IBV_WC_RESP_TIMEOUT_ERR:
		return KVF_E_PEERDEAD;
	default:
		return KVF_E_IO;
	}
}

/* ---- requests on QPs ---- */

static void sub_release(struct v_sub *s)
{
	struct v_req *vr = s->vr;
	if (s->groups || !s->planned)
		return;
	if (++vr->subs_planned == vr->nsub) /* every share planned and finished */
		kvf_free(vr);
}

/* A group of s finished (ok) or failed (err). */
static void group_done(struct v_sub *s, uint64_t bytes, int err, const char *why)
{
	struct fab_req *r = s->r;
	s->groups--;
	sub_release(s);
	fab_req_unit_done(r, bytes, err, why);
}

static void fail_tag(void *ud, uint64_t tag)
{
	struct v_qp *q = ud;
	group_done((struct v_sub *)(uintptr_t)tag, 0, KVF_E_PEERDEAD, q->why[0] ? q->why : "verbs: QP failed");
}

static void sub_planned(struct v_sub *s)
{
	s->planned = 1;
	struct fab_req *r = s->r;
	struct v_req *vr = s->vr;
	uint32_t planned = 0;
	for (uint32_t i = 0; i < vr->nsub; i++)
		planned += vr->sub[i].planned;
	int all = planned == vr->nsub;
	sub_release(s);
	if (all)
		fab_req_issued(r);
}

/* Tears q down: fails its groups and queued shares with err. */
static void qp_fail(struct v_qp *q, int err, const char *why)
{
	snprintf(q->why, sizeof(q->why), "%s", why);
	int action;
	q->state = vcm_next(q->state, VCM_EV_WC_ERROR, &action);
	vp_ring_fail_all(&q->ring, fail_tag, q);
	while (q->qhead) {
		struct v_sub *s = q->qhead;
		q->qhead = s->next;
		fab_req_stop(s->r, err, why);
		sub_planned(s);
	}
	q->qtail = NULL;
	if (q->id) {
		rdma_disconnect(q->id); /* QP to error: outstanding WRs flush */
		if (q->qp)
			rdma_destroy_qp(q->id);
		q->qp = NULL;
		rdma_destroy_id(q->id);
		q->id = NULL;
	}
	q->ring.epoch = ++q->tp->epoch; /* completions of the old QP are ignored */
	q->state = VCM_ERROR;
}

static void qp_post(struct v_qp *q)
{
	struct v_tp *tp = q->tp;
	struct vp_cfg cfg = tp->cfg;
	cfg.max_msg = q->dev->max_msg;
	while (q->qhead && q->state == VCM_READY) {
		struct v_sub *s = q->qhead;
		struct fab_req *r = s->r;
		if (atomic_load_explicit(&r->cancel, memory_order_relaxed)) {
			q->qhead = s->next;
			if (!q->qhead)
				q->qtail = NULL;
			fab_req_stop(r, KVF_E_CANCELED, "canceled");
			sub_planned(s);
			continue;
		}
		uint32_t free_wr = q->sq_depth - q->ring.wrs;
		if (!free_wr)
			return;
		cfg.is_write = r->opcode == FAB_OP_WRITE;
		struct vp_wr plan[V_PLAN];
		size_t n = vp_plan(&cfg, s->lens, s->n, &s->cur, plan, free_wr < V_PLAN ? free_wr : V_PLAN);
		struct ibv_send_wr wr[V_PLAN], *bad = NULL;
		struct ibv_sge sge[V_PLAN];
		const kvf_fabric_rdesc *d = r->rd;
		uint32_t rkeys[V_MAX_DEV], nrk = 0;
		vp_unpack_rkeys(d->key[KVF_FABRIC_VERBS].x, d->key[KVF_FABRIC_VERBS].xlen, rkeys, V_MAX_DEV, &nrk);
		int64_t open = -1;
		for (size_t i = 0; i < n; i++) {
			const struct fab_op *op = &r->ops[s->idx[plan[i].op]];
			uint8_t *local = op->local + plan[i].off;
			uint32_t lkey = 0;
			for (uint32_t k = 0; k < r->nlregs; k++) {
				fab_region *lr = r->lregs[k];
				struct v_mr *vm = lr->tpriv[KVF_FABRIC_VERBS];
				if (vm && local >= lr->base && local < lr->base + lr->len)
					lkey = vm->mr[q->dev->idx]->lkey;
			}
			if (open < 0) {
				open = vp_ring_open(&q->ring, (uint64_t)(uintptr_t)s);
				fab_req_units_add(r, 1);
				s->groups++;
			}
			vp_ring_add(&q->ring, (uint32_t)open, plan[i].len);
			sge[i] = (struct ibv_sge){ (uintptr_t)local, (uint32_t)plan[i].len, lkey };
			memset(&wr[i], 0, sizeof(wr[i]));
			wr[i].wr_id = vp_wrid(&q->ring, (uint32_t)open);
			wr[i].sg_list = &sge[i];
			wr[i].num_sge = 1;
			wr[i].opcode = r->opcode == FAB_OP_READ ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
			wr[i].send_flags = (plan[i].signaled ? IBV_SEND_SIGNALED : 0) | (plan[i].inl ? IBV_SEND_INLINE : 0);
			wr[i].wr.rdma.remote_addr = op->raddr + plan[i].off;
			wr[i].wr.rdma.rkey = (uint32_t)q->rdev < nrk ? rkeys[q->rdev] : rkeys[0];
			wr[i].next = plan[i].chain_end || i + 1 == n ? NULL : &wr[i + 1];
			if (plan[i].signaled) {
				vp_ring_close(&q->ring, (uint32_t)open);
				open = -1;
			}
		}
		for (size_t i = 0; i < n;) {
			size_t j = i;
			while (wr[j].next)
				j++;
			int rc = ibv_post_send(q->qp, &wr[i], &bad);
			if (rc) {
				char why[128];
				snprintf(why, sizeof(why), "verbs: ibv_post_send: %s", strerror(rc));
				qp_fail(q, KVF_E_IO, why);
				return;
			}
			i = j + 1;
		}
		fab_peer_progress(q->vp->p);
		if (vp_done(&s->cur, s->n)) {
			q->qhead = s->next;
			if (!q->qhead)
				q->qtail = NULL;
			sub_planned(s);
		}
	}
}

/* ---- completions ---- */

static struct v_qp *qp_by_num(struct v_tp *tp, uint32_t num)
{
	for (struct v_qp *q = tp->qps; q; q = q->next)
		if (q->qp && q->qp->qp_num == num)
			return q;
	return NULL;
}

static void on_cq(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct v_dev *dv = ud;
	struct ibv_cq *cq;
	void *ctx;
	if (ibv_get_cq_event(dv->ch, &cq, &ctx) == 0) {
		ibv_ack_cq_events(cq, 1);
		ibv_req_notify_cq(cq, 0);
	}
	struct ibv_wc wc[V_CQ_BATCH];
	int n;
	while ((n = ibv_poll_cq(dv->cq, V_CQ_BATCH, wc)) > 0) {
		for (int i = 0; i < n; i++) {
			struct v_qp *q = qp_by_num(dv->tp, wc[i].qp_num);
			if (!q)
				continue; /* a destroyed QP's flush */
			struct vp_event e;
			int ok = wc[i].status == IBV_WC_SUCCESS;
			if (vp_demux(&q->ring, wc[i].wr_id, ok, &e) == 1) {
				char why[160] = "";
				if (!ok)
					snprintf(why, sizeof(why), "verbs: %s on %s", ibv_wc_status_str(wc[i].status),
						 q->vp ? q->vp->p->name : "?");
				group_done((struct v_sub *)(uintptr_t)e.tag, e.bytes, ok ? 0 : wc_err(wc[i].status),
					   why);
			}
			if (!ok && wc[i].status != IBV_WC_WR_FLUSH_ERR && q->state == VCM_READY) {
				char why[160];
				snprintf(why, sizeof(why), "verbs: QP error after %s", ibv_wc_status_str(wc[i].status));
				int err = wc_err(wc[i].status);
				if (err == KVF_E_PEERDEAD && q->vp)
					fab_peer_fail(q->vp->p, err, "%s", why);
				else
					qp_fail(q, KVF_E_IO, why);
			}
		}
		if (n < V_CQ_BATCH)
			break;
	}
	for (struct v_qp *q = dv->tp->qps; q; q = q->next)
		if (q->dev == dv && q->qhead)
			qp_post(q);
}

/* ---- connection management ---- */

static int qp_create(struct v_qp *q)
{
	struct v_tp *tp = q->tp;
	for (int i = 0; i < tp->ndev; i++)
		if (tp->dev[i].ctx == q->id->verbs)
			q->dev = &tp->dev[i];
	if (!q->dev)
		return kvf_errf(KVF_E_NODEV, "verbs: rdmacm chose a device not opened here");
	struct ibv_qp_init_attr attr = {
		.send_cq = q->dev->cq,
		.recv_cq = q->dev->cq,
		.cap = { .max_send_wr = q->sq_depth, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1,
			 .max_inline_data = tp->cfg.inline_max },
		.qp_type = IBV_QPT_RC,
		.sq_sig_all = 0,
	};
	if (rdma_create_qp(q->id, q->dev->pd, &attr) != 0) {
		attr.cap.max_inline_data = 0; /* some devices have none */
		if (rdma_create_qp(q->id, q->dev->pd, &attr) != 0)
			return kvf_errf(KVF_E_IO, "verbs: rdma_create_qp: %s", strerror(errno));
	}
	q->qp = q->id->qp;
	return 0;
}

static struct v_qp *qp_new(struct v_tp *tp, struct v_peer *vp)
{
	struct v_qp *q = kvf_calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->tp = tp;
	q->vp = vp;
	uint32_t cap = 1;
	while (cap < tp->sq_depth)
		cap <<= 1;
	q->sq_depth = tp->sq_depth;
	q->recs = kvf_calloc(cap, sizeof(*q->recs));
	if (!q->recs || vp_ring_init(&q->ring, cap, q->recs) < 0) {
		kvf_free(q->recs);
		kvf_free(q);
		return NULL;
	}
	q->ring.epoch = ++tp->epoch;
	q->next = tp->qps;
	tp->qps = q;
	return q;
}

static void qp_free(struct v_qp *q)
{
	struct v_tp *tp = q->tp;
	for (struct v_qp **pp = &tp->qps; *pp; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	if (q->id) {
		if (q->qp)
			rdma_destroy_qp(q->id);
		rdma_destroy_id(q->id);
	}
	kvf_free(q->recs);
	kvf_free(q);
}

/* Runs the state machine's action for q. */
static void qp_step(struct v_qp *q, int event)
{
	struct v_tp *tp = q->tp;
	int action;
	q->state = vcm_next(q->state, event, &action);
	switch (action) {
	case VCM_DO_RESOLVE_ADDR: {
		struct sockaddr_storage src, dst;
		char sbuf[80];
		snprintf(sbuf, sizeof(sbuf), "%s:0", tp->dev[q->rdev < tp->ndev ? q->rdev : 0].ip);
		if (rdma_create_id(tp->cm, &q->id, q, RDMA_PS_TCP) != 0 || parse_sockaddr(sbuf, &src) < 0 ||
		    parse_sockaddr(q->vp->ra.cm[q->rdev], &dst) < 0 ||
		    rdma_resolve_addr(q->id, (struct sockaddr *)&src, (struct sockaddr *)&dst, V_RESOLVE_MS) != 0)
			qp_fail(q, KVF_E_PEERDEAD, "verbs: rdma_resolve_addr failed");
		break;
	}
	case VCM_DO_RESOLVE_ROUTE:
		if (rdma_resolve_route(q->id, V_RESOLVE_MS) != 0)
			qp_fail(q, KVF_E_PEERDEAD, "verbs: rdma_resolve_route failed");
		break;
	case VCM_DO_CONNECT: {
		if (qp_create(q) < 0) {
			qp_fail(q, KVF_E_IO, kvf_errmsg());
			break;
		}
		struct rdma_conn_param cp = {
			.private_data = fab_node(tp->f),
			.private_data_len = 16,
			.responder_resources = 16,
			.initiator_depth = 16,
			.retry_count = 7,
			.rnr_retry_count = 7,
		};
		if (rdma_connect(q->id, &cp) != 0)
			qp_fail(q, KVF_E_PEERDEAD, "verbs: rdma_connect failed");
		break;
	}
	case VCM_DO_POST:
		fab_peer_progress(q->vp->p);
		qp_post(q);
		break;
	case VCM_DO_FAIL:
		if (q->vp)
			fab_peer_fail(q->vp->p, KVF_E_PEERDEAD, "verbs: connection to %s lost (%s)", q->vp->p->name,
				      vcm_state_name(q->state));
		break;
	}
}

static int cm_event_of(enum rdma_cm_event_type t)
{
	switch (t) {
	case RDMA_CM_EVENT_ADDR_RESOLVED: return VCM_EV_ADDR_RESOLVED;
	case RDMA_CM_EVENT_ROUTE_RESOLVED: return VCM_EV_ROUTE_RESOLVED;
	case RDMA_CM_EVENT_ESTABLISHED: return VCM_EV_ESTABLISHED;
	case RDMA_CM_EVENT_ADDR_ERROR: return VCM_EV_ADDR_ERROR;
	case RDMA_CM_EVENT_ROUTE_ERROR: return VCM_EV_ROUTE_ERROR;
	case RDMA_CM_EVENT_UNREACHABLE: return VCM_EV_UNREACHABLE;
	case RDMA_CM_EVENT_REJECTED: return VCM_EV_REJECTED;
	case RDMA_CM_EVENT_CONNECT_ERROR: return VCM_EV_CONNECT_ERROR;
	case RDMA_CM_EVENT_DISCONNECTED:
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
	case RDMA_CM_EVENT_TIMEWAIT_EXIT: return VCM_EV_DISCONNECTED;
	default: return -1;
	}
}

static void on_connect_request(struct v_tp *tp, struct rdma_cm_id *id)
{
	struct v_qp *q = qp_new(tp, NULL);
	struct rdma_conn_param cp = { .responder_resources = 16, .initiator_depth = 16 };
	if (!q) {
		rdma_reject(id, NULL, 0);
		rdma_destroy_id(id);
		return;
	}
	q->id = id;
	id->context = q;
	q->sq_depth = 1; /* the target posts nothing: peers read and write it */
	if (qp_create(q) < 0 || rdma_accept(id, &cp) != 0) {
		KVF_LOG_RL(KVF_LOG_WARN, 5, 1000, FAB_LOG, "verbs: cannot accept", "err=\"%s\"", kvf_errmsg());
		rdma_reject(id, NULL, 0);
		qp_free(q);
		return;
	}
	q->state = VCM_CONNECTING;
}

static void on_cm(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct v_tp *tp = ud;
	struct rdma_cm_event *e;
	while (rdma_get_cm_event(tp->cm, &e) == 0) {
		struct rdma_cm_id *id = e->id;
		enum rdma_cm_event_type type = e->event;
		void *ctx = id ? id->context : NULL;
		if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
			rdma_ack_cm_event(e);
			on_connect_request(tp, id);
			continue;
		}
		rdma_ack_cm_event(e); /* before anything may destroy the id */
		struct v_qp *q = ctx;
		int found = 0;
		for (struct v_qp *x = tp->qps; x; x = x->next)
			found |= x == q;
		if (!found)
			continue;
		int vev = cm_event_of(type);
		if (vev < 0)
			continue;
		if (!q->vp) { /* target side: only lifetime matters */
			if (vev == VCM_EV_ESTABLISHED)
				q->state = VCM_READY;
			else if (vev == VCM_EV_DISCONNECTED)
				qp_free(q);
			continue;
		}
		qp_step(q, vev);
	}
}

/* ---- vtable ---- */

static void verbs_close(void *v)
{
	struct v_tp *tp = v;
	kvf_loop *loop = fab_loop(tp->f);
	while (tp->qps)
		qp_free(tp->qps);
	for (int i = 0; i < tp->ndev; i++) {
		struct v_dev *d = &tp->dev[i];
		if (d->ch)
			kvf_loop_del_fd(loop, d->ch->fd);
		if (d->listen)
			rdma_destroy_id(d->listen);
		if (d->cq)
			ibv_destroy_cq(d->cq);
		if (d->ch)
			ibv_destroy_comp_channel(d->ch);
		if (d->pd)
			ibv_dealloc_pd(d->pd);
	}
	if (tp->cm) {
		kvf_loop_del_fd(loop, tp->cm->fd);
		rdma_destroy_event_channel(tp->cm);
	}
	kvf_free(tp);
}

static int dev_open(struct v_tp *tp, struct v_dev *d)
{
	struct sockaddr_storage ss;
	char hp[80];
	snprintf(hp, sizeof(hp), "%s:0", d->ip);
	if (parse_sockaddr(hp, &ss) < 0)
		return kvf_errf(KVF_E_CONFIG, "verbs: %s: bad address %s", d->name, d->ip);
	if (rdma_create_id(tp->cm, &d->listen, d, RDMA_PS_TCP) != 0 ||
	    rdma_bind_addr(d->listen, (struct sockaddr *)&ss) != 0 || rdma_listen(d->listen, 64) != 0)
		return kvf_errf(KVF_E_IO, "verbs: %s: rdmacm listen on %s: %s", d->name, d->ip, strerror(errno));
	d->ctx = d->listen->verbs;
	if (!d->ctx)
		return kvf_errf(KVF_E_NODEV, "verbs: %s: %s is not on an RDMA device", d->name, d->ip);
	d->port = ntohs(rdma_get_src_port(d->listen));
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	if (ibv_query_device(d->ctx, &da) != 0 ||
	    ibv_query_port(d->ctx, (uint8_t)fab_opts(tp->f)->verbs_port, &pa) != 0)
		return kvf_errf(KVF_E_IO, "verbs: %s: query failed", d->name);
	if (pa.state != IBV_PORT_ACTIVE)
		KVF_WARN(FAB_LOG, "verbs: port not active", "dev=%s port=%d", d->name, (int)fab_opts(tp->f)->verbs_port);
	d->max_msg = pa.max_msg_sz ? pa.max_msg_sz : (1u << 30);
	d->max_cqe = da.max_cqe;
	int cqe = (int)tp->sq_depth * 64;
	if (cqe > da.max_cqe)
		cqe = da.max_cqe;
	if (!(d->pd = ibv_alloc_pd(d->ctx)) || !(d->ch = ibv_create_comp_channel(d->ctx)) ||
	    !(d->cq = ibv_create_cq(d->ctx, cqe, d, d->ch, 0)) || ibv_req_notify_cq(d->cq, 0) != 0)
		return kvf_errf(KVF_E_IO, "verbs: %s: pd/cq: %s", d->name, strerror(errno));
	kvf_net_set_nonblock(d->ch->fd, 1);
	if (kvf_loop_add_fd(fab_loop(tp->f), d->ch->fd, KVF_EV_READ, on_cq, d) < 0)
		return kvf_errf(KVF_E_IO, "verbs: loop");
	return 0;
}

static int verbs_open(kvf_fabric *f, void **out)
{
	const kvf_fabric_opts *o = fab_opts(f);
	int num = 0;
	errno = 0;
	struct ibv_device **list = ibv_get_device_list(&num);
	if (!list)
		return kvf_errf(KVF_E_NODEV, "no RDMA device: ibv_get_device_list: %s",
				errno ? strerror(errno) : "failed");
	if (num == 0) {
		ibv_free_device_list(list);
		return kvf_errf(KVF_E_NODEV, "no RDMA device: ibv_get_device_list found none");
	}
	struct v_tp *tp = kvf_calloc(1, sizeof(*tp));
	if (!tp) {
		ibv_free_device_list(list);
		return kvf_errf(KVF_E_NOMEM, "verbs: open");
	}
	tp->f = f;
	tp->sq_depth = (uint32_t)o->verbs_sq_depth;
	tp->cfg.max_chain = (uint32_t)o->verbs_max_chain;
	tp->cfg.signal_every = (uint32_t)o->verbs_signal_every;
	tp->cfg.inline_max = (uint32_t)o->verbs_inline_bytes;
	for (int i = 0; i < num && tp->ndev < V_MAX_DEV; i++) {
		const char *name = ibv_get_device_name(list[i]);
		if (!wanted(o->verbs_devices, name))
			continue;
		struct v_dev *d = &tp->dev[tp->ndev];
		snprintf(d->name, sizeof(d->name), "%s", name);
		if (dev_ipv4(name, d->ip, sizeof(d->ip)) < 0) {
			KVF_INFO(FAB_LOG, "verbs: device without an IPv4 address skipped", "dev=%s", name);
			continue;
		}
		d->tp = tp;
		d->idx = tp->ndev++;
	}
	ibv_free_device_list(list);
	if (tp->ndev == 0) {
		kvf_free(tp);
		return kvf_errf(KVF_E_NODEV, "no usable RDMA device (none with an IPv4 address%s%s)",
				o->verbs_devices && o->verbs_devices[0] ? " among " : "",
				o->verbs_devices ? o->verbs_devices : "");
	}
	int rc;
	if (!(tp->cm = rdma_create_event_channel())) {
		rc = kvf_errf(KVF_E_IO, "verbs: rdma_create_event_channel: %s", strerror(errno));
		goto fail;
	}
	kvf_net_set_nonblock(tp->cm->fd, 1);
	if ((rc = kvf_loop_add_fd(fab_loop(f), tp->cm->fd, KVF_EV_READ, on_cm, tp)) < 0)
		goto fail;
	for (int i = 0; i < tp->ndev; i++)
		if ((rc = dev_open(tp, &tp->dev[i])) < 0)
			goto fail;
	for (int i = 0; i < tp->ndev; i++)
		KVF_INFO(FAB_LOG, "verbs device", "dev=%s ip=%s port=%u max_msg=%llu", tp->dev[i].name, tp->dev[i].ip,
			 tp->dev[i].port, (unsigned long long)tp->dev[i].max_msg);
	*out = tp;
	return 0;
fail:
	verbs_close(tp);
	return rc;
}

static void verbs_export_addr(void *v, kvf_wire_writer *w)
{
	struct v_tp *tp = v;
	struct fab_verbs_addr a;
	memset(&a, 0, sizeof(a));
	a.ndev = (uint32_t)tp->ndev;
	for (int i = 0; i < tp->ndev; i++)
		snprintf(a.cm[i], sizeof(a.cm[i]), "%s:%u", tp->dev[i].ip, tp->dev[i].port);
	fab_addr_verbs_put(w, &a);
}

static int verbs_dereg(void *v, fab_region *r, int force);

static int verbs_reg(void *v, fab_region *r)
{
	struct v_tp *tp = v;
	struct v_mr *vm = kvf_calloc(1, sizeof(*vm));
	if (!vm)
		return kvf_errf(KVF_E_NOMEM, "verbs: reg");
	vm->dmabuf_fd = -1;
	int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
	if (r->mem == KVF_FABRIC_MEM_CUDA) {
		/* GPUDirect RDMA through dma-buf: the range must be the exact,
		 * 64 KiB-aligned allocation */
		if (((uintptr_t)r->base & 0xffff) || (r->len & 0xffff)) {
			kvf_free(vm);
			KVF_INFO(FAB_LOG, "verbs: GPU region not 64 KiB aligned; not reachable over verbs", "region=%u", r->id);
			return 0;
		}
		if (fab_cuda_dmabuf_fd(r->base, r->len, &vm->dmabuf_fd) < 0) {
			kvf_free(vm);
			KVF_INFO(FAB_LOG, "verbs: no dma-buf for GPU region; not reachable over verbs", "region=%u err=\"%s\"",
				 r->id, kvf_errmsg());
			return 0;
		}
	}
	uint32_t rkeys[V_MAX_DEV];
	for (int i = 0; i < tp->ndev; i++) {
		struct ibv_mr *mr = r->mem == KVF_FABRIC_MEM_CUDA
					    ? ibv_reg_dmabuf_mr(tp->dev[i].pd, 0, r->len, (uintptr_t)r->base, vm->dmabuf_fd, access)
					    : ibv_reg_mr(tp->dev[i].pd, r->base, r->len, access);
		if (!mr) {
			int e = errno;
			r->tpriv[KVF_FABRIC_VERBS] = vm;
			verbs_dereg(v, r, 1);
			return kvf_errf(KVF_E_IO, "verbs: %s on %s: %s",
					r->mem == KVF_FABRIC_MEM_CUDA ? "ibv_reg_dmabuf_mr" : "ibv_reg_mr", tp->dev[i].name,
					strerror(e));
		}
		vm->mr[i] = mr;
		rkeys[i] = mr->rkey;
	}
	r->tpriv[KVF_FABRIC_VERBS] = vm;
	struct fab_tkey *k = &r->key[KVF_FABRIC_VERBS];
	k->present = 1;
	k->key = rkeys[0];
	k->xlen = (uint16_t)vp_pack_rkeys(rkeys, (uint32_t)tp->ndev, k->x, sizeof(k->x));
	return 0;
}

static int verbs_dereg(void *v, fab_region *r, int force)
{
	struct v_mr *vm = r->tpriv[KVF_FABRIC_VERBS];
	if (!vm)
		return 0;
	for (int i = 0; i < V_MAX_DEV; i++)
		if (vm->mr[i])
			ibv_dereg_mr(vm->mr[i]);
	if (vm->dmabuf_fd >= 0)
		close(vm->dmabuf_fd);
	kvf_free(vm);
	r->tpriv[KVF_FABRIC_VERBS] = NULL;
	return 0;
}

static int verbs_reachable(void *v, const kvf_fabric_rdesc *d, int lmem)
{
	struct fab_verbs_addr a;
	return d->addr[KVF_FABRIC_VERBS].len && d->key[KVF_FABRIC_VERBS].present &&
	       fab_addr_verbs_parse(&d->addr[KVF_FABRIC_VERBS], &a) == 0;
}

static struct v_peer *vpeer_get(struct v_tp *tp, struct fab_peer *p)
{
	struct v_peer *vp = p->tstate[KVF_FABRIC_VERBS];
	if (vp)
		return vp;
	vp = kvf_calloc(1, sizeof(*vp));
	if (!vp)
		return NULL;
	vp->p = p;
	if (fab_addr_verbs_parse(&p->addr[KVF_FABRIC_VERBS], &vp->ra) < 0) {
		kvf_free(vp);
		return NULL;
	}
	vp->nqp = tp->ndev < (int)vp->ra.ndev ? tp->ndev : (int)vp->ra.ndev;
	p->tstate[KVF_FABRIC_VERBS] = vp;
	return vp;
}

static void verbs_submit(void *v, struct fab_peer *p, struct fab_req *r)
{
	struct v_tp *tp = v;
	struct v_peer *vp = vpeer_get(tp, p);
	if (!vp) {
		fab_req_stop(r, KVF_E_NOMEM, "verbs: peer state");
		return;
	}
	for (int i = 0; i < vp->nqp; i++) {
		if (!vp->qp[i]) {
			if (!(vp->qp[i] = qp_new(tp, vp))) {
				fab_req_stop(r, KVF_E_NOMEM, "verbs: QP state");
				return;
			}
			vp->qp[i]->rdev = i;
		}
		if (vp->qp[i]->state == VCM_IDLE || vp->qp[i]->state == VCM_ERROR)
			qp_step(vp->qp[i], VCM_EV_START);
	}
	/* stripe the ops over the QPs by bytes */
	uint32_t n = r->nops, nq = (uint32_t)vp->nqp;
	size_t sz = sizeof(struct v_req) + nq * sizeof(struct v_sub) + n * (2 * sizeof(uint32_t) + sizeof(uint64_t)) +
		    n * sizeof(uint64_t);
	struct v_req *vr = kvf_calloc(1, sz);
	if (!vr) {
		fab_req_stop(r, KVF_E_NOMEM, "verbs: request state");
		return;
	}
	uint64_t *lens_all = (uint64_t *)(vr->sub + nq);
	uint64_t *lens = lens_all + n;
	uint32_t *dev_of = (uint32_t *)(lens + n);
	uint32_t *idx = dev_of + n;
	for (uint32_t i = 0; i < n; i++)
		lens_all[i] = r->ops[i].len;
	uint32_t *scratch = kvf_malloc(n * sizeof(uint32_t));
	if (!scratch) {
		kvf_free(vr);
		fab_req_stop(r, KVF_E_NOMEM, "verbs: request state");
		return;
	}
	vp_stripe(lens_all, n, nq, dev_of, scratch);
	kvf_free(scratch);
	uint32_t pos = 0;
	for (uint32_t qi = 0; qi < nq; qi++) {
		struct v_sub *s = &vr->sub[vr->nsub];
		s->idx = idx + pos;
		s->lens = lens + pos;
		for (uint32_t i = 0; i < n; i++)
			if (dev_of[i] == qi) {
				s->idx[s->n] = i;
				s->lens[s->n] = r->ops[i].len;
				s->n++;
			}
		if (!s->n)
			continue;
		pos += s->n;
		s->r = r;
		s->vr = vr;
		s->qi = qi;
		vr->nsub++;
	}
	/* queue each share on its QP */
	uint32_t nsub = vr->nsub; /* vr may go away once shares finish */
	struct v_sub *subs[V_MAX_DEV];
	for (uint32_t k = 0; k < nsub; k++)
		subs[k] = &vr->sub[k];
	for (uint32_t k = 0; k < nsub; k++) {
		struct v_sub *s = subs[k];
		struct v_qp *q = vp->qp[s->qi];
		s->next = NULL;
		if (q->qtail)
			q->qtail->next = s;
		else
			q->qhead = s;
		q->qtail = s;
	}
	for (int i = 0; i < vp->nqp; i++)
		if (vp->qp[i]->state == VCM_READY)
			qp_post(vp->qp[i]);
}

static void verbs_cancel(void *v, struct fab_peer *p, struct fab_req *r)
{
	/* queued shares see the cancel flag when their QP posts next */
	struct v_peer *vp = p->tstate[KVF_FABRIC_VERBS];
	if (!vp)
		return;
	for (int i = 0; i < vp->nqp; i++)
		if (vp->qp[i] && vp->qp[i]->state == VCM_READY)
			qp_post(vp->qp[i]);
}

static void verbs_peer_fail(void *v, struct fab_peer *p, int err, const char *detail)
{
	struct v_peer *vp = p->tstate[KVF_FABRIC_VERBS];
	if (!vp)
		return;
	for (int i = 0; i < vp->nqp; i++)
		if (vp->qp[i] && vp->qp[i]->state != VCM_IDLE)
			qp_fail(vp->qp[i], err, detail);
}

static void verbs_peer_free(void *v, struct fab_peer *p)
{
	struct v_peer *vp = p->tstate[KVF_FABRIC_VERBS];
	if (!vp)
		return;
	verbs_peer_fail(v, p, KVF_E_CANCELED, "closing");
	for (int i = 0; i < vp->nqp; i++)
		if (vp->qp[i])
			qp_free(vp->qp[i]);
	kvf_free(vp);
	p->tstate[KVF_FABRIC_VERBS] = NULL;
}

static void verbs_peer_show(void *v, struct fab_peer *p, kvf_buf *out)
{
	struct v_peer *vp = p->tstate[KVF_FABRIC_VERBS];
	if (!vp)
		return;
	kvf_buf_printf(out, "verbs_qps=%d", vp->nqp);
	for (int i = 0; i < vp->nqp; i++)
		if (vp->qp[i])
			kvf_buf_printf(out, " verbs_qp%d=%s/%u", i, vcm_state_name(vp->qp[i]->state), vp->qp[i]->ring.wrs);
}

const struct fab_transport fab_verbs_transport = {
	.name = "verbs",
	.kind = KVF_FABRIC_VERBS,
	.open = verbs_open,
	.close = verbs_close,
	.export_addr = verbs_export_addr,
	.reg = verbs_reg,
	.dereg = verbs_dereg,
	.reachable = verbs_reachable,
	.submit = verbs_submit,
	.cancel = verbs_cancel,
	.peer_fail = verbs_peer_fail,
	.peer_free = verbs_peer_free,
	.peer_show = verbs_peer_show,
};

#else /* !KVF_HAVE_VERBS */

static int verbs_open(kvf_fabric *f, void **out)
{
	return kvf_errf(KVF_E_UNSUPPORTED, "built without rdma-core (VERBS=0, or libibverbs/librdmacm not found)");
}

const struct fab_transport fab_verbs_transport = {
	.name = "verbs",
	.kind = KVF_FABRIC_VERBS,
	.open = verbs_open,
};

#endif
