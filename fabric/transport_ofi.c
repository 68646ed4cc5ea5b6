/*
 * transport_ofi.c: one-sided READ/WRITE through libfabric (FI_EP_RDM +
 * FI_RMA): EFA and verbs;ofi_rxm in production, tcp;ofi_rxm for tests on
 * any machine (it gives real RMA semantics over loopback).
 *
 * One RDM endpoint per fabric, one CQ, one address vector; every region is
 * registered once (fi_mr_reg; GPU memory with fi_mr_regattr + FI_HMEM_CUDA
 * when the provider can). The MR key travels in descriptors; where the
 * provider lets us choose keys (no FI_MR_PROV_KEY) the key is a 64-bit
 * value derived from the region's random secret, so it is the capability.
 * Remote addresses are virtual or MR offsets, as the target's mr_mode says
 * (carried in its address blob).
 *
 * Progress: tcp;ofi_rxm progresses data only when the CQ is read, on the
 * initiator and on the target. The CQ's wait fd sits in the fabric loop;
 * after each round fi_trywait() tells whether sleeping is safe, otherwise
 * another round is queued, and a 1 ms timer keeps progress going while ops
 * are outstanding. Ops are bounded by the provider's tx queue size; more
 * wait in per-peer queues. Each op carries a context from a pool; when a
 * peer fails, its contexts are orphaned (the requests fail at once) and the
 * peer's address is removed from the AV, which closes its connection, so
 * late completions are ignored and no late data lands.
 */
#include "kvf_features.h"

#include <stdio.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "fabric/fabric_int.h"

#if KVF_HAVE_OFI

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#define OFI_VERSION FI_VERSION(1, 9)
#define OFI_POLL_MS 1
#define OFI_CQ_BATCH 32
#define OFI_CTX_CHUNK 256

struct ofi_ctx {
	struct fi_context2 fctx; /* first: providers may use it */
	struct ofi_ctx *next;    /* free list */
	struct fab_req *req;     /* NULL: orphaned by a failed peer */
	struct ofi_peer *op;
	uint64_t len;
};

struct ofi_peer {
	struct fab_peer *p;
	struct ofi_peer *next_busy;
	int busy;
	int have_fa;
	fi_addr_t fa;
	int virt;                /* target uses virtual addresses */
	struct fab_rq q;         /* requests with ops left to issue */
	uint32_t inflight;
};

struct ofi_tp {
	kvf_fabric *f;
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_av *av;
	struct fid_cq *cq;
	struct fid_ep *ep;
	int cq_fd;
	char prov[64];
	uint8_t addr[FAB_ADDR_MAX / 2];
	size_t addrlen;
	uint32_t addr_format;
	int virt_addr, mr_local, prov_key, mr_endpoint, hmem;
	size_t key_size;
	uint64_t max_msg;
	size_t tx_depth;
	size_t outstanding;
	struct ofi_ctx *free_ctx;
	struct ofi_ctx **chunks; /* allocations of contexts */
	size_t nchunks;
	struct ofi_peer *busy;
	kvf_timer poll_timer;
	kvf_timer again;         /* 0 ms: progress again next iteration (stoppable, unlike a task) */
};

static void ofi_progress(struct ofi_tp *tp);
static void on_poll_timer(kvf_loop *loop, kvf_timer *t, void *ud);

static const char *ofi_err(int rc)
{
	return fi_strerror(rc < 0 ? -rc : rc);
}

static struct ofi_ctx *ctx_get(struct ofi_tp *tp)
{
	if (!tp->free_ctx) {
		struct ofi_ctx *c = kvf_calloc(OFI_CTX_CHUNK, sizeof(*c));
		struct ofi_ctx **nc = c ? kvf_realloc(tp->chunks, (tp->nchunks + 1) * sizeof(*nc)) : NULL;
		if (!nc) {
			kvf_free(c);
			return NULL;
		}
		tp->chunks = nc;
		tp->chunks[tp->nchunks++] = c;
		for (size_t i = 0; i < OFI_CTX_CHUNK; i++) {
			c[i].next = tp->free_ctx;
			tp->free_ctx = &c[i];
		}
	}
	struct ofi_ctx *c = tp->free_ctx;
	tp->free_ctx = c->next;
	memset(c, 0, sizeof(*c));
	return c;
}

static void ctx_put(struct ofi_tp *tp, struct ofi_ctx *c)
{
	c->req = NULL;
	c->next = tp->free_ctx;
	tp->free_ctx = c;
}

static void mark_busy(struct ofi_tp *tp, struct ofi_peer *op)
{
	if (op->busy)
		return;
	op->busy = 1;
	op->next_busy = tp->busy;
	tp->busy = op;
}

static int map_cq_err(int err)
{
	switch (err) {
	case FI_EACCES:
	case FI_EINVAL:
	case FI_EKEYREJECTED:
	case FI_EFAULT:
	case FI_EPERM:
	case FI_EOVERFLOW:
		return KVF_E_ACCESS;
	case FI_ECANCELED: /* never asked for (no fi_cancel): the provider flushed it */
	case FI_ECONNREFUSED:
		return KVF_E_CONNREFUSED;
	case FI_ECONNRESET:
	case FI_ECONNABORTED:
	case FI_ENOTCONN:
	case FI_EHOSTUNREACH:
	case FI_ENETUNREACH:
	case FI_ETIMEDOUT:
	case FI_EIO:
	case FI_ESHUTDOWN:
		return KVF_E_PEERDEAD;
	}
	return KVF_E_IO;
}

/* Issues queued ops of op's requests while tx credits last. */
static void peer_issue(struct ofi_tp *tp, struct ofi_peer *op)
{
	while (op->q.head && tp->outstanding < tp->tx_depth) {
		struct fab_req *r = op->q.head;
		if (atomic_load_explicit(&r->cancel, memory_order_relaxed)) {
			fab_rq_pop(&op->q);
			fab_req_stop(r, KVF_E_CANCELED, "canceled");
			continue;
		}
		const struct fab_op *o = &r->ops[r->cur_op];
		uint64_t len = o->len - r->cur_off;
		if (len > tp->max_msg)
			len = tp->max_msg;
		const kvf_fabric_rdesc *d = r->rd;
		uint64_t raddr = o->raddr + r->cur_off;
		if (!op->virt)
			raddr -= d->base;
		uint8_t *local = o->local + r->cur_off;
		void *desc = NULL;
		if (tp->mr_local) {
			for (uint32_t k = 0; k < r->nlregs; k++) {
				fab_region *lr = r->lregs[k];
				if (local >= lr->base && local < lr->base + lr->len)
					desc = lr->tpriv[KVF_FABRIC_OFI] ? fi_mr_desc(lr->tpriv[KVF_FABRIC_OFI]) : NULL;
			}
		}
		struct ofi_ctx *c = ctx_get(tp);
		if (!c) {
			fab_rq_pop(&op->q);
			fab_req_stop(r, KVF_E_NOMEM, "ofi: out of memory for op contexts");
			continue;
		}
		c->req = r;
		c->op = op;
		c->len = len;
		ssize_t rc = r->opcode == FAB_OP_READ
				     ? fi_read(tp->ep, local, len, desc, op->fa, raddr, d->key[KVF_FABRIC_OFI].key, &c->fctx)
				     : fi_write(tp->ep, local, len, desc, op->fa, raddr, d->key[KVF_FABRIC_OFI].key, &c->fctx);
		if (rc == -FI_EAGAIN) {
			ctx_put(tp, c);
			mark_busy(tp, op); /* retried after the next CQ round */
			return;
		}
		if (rc < 0) {
			ctx_put(tp, c);
			char why[160];
			snprintf(why, sizeof(why), "ofi: fi_%s: %s", r->opcode == FAB_OP_READ ? "read" : "write",
				 ofi_err((int)rc));
			fab_rq_pop(&op->q);
			fab_req_stop(r, map_cq_err((int)-rc), why);
			continue;
		}
		tp->outstanding++;
		op->inflight++;
		fab_req_units_add(r, 1);
		r->cur_off += len;
		if (r->cur_off == o->len) {
			r->cur_off = 0;
			if (++r->cur_op == r->nops) {
				fab_rq_pop(&op->q);
				fab_req_issued(r);
			}
		}
	}
	if (op->q.head)
		mark_busy(tp, op);
}

static void complete(struct ofi_tp *tp, struct ofi_ctx *c, int err, const char *why)
{
	tp->outstanding--;
	struct fab_req *r = c->req;
	struct ofi_peer *op = c->op;
	uint64_t len = c->len;
	ctx_put(tp, c);
	if (!r)
		return; /* orphaned: its peer failed and the request was failed then */
	op->inflight--;
	fab_peer_progress(op->p);
	fab_req_unit_done(r, err ? 0 : len, err, why);
}

static void again_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	ofi_progress(ud);
}

static void ofi_progress(struct ofi_tp *tp)
{
	struct fi_cq_entry ent[OFI_CQ_BATCH];
	for (int round = 0; round < 64; round++) {
		ssize_t n = fi_cq_read(tp->cq, ent, OFI_CQ_BATCH);
		if (n == -FI_EAGAIN)
			break;
		if (n == -FI_EAVAIL) {
			struct fi_cq_err_entry e;
			memset(&e, 0, sizeof(e));
			if (fi_cq_readerr(tp->cq, &e, 0) <= 0)
				break;
			char why[200];
			snprintf(why, sizeof(why), "ofi: %s (%s)", fi_strerror(e.err),
				 fi_cq_strerror(tp->cq, e.prov_errno, e.err_data, NULL, 0));
			struct ofi_ctx *c = e.op_context;
			if (!c)
				continue;
			int kerr = map_cq_err(e.err);
			struct fab_peer *p = c->req ? c->op->p : NULL;
			complete(tp, c, kerr, why);
			if (p && kerr == KVF_E_PEERDEAD)
				fab_peer_fail(p, KVF_E_PEERDEAD, "%s", why);
			continue;
		}
		if (n < 0) {
			KVF_LOG_RL(KVF_LOG_ERROR, 5, 1000, FAB_LOG, "ofi: fi_cq_read failed", "err=\"%s\"", ofi_err((int)n));
			break;
		}
		for (ssize_t i = 0; i < n; i++)
			complete(tp, ent[i].op_context, 0, NULL);
		if (n < OFI_CQ_BATCH)
			break;
	}
	/* issue what waited for credits */
	struct ofi_peer *b = tp->busy;
	tp->busy = NULL;
	while (b) {
		struct ofi_peer *nx = b->next_busy;
		b->busy = 0;
		peer_issue(tp, b);
		b = nx;
	}
	/* sleep on the fd only when libfabric says nothing is pending */
	if (tp->cq_fd >= 0) {
		struct fid *fids[1] = { &tp->cq->fid };
		if (fi_trywait(tp->fabric, fids, 1) == -FI_EAGAIN && !kvf_timer_armed(&tp->again))
			kvf_loop_timer_start(fab_loop(tp->f), &tp->again, 0, 0, again_cb, tp);
	}
	kvf_loop *loop = fab_loop(tp->f);
	if (tp->outstanding || tp->busy) {
		if (!kvf_timer_armed(&tp->poll_timer))
			kvf_loop_timer_start(loop, &tp->poll_timer, OFI_POLL_MS, OFI_POLL_MS, on_poll_timer, tp);
	}
}

static void on_poll_timer(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct ofi_tp *tp = ud;
	ofi_progress(tp);
	if (!tp->outstanding && !tp->busy && tp->cq_fd >= 0)
		kvf_loop_timer_stop(loop, t);
}

static void on_cq_fd(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	ofi_progress(ud);
}

/* ---- vtable ---- */

static void ofi_close(void *v)
{
	struct ofi_tp *tp = v;
	if (!tp)
		return;
	kvf_loop *loop = fab_loop(tp->f);
	if (kvf_timer_armed(&tp->poll_timer))
		kvf_loop_timer_stop(loop, &tp->poll_timer);
	if (kvf_timer_armed(&tp->again))
		kvf_loop_timer_stop(loop, &tp->again);
	if (tp->cq_fd >= 0)
		kvf_loop_del_fd(loop, tp->cq_fd);
	if (tp->ep)
		fi_close(&tp->ep->fid);
	if (tp->av)
		fi_close(&tp->av->fid);
	if (tp->cq)
		fi_close(&tp->cq->fid);
	if (tp->domain)
		fi_close(&tp->domain->fid);
	if (tp->fabric)
		fi_close(&tp->fabric->fid);
	if (tp->info)
		fi_freeinfo(tp->info);
	for (size_t i = 0; i < tp->nchunks; i++)
		kvf_free(tp->chunks[i]);
	kvf_free(tp->chunks);
	kvf_free(tp);
}

static int try_provider(struct ofi_tp *tp, const char *prov, const char *node, uint64_t tx_flags)
{
	struct fi_info *hints = fi_allocinfo();
	if (!hints)
		return -FI_ENOMEM;
	hints->ep_attr->type = FI_EP_RDM;
	hints->caps = FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->domain_attr->mr_mode =
		FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT | FI_MR_HMEM;
	hints->domain_attr->threading = FI_THREAD_DOMAIN;
	hints->domain_attr->resource_mgmt = FI_RM_ENABLED;
	hints->fabric_attr->prov_name = strdup(prov);
	hints->tx_attr->op_flags = tx_flags;
	int rc = fi_getinfo(OFI_VERSION, node, NULL, FI_SOURCE, hints, &tp->info);
	fi_freeinfo(hints);
	return rc;
}

static int ofi_open(kvf_fabric *f, void **out)
{
	const kvf_fabric_opts *o = fab_opts(f);
	struct ofi_tp *tp = kvf_calloc(1, sizeof(*tp));
	if (!tp)
		return kvf_errf(KVF_E_NOMEM, "ofi: open");
	tp->f = f;
	tp->cq_fd = -1;
	const char *node = fab_advertise_host(f);
	const char *auto_forced[] = { "efa", "verbs;ofi_rxm", "tcp;ofi_rxm", NULL };
	const char *auto_only[] = { "efa", "verbs;ofi_rxm", NULL };
	const char *one[] = { o->ofi_provider, NULL };
	const char *const *list = o->ofi_provider && o->ofi_provider[0] ? one
				  : o->transport == KVF_FABRIC_OFI     ? auto_forced
								       : auto_only;
	int rc = -FI_ENODATA;
	/* FI_DELIVERY_COMPLETE: a WRITE completes once its data is visible at
	 * the target, so a notification sent after it never overtakes it */
	for (int i = 0; list[i]; i++) {
		rc = try_provider(tp, list[i], node, FI_DELIVERY_COMPLETE);
		if (rc != 0 && (rc = try_provider(tp, list[i], node, 0)) == 0)
			KVF_WARN(FAB_LOG, "ofi: provider lacks FI_DELIVERY_COMPLETE; notifications may overtake writes",
				 "provider=%s", list[i]);
		if (rc == 0) {
			snprintf(tp->prov, sizeof(tp->prov), "%s", list[i]);
			break;
		}
	}
	if (rc != 0) {
		kvf_free(tp);
		if (list == auto_only)
			return kvf_errf(KVF_E_NODEV,
					"no RDMA-capable libfabric provider (tried efa, verbs;ofi_rxm); "
					"tcp;ofi_rxm is used only with transport = \"ofi\"");
		return kvf_errf(KVF_E_NODEV, "libfabric provider %s: fi_getinfo: %s", list[0], ofi_err(rc));
	}
	struct fi_info *fi = tp->info;
	uint64_t mm = fi->domain_attr->mr_mode;
	tp->virt_addr = (mm & FI_MR_VIRT_ADDR) != 0;
	tp->mr_local = (mm & FI_MR_LOCAL) != 0;
	tp->prov_key = (mm & FI_MR_PROV_KEY) != 0;
	tp->mr_endpoint = (mm & FI_MR_ENDPOINT) != 0;
	tp->hmem = (fi->caps & FI_HMEM) != 0;
	tp->key_size = fi->domain_attr->mr_key_size;
	tp->max_msg = fi->ep_attr->max_msg_size ? fi->ep_attr->max_msg_size : (1u << 30);
	if (tp->max_msg > (1ull << 30))
		tp->max_msg = 1ull << 30;
	tp->tx_depth = fi->tx_attr->size ? fi->tx_attr->size : 256;
	if (tp->tx_depth > 1024)
		tp->tx_depth = 1024;

	const char *step = "fi_fabric";
	if ((rc = fi_fabric(fi->fabric_attr, &tp->fabric, NULL)) != 0)
		goto fail;
	step = "fi_domain";
	if ((rc = fi_domain(tp->fabric, fi, &tp->domain, NULL)) != 0)
		goto fail;
	struct fi_av_attr av_attr = { .type = FI_AV_TABLE };
	step = "fi_av_open";
	if ((rc = fi_av_open(tp->domain, &av_attr, &tp->av, NULL)) != 0)
		goto fail;
	struct fi_cq_attr cq_attr = { .format = FI_CQ_FORMAT_CONTEXT, .size = tp->tx_depth * 2,
				      .wait_obj = FI_WAIT_FD };
	step = "fi_cq_open";
	if ((rc = fi_cq_open(tp->domain, &cq_attr, &tp->cq, NULL)) != 0) {
		cq_attr.wait_obj = FI_WAIT_NONE;
		if ((rc = fi_cq_open(tp->domain, &cq_attr, &tp->cq, NULL)) != 0)
			goto fail;
	}
	step = "fi_endpoint";
	if ((rc = fi_endpoint(tp->domain, fi, &tp->ep, NULL)) != 0)
		goto fail;
	step = "fi_ep_bind";
	if ((rc = fi_ep_bind(tp->ep, &tp->av->fid, 0)) != 0 ||
	    (rc = fi_ep_bind(tp->ep, &tp->cq->fid, FI_TRANSMIT | FI_RECV)) != 0)
		goto fail;
	step = "fi_enable";
	if ((rc = fi_enable(tp->ep)) != 0)
		goto fail;
	tp->addrlen = sizeof(tp->addr);
	step = "fi_getname";
	if ((rc = fi_getname(&tp->ep->fid, tp->addr, &tp->addrlen)) != 0)
		goto fail;
	tp->addr_format = fi->addr_format;
	if (cq_attr.wait_obj == FI_WAIT_FD) {
		int fd = -1;
		if (fi_control(&tp->cq->fid, FI_GETWAIT, &fd) == 0 && fd >= 0 &&
		    kvf_loop_add_fd(fab_loop(f), fd, KVF_EV_READ, on_cq_fd, tp) == 0)
			tp->cq_fd = fd;
	}
	if (tp->cq_fd < 0) /* no wait fd: poll, also to serve peers' RMA */
		kvf_loop_timer_start(fab_loop(f), &tp->poll_timer, OFI_POLL_MS, OFI_POLL_MS, on_poll_timer, tp);
	KVF_INFO(FAB_LOG, "ofi open", "provider=%s fabric=%s domain=%s mr_mode=%s%s%s%s hmem=%d tx_depth=%zu wait=%s "
		 "delivery_complete=%d",
		 tp->prov, fi->fabric_attr->name, fi->domain_attr->name, tp->virt_addr ? "virt," : "offset,",
		 tp->mr_local ? "local," : "", tp->prov_key ? "prov_key," : "user_key,", tp->mr_endpoint ? "endpoint" : "",
		 tp->hmem, tp->tx_depth, tp->cq_fd >= 0 ? "fd" : "poll",
		 (fi->tx_attr->op_flags & FI_DELIVERY_COMPLETE) != 0);
	*out = tp;
	return 0;
fail:
	{
		char why[160];
		snprintf(why, sizeof(why), "%s (%s): %s", step, tp->prov, ofi_err(rc));
		ofi_close(tp);
		return kvf_errf(KVF_E_NODEV, "ofi: %s", why);
	}
}

static void ofi_export_addr(void *v, kvf_wire_writer *w)
{
	struct ofi_tp *tp = v;
	fab_addr_ofi_put(w, tp->prov, tp->addr_format, (uint8_t)tp->virt_addr, tp->addr, tp->addrlen);
}

static int ofi_reg(void *v, fab_region *r)
{
	struct ofi_tp *tp = v;
	struct fid_mr *mr = NULL;
	uint64_t access = FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;
	uint8_t kmsg[8] = { 'o', 'f', 'i', '-', 'k', 'e', 'y', 0 };
	uint64_t want = tp->prov_key ? 0 : fab_siphash(r->secret, kmsg, sizeof(kmsg));
	if (!tp->prov_key && tp->key_size < 8)
		want &= (1ull << (8 * tp->key_size)) - 1;
	struct iovec iov = { r->base, r->len };
	struct fi_mr_attr attr = { .mr_iov = &iov, .iov_count = 1, .access = access, .requested_key = want };
	if (r->mem == KVF_FABRIC_MEM_CUDA) {
		if (!tp->hmem) {
			KVF_INFO(FAB_LOG, "ofi: provider cannot register GPU memory; region not reachable over ofi",
				 "provider=%s region=%u", tp->prov, r->id);
			return 0;
		}
		attr.iface = FI_HMEM_CUDA;
		attr.device.cuda = fab_opts(tp->f)->cuda_device < 0 ? 0 : (int)fab_opts(tp->f)->cuda_device;
	}
	int rc = fi_mr_regattr(tp->domain, &attr, 0, &mr);
	if (rc != 0)
		return kvf_errf(KVF_E_IO, "fi_mr_regattr: %s", ofi_err(rc));
	if (tp->mr_endpoint) {
		if ((rc = fi_mr_bind(mr, &tp->ep->fid, 0)) != 0 || (rc = fi_mr_enable(mr)) != 0) {
			fi_close(&mr->fid);
			return kvf_errf(KVF_E_IO, "fi_mr_bind/enable: %s", ofi_err(rc));
		}
	}
	r->tpriv[KVF_FABRIC_OFI] = mr;
	r->key[KVF_FABRIC_OFI].present = 1;
	r->key[KVF_FABRIC_OFI].key = fi_mr_key(mr);
	return 0;
}

static int ofi_dereg(void *v, fab_region *r, int force)
{
	struct fid_mr *mr = r->tpriv[KVF_FABRIC_OFI];
	if (mr) {
		/* served RMA runs on this thread: closing here cannot race it */
		fi_close(&mr->fid);
		r->tpriv[KVF_FABRIC_OFI] = NULL;
	}
	return 0;
}

static int ofi_reachable(void *v, const kvf_fabric_rdesc *d, int lmem)
{
	struct ofi_tp *tp = v;
	char prov[64];
	uint32_t fmt, alen;
	uint8_t virt;
	const uint8_t *a;
	if (!d->addr[KVF_FABRIC_OFI].len || !d->key[KVF_FABRIC_OFI].present)
		return 0;
	if (fab_addr_ofi_parse(&d->addr[KVF_FABRIC_OFI], prov, sizeof(prov), &fmt, &virt, &a, &alen) < 0)
		return 0;
	if (strcmp(prov, tp->prov) != 0 || fmt != tp->addr_format)
		return 0;
	return lmem == KVF_FABRIC_MEM_HOST || tp->hmem;
}

static struct ofi_peer *opeer_get(struct ofi_tp *tp, struct fab_peer *p, const kvf_fabric_rdesc *d, int *err,
				  char *why, size_t cap)
{
	struct ofi_peer *op = p->tstate[KVF_FABRIC_OFI];
	if (!op) {
		op = kvf_calloc(1, sizeof(*op));
		if (!op) {
			*err = KVF_E_NOMEM;
			snprintf(why, cap, "ofi: out of memory");
			return NULL;
		}
		op->p = p;
		p->tstate[KVF_FABRIC_OFI] = op;
	}
	if (!op->have_fa) {
		char prov[64];
		uint32_t fmt, alen;
		uint8_t virt;
		const uint8_t *a;
		if (fab_addr_ofi_parse(&d->addr[KVF_FABRIC_OFI], prov, sizeof(prov), &fmt, &virt, &a, &alen) < 0) {
			*err = KVF_E_PROTO;
			snprintf(why, cap, "ofi: bad address of %s", p->name);
			return NULL;
		}
		int n = fi_av_insert(tp->av, a, 1, &op->fa, 0, NULL);
		if (n != 1) {
			*err = KVF_E_PEERDEAD;
			snprintf(why, cap, "ofi: fi_av_insert(%s): %s", p->name, n < 0 ? ofi_err(n) : "refused");
			return NULL;
		}
		op->virt = virt;
		op->have_fa = 1;
	}
	return op;
}

static void ofi_submit(void *v, struct fab_peer *p, struct fab_req *r)
{
	struct ofi_tp *tp = v;
	int err = 0;
	char why[160];
	struct ofi_peer *op = opeer_get(tp, p, r->rd, &err, why, sizeof(why));
	if (!op) {
		fab_req_stop(r, err, why);
		return;
	}
	fab_rq_push(&op->q, r);
	peer_issue(tp, op);
	ofi_progress(tp);
}

static void ofi_cancel(void *v, struct fab_peer *p, struct fab_req *r)
{
	struct ofi_peer *op = p->tstate[KVF_FABRIC_OFI];
	if (op && fab_rq_remove(&op->q, r))
		fab_req_stop(r, KVF_E_CANCELED, "canceled");
}

static void ofi_peer_fail(void *v, struct fab_peer *p, int err, const char *detail)
{
	struct ofi_tp *tp = v;
	struct ofi_peer *op = p->tstate[KVF_FABRIC_OFI];
	if (!op)
		return;
	struct fab_req *r;
	while ((r = fab_rq_pop(&op->q)))
		fab_req_stop(r, err, detail);
	/* orphan the contexts in flight and fail their units now */
	for (size_t k = 0; k < tp->nchunks && op->inflight; k++) {
		struct ofi_ctx *c = tp->chunks[k];
		for (size_t i = 0; i < OFI_CTX_CHUNK; i++) {
			if (c[i].op != op || !c[i].req)
				continue;
			struct fab_req *rq = c[i].req;
			c[i].req = NULL;
			op->inflight--;
			fab_req_unit_done(rq, 0, err, detail);
		}
	}
	if (op->have_fa) {
		fi_av_remove(tp->av, &op->fa, 1, 0); /* closes the connection */
		op->have_fa = 0;
	}
}

static void ofi_peer_free(void *v, struct fab_peer *p)
{
	struct ofi_peer *op = p->tstate[KVF_FABRIC_OFI];
	if (!op)
		return;
	struct ofi_tp *tp = v;
	for (struct ofi_peer **pp = &tp->busy; *pp; pp = &(*pp)->next_busy) {
		if (*pp == op) {
			*pp = op->next_busy;
			break;
		}
	}
	for (size_t k = 0; k < tp->nchunks; k++)
		for (size_t i = 0; i < OFI_CTX_CHUNK; i++)
			if (tp->chunks[k][i].op == op)
				tp->chunks[k][i].op = NULL, tp->chunks[k][i].req = NULL;
	kvf_free(op);
	p->tstate[KVF_FABRIC_OFI] = NULL;
}

static void ofi_peer_show(void *v, struct fab_peer *p, kvf_buf *out)
{
	struct ofi_tp *tp = v;
	struct ofi_peer *op = p->tstate[KVF_FABRIC_OFI];
	if (op)
		kvf_buf_printf(out, "ofi=%s ofi_inflight=%u ofi_queued=%u", tp->prov, op->inflight, op->q.n);
}

const struct fab_transport fab_ofi_transport = {
	.name = "ofi",
	.kind = KVF_FABRIC_OFI,
	.open = ofi_open,
	.close = ofi_close,
	.export_addr = ofi_export_addr,
	.reg = ofi_reg,
	.dereg = ofi_dereg,
	.reachable = ofi_reachable,
	.submit = ofi_submit,
	.cancel = ofi_cancel,
	.peer_fail = ofi_peer_fail,
	.peer_free = ofi_peer_free,
	.peer_show = ofi_peer_show,
};

#else /* !KVF_HAVE_OFI */

static int ofi_open(kvf_fabric *f, void **out)
{
	return kvf_errf(KVF_E_UNSUPPORTED, "built without libfabric (OFI=0, or pkg-config libfabric not found)");
}

const struct fab_transport fab_ofi_transport = {
	.name = "ofi",
	.kind = KVF_FABRIC_OFI,
	.open = ofi_open,
};

#endif
